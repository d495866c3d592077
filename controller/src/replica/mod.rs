//! The replicated core as the rest of the controller sees it. [`Replica`] is the one seam:
//! propose a [`Command`] and get its typed outcome, read the [`State`] at a stated
//! [`Consistency`], and subscribe to what was applied (every applied index with the typed
//! events `State::apply` produced and the hosts whose desired state may have changed).
//! Everything about Raft (the node loop, durable storage, ReadIndex, matching proposals to
//! committed entries, peers) stays behind it.

mod logger;
pub mod membership;
mod node;
pub mod storage;
pub mod transport;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, RwLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{broadcast, oneshot, watch};

use crate::codec;
use crate::state::{Command, Event, Outcome, Rejection, State};
pub use membership::{MemberChange, MembershipError};
pub use storage::{Identity, StorageError};
pub use transport::{NoPeers, Transport};

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Sees every change acknowledged anywhere before the read began (Raft ReadIndex: the
    /// leader confirms it still leads, and this node waits until it has applied that far).
    Linearizable,
    /// Sees at least this node's state at the given applied index: a request's reads after
    /// its first linearizable one (its authentication, [`crate::users::Caller::reads`]) need
    /// no ReadIndex round of their own, as this node's state only moves forward.
    AtLeast(u64),
    /// This node's applied state as it is; may lag the leader. Only where asked for.
    Stale,
}

/// Why the replicated core could not serve a request. Every variant is transient: the same
/// request may succeed later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaError {
    #[error("no Raft leader is available; retry shortly")]
    NoLeader,
    #[error("leadership changed before the change committed; retry")]
    Superseded,
    #[error("no quorum committed the change within {0:?}: it may or may not have been made; retry (a create with the same idempotency key is not repeated)")]
    ProposalTimeout(Duration),
    #[error("no quorum confirmed the read within {0:?}; retry shortly")]
    ReadTimeout(Duration),
    #[error("this node caught up from a snapshot past the change: it may or may not have been made; retry (a create with the same idempotency key is not repeated)")]
    OutcomeUnknown,
    #[error("this controller node was removed from the cluster; use another node")]
    Removed,
    #[error("the Raft node has stopped")]
    Stopped,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("raft")]
    Raft(#[from] raft::Error),
    #[error("state machine snapshot")]
    Codec(#[from] codec::CodecError),
    #[error("log entry {index} cannot be applied")]
    Entry {
        index: u64,
        #[source]
        source: codec::CodecError,
    },
    #[error("log entry {index} is a damaged configuration change")]
    ConfChange {
        index: u64,
        #[source]
        source: protobuf::ProtobufError,
    },
    #[error("starting the raft thread")]
    Spawn(#[source] std::io::Error),
    #[error("--force-new-cluster needs this node's existing store; this one is empty")]
    NothingToRecover,
}

/// Settings of this node's Raft group.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub node_id: u64,
    /// The voters of a new group: `[node_id]` to start a cluster, none to join one (the node
    /// then waits for a leader to add it).
    pub voters: Vec<u64>,
    /// The redb file holding the log, the hard state and snapshots.
    pub path: PathBuf,
    /// Take a state-machine snapshot (and compact the log) after this many applied entries.
    pub snapshot_every: u64,
    /// How long a proposal may wait to be committed and applied.
    pub propose_timeout: Duration,
    /// How long a linearizable read may wait for the leader's confirmation.
    pub read_timeout: Duration,
    /// Recovery of a cluster that lost its majority for good: this node's existing store
    /// becomes a one-node group (this node its only voter) and it elects itself.
    pub force_new_cluster: bool,
}

impl ReplicaConfig {
    /// A single-voter group at `path` with the default timeouts.
    pub fn single(node_id: u64, path: PathBuf, snapshot_every: u64) -> Self {
        Self {
            node_id,
            voters: vec![node_id],
            path,
            snapshot_every,
            propose_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
            force_new_cluster: false,
        }
    }
}

/// What this node knows about the group, for `GET /api/v1/cluster`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftStatus {
    pub node_id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    /// Index of the last entry in this node's log.
    pub last_index: u64,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// On the leader: how far each other member has replicated.
    pub peers: Vec<PeerProgress>,
    /// Why the node stopped, if it met something it cannot go on from (a log entry it cannot
    /// apply, a storage failure). A node that stopped serves nothing.
    pub halted: Option<String>,
    /// The size of this node's latest state-machine snapshot (0: none yet).
    pub snapshot_bytes: u64,
}

/// The leader's view of one peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerProgress {
    pub id: u64,
    /// The highest log index known to be on the peer.
    pub matched: u64,
    /// Whether the peer answered within the last election timeout.
    pub recent_active: bool,
    /// Milliseconds since a message from it last arrived, if one ever did.
    pub last_heard_ms: Option<u64>,
}

/// What one round of the node applied: the last index, each entry's events (with its index),
/// and the hosts whose desired state may have changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub index: u64,
    pub events: Vec<(u64, Event)>,
    pub hosts: BTreeSet<String>,
    /// The state was replaced by a snapshot from the leader: anything may have changed, and
    /// the events of the entries it covers are not known here.
    pub reset: bool,
    /// When each entry's command was asked for, for the entries that say (by index): their
    /// events' time, the same on every node.
    pub times: std::collections::BTreeMap<u64, u64>,
}

type ProposeReply = oneshot::Sender<Result<Result<Outcome, Rejection>, ReplicaError>>;
type ReadReply = oneshot::Sender<Result<u64, ReplicaError>>;
type MemberReply = oneshot::Sender<Result<(), MembershipError>>;

enum Input {
    Propose(Box<Command>, ProposeReply),
    /// A linearizable read wants the index it must wait for.
    ReadIndex(ReadReply),
    /// A message from a peer.
    Step(Box<raft::prelude::Message>),
    /// The transport could not reach a peer.
    Unreachable(u64),
    /// Whether a snapshot sent to a peer arrived (written and fsynced there).
    SnapshotStatus(u64, bool),
    ChangeMembers(MemberChange, MemberReply),
    Shutdown,
}

/// A cheap, cloneable handle on the replicated core.
#[derive(Clone)]
pub struct Replica {
    inputs: mpsc::Sender<Input>,
    state: Arc<RwLock<State>>,
    applied: watch::Receiver<u64>,
    notices: broadcast::Sender<Arc<Applied>>,
    status: watch::Receiver<RaftStatus>,
    propose_timeout: Duration,
    read_timeout: Duration,
    thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
    storage: storage::DurableStorage,
    identity: Arc<RwLock<Identity>>,
    proposal_seconds: Histogram,
}

/// How many applied rounds a slow subscriber may fall behind before it is told it lagged.
const NOTICE_BUFFER: usize = 4096;

impl Replica {
    /// A group of one: [`Replica::start_with`] without peers.
    pub fn start(config: ReplicaConfig) -> Result<Self, StartError> {
        Self::start_with(config, Arc::new(NoPeers))
    }

    /// Opens the store, rebuilds the state machine from the latest snapshot (replaying the log
    /// after it as raft-rs hands the committed entries back), and starts the node's thread,
    /// which sends its messages to peers through `transport`.
    pub fn start_with(
        config: ReplicaConfig,
        transport: Arc<dyn Transport>,
    ) -> Result<Self, StartError> {
        let (notices, _) = broadcast::channel(NOTICE_BUFFER);
        let started = node::start(&config, notices.clone(), transport)?;
        Ok(Self {
            inputs: started.inputs,
            state: started.state,
            applied: started.applied,
            notices,
            status: started.status,
            propose_timeout: config.propose_timeout,
            read_timeout: config.read_timeout,
            thread: Arc::new(std::sync::Mutex::new(Some(started.thread))),
            storage: started.storage,
            identity: Arc::new(RwLock::new(started.identity)),
            proposal_seconds: crate::metrics::latency_histogram(),
        })
    }

    /// Proposes `command` and waits until it is committed and applied on this node: the
    /// state machine's outcome or rejection, or why there is none.
    pub async fn propose(
        &self,
        command: Command,
    ) -> Result<Result<Outcome, Rejection>, ReplicaError> {
        let (tx, rx) = oneshot::channel();
        let started = std::time::Instant::now();
        self.inputs
            .send(Input::Propose(Box::new(command), tx))
            .map_err(|_| ReplicaError::Stopped)?;
        let answer = match tokio::time::timeout(self.propose_timeout, rx).await {
            Ok(answer) => answer.map_err(|_| ReplicaError::Stopped)?,
            Err(_) => Err(ReplicaError::ProposalTimeout(self.propose_timeout)),
        };
        // Committed and applied (accepted or refused by the state machine) on this node.
        if answer.is_ok() {
            self.proposal_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        answer
    }

    /// How long proposals took to be committed and applied here, in seconds.
    pub fn proposal_seconds(&self) -> Histogram {
        self.proposal_seconds.clone()
    }

    /// Runs `f` on the state, as fresh as `consistency` asks.
    pub async fn read<T>(
        &self,
        consistency: Consistency,
        f: impl FnOnce(&State) -> T,
    ) -> Result<T, ReplicaError> {
        Ok(self.read_seen(consistency, f).await?.0)
    }

    /// As [`Replica::read`], also giving the applied index the state was at least at when `f`
    /// saw it (for [`Consistency::AtLeast`] reads that follow).
    pub async fn read_seen<T>(
        &self,
        consistency: Consistency,
        f: impl FnOnce(&State) -> T,
    ) -> Result<(T, u64), ReplicaError> {
        let deadline = Instant::now() + self.read_timeout;
        let index = match consistency {
            Consistency::Linearizable => {
                let (tx, rx) = oneshot::channel();
                self.inputs
                    .send(Input::ReadIndex(tx))
                    .map_err(|_| ReplicaError::Stopped)?;
                match tokio::time::timeout(self.read_timeout, rx).await {
                    Ok(answer) => Some(answer.map_err(|_| ReplicaError::Stopped)??),
                    Err(_) => return Err(ReplicaError::ReadTimeout(self.read_timeout)),
                }
            }
            Consistency::AtLeast(index) => Some(index),
            Consistency::Stale => None,
        };
        let mut applied = self.applied.clone();
        if let Some(index) = index {
            let left = deadline.saturating_duration_since(Instant::now());
            let caught_up = async { applied.wait_for(|&a| a >= index).await.map(|_| ()) };
            match tokio::time::timeout(left, caught_up).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(ReplicaError::Stopped),
                Err(_) => return Err(ReplicaError::ReadTimeout(self.read_timeout)),
            }
        }
        // The index is published after the state has it: the state is at least this far.
        let seen = *applied.borrow();
        Ok((f(&self.state.read().expect("state lock")), seen))
    }

    /// Runs `f` on this node's applied state as it is, without waiting (what
    /// [`Consistency::Stale`] reads, for callers that cannot await).
    pub fn stale<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.read().expect("state lock"))
    }

    /// Hands a peer's message to the node.
    pub fn step(&self, message: raft::prelude::Message) {
        let _ = self.inputs.send(Input::Step(Box::new(message)));
    }

    /// Tells the node that the transport could not reach peer `id`.
    pub fn report_unreachable(&self, id: u64) {
        let _ = self.inputs.send(Input::Unreachable(id));
    }

    /// Tells the node whether the snapshot it sent to peer `id` arrived.
    pub fn report_snapshot(&self, id: u64, delivered: bool) {
        let _ = self.inputs.send(Input::SnapshotStatus(id, delivered));
    }

    /// This node's store: its incarnation and the cluster it belongs to.
    pub fn identity(&self) -> Identity {
        self.identity.read().expect("identity lock").clone()
    }

    /// Makes `cluster_id` this node's cluster (durably) unless it belongs to another one.
    /// Blocks on an fsync.
    pub fn adopt_cluster(&self, cluster_id: &str) -> Result<Identity, StorageError> {
        let mut identity = self.identity.write().expect("identity lock");
        let adopted = self.storage.adopt_cluster(&identity, cluster_id)?;
        *identity = adopted.clone();
        Ok(adopted)
    }

    /// Changes the group's membership (on the leader, one change at a time) and waits until
    /// the change is applied here.
    pub async fn change_membership(&self, change: MemberChange) -> Result<(), MembershipError> {
        let (tx, rx) = oneshot::channel();
        self.inputs
            .send(Input::ChangeMembers(change, tx))
            .map_err(|_| ReplicaError::Stopped)?;
        match tokio::time::timeout(self.propose_timeout, rx).await {
            Ok(answer) => answer.map_err(|_| ReplicaError::Stopped)?,
            Err(_) => Err(ReplicaError::ProposalTimeout(self.propose_timeout).into()),
        }
    }

    /// Waits until this node's status satisfies `f` (or `timeout` passes).
    pub async fn wait_for_status(
        &self,
        timeout: Duration,
        f: impl Fn(&RaftStatus) -> bool,
    ) -> bool {
        let mut status = self.status.clone();
        let reached = async { status.wait_for(|s| f(s)).await.map(|_| ()) };
        matches!(tokio::time::timeout(timeout, reached).await, Ok(Ok(())))
    }

    /// Every round of applied entries from now on, and leader changes
    /// ([`Event::LeaderChanged`]). A receiver that falls [`NOTICE_BUFFER`] rounds behind gets
    /// `Lagged` and should treat everything as changed.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Applied>> {
        self.notices.subscribe()
    }

    /// The index applied on this node so far.
    pub fn applied_index(&self) -> u64 {
        *self.applied.borrow()
    }

    pub fn status(&self) -> RaftStatus {
        self.status.borrow().clone()
    }

    /// Whether this node leads the group now.
    pub fn is_leader(&self) -> bool {
        let status = self.status();
        status.leader == Some(status.node_id)
    }

    /// Waits until the node halts, and answers why (see [`RaftStatus::halted`]).
    pub async fn halted(&self) -> String {
        let mut status = self.status.clone();
        let reason = match status.wait_for(|s| s.halted.is_some()).await {
            Ok(s) => s.halted.clone().unwrap_or_default(),
            Err(_) => "the raft node has stopped".to_owned(),
        };
        reason
    }

    /// Waits until this node is leader (or `timeout` passes).
    pub async fn wait_for_leader(&self, timeout: Duration) -> bool {
        self.wait_for_status(timeout, |s| s.leader == Some(s.node_id))
            .await
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

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
