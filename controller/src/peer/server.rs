//! The receiving end of the peer links: checks who calls, steps Raft messages into the
//! replica, takes snapshots to disk before handing them over.

use std::path::PathBuf;

use protobuf::Message as _;
use raft::prelude::Message;
use tonic::{Request, Response, Status, Streaming};

use super::generated::peer_server::{Peer, PeerServer};
use super::snapshot::Receiving;
use super::wire::{self, Done, JoinReply, JoinRequest, RaftFrame, SnapshotChunk};
use super::{Directory, Me};
use crate::pki::{holder_of, Holder};
use crate::replica::{Consistency, Replica, StorageError};

/// The largest gRPC message a peer may send (a Raft append is bounded at 1 MiB per message
/// by the node, but one entry may be larger).
const MAX_MESSAGE: usize = 64 << 20;

pub struct PeerService {
    me: Me,
    replica: Replica,
    directory: Directory,
    /// Where snapshots from the leader are written before they are installed.
    snapshot_dir: PathBuf,
}

impl PeerService {
    pub fn new(me: Me, replica: Replica, directory: Directory, snapshot_dir: PathBuf) -> Self {
        Self {
            me,
            replica,
            directory,
            snapshot_dir,
        }
    }

    /// The tonic service, ready for `Server::add_service`.
    pub fn into_server(self) -> PeerServer<Self> {
        PeerServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    /// Checks the caller's cluster, its node ID and its store's incarnation; answers its ID.
    /// A refusal is logged here as well as told to the caller.
    async fn caller<T>(&self, request: &Request<T>) -> Result<u64, Status> {
        let checked = self.check_caller(request).await;
        if let Err(status) = &checked {
            let from = request
                .metadata()
                .get(wire::FROM)
                .and_then(|v| v.to_str().ok());
            tracing::warn!(from, reason = status.message(), "peer call refused");
        }
        checked
    }

    /// Over TLS, the caller's certificate must be a controller's of the site CA (a host's
    /// is refused) and, when `from` is given, node `from`'s.
    fn check_certificate<T>(&self, request: &Request<T>, from: Option<u64>) -> Result<(), Status> {
        if self.me.tls.is_none() {
            return Ok(());
        }
        let certificate = request
            .peer_certs()
            .and_then(|chain| chain.first().map(|c| c.to_vec()))
            .ok_or_else(|| Status::unauthenticated("a peer must present its certificate"))?;
        match (holder_of(&certificate), from) {
            (Some(Holder::Controller(id)), Some(from)) if id == from => Ok(()),
            (Some(Holder::Controller(_)), None) => Ok(()),
            (Some(Holder::Controller(id)), Some(from)) => Err(Status::permission_denied(format!(
                "the caller says it is node {from} but holds node {id}'s certificate"
            ))),
            _ => Err(Status::permission_denied(
                "the caller's certificate is not a controller's of this site",
            )),
        }
    }

    async fn check_caller<T>(&self, request: &Request<T>) -> Result<u64, Status> {
        let meta = request.metadata();
        let text = |key: &str| -> Result<String, Status> {
            meta.get(key)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .ok_or_else(|| Status::invalid_argument(format!("missing {key}")))
        };
        let number = |key: &str| -> Result<u64, Status> {
            text(key)?
                .parse()
                .map_err(|_| Status::invalid_argument(format!("{key} is not a node ID")))
        };
        let (from, to) = (number(wire::FROM)?, number(wire::TO)?);
        self.check_certificate(request, Some(from))?;
        if to != self.me.node_id {
            return Err(Status::failed_precondition(format!(
                "this controller is node {}, not node {to}",
                self.me.node_id
            )));
        }
        let cluster = text(wire::CLUSTER)?;
        match self.replica.identity().cluster_id {
            Some(ours) if ours == cluster => {}
            Some(ours) => {
                return Err(Status::failed_precondition(format!(
                    "node {} belongs to cluster {ours}, not {cluster}",
                    self.me.node_id
                )))
            }
            None => {
                let me = self.me.node_id;
                return Err(Status::failed_precondition(format!(
                    "node {me} has no cluster: it is new or lost its disk; if it was a member, \
                     remove it (DELETE /api/v1/cluster/members/{me}) and add it again \
                     (POST /api/v1/cluster/members)"
                )));
            }
        }
        let status = self.replica.status();
        let member = |id: u64| status.voters.contains(&id) || status.learners.contains(&id);
        if member(self.me.node_id) && !member(from) {
            return Err(Status::failed_precondition(format!(
                "node {from} is not a member of this cluster (removed, or the cluster was \
                 formed again with --force-new-cluster): wipe its state directory, start it \
                 with join = true and add it again (POST /api/v1/cluster/members)"
            )));
        }
        if let Ok(meant) = text(wire::TO_INCARNATION) {
            let mine = self.replica.identity().incarnation;
            if meant != mine {
                let me = self.me.node_id;
                return Err(Status::failed_precondition(format!(
                    "node {me} has a new store ({mine}), not the one the cluster knows ({meant}): \
                     it lost its disk; remove it (DELETE /api/v1/cluster/members/{me}) and add \
                     it again (POST /api/v1/cluster/members)"
                )));
            }
        }
        let incarnation = text(wire::INCARNATION)?;
        let known = self
            .replica
            .read(Consistency::Stale, |s| {
                s.members.get(&from).map(|m| m.incarnation.clone())
            })
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        if let Some(known) = known.filter(|k| !k.is_empty()) {
            if known != incarnation {
                tracing::warn!(node = from, "a member came back with a new store: refused");
                return Err(Status::failed_precondition(format!(
                    "node {from} came back with an empty disk (store {incarnation}; the cluster \
                     knows node {from} as store {known}): remove it from the cluster \
                     (DELETE /api/v1/cluster/members/{from}) and add it again"
                )));
            }
        }
        if let Ok(address) = text(wire::FROM_ADDRESS) {
            self.directory.learn(from, &address);
        }
        Ok(from)
    }
}

fn refused(error: StorageError) -> Status {
    match error {
        StorageError::OtherCluster { .. } => Status::failed_precondition(error.to_string()),
        other => Status::internal(format!("{other}")),
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        if let Err(status) = self.check_certificate(&request, None) {
            tracing::warn!(reason = status.message(), "invitation refused");
            return Err(status);
        }
        let meta = request.metadata();
        let from_address = meta
            .get(wire::FROM_ADDRESS)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let from = meta
            .get(wire::FROM)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let join = request.into_inner();
        if join.node_id != self.me.node_id {
            return Err(Status::failed_precondition(format!(
                "this controller is node {}, not node {}",
                self.me.node_id, join.node_id
            )));
        }
        let replica = self.replica.clone();
        let cluster = join.cluster_id.clone();
        let identity = tokio::task::spawn_blocking(move || replica.adopt_cluster(&cluster))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(refused)?;
        if let (Some(from), Some(address)) = (from, from_address) {
            self.directory.learn(from, &address);
        }
        tracing::info!(cluster = %join.cluster_id, "invited to join the cluster");
        Ok(Response::new(JoinReply {
            node_id: self.me.node_id,
            incarnation: identity.incarnation,
        }))
    }

    async fn raft(&self, request: Request<Streaming<RaftFrame>>) -> Result<Response<Done>, Status> {
        let from = self.caller(&request).await?;
        let mut frames = request.into_inner();
        while let Some(frame) = frames.message().await? {
            let message = Message::parse_from_bytes(&frame.message)
                .map_err(|e| Status::invalid_argument(format!("raft message: {e}")))?;
            if message.from != from || message.to != self.me.node_id {
                return Err(Status::invalid_argument(format!(
                    "a message from {} to {} on the stream of node {from}",
                    message.from, message.to
                )));
            }
            self.replica.step(message);
        }
        Ok(Response::new(Done {}))
    }

    async fn snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<Done>, Status> {
        let from = self.caller(&request).await?;
        let mut chunks = request.into_inner();
        let first = chunks
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("an empty snapshot stream"))?;
        let mut receiving = Receiving::start(&self.snapshot_dir, from, &first)
            .await
            .map_err(|e| e.status())?;
        receiving.take(&first).await.map_err(|e| e.status())?;
        while let Some(chunk) = chunks.message().await? {
            receiving.take(&chunk).await.map_err(|e| e.status())?;
        }
        let message = receiving.finish().await.map_err(|e| e.status())?;
        if message.from != from || message.to != self.me.node_id {
            return Err(Status::invalid_argument("a snapshot for another node"));
        }
        tracing::info!(
            from,
            index = message.get_snapshot().get_metadata().index,
            bytes = message.get_snapshot().data.len(),
            "snapshot received and stored; installing"
        );
        self.replica.step(message);
        Ok(Response::new(Done {}))
    }
}
