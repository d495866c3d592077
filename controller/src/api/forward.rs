//! Any node answers: a request only the leader can serve well is passed to it as it came
//! (same method, path, headers and body) and its answer passed back. That is every write, so
//! the leader decides with one clock and one view of host liveness, and every agent and host
//! route, so heartbeats, long-polls and placement all meet at the leader. Reads stay on the
//! node that got them (linearizable through ReadIndex), except an instance's console (kept
//! in memory where the hosts push it: at the leader) and the cluster view: only the
//! leader knows every member's match index, lag and last contact, so a follower passes it on
//! while a leader is reachable and answers with what it knows itself when none is (when an
//! operator needs it most). A request forwarded once is never forwarded again: if leadership
//! moved meanwhile, it fails with 503 and the client retries.
//!
//! Forwarding is TLS with this node's certificate, so the leader knows the request came from a
//! controller and takes from it where the request really came from: the client's address and
//! the certificate its connection presented (a host's), in headers the leader honours only
//! from a controller.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::error_response;
use crate::pki::tls::PeerCertificate;
use crate::replica::{Consistency, Replica};

/// Set on a request one node forwarded to another (its value: the forwarding node's ID).
pub const FORWARDED_BY: HeaderName = HeaderName::from_static("x-stratus-forwarded-by");
/// On a forwarded request: the address the client connected from.
pub const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-stratus-forwarded-for");
/// On a forwarded request: the `Host` the client asked for (the node it reached).
pub const FORWARDED_HOST: HeaderName = HeaderName::from_static("x-stratus-forwarded-host");
/// On a forwarded request: the certificate the client's connection presented (base64 DER).
pub const FORWARDED_CERTIFICATE: HeaderName =
    HeaderName::from_static("x-stratus-forwarded-certificate");
/// Set on every answer: the ID of the node that served it.
pub const SERVED_BY: HeaderName = HeaderName::from_static("x-stratus-node");

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long an idle connection to the leader is kept for the next forwarded request: well
/// under the leader's idle timeout (75 s, `pki/tls.rs`).
const FORWARD_POOL_IDLE: Duration = Duration::from_secs(30);

/// Headers that belong to one connection, not to the request.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub struct Forwarder {
    replica: Replica,
    client: Client<HttpsConnector<HttpConnector>, Body>,
    scheme: &'static str,
}

impl Forwarder {
    /// Forwards over TLS with `tls` (a client configuration presenting this node's
    /// certificate); over plain HTTP without it (tests of plain links only).
    pub fn new(replica: Replica, tls: Option<rustls::ClientConfig>) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        connector.enforce_http(false);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let connector = match tls {
            Some(config) => builder.with_tls_config(config).https_only(),
            // Never used for https: it trusts nothing.
            None => builder
                .with_tls_config(
                    rustls::ClientConfig::builder_with_provider(crate::pki::tls::provider())
                        .with_safe_default_protocol_versions()
                        .expect("the provider supports the default versions")
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                )
                .https_or_http(),
        }
        .enable_http1()
        .wrap_connector(connector);
        Arc::new(Self {
            replica,
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(FORWARD_POOL_IDLE)
                .build(connector),
            scheme,
        })
    }
}

/// Whether only the leader should serve this request. An instance's console is kept where its
/// host pushes it, which the host routes make the leader.
fn needs_leader(method: &Method, path: &str) -> bool {
    let read = method == Method::GET || method == Method::HEAD;
    let console = path.starts_with("/api/v1/instances/") && path.ends_with("/console");
    !read || console || path == "/api/v1/hosts" || path.starts_with("/api/v1/hosts/")
}

/// Whether the leader answers this request best, but this node may answer it without one.
fn prefers_leader(method: &Method, path: &str) -> bool {
    let read = method == Method::GET || method == Method::HEAD;
    read && (path == "/api/v1/cluster" || path == "/api/v1/cluster/members")
}

fn unavailable(code: &str, message: String) -> Response {
    error_response(StatusCode::SERVICE_UNAVAILABLE, code, message)
}

/// The middleware: serves here, or passes the request to the leader.
pub async fn to_leader(
    State(forwarder): State<Arc<Forwarder>>,
    request: Request,
    next: Next,
) -> Response {
    let status = forwarder.replica.status();
    let me = status.node_id;
    let (method, path) = (request.method(), request.uri().path());
    let mut response = if status.leader == Some(me) {
        next.run(request).await
    } else if prefers_leader(method, path) {
        match status.leader {
            Some(leader) if !request.headers().contains_key(&FORWARDED_BY) => {
                // A read without a body: the same request can be served here if the leader
                // cannot be reached.
                let (parts, _) = request.into_parts();
                let here = Request::from_parts(parts.clone(), Body::empty());
                let answer = forwarder
                    .forward(me, leader, Request::from_parts(parts, Body::empty()))
                    .await;
                if answer.status() == StatusCode::SERVICE_UNAVAILABLE {
                    next.run(here).await
                } else {
                    answer
                }
            }
            _ => next.run(request).await,
        }
    } else if !needs_leader(method, path) {
        next.run(request).await
    } else if let Some(by) = request.headers().get(&FORWARDED_BY) {
        let by = by.to_str().unwrap_or("?").to_owned();
        unavailable(
            "no_leader",
            format!(
                "node {by} forwarded this request to node {me}, which is not the leader any \
                 more (leadership is moving); retry"
            ),
        )
    } else {
        match status.leader {
            None => unavailable(
                "no_leader",
                "no controller is leader now (an election is under way, or too few \
                 controllers are up to elect one); retry shortly"
                    .into(),
            ),
            Some(leader) => forwarder.forward(me, leader, request).await,
        }
    };
    if let Ok(value) = HeaderValue::from_str(&me.to_string()) {
        response.headers_mut().entry(SERVED_BY).or_insert(value);
    }
    response
}

impl Forwarder {
    /// The leader's API address as this node has it; a node that joined a moment ago may not
    /// have applied the leader's record yet, and then waits until it has (a linearizable read).
    async fn leader_address(&self, leader: u64) -> Option<String> {
        for consistency in [Consistency::Stale, Consistency::Linearizable] {
            let address = self
                .replica
                .read(consistency, |s| {
                    s.members.get(&leader).map(|m| m.api_address.clone())
                })
                .await
                .ok()
                .flatten()
                .filter(|a| !a.is_empty());
            if address.is_some() {
                return address;
            }
        }
        None
    }

    async fn forward(&self, me: u64, leader: u64, request: Request) -> Response {
        let address = self.leader_address(leader).await;
        let Some(address) = address else {
            return unavailable(
                "no_leader",
                format!("the leader, node {leader}, has no API address on record; retry"),
            );
        };
        let (mut parts, body) = request.into_parts();
        let host = super::extract::request_host(&parts);
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_owned();
        let uri: Uri = match format!("{}://{address}{path}", self.scheme).parse() {
            Ok(uri) => uri,
            Err(_) => {
                return unavailable(
                    "no_leader",
                    format!("the leader's API address {address:?} is not usable"),
                )
            }
        };
        parts.uri = uri;
        // The link to the leader is HTTP/1.1, whatever the client spoke.
        parts.version = axum::http::Version::HTTP_11;
        for name in HOP_BY_HOP {
            parts.headers.remove(name);
        }
        // What the leader must know of the client, which it cannot see itself; whatever the
        // client sent under these names is replaced.
        parts.headers.remove(FORWARDED_FOR);
        parts.headers.remove(FORWARDED_CERTIFICATE);
        parts.headers.remove(header::HOST);
        match host.and_then(|h| HeaderValue::from_str(&h).ok()) {
            Some(host) => parts.headers.insert(FORWARDED_HOST, host),
            None => parts.headers.remove(FORWARDED_HOST),
        };
        parts.headers.insert(FORWARDED_BY, HeaderValue::from(me));
        if let Some(ConnectInfo(remote)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
            if let Ok(value) = HeaderValue::from_str(&remote.ip().to_string()) {
                parts.headers.insert(FORWARDED_FOR, value);
            }
        }
        if let Some(PeerCertificate(der)) = parts.extensions.get::<PeerCertificate>() {
            let encoded = base64::engine::general_purpose::STANDARD.encode(der.as_slice());
            if let Ok(value) = HeaderValue::from_str(&encoded) {
                parts.headers.insert(FORWARDED_CERTIFICATE, value);
            }
        }
        match self.client.request(Request::from_parts(parts, body)).await {
            Ok(answer) => {
                let (mut parts, body) = answer.into_parts();
                for name in HOP_BY_HOP {
                    parts.headers.remove(name);
                }
                Response::from_parts(parts, Body::new(body))
            }
            Err(e) => {
                tracing::info!(leader, %address, error = %e, "forwarding to the leader failed");
                unavailable(
                    "no_leader",
                    format!(
                        "cannot reach the leader, node {leader} at {address}: {e}; retry (another \
                         leader is elected if it is down)"
                    ),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_host_routes_go_to_the_leader_reads_stay() {
        assert!(needs_leader(&Method::POST, "/api/v1/instances"));
        assert!(needs_leader(&Method::DELETE, "/api/v1/instances/3"));
        assert!(needs_leader(&Method::PATCH, "/api/v1/volumes/x"));
        assert!(needs_leader(&Method::GET, "/api/v1/hosts"));
        assert!(needs_leader(&Method::GET, "/api/v1/hosts/node-1/desired"));
        assert!(!needs_leader(&Method::GET, "/api/v1/instances"));
        assert!(needs_leader(&Method::GET, "/api/v1/instances/3/console"));
        assert!(!needs_leader(&Method::GET, "/api/v1/hostsfoo"));
        assert!(!needs_leader(&Method::GET, "/api/v1/cluster"));
    }

    #[test]
    fn the_cluster_view_prefers_the_leader() {
        assert!(prefers_leader(&Method::GET, "/api/v1/cluster"));
        assert!(prefers_leader(&Method::GET, "/api/v1/cluster/members"));
        assert!(!prefers_leader(&Method::POST, "/api/v1/cluster/members"));
        assert!(!prefers_leader(&Method::GET, "/api/v1/instances"));
    }
}
