//! TLS on the controller's HTTP links, with rustls over ring: the API's server side (a client
//! certificate is optional and, when one is presented, it must chain to the site CA or to a
//! configured user CA), the client side a node uses to pass requests to the leader (presenting
//! its own certificate), and the accept loop that serves the API and tells every request where
//! it came from and which certificate its connection presented.

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
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
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
            let certificate = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|c| PeerCertificate(Arc::new(c.to_vec())));
            serve_connection(TokioIo::new(tls), remote, certificate, app, watcher).await;
        });
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!("connections still open at shutdown were closed");
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
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let mut request = request.map(axum::body::Body::new);
            request.extensions_mut().insert(ConnectInfo(remote));
            if let Some(certificate) = &certificate {
                request.extensions_mut().insert(certificate.clone());
            }
            app.clone().oneshot(request)
        });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(IDLE_TIMEOUT)
        .serve_connection(io, service);
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(%remote, error = %e, "connection ended with an error");
    }
}
