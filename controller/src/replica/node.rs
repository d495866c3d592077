//! The Raft node: one thread owns the `RawNode` and handles its `Ready` in the order raft-rs
//! documents: send messages, apply a snapshot, apply committed entries, persist entries and
//! hard state (fsynced), send persisted messages, advance, then handle the light ready.
//!
//! Proposals are matched to their entries by an ID in the entry's context (this node's ID
//! and a sequence number), so an answer is given only for the very entry that was proposed.
//! A leader's own proposal is also remembered by (term, index): another entry committed at
//! that index means it was superseded, and its caller hears so at once. Linearizable reads
//! are batched into one ReadIndex request per round; each waits for its read index to be
//! applied.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use raft::prelude::{Entry, EntryType, Message};
use raft::{RawNode, StateRole};
use tokio::sync::{broadcast, watch};

use super::storage::DurableStorage;
use super::{
    logger, Applied, Input, ProposeReply, RaftStatus, ReadReply, ReplicaConfig, ReplicaError,
    StartError,
};
use crate::codec;
use crate::state::{Command, Event, State};

/// How often the Raft clock ticks.
const TICK: Duration = Duration::from_millis(100);
/// A ReadIndex request that got no answer in this many ticks is asked again (raft-rs drops
/// one silently, e.g. when a new leader has not committed an entry of its term yet).
const READ_RETRY_TICKS: u32 = 3;

/// What [`start`] hands to the [`super::Replica`].
pub(super) struct Started {
    pub inputs: mpsc::Sender<Input>,
    pub state: Arc<RwLock<State>>,
    pub applied: watch::Receiver<u64>,
    pub status: watch::Receiver<RaftStatus>,
    pub thread: std::thread::JoinHandle<()>,
}

pub(super) fn start(
    config: &ReplicaConfig,
    notices: broadcast::Sender<Arc<Applied>>,
) -> Result<Started, StartError> {
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
    let (status, status_rx) = watch::channel(RaftStatus {
        node_id: config.node_id,
        voters: config.voters.clone(),
        applied_index: applied,
        ..Default::default()
    });
    let (inputs, rx) = mpsc::channel();
    let mut runner = Runner {
        id: config.node_id,
        node,
        storage,
        state: state.clone(),
        applied_tx,
        notices,
        status,
        proposals: HashMap::new(),
        placed: BTreeMap::new(),
        next_proposal: 1,
        reads_new: Vec::new(),
        reads_asked: HashMap::new(),
        next_read: 1,
        applied,
        last_snapshot: applied,
        snapshot_every: config.snapshot_every.max(1),
        known_leader: (None, 0),
    };
    let thread = std::thread::Builder::new()
        .name(format!("raft-{}", config.node_id))
        .spawn(move || runner.run(rx))
        .map_err(StartError::Spawn)?;
    Ok(Started {
        inputs,
        state,
        applied: applied_rx,
        status: status_rx,
        thread,
    })
}

/// The ID carried in a proposed entry's context: which node proposed it, and its number there.
fn proposal_context(node: u64, seq: u64) -> Vec<u8> {
    let mut context = Vec::with_capacity(16);
    context.extend_from_slice(&node.to_le_bytes());
    context.extend_from_slice(&seq.to_le_bytes());
    context
}

fn parse_context(context: &[u8]) -> Option<(u64, u64)> {
    let node = u64::from_le_bytes(context.get(..8)?.try_into().ok()?);
    let seq = u64::from_le_bytes(context.get(8..16)?.try_into().ok()?);
    Some((node, seq))
}

struct Runner {
    id: u64,
    node: RawNode<DurableStorage>,
    storage: DurableStorage,
    state: Arc<RwLock<State>>,
    applied_tx: watch::Sender<u64>,
    notices: broadcast::Sender<Arc<Applied>>,
    status: watch::Sender<RaftStatus>,
    /// Proposals waiting for their entry, by sequence number.
    proposals: HashMap<u64, ProposeReply>,
    /// This node's proposals as leader: log index -> (term, sequence number).
    placed: BTreeMap<u64, (u64, u64)>,
    next_proposal: u64,
    /// Reads that arrived this round, not yet asked for.
    reads_new: Vec<ReadReply>,
    /// ReadIndex requests in flight, by context: the ticks they have waited, and their reads.
    reads_asked: HashMap<u64, (u32, Vec<ReadReply>)>,
    next_read: u64,
    applied: u64,
    last_snapshot: u64,
    snapshot_every: u64,
    /// The leader and term last announced to subscribers.
    known_leader: (Option<u64>, u64),
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
                    let mut stop = false;
                    while let Ok(input) = rx.try_recv() {
                        if !self.take(input) {
                            stop = true;
                            break;
                        }
                    }
                    if stop {
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if last_tick.elapsed() >= TICK {
                self.node.tick();
                self.on_tick();
                last_tick = Instant::now();
            }
            self.ask_reads();
            if let Err(e) = self.on_ready() {
                // A storage failure leaves Raft unable to go on safely: stop, so a restart
                // recovers from what is durably on disk.
                tracing::error!(error = %e, "raft storage failed; stopping the raft node");
                break;
            }
        }
        self.fail_all(ReplicaError::Stopped);
    }

    /// Takes one input; false means stop.
    fn take(&mut self, input: Input) -> bool {
        match input {
            Input::Propose(command, reply) => self.propose(*command, reply),
            Input::ReadIndex(reply) => self.reads_new.push(reply),
            Input::Step(message) => {
                if let Err(e) = self.node.step(*message) {
                    tracing::debug!(error = %e, "raft message refused");
                }
            }
            Input::Shutdown => return false,
        }
        true
    }

    fn propose(&mut self, command: Command, reply: ProposeReply) {
        if self.node.raft.leader_id == raft::INVALID_ID {
            let _ = reply.send(Err(ReplicaError::NoLeader));
            return;
        }
        let data = match codec::encode(&command) {
            Ok(data) => data,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a command");
                let _ = reply.send(Err(ReplicaError::Stopped));
                return;
            }
        };
        let seq = self.next_proposal;
        self.next_proposal += 1;
        let before = self.node.raft.raft_log.last_index();
        match self.node.propose(proposal_context(self.id, seq), data) {
            Ok(()) => {
                if self.node.raft.state == StateRole::Leader {
                    let index = self.node.raft.raft_log.last_index();
                    if index == before {
                        let _ = reply.send(Err(ReplicaError::NoLeader));
                        return;
                    }
                    self.placed.insert(index, (self.node.raft.term, seq));
                }
                // A follower forwarded it to the leader: it is answered when (if) its entry
                // is applied here, or by the caller's deadline.
                self.proposals.insert(seq, reply);
            }
            Err(raft::Error::ProposalDropped) => {
                let _ = reply.send(Err(ReplicaError::NoLeader));
            }
            Err(e) => {
                tracing::warn!(error = %e, "proposal failed");
                let _ = reply.send(Err(ReplicaError::NoLeader));
            }
        }
    }

    /// Sends one ReadIndex request for the reads that arrived this round.
    fn ask_reads(&mut self) {
        if self.reads_new.is_empty() {
            return;
        }
        if self.node.raft.leader_id == raft::INVALID_ID {
            for reply in self.reads_new.drain(..) {
                let _ = reply.send(Err(ReplicaError::NoLeader));
            }
            return;
        }
        let ctx = self.next_read;
        self.next_read += 1;
        let reads = std::mem::take(&mut self.reads_new);
        self.reads_asked.insert(ctx, (0, reads));
        self.node.read_index(ctx.to_le_bytes().to_vec());
    }

    /// Once per tick: ask again for reads raft-rs dropped, and forget callers that gave up.
    fn on_tick(&mut self) {
        let mut retry = Vec::new();
        self.reads_asked.retain(|_, (ticks, reads)| {
            reads.retain(|r| !r.is_closed());
            *ticks += 1;
            if reads.is_empty() {
                return false;
            }
            if *ticks >= READ_RETRY_TICKS {
                retry.append(reads);
                return false;
            }
            true
        });
        self.reads_new.extend(retry);
        self.proposals.retain(|_, reply| !reply.is_closed());
    }

    fn on_ready(&mut self) -> Result<(), StartError> {
        if !self.node.has_ready() {
            return Ok(());
        }
        let mut ready = self.node.ready();
        self.send(ready.take_messages());
        if !ready.snapshot().is_empty() {
            // Installing a leader's snapshot comes with multi-node groups; a group of one
            // never receives one.
            tracing::error!("a snapshot from a peer arrived, but this node cannot install one");
        }
        for read in ready.take_read_states() {
            let ctx = read.request_ctx.get(..8).and_then(|b| b.try_into().ok());
            let asked = ctx.and_then(|c| self.reads_asked.remove(&u64::from_le_bytes(c)));
            // The caller waits until this node has applied the read index.
            for reply in asked.map(|(_, reads)| reads).unwrap_or_default() {
                let _ = reply.send(Ok(read.index));
            }
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

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), StartError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut round = Applied::default();
        for entry in entries {
            self.applied = entry.index;
            self.supersede_before(&entry);
            if entry.get_entry_type() != EntryType::EntryNormal {
                // A configuration change (only the initial configuration exists so far).
                continue;
            }
            let waiting = parse_context(&entry.context)
                .filter(|(node, _)| *node == self.id)
                .and_then(|(_, seq)| self.proposals.remove(&seq));
            if entry.data.is_empty() {
                // The empty entry a new leader appends.
                continue;
            }
            let command = match codec::decode::<Command>(&entry.data) {
                Ok(command) => command,
                Err(e) => {
                    // Every replica decodes the same bytes the same way, so skipping is safe.
                    tracing::error!(index = entry.index, error = %e, "undecodable log entry skipped");
                    continue;
                }
            };
            let (result, effects) = self
                .state
                .write()
                .expect("state lock")
                .apply_with_effects(command);
            round
                .events
                .extend(effects.events.into_iter().map(|e| (entry.index, e)));
            round.hosts.extend(effects.hosts);
            if let Some(reply) = waiting {
                let _ = reply.send(Ok(result));
            }
        }
        round.index = self.applied;
        self.applied_tx.send_replace(self.applied);
        // No subscriber is fine: nobody listens yet.
        let _ = self.notices.send(Arc::new(round));
        if self.applied - self.last_snapshot >= self.snapshot_every {
            let data = codec::encode(&*self.state.read().expect("state lock"))?;
            self.storage.save_snapshot(self.applied, data)?;
            self.last_snapshot = self.applied;
        }
        Ok(())
    }

    /// Our leader proposals at indexes up to `entry`'s that another entry took can never be
    /// applied: their callers hear so now.
    fn supersede_before(&mut self, entry: &Entry) {
        while let Some((&index, &(term, seq))) = self.placed.first_key_value() {
            if index > entry.index {
                break;
            }
            self.placed.pop_first();
            let ours = index == entry.index
                && term == entry.term
                && parse_context(&entry.context) == Some((self.id, seq));
            if !ours {
                if let Some(reply) = self.proposals.remove(&seq) {
                    let _ = reply.send(Err(ReplicaError::Superseded));
                }
            }
        }
    }

    fn publish_status(&mut self) {
        let raft = &self.node.raft;
        let leader = (raft.leader_id != raft::INVALID_ID).then_some(raft.leader_id);
        let (term, commit, applied) = (raft.term, raft.raft_log.committed, self.applied);
        self.status.send_if_modified(|status| {
            let before = status.clone();
            status.leader = leader;
            status.term = term;
            status.commit_index = commit;
            status.applied_index = applied;
            *status != before
        });
        if (leader, raft.term) != self.known_leader {
            let lost = self.known_leader.0 == Some(self.id) && leader != Some(self.id);
            self.known_leader = (leader, raft.term);
            tracing::info!(?leader, term = raft.term, "raft leader changed");
            if lost {
                // Reads asked of this node as leader will not be confirmed any more.
                for (_, (_, reads)) in self.reads_asked.drain() {
                    self.reads_new.extend(reads);
                }
            }
            let _ = self.notices.send(Arc::new(Applied {
                index: self.applied,
                events: vec![(
                    self.applied,
                    Event::LeaderChanged {
                        leader,
                        term: raft.term,
                    },
                )],
                hosts: Default::default(),
            }));
        }
    }

    fn fail_all(&mut self, error: ReplicaError) {
        for (_, reply) in self.proposals.drain() {
            let _ = reply.send(Err(error.clone()));
        }
        for reply in self.reads_new.drain(..) {
            let _ = reply.send(Err(error.clone()));
        }
        for (_, (_, reads)) in self.reads_asked.drain() {
            for reply in reads {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}
