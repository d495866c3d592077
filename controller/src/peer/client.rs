//! The sending end of the peer links: a task per peer holds one client stream to it and feeds
//! it the node's messages; snapshots go on calls of their own and are reported delivered only
//! once the peer has them on disk. Nothing here blocks the Raft thread: a full queue or a
//! dead link loses messages, which Raft tolerates, and the peer is reported unreachable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use super::generated::peer_client::PeerClient;
use super::snapshot;
use super::wire::{self, RaftFrame};
use super::{Directory, Me};
use crate::pki::tls::NodeTls;
use crate::replica::{Replica, Transport};

/// Messages queued for one peer before new ones are dropped.
const QUEUE: usize = 4096;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long to wait before calling a peer again after its link failed.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);
/// A snapshot call that has not finished in this long failed.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(120);

/// A channel to the peer listener at `address` (`host:port`): mutual TLS with this node's
/// certificate when `tls` is given, the peer's checked against the site CA and its address.
pub async fn connect(
    address: &str,
    tls: Option<&NodeTls>,
) -> Result<Channel, tonic::transport::Error> {
    let endpoint = match tls {
        Some(tls) => {
            use tonic::transport::{Certificate, ClientTlsConfig, Identity};
            let host = address
                .rsplit_once(':')
                .map_or(address, |(host, _)| host)
                .trim_start_matches('[')
                .trim_end_matches(']');
            Endpoint::from_shared(format!("https://{address}"))?.tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&tls.ca_pem))
                    .identity(Identity::from_pem(
                        &tls.node.certificate_pem,
                        &tls.node.key_pem,
                    ))
                    .domain_name(host),
            )?
        }
        None => Endpoint::from_shared(format!("http://{address}"))?,
    };
    endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(2))
        .connect()
        .await
}

/// Puts who is calling whom into a request's metadata.
pub fn stamp<T>(
    request: &mut tonic::Request<T>,
    me: &Me,
    incarnation: &str,
    cluster_id: &str,
    to: u64,
) {
    let meta = request.metadata_mut();
    let mut put = |key: &'static str, value: String| {
        if let Ok(value) = value.parse() {
            meta.insert(key, value);
        }
    };
    put(wire::CLUSTER, cluster_id.to_owned());
    put(wire::FROM, me.node_id.to_string());
    put(wire::INCARNATION, incarnation.to_owned());
    put(wire::FROM_ADDRESS, me.address.clone());
    put(wire::TO, to.to_string());
}

/// The replica's transport between processes. Build it, start the replica with it, then
/// [`GrpcTransport::bind`] the replica so peers' answers and link failures reach it.
#[derive(Clone)]
pub struct GrpcTransport {
    inner: Arc<Inner>,
}

struct Inner {
    me: Me,
    directory: Directory,
    runtime: tokio::runtime::Handle,
    replica: OnceLock<Replica>,
    queues: Mutex<HashMap<u64, mpsc::Sender<Queued>>>,
}

/// A message and the incarnation of the peer's store it was made for (empty if unknown).
struct Queued {
    message: Message,
    incarnation: String,
}

impl GrpcTransport {
    /// Must be called inside the tokio runtime the link tasks are to run on.
    pub fn new(me: Me, directory: Directory) -> Self {
        Self {
            inner: Arc::new(Inner {
                me,
                directory,
                runtime: tokio::runtime::Handle::current(),
                replica: OnceLock::new(),
                queues: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn bind(&self, replica: Replica) {
        let _ = self.inner.replica.set(replica);
    }

    fn queue(&self, to: u64) -> mpsc::Sender<Queued> {
        let mut queues = self.inner.queues.lock().expect("queues lock");
        if let Some(queue) = queues.get(&to).filter(|q| !q.is_closed()) {
            return queue.clone();
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        queues.insert(to, tx.clone());
        let inner = self.inner.clone();
        self.inner.runtime.spawn(link(inner, to, rx));
        tx
    }
}

impl Transport for GrpcTransport {
    fn send(&self, message: Message) {
        let to = message.to;
        if message.get_msg_type() == MessageType::MsgSnapshot {
            let inner = self.inner.clone();
            self.inner.runtime.spawn(send_snapshot(inner, message));
            return;
        }
        let incarnation = self
            .inner
            .replica()
            .map(|r| r.stale(|s| s.members.get(&to).map(|m| m.incarnation.clone())))
            .unwrap_or_default()
            .unwrap_or_default();
        let queued = Queued {
            message,
            incarnation,
        };
        if self.queue(to).try_send(queued).is_err() {
            tracing::debug!(to, "peer queue full: a raft message dropped");
            if let Some(replica) = self.inner.replica.get() {
                replica.report_unreachable(to);
            }
        }
    }
}

impl Inner {
    fn replica(&self) -> Option<&Replica> {
        self.replica.get()
    }

    fn unreachable(&self, to: u64) {
        if let Some(replica) = self.replica() {
            replica.report_unreachable(to);
        }
    }

    /// A request to `to` (whose store is `incarnation`, if known) with this node's identity
    /// on it, or None before it has a cluster.
    fn request<T>(&self, to: u64, incarnation: &str, body: T) -> Option<tonic::Request<T>> {
        let identity = self.replica()?.identity();
        let cluster = identity.cluster_id?;
        let mut request = tonic::Request::new(body);
        stamp(&mut request, &self.me, &identity.incarnation, &cluster, to);
        if let Ok(value) = incarnation.parse() {
            if !incarnation.is_empty() {
                request.metadata_mut().insert(wire::TO_INCARNATION, value);
            }
        }
        Some(request)
    }

    /// The incarnation of `to`'s store on record here (empty if unknown).
    fn incarnation_of(&self, to: u64) -> String {
        self.replica()
            .and_then(|r| r.stale(|s| s.members.get(&to).map(|m| m.incarnation.clone())))
            .unwrap_or_default()
    }

    async fn channel(&self, to: u64) -> Result<Channel, String> {
        let replica = self.replica().ok_or("the replica is not bound yet")?;
        let address = self
            .directory
            .address(replica, to)
            .await
            .ok_or_else(|| format!("no address known for node {to}"))?;
        connect(&address, self.me.tls.as_deref())
            .await
            .map_err(|e| format!("{address}: {}", crate::failure::error_chain(&e)))
    }
}

/// One peer's link: (re)connects and keeps a client stream open, feeding it from `queue`.
/// Messages made for another incarnation of the peer than the stream's are dropped: a node
/// that came back with a new store must never see what was meant for the old one.
async fn link(inner: Arc<Inner>, to: u64, mut queue: mpsc::Receiver<Queued>) {
    let mut backoff = RETRY_MIN;
    let mut last_error = String::new();
    // A message that showed the stream was for an earlier store; it opens the next one.
    let mut carried: Option<Queued> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match queue.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let channel = match inner.channel(to).await {
            Ok(channel) => channel,
            Err(e) => {
                if e != last_error {
                    tracing::info!(peer = to, error = %e, "peer unreachable");
                    last_error = e;
                }
                inner.unreachable(to);
                // What was queued meanwhile is stale by the time the link is back.
                while queue.try_recv().is_ok() {}
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_MAX);
                continue;
            }
        };
        let incarnation = inner.incarnation_of(to);
        let (frames, rx) = mpsc::channel::<RaftFrame>(QUEUE);
        let Some(request) = inner.request(
            to,
            &incarnation,
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ) else {
            tokio::time::sleep(backoff).await;
            continue;
        };
        let mut client = PeerClient::new(channel)
            .max_encoding_message_size(64 << 20)
            .max_decoding_message_size(64 << 20);
        let mut call = Box::pin(async move { client.raft(request).await });
        let mut pending = Some(first);
        let ended = loop {
            let queued = match pending.take() {
                Some(queued) => queued,
                None => tokio::select! {
                    next = queue.recv() => match next {
                        Some(queued) => queued,
                        None => return,
                    },
                    result = &mut call => break Some(result),
                },
            };
            if !queued.incarnation.is_empty() && queued.incarnation != incarnation {
                if queued.incarnation == inner.incarnation_of(to) {
                    // The peer was added again with a new store: a new stream for it.
                    carried = Some(queued);
                    break None;
                }
                tracing::debug!(
                    peer = to,
                    "a message for an earlier store of the peer dropped"
                );
                continue;
            }
            let frame = RaftFrame {
                message: queued
                    .message
                    .write_to_bytes()
                    .expect("a raft message encodes"),
            };
            if frames.send(frame).await.is_err() {
                break None;
            }
            backoff = RETRY_MIN;
        };
        if carried.is_some() {
            continue;
        }
        let reason = match &ended {
            Some(Err(status)) => format!("{}: {}", status.code(), status.message()),
            Some(Ok(_)) => "the peer closed the stream".to_owned(),
            None => "the stream broke".to_owned(),
        };
        if reason != last_error {
            if matches!(&ended, Some(Err(s)) if s.code() == tonic::Code::FailedPrecondition) {
                tracing::warn!(peer = to, reason = %reason, "peer refused this node's messages");
            } else {
                tracing::info!(peer = to, reason = %reason, "peer link lost");
            }
            last_error = reason;
        }
        inner.unreachable(to);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RETRY_MAX);
    }
}

async fn send_snapshot(inner: Arc<Inner>, message: Message) {
    let to = message.to;
    let index = message.get_snapshot().get_metadata().index;
    let result = async {
        let channel = inner.channel(to).await?;
        let chunks = snapshot::chunks(&message);
        let request = inner
            .request(to, &inner.incarnation_of(to), tokio_stream::iter(chunks))
            .ok_or("this node has no cluster yet")?;
        let mut client = PeerClient::new(channel)
            .max_encoding_message_size(64 << 20)
            .max_decoding_message_size(64 << 20);
        tokio::time::timeout(SNAPSHOT_TIMEOUT, client.snapshot(request))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|s| format!("{}: {}", s.code(), s.message()))?;
        Ok::<(), String>(())
    }
    .await;
    let delivered = result.is_ok();
    match result {
        Ok(()) => tracing::info!(peer = to, index, "snapshot delivered"),
        Err(e) => tracing::warn!(peer = to, index, error = %e, "snapshot not delivered"),
    }
    if let Some(replica) = inner.replica() {
        replica.report_snapshot(to, delivered);
    }
}
