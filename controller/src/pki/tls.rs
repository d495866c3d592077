//! TLS on the controller's HTTP links, with rustls over ring: the API's server side (a client
//! certificate is optional and, when one is presented, it must chain to the site CA or to a
//! configured user CA), the client side a node uses to pass requests to the leader (presenting
//! its own certificate), and the accept loop that serves the API and tells every request where
//! it came from and which certificate its connection presented. Over TLS the API speaks
//! HTTP/2 with a client that offers it (ALPN `h2`: a browser's pages, event streams and console
//! streams then share one connection, instead of queueing behind HTTP/1.1's six connections per
//! site) and HTTP/1.1 with every other.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::{pem_certificates, Issued};

/// A TLS handshake that has not finished in this long is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// hyper's header read timeout also runs while a kept-alive connection waits for its next
/// request, so it is the connections' idle timeout too: this long, as nginx's default
/// keep-alive, so clients that pause between requests (a CLI, a test tool between phases)
/// rarely meet a connection closing under them; a slow sender of headers is still cut off.
const IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// At shutdown, connections still open (long-polls) get this long to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what}: {why}")]
    Pem { what: &'static str, why: String },
    #[error("TLS configuration")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate roots")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// What a controller node holds for TLS: the site CA, its own certificate and key, and the
/// CAs whose certificates users may log in with.
#[derive(Clone)]
pub struct NodeTls {
    pub ca_pem: String,
    pub node: Issued,
    /// DER certificates of the CAs that issue users' certificates (besides the site CA).
    pub user_roots: Vec<Vec<u8>>,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls").finish_non_exhaustive()
    }
}

/// The crypto every TLS link of the controller uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(what: &'static str, pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let ders = pem_certificates(pem).map_err(|why| TlsError::Pem { what, why })?;
    if ders.is_empty() {
        return Err(TlsError::Pem {
            what,
            why: "no certificate".into(),
        });
    }
    Ok(ders.into_iter().map(CertificateDer::from).collect())
}

fn private_key(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| TlsError::Pem {
            what: "node key",
            why: e.to_string(),
        })?;
        if block.label == "PRIVATE KEY" {
            return Ok(PrivateKeyDer::Pkcs8(block.contents.into()));
        }
    }
    Err(TlsError::Pem {
        what: "node key",
        why: "no PKCS#8 private key".into(),
    })
}

impl NodeTls {
    fn site_roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        for der in certificates("site CA", &self.ca_pem)? {
            roots.add(der)?;
        }
        Ok(roots)
    }

    /// The API's server configuration: this node's certificate; a client certificate is
    /// asked for, and checked against the site CA and the user CAs when presented.
    pub fn api_server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let mut roots = self.site_roots()?;
        for der in &self.user_roots {
            roots.add(CertificateDer::from(der.clone()))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                certificates("node certificate", &self.node.certificate_pem)?,
                private_key(&self.node.key_pem)?,
            )?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// A client configuration trusting the site CA only and presenting this node's
    /// certificate: for requests passed to another controller (the connector sets ALPN).
    pub fn node_client_config(&self) -> Result<ClientConfig, TlsError> {
        Ok(ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(self.site_roots()?)
            .with_client_auth_cert(
                certificates("node certificate", &self.node.certificate_pem)?,
                private_key(&self.node.key_pem)?,
            )?)
    }
}

/// The certificate a request's connection presented (verified during the handshake).
#[derive(Debug, Clone)]
pub struct PeerCertificate(pub Arc<Vec<u8>>);

/// Serves `app` on `listener` until `shutdown` completes: over TLS with `acceptor`, or plain
/// HTTP without one. Every request carries [`ConnectInfo`] with the client's address and, on
/// TLS, the [`PeerCertificate`] its connection presented.
pub async fn serve(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    app: Router,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let (app, acceptor, watcher) = (app.clone(), acceptor.clone(), graceful.watcher());
        tokio::spawn(async move {
            let Some(acceptor) = acceptor else {
                serve_connection(TokioIo::new(tcp), remote, None, app, watcher).await;
                return;
            };
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let session = tls.get_ref().1;
            let certificate = session
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|c| PeerCertificate(Arc::new(c.to_vec())));
            if session.alpn_protocol() == Some(b"h2") {
                serve_http2(TokioIo::new(tls), remote, certificate, app, watcher).await;
            } else {
                serve_connection(TokioIo::new(tls), remote, certificate, app, watcher).await;
            }
        });
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!("connections still open at shutdown were closed");
    }
}

/// `app` as a hyper service whose requests carry where they came from.
fn service(
    remote: SocketAddr,
    certificate: Option<PeerCertificate>,
    app: Router,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let mut request = request.map(axum::body::Body::new);
        request.extensions_mut().insert(ConnectInfo(remote));
        if let Some(certificate) = &certificate {
            request.extensions_mut().insert(certificate.clone());
        }
        app.clone().oneshot(request)
    })
}

/// The most requests one HTTP/2 connection may have open at once (a browser's pages and
/// streams to one site share its connection).
const MAX_STREAMS: u32 = 256;

async fn serve_http2<I>(
    io: TokioIo<I>,
    remote: SocketAddr,
    certificate: Option<PeerCertificate>,
    app: Router,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let connection = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        // A silent peer is found out by pings, as HTTP/1.1's idle timeout does.
        .keep_alive_interval(IDLE_TIMEOUT / 3)
        .keep_alive_timeout(Duration::from_secs(20))
        .serve_connection(io, service(remote, certificate, app));
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(%remote, error = %e, "HTTP/2 connection ended with an error");
    }
}

async fn serve_connection<I>(
    io: TokioIo<I>,
    remote: SocketAddr,
    certificate: Option<PeerCertificate>,
    app: Router,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service(remote, certificate, app);
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(IDLE_TIMEOUT)
        .serve_connection(io, service);
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(%remote, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use http_body_util::BodyExt;
    use rustls_pki_types::ServerName;
    use tokio_rustls::TlsConnector;

    use super::*;
    use crate::pki::SiteCa;

    /// A node's TLS from a new site CA, its certificate naming 127.0.0.1.
    fn node_tls(dir: &std::path::Path) -> NodeTls {
        let (ca, _) =
            SiteCa::load_or_create(&dir.join("ca.pem"), &dir.join("ca.key"), true).unwrap();
        NodeTls {
            ca_pem: ca.certificate_pem().to_owned(),
            node: ca.issue_node(1, &["127.0.0.1".into()]).unwrap(),
            user_roots: Vec::new(),
        }
    }

    /// Connects to `address` offering `alpn`; answers the protocol agreed and the stream.
    async fn connect(
        tls: &NodeTls,
        address: SocketAddr,
        alpn: &[&[u8]],
    ) -> (
        Option<Vec<u8>>,
        tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    ) {
        let mut roots = RootCertStore::empty();
        for der in certificates("site CA", &tls.ca_pem).unwrap() {
            roots.add(der).unwrap();
        }
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let stream = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        let agreed = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        (agreed, stream)
    }

    fn request() -> hyper::Request<axum::body::Body> {
        hyper::Request::get("https://127.0.0.1/from")
            .body(axum::body::Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn the_api_speaks_http2_to_a_client_offering_it_and_http1_to_others() {
        let dir = tempfile::tempdir().unwrap();
        let tls = node_tls(dir.path());
        let app =
            Router::new().route(
                "/from",
                get(|ConnectInfo(remote): ConnectInfo<SocketAddr>| async move {
                    remote.ip().to_string()
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(tls.api_server_config().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, Some(acceptor), app, async {
            let _ = stopped.await;
        }));

        // A browser offers both and gets HTTP/2: many requests at once on one connection.
        let (agreed, stream) = connect(&tls, address, &[b"h2", b"http/1.1"]).await;
        assert_eq!(agreed.as_deref(), Some(&b"h2"[..]));
        let (sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(connection);
        let answers = futures_util::future::join_all((0..10).map(|_| {
            let mut sender = sender.clone();
            async move { sender.send_request(request()).await.unwrap() }
        }))
        .await;
        for answer in answers {
            assert_eq!(answer.status(), 200);
            assert_eq!(answer.version(), hyper::Version::HTTP_2);
            let body = answer.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(
                &body[..],
                b"127.0.0.1",
                "the request knows where it came from"
            );
        }

        // A client that offers only HTTP/1.1 (the CLI, the agents) is served HTTP/1.1.
        let (agreed, stream) = connect(&tls, address, &[b"http/1.1"]).await;
        assert_eq!(agreed.as_deref(), Some(&b"http/1.1"[..]));
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let answer = sender.send_request(request()).await.unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.version(), hyper::Version::HTTP_11);

        stop.send(()).unwrap();
        server.await.unwrap();
    }
}
