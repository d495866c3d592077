//! The Raft group that replicates the controller's state. One thread owns the `RawNode` and
//! handles its `Ready` in the order raft-rs documents: send messages, apply a snapshot, apply
//! committed entries, persist entries and hard state (fsynced), send persisted messages,
//! advance, then handle the light ready. Everything else talks to it through [`RaftHandle`].

mod logger;
pub mod storage;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use raft::prelude::{Entry, EntryType, Message};
use raft::{RawNode, StateRole};
use tokio::sync::{oneshot, watch};

use crate::codec;
use crate::state::{Command, Outcome, Rejection, State};
use storage::{DurableStorage, StorageError};

/// How often the Raft clock ticks.
const TICK: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("raft")]
    Raft(#[from] raft::Error),
    #[error("state machine snapshot")]
    Codec(#[from] codec::CodecError),
    #[error("starting the raft thread")]
    Spawn(#[source] std::io::Error),
}

/// Why a proposal did not get an answer from the state machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("no Raft leader is available; retry shortly")]
    NoLeader,
    #[error("leadership changed before the change committed; retry")]
    Superseded,
    #[error("the Raft node has stopped")]
    Stopped,
}

/// Settings of this node's Raft group.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    pub node_id: u64,
    pub voters: Vec<u64>,
    /// The redb file holding the log, the hard state and snapshots.
    pub path: PathBuf,
    /// Take a state-machine snapshot (and compact the log) after this many applied entries.
    pub snapshot_every: u64,
}

/// What this node knows about the group, for `GET /api/v1/cluster`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftStatus {
    pub node_id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub voters: Vec<u64>,
}

type Reply = oneshot::Sender<Result<Result<Outcome, Rejection>, ProposeError>>;

enum Input {
    Propose(Box<Command>, Reply),
    /// A message from a peer (multi-node transport comes with the cluster work).
    #[allow(dead_code)]
    Step(Box<Message>),
    Shutdown,
}

/// A cheap, cloneable handle on the Raft node: propose commands, read the applied state, wait
/// for changes.
#[derive(Clone)]
pub struct RaftHandle {
    inputs: mpsc::Sender<Input>,
    state: Arc<RwLock<State>>,
    applied: watch::Receiver<u64>,
    status: Arc<RwLock<RaftStatus>>,
    thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl RaftHandle {
    /// Proposes `command` and waits until it is committed and applied on this node.
    pub async fn propose(
        &self,
        command: Command,
    ) -> Result<Result<Outcome, Rejection>, ProposeError> {
        let (tx, rx) = oneshot::channel();
        self.inputs
            .send(Input::Propose(Box::new(command), tx))
            .map_err(|_| ProposeError::Stopped)?;
        rx.await.map_err(|_| ProposeError::Stopped)?
    }

    /// Runs `f` on the applied state.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.read().expect("state lock"))
    }

    /// A receiver of the applied index: it changes whenever the state does.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }

    pub fn status(&self) -> RaftStatus {
        self.status.read().expect("status lock").clone()
    }

    /// Waits until this node is leader (or `timeout` passes).
    pub async fn wait_for_leader(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let status = self.status();
            if status.leader == Some(status.node_id) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    /// Stops the node's thread after its current round and waits for it, so the store is
    /// closed when this returns.
    pub fn shutdown(&self) {
        let _ = self.inputs.send(Input::Shutdown);
        if let Some(thread) = self.thread.lock().expect("thread lock").take() {
            let _ = thread.join();
        }
    }
}

/// Opens the store, rebuilds the state machine from the latest snapshot (replaying the log after
/// it as raft-rs hands the committed entries back), and starts the node's thread.
pub fn start(config: RaftConfig) -> Result<RaftHandle, RaftError> {
    let (storage, recovered) = DurableStorage::open(&config.path, &config.voters)?;
    let (state, applied) = match &recovered.snapshot {
        Some(snap) => (
            codec::decode::<State>(&snap.data)?,
            snap.get_metadata().index,
        ),
        None => (State::default(), 0),
    };
    let raft_config = raft::Config {
        id: config.node_id,
        election_tick: 10,
        heartbeat_tick: 3,
        applied,
        check_quorum: true,
        pre_vote: true,
        max_size_per_msg: 1 << 20,
        max_inflight_msgs: 256,
        ..Default::default()
    };
    raft_config.validate()?;
    let logger = logger::raft_logger(config.node_id);
    let mut node = RawNode::new(&raft_config, storage.clone(), &logger)?;
    if config.voters == [config.node_id] {
        // A group of one elects itself at once rather than after an election timeout.
        node.campaign()?;
    }
    let state = Arc::new(RwLock::new(state));
    let (applied_tx, applied_rx) = watch::channel(applied);
    let status = Arc::new(RwLock::new(RaftStatus {
        node_id: config.node_id,
        voters: config.voters.clone(),
        applied_index: applied,
        ..Default::default()
    }));
    let (inputs, rx) = mpsc::channel();
    let mut runner = Runner {
        node,
        storage,
        state: state.clone(),
        applied_tx,
        status: status.clone(),
        pending: BTreeMap::new(),
        applied,
        last_snapshot: applied,
        snapshot_every: config.snapshot_every.max(1),
    };
    let thread = std::thread::Builder::new()
        .name(format!("raft-{}", config.node_id))
        .spawn(move || runner.run(rx))
        .map_err(RaftError::Spawn)?;
    Ok(RaftHandle {
        inputs,
        state,
        applied: applied_rx,
        status,
        thread: Arc::new(std::sync::Mutex::new(Some(thread))),
    })
}

struct Runner {
    node: RawNode<DurableStorage>,
    storage: DurableStorage,
    state: Arc<RwLock<State>>,
    applied_tx: watch::Sender<u64>,
    status: Arc<RwLock<RaftStatus>>,
    /// Proposals waiting for their entry, by log index, with the term they were proposed in.
    pending: BTreeMap<u64, (u64, Reply)>,
    applied: u64,
    last_snapshot: u64,
    snapshot_every: u64,
}

impl Runner {
    fn run(&mut self, rx: mpsc::Receiver<Input>) {
        let mut last_tick = Instant::now();
        loop {
            let wait = TICK.saturating_sub(last_tick.elapsed());
            match rx.recv_timeout(wait) {
                Ok(input) => {
                    if !self.take(input) {
                        break;
                    }
                    // Batch whatever else is queued so one fsync covers many proposals.
                    while let Ok(input) = rx.try_recv() {
                        if !self.take(input) {
                            return self.fail_pending(ProposeError::Stopped);
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if last_tick.elapsed() >= TICK {
                self.node.tick();
                last_tick = Instant::now();
            }
            if let Err(e) = self.on_ready() {
                // A storage failure leaves Raft unable to go on safely: stop, so a restart
                // recovers from what is durably on disk.
                tracing::error!(error = %e, "raft storage failed; stopping the raft node");
                break;
            }
        }
        self.fail_pending(ProposeError::Stopped);
    }

    /// Takes one input; false means stop.
    fn take(&mut self, input: Input) -> bool {
        match input {
            Input::Propose(command, reply) => self.propose(*command, reply),
            Input::Step(message) => {
                if let Err(e) = self.node.step(*message) {
                    tracing::debug!(error = %e, "raft message refused");
                }
            }
            Input::Shutdown => return false,
        }
        true
    }

    fn propose(&mut self, command: Command, reply: Reply) {
        if self.node.raft.state != StateRole::Leader {
            let _ = reply.send(Err(ProposeError::NoLeader));
            return;
        }
        let data = match codec::encode(&command) {
            Ok(data) => data,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a command");
                let _ = reply.send(Err(ProposeError::Stopped));
                return;
            }
        };
        let before = self.node.raft.raft_log.last_index();
        match self.node.propose(Vec::new(), data) {
            Ok(()) => {
                let index = self.node.raft.raft_log.last_index();
                if index == before {
                    let _ = reply.send(Err(ProposeError::NoLeader));
                } else {
                    self.pending.insert(index, (self.node.raft.term, reply));
                }
            }
            Err(raft::Error::ProposalDropped) => {
                let _ = reply.send(Err(ProposeError::NoLeader));
            }
            Err(e) => {
                tracing::warn!(error = %e, "proposal failed");
                let _ = reply.send(Err(ProposeError::NoLeader));
            }
        }
    }

    fn on_ready(&mut self) -> Result<(), RaftError> {
        if !self.node.has_ready() {
            return Ok(());
        }
        let mut ready = self.node.ready();
        self.send(ready.take_messages());
        if !ready.snapshot().is_empty() {
            // Installing a leader's snapshot belongs with the multi-node transport; a group of
            // one never receives one.
            tracing::warn!("ignoring a snapshot from a peer: multi-node groups are not wired yet");
        }
        self.apply(ready.take_committed_entries())?;
        self.storage.persist(ready.entries(), ready.hs())?;
        self.send(ready.take_persisted_messages());
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.storage.set_commit(commit);
        }
        self.send(light.take_messages());
        self.apply(light.take_committed_entries())?;
        self.node.advance_apply();
        self.publish_status();
        Ok(())
    }

    fn send(&mut self, messages: Vec<Message>) {
        for message in messages {
            tracing::debug!(
                to = message.to,
                "no transport to a peer yet; dropping a raft message"
            );
        }
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), RaftError> {
        if entries.is_empty() {
            return Ok(());
        }
        for entry in entries {
            self.applied = entry.index;
            // Any proposal older than this entry that has not been answered can never be.
            while let Some((&index, _)) = self.pending.first_key_value() {
                if index >= entry.index {
                    break;
                }
                let (_, (_, reply)) = self.pending.pop_first().expect("first exists");
                let _ = reply.send(Err(ProposeError::Superseded));
            }
            let waiting = match self.pending.get(&entry.index) {
                Some((term, _)) if *term == entry.term => self.pending.remove(&entry.index),
                Some(_) => {
                    let (_, reply) = self.pending.remove(&entry.index).expect("present");
                    let _ = reply.send(Err(ProposeError::Superseded));
                    None
                }
                None => None,
            };
            if entry.data.is_empty() || entry.get_entry_type() != EntryType::EntryNormal {
                // The empty entry a new leader appends, or a configuration change (only the
                // initial single-voter configuration exists so far).
                continue;
            }
            let result = match codec::decode::<Command>(&entry.data) {
                Ok(command) => self.state.write().expect("state lock").apply(command),
                Err(e) => {
                    // Every replica decodes the same bytes the same way, so skipping is safe.
                    tracing::error!(index = entry.index, error = %e, "undecodable log entry skipped");
                    continue;
                }
            };
            if let Some((_, reply)) = waiting {
                let _ = reply.send(Ok(result));
            }
        }
        self.applied_tx.send_replace(self.applied);
        if self.applied - self.last_snapshot >= self.snapshot_every {
            let data = codec::encode(&*self.state.read().expect("state lock"))?;
            self.storage.save_snapshot(self.applied, data)?;
            self.last_snapshot = self.applied;
        }
        Ok(())
    }

    fn publish_status(&self) {
        let raft = &self.node.raft;
        let mut status = self.status.write().expect("status lock");
        status.leader = (raft.leader_id != raft::INVALID_ID).then_some(raft.leader_id);
        status.term = raft.term;
        status.commit_index = raft.raft_log.committed;
        status.applied_index = self.applied;
    }

    fn fail_pending(&mut self, error: ProposeError) {
        for (_, (_, reply)) in std::mem::take(&mut self.pending) {
            let _ = reply.send(Err(error.clone()));
        }
    }
}

#[cfg(test)]
mod tests;
