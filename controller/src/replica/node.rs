//! The Raft node: one thread owns the `RawNode` and handles its `Ready` in the order raft-rs
//! documents: send messages, install a snapshot, apply committed entries, persist entries and
//! hard state (fsynced), send persisted messages, advance, then handle the light ready.
//!
//! Proposals are matched to their entries by an ID in the entry's context (this node's ID
//! and a sequence number), so an answer is given only for the very entry that was proposed,
//! also when a follower forwarded it to the leader. A leader's own proposal is also
//! remembered by (term, index): another entry committed at that index means it was
//! superseded, and its caller hears so at once. Linearizable reads are batched into one
//! ReadIndex request per round; each caller then waits for its read index to be applied.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::prelude::{ConfChangeV2, Entry, EntryType, Message, Snapshot};
use raft::{RawNode, SnapshotStatus, StateRole};
use tokio::sync::{broadcast, watch};

use super::membership::{self, MemberChange, MembershipError};
use super::storage::{DurableStorage, Identity};
use super::{
    logger, Applied, Input, MemberReply, PeerProgress, ProposeReply, RaftStatus, ReadReply,
    ReplicaConfig, ReplicaError, StartError, Transport,
};
use crate::codec;
use crate::failure::error_chain;
use crate::state::{Command, Event, State};

/// How often the Raft clock ticks: heartbeats every 3 ticks (150 ms), an election after 10 to
/// 20 ticks without a leader (0.5 to 1 s), so a dead leader is replaced in about a second.
const TICK: Duration = Duration::from_millis(50);
/// A ReadIndex request that got no answer in this many ticks is asked again (raft-rs drops
/// one silently, e.g. when a new leader has not committed an entry of its term yet).
const READ_RETRY_TICKS: u32 = 6;

/// What [`start`] hands to the [`super::Replica`].
pub(super) struct Started {
    pub inputs: mpsc::Sender<Input>,
    pub state: Arc<RwLock<State>>,
    pub applied: watch::Receiver<u64>,
    pub status: watch::Receiver<RaftStatus>,
    pub thread: std::thread::JoinHandle<()>,
    pub storage: DurableStorage,
    pub identity: Identity,
}

pub(super) fn start(
    config: &ReplicaConfig,
    notices: broadcast::Sender<Arc<Applied>>,
    transport: Arc<dyn Transport>,
) -> Result<Started, StartError> {
    let (storage, recovered) = DurableStorage::open(&config.path, &config.voters)?;
    let mut forced_upto = 0;
    if config.force_new_cluster {
        if !recovered.existing {
            return Err(StartError::NothingToRecover);
        }
        storage.force_single_voter(config.node_id)?;
        forced_upto = storage.last_index();
        tracing::warn!(
            node = config.node_id,
            "forced a new one-node cluster from this node's store: add the other members again"
        );
    }
    let (state, applied) = match &recovered.snapshot {
        Some(snap) => (
            codec::decode::<State>(&snap.data)?,
            snap.get_metadata().index,
        ),
        None => (State::default(), 0),
    };
    let snapshot_bytes = recovered
        .snapshot
        .as_ref()
        .map_or(0, |s| s.data.len() as u64);
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
    if (config.voters == [config.node_id] && !recovered.existing) || config.force_new_cluster {
        // A new group of one elects itself at once rather than after an election timeout.
        node.campaign()?;
    }
    let state = Arc::new(RwLock::new(state));
    let (applied_tx, applied_rx) = watch::channel(applied);
    let (status, status_rx) = watch::channel(RaftStatus {
        node_id: config.node_id,
        voters: config.voters.clone(),
        applied_index: applied,
        snapshot_bytes,
        ..Default::default()
    });
    let (inputs, rx) = mpsc::channel();
    let identity = recovered.identity.clone();
    let mut runner = Runner {
        id: config.node_id,
        node,
        storage: storage.clone(),
        transport,
        state: state.clone(),
        applied_tx,
        notices,
        status,
        proposals: HashMap::new(),
        member_changes: HashMap::new(),
        placed: BTreeMap::new(),
        proposer: Proposer {
            node: config.node_id,
            boot: rand::random(),
        },
        next_proposal: 1,
        reads_new: Vec::new(),
        reads_asked: HashMap::new(),
        next_read: 1,
        heard: HashMap::new(),
        applied,
        last_snapshot: applied,
        snapshot_bytes,
        snapshot_every: config.snapshot_every.max(1),
        known_leader: (None, 0),
        removed: false,
        forced_upto,
    };
    let thread = std::thread::Builder::new()
        .name(format!("raft-{}", config.node_id))
        .spawn(move || {
            let run = std::panic::AssertUnwindSafe(|| runner.run(rx));
            if std::panic::catch_unwind(run).is_err() {
                // raft-rs panics on what it cannot go on from (e.g. a message that contradicts
                // this node's log). A controller without its Raft node must not keep serving:
                // exit, so the service manager restarts it from what is durably on disk.
                tracing::error!("the raft node panicked; the controller exits");
                std::process::exit(70);
            }
        })
        .map_err(StartError::Spawn)?;
    Ok(Started {
        inputs,
        state,
        applied: applied_rx,
        status: status_rx,
        thread,
        storage,
        identity,
    })
}

/// Who proposed an entry: the node, and which start of its process (numbers restart with the
/// process, and an entry its previous life proposed may commit after the restart: it must never
/// be taken for a new proposal with the same number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Proposer {
    node: u64,
    boot: u64,
}

/// The ID carried in a proposed entry's context: its proposer, and its number there.
fn proposal_context(proposer: Proposer, seq: u64) -> Vec<u8> {
    let mut context = Vec::with_capacity(24);
    context.extend_from_slice(&proposer.node.to_le_bytes());
    context.extend_from_slice(&proposer.boot.to_le_bytes());
    context.extend_from_slice(&seq.to_le_bytes());
    context
}

fn parse_context(context: &[u8]) -> Option<(Proposer, u64)> {
    let word = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(
            context.get(at..at + 8)?.try_into().ok()?,
        ))
    };
    let proposer = Proposer {
        node: word(0)?,
        boot: word(8)?,
    };
    Some((proposer, word(16)?))
}

struct Runner {
    id: u64,
    node: RawNode<DurableStorage>,
    storage: DurableStorage,
    transport: Arc<dyn Transport>,
    state: Arc<RwLock<State>>,
    applied_tx: watch::Sender<u64>,
    notices: broadcast::Sender<Arc<Applied>>,
    status: watch::Sender<RaftStatus>,
    /// Proposals waiting for their entry, by sequence number.
    proposals: HashMap<u64, ProposeReply>,
    /// Membership changes waiting for their entry, by sequence number.
    member_changes: HashMap<u64, MemberReply>,
    /// This node's proposals as leader: log index -> (term, sequence number).
    placed: BTreeMap<u64, (u64, u64)>,
    /// This node in this start of its process, as its proposals name it.
    proposer: Proposer,
    next_proposal: u64,
    /// Reads that arrived this round, not yet asked for.
    reads_new: Vec<ReadReply>,
    /// ReadIndex requests in flight, by context: the ticks they have waited, and their reads.
    reads_asked: HashMap<u64, (u32, Vec<ReadReply>)>,
    next_read: u64,
    /// When a message from each peer last arrived.
    heard: HashMap<u64, Instant>,
    applied: u64,
    last_snapshot: u64,
    /// The size of the latest snapshot, for the status.
    snapshot_bytes: u64,
    snapshot_every: u64,
    /// The leader and term last announced to subscribers.
    known_leader: (Option<u64>, u64),
    /// This node applied its own removal from the group.
    removed: bool,
    /// With `force_new_cluster`: the last log index of the lost cluster. Its configuration
    /// changes, replayed, do not change this one-node group's configuration.
    forced_upto: u64,
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
                // A storage failure or an entry this node cannot apply leaves it unable to go
                // on safely: stop (never skip an entry: the node would diverge from its peers),
                // so a restart recovers from what is durably on disk, or an upgrade helps.
                let reason = error_chain(&e);
                tracing::error!(error = %reason, "the raft node cannot go on; stopping it");
                self.status.send_modify(|s| s.halted = Some(reason));
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
                self.heard.insert(message.from, Instant::now());
                if let Err(e) = self.node.step(*message) {
                    tracing::debug!(error = %e, "raft message refused");
                }
            }
            Input::Unreachable(id) => self.node.report_unreachable(id),
            Input::SnapshotStatus(id, delivered) => {
                let status = if delivered {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.node.report_snapshot(id, status);
            }
            Input::ChangeMembers(change, reply) => self.change_members(change, reply),
            Input::Shutdown => return false,
        }
        true
    }

    fn next_seq(&mut self) -> u64 {
        let seq = self.next_proposal;
        self.next_proposal += 1;
        seq
    }

    fn propose(&mut self, command: Command, reply: ProposeReply) {
        if self.removed {
            let _ = reply.send(Err(ReplicaError::Removed));
            return;
        }
        if self.node.raft.leader_id == raft::INVALID_ID {
            let _ = reply.send(Err(ReplicaError::NoLeader));
            return;
        }
        let data = codec::encode(&command);
        let seq = self.next_seq();
        let before = self.node.raft.raft_log.last_index();
        match self
            .node
            .propose(proposal_context(self.proposer, seq), data)
        {
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

    /// Proposes a membership change on the leader, after checking it against the current
    /// configuration (raft-rs would silently turn a second pending change into a no-op).
    fn change_members(&mut self, change: MemberChange, reply: MemberReply) {
        let raft = &self.node.raft;
        if raft.state != StateRole::Leader {
            let _ = reply.send(Err(match raft.leader_id {
                raft::INVALID_ID => MembershipError::NoLeader,
                leader => MembershipError::NotLeader { leader },
            }));
            return;
        }
        if raft.pending_conf_index > raft.raft_log.applied {
            let _ = reply.send(Err(MembershipError::ChangePending));
            return;
        }
        let conf = raft.prs().conf().to_conf_state();
        if let Err(e) = membership::check(&change, &conf) {
            let _ = reply.send(Err(e));
            return;
        }
        let seq = self.next_seq();
        let before = self.node.raft.raft_log.last_index();
        let cc = membership::conf_change(&change);
        match self
            .node
            .propose_conf_change(proposal_context(self.proposer, seq), cc)
        {
            Ok(()) if self.node.raft.raft_log.last_index() > before => {
                let index = self.node.raft.raft_log.last_index();
                self.placed.insert(index, (self.node.raft.term, seq));
                self.member_changes.insert(seq, reply);
                tracing::info!(?change, index, "membership change proposed");
            }
            Ok(()) | Err(raft::Error::ProposalDropped) => {
                let _ = reply.send(Err(MembershipError::NoLeader));
            }
            Err(e) => {
                tracing::warn!(error = %e, "membership change refused");
                let _ = reply.send(Err(MembershipError::NoLeader));
            }
        }
    }

    /// Sends one ReadIndex request for the reads that arrived this round.
    fn ask_reads(&mut self) {
        if self.reads_new.is_empty() {
            return;
        }
        if self.removed {
            for reply in self.reads_new.drain(..) {
                let _ = reply.send(Err(ReplicaError::Removed));
            }
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
        self.member_changes.retain(|_, reply| !reply.is_closed());
        self.publish_status();
    }

    fn on_ready(&mut self) -> Result<(), StartError> {
        if !self.node.has_ready() {
            return Ok(());
        }
        let mut ready = self.node.ready();
        self.send(ready.take_messages());
        if !ready.snapshot().is_empty() {
            self.install_snapshot(ready.snapshot().clone())?;
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

    /// Hands messages to the transport; it reports back whether a snapshot arrived
    /// ([`Input::SnapshotStatus`]), until then the peer gets no more entries.
    fn send(&mut self, messages: Vec<Message>) {
        for message in messages {
            self.transport.send(message);
        }
    }

    /// Replaces this node's state with a snapshot the leader sent (this node fell behind the
    /// leader's compacted log).
    fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StartError> {
        let index = snapshot.get_metadata().index;
        let state = codec::decode::<State>(&snapshot.data)?;
        self.snapshot_bytes = snapshot.data.len() as u64;
        self.storage.install_snapshot(&snapshot)?;
        *self.state.write().expect("state lock") = state;
        tracing::info!(index, "installed a snapshot from the leader");
        self.applied = index;
        self.last_snapshot = index;
        self.placed.retain(|&i, _| i > index);
        // Proposals forwarded from here may be inside the snapshot: their outcome is unknown.
        for (_, reply) in self.proposals.drain() {
            let _ = reply.send(Err(ReplicaError::OutcomeUnknown));
        }
        for (_, reply) in self.member_changes.drain() {
            let _ = reply.send(Err(ReplicaError::OutcomeUnknown.into()));
        }
        self.applied_tx.send_replace(index);
        let hosts = self
            .state
            .read()
            .expect("state lock")
            .hosts
            .keys()
            .cloned()
            .collect();
        let _ = self.notices.send(Arc::new(Applied {
            index,
            events: Vec::new(),
            hosts,
            reset: true,
            times: Default::default(),
        }));
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), StartError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut round = Applied::default();
        for entry in entries {
            self.supersede_before(&entry);
            let seq = parse_context(&entry.context)
                .filter(|(proposer, _)| *proposer == self.proposer)
                .map(|(_, seq)| seq);
            match entry.get_entry_type() {
                EntryType::EntryConfChangeV2 => {
                    self.applied = entry.index;
                    self.apply_conf_change(&entry, seq, &mut round)?;
                    continue;
                }
                EntryType::EntryConfChange => {
                    // This cluster proposes only V2 changes.
                    self.applied = entry.index;
                    tracing::error!(index = entry.index, "a v1 configuration change ignored");
                    continue;
                }
                EntryType::EntryNormal => {}
            }
            if entry.data.is_empty() {
                // The empty entry a new leader appends.
                self.applied = entry.index;
                continue;
            }
            // An entry this node cannot read (written by a newer state machine, or damaged)
            // stops it: skipping would make its state differ from its peers'.
            let command =
                codec::decode::<Command>(&entry.data).map_err(|source| StartError::Entry {
                    index: entry.index,
                    source,
                })?;
            self.applied = entry.index;
            let waiting = seq.and_then(|seq| self.proposals.remove(&seq));
            let (result, effects) = self
                .state
                .write()
                .expect("state lock")
                .apply_with_effects(command);
            round
                .events
                .extend(effects.events.into_iter().map(|e| (entry.index, e)));
            round.hosts.extend(effects.hosts);
            if let Some(at_ms) = effects.at_ms {
                round.times.insert(entry.index, at_ms);
            }
            if let Some(reply) = waiting {
                // Whoever hears its change was applied sees the applied index include it.
                self.applied_tx.send_replace(self.applied);
                let _ = reply.send(Ok(result));
            }
        }
        round.index = self.applied;
        self.applied_tx.send_replace(self.applied);
        // No subscriber is fine: nobody listens yet.
        let _ = self.notices.send(Arc::new(round));
        if self.applied - self.last_snapshot >= self.snapshot_every {
            self.take_snapshot()?;
        }
        Ok(())
    }

    /// Saves the state as of the applied index and compacts the log up to it.
    fn take_snapshot(&mut self) -> Result<(), StartError> {
        let data = codec::encode(&*self.state.read().expect("state lock"));
        self.snapshot_bytes = data.len() as u64;
        self.storage.save_snapshot(self.applied, data)?;
        self.last_snapshot = self.applied;
        Ok(())
    }

    fn apply_conf_change(
        &mut self,
        entry: &Entry,
        seq: Option<u64>,
        round: &mut Applied,
    ) -> Result<(), StartError> {
        let waiting = seq.and_then(|seq| self.member_changes.remove(&seq));
        let mut cc = ConfChangeV2::default();
        // A damaged change stops the node like a damaged command: skipping it would leave
        // this node with another configuration than its peers.
        cc.merge_from_bytes(&entry.data)
            .map_err(|source| StartError::ConfChange {
                index: entry.index,
                source,
            })?;
        let change = membership::from_conf_change(&cc).map_err(|source| StartError::Entry {
            index: entry.index,
            source,
        })?;
        if entry.index <= self.forced_upto {
            // A change of the cluster this node was forced out of: its members are gone.
            if let Some(change) = change {
                self.state
                    .write()
                    .expect("state lock")
                    .apply_member_change(&change);
            }
            tracing::info!(
                index = entry.index,
                "a configuration change of the lost cluster replayed into the state only"
            );
            if let Some(reply) = waiting {
                let _ = reply.send(Err(MembershipError::NoLeader));
            }
            return Ok(());
        }
        match self.node.apply_conf_change(&cc) {
            Ok(conf) => {
                self.storage.set_conf_state(&conf)?;
                if let Some(change) = change {
                    let effects = self
                        .state
                        .write()
                        .expect("state lock")
                        .apply_member_change(&change);
                    round
                        .events
                        .extend(effects.events.into_iter().map(|e| (entry.index, e)));
                    if matches!(change, MemberChange::Remove { id } if id == self.id) {
                        tracing::warn!("this node was removed from the cluster");
                        self.removed = true;
                        for (_, reply) in self.proposals.drain() {
                            let _ = reply.send(Err(ReplicaError::Removed));
                        }
                    }
                    if matches!(change, MemberChange::AddLearner { .. }) {
                        // A joining node starts from a snapshot (raft-rs installs only one
                        // whose configuration names it): make one that does, now.
                        self.take_snapshot()?;
                    }
                }
                tracing::info!(index = entry.index, voters = ?conf.voters, learners = ?conf.learners, "configuration changed");
                // Whoever hears the change is applied sees the new configuration in the status.
                self.publish_status();
                if let Some(reply) = waiting {
                    let _ = reply.send(Ok(()));
                }
            }
            Err(e) => {
                // Every replica refuses the same change alike.
                tracing::error!(index = entry.index, error = %e, "configuration change refused");
                if let Some(reply) = waiting {
                    let _ = reply.send(Err(MembershipError::NoLeader));
                }
            }
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
                && parse_context(&entry.context) == Some((self.proposer, seq));
            if !ours {
                if let Some(reply) = self.proposals.remove(&seq) {
                    let _ = reply.send(Err(ReplicaError::Superseded));
                }
                if let Some(reply) = self.member_changes.remove(&seq) {
                    let _ = reply.send(Err(ReplicaError::Superseded.into()));
                }
            }
        }
    }

    fn publish_status(&mut self) {
        let raft = &self.node.raft;
        let leader = (raft.leader_id != raft::INVALID_ID).then_some(raft.leader_id);
        let conf = raft.prs().conf().to_conf_state();
        let peers = if raft.state == StateRole::Leader {
            let mut peers: Vec<PeerProgress> = raft
                .prs()
                .iter()
                .filter(|(id, _)| **id != self.id)
                .map(|(id, p)| PeerProgress {
                    id: *id,
                    matched: p.matched,
                    recent_active: p.recent_active,
                    last_heard_ms: self.heard.get(id).map(|at| at.elapsed().as_millis() as u64),
                })
                .collect();
            peers.sort_by_key(|p| p.id);
            peers
        } else {
            Vec::new()
        };
        let next = RaftStatus {
            node_id: self.id,
            leader,
            term: raft.term,
            commit_index: raft.raft_log.committed,
            applied_index: self.applied,
            last_index: raft.raft_log.last_index(),
            voters: conf.voters,
            learners: conf.learners,
            peers,
            halted: None,
            snapshot_bytes: self.snapshot_bytes,
        };
        let term = next.term;
        self.status.send_if_modified(|status| {
            let changed = *status != next;
            *status = next;
            changed
        });
        if (leader, term) != self.known_leader {
            let lost = self.known_leader.0 == Some(self.id) && leader != Some(self.id);
            self.known_leader = (leader, term);
            tracing::info!(?leader, term, "raft leader changed");
            if lost {
                // Reads asked of this node as leader will not be confirmed any more.
                for (_, (_, reads)) in self.reads_asked.drain() {
                    self.reads_new.extend(reads);
                }
            }
            let _ = self.notices.send(Arc::new(Applied {
                index: self.applied,
                events: vec![(self.applied, Event::LeaderChanged { leader, term })],
                hosts: Default::default(),
                reset: false,
                times: Default::default(),
            }));
        }
    }

    fn fail_all(&mut self, error: ReplicaError) {
        for (_, reply) in self.proposals.drain() {
            let _ = reply.send(Err(error.clone()));
        }
        for (_, reply) in self.member_changes.drain() {
            let _ = reply.send(Err(error.clone().into()));
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
