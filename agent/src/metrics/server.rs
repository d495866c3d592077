//! Serving the host's metrics (`GET /metrics`) on the agent's own listen address
//! (`metrics_listen`): HTTPS with the host's own certificate (the one the site CA issued it,
//! swapped in when it is renewed), or plain HTTP when asked for, which the configuration
//! allows on a loopback address only. Either way every scrape presents the bearer token kept
//! in a root-only file (`metrics_token_file`): `Authorization: Bearer <token>`. Refusals and
//! unknown paths are JSON (`{"code": ..., "message": ...}`) like the controller's API.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::AgentMetrics;
use crate::identity::Identity;

/// A TLS handshake or request head that has not arrived in this long is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("metrics_token_file {path}")]
    TokenIo {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "metrics_token_file {path} may be read by others than its owner (mode {mode:o}): \
         make it root-only (chmod 600)"
    )]
    TokenMode { path: PathBuf, mode: u32 },
    #[error("metrics_token_file {path} belongs to user {uid}, not to the agent's user")]
    TokenOwner { path: PathBuf, uid: u32 },
    #[error("metrics_token_file {0} holds no token")]
    TokenEmpty(PathBuf),
    #[error("the host certificate or key for the metrics listener")]
    Pem(#[from] rustls_pki_types::pem::Error),
    #[error("the host certificate for the metrics listener")]
    Tls(#[from] rustls::Error),
    #[error("cannot listen for metrics on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// The token every scrape must present. Only its SHA-256 is kept, and compared in constant
/// time.
pub struct BearerToken([u8; 32]);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

impl BearerToken {
    pub fn new(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Reads the token from `path`, which only its owner (the agent's user, root) may read.
    pub fn read(path: &Path) -> Result<Self, ServeError> {
        let io_error = |source| ServeError::TokenIo {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io_error)?;
        if meta.mode() & 0o077 != 0 {
            return Err(ServeError::TokenMode {
                path: path.to_owned(),
                mode: meta.mode() & 0o777,
            });
        }
        if meta.uid() != nix::unistd::geteuid().as_raw() {
            return Err(ServeError::TokenOwner {
                path: path.to_owned(),
                uid: meta.uid(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(io_error)?;
        let token = text.trim();
        if token.is_empty() {
            return Err(ServeError::TokenEmpty(path.to_owned()));
        }
        Ok(Self::new(token))
    }

    /// Whether the request's `Authorization` header carries this token.
    fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or(Refusal::NoToken)?
            .to_str()
            .map_err(|_| Refusal::NotBearer)?;
        let (scheme, token) = value.split_once(' ').ok_or(Refusal::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Refusal::NotBearer);
        }
        let presented: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        let differs = presented
            .iter()
            .zip(self.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if differs == 0 {
            Ok(())
        } else {
            Err(Refusal::WrongToken)
        }
    }
}

/// Why a scrape was refused (401).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum Refusal {
    #[error("the metrics need a bearer token (Authorization: Bearer <the token in the agent's metrics_token_file>)")]
    NoToken,
    #[error("the metrics accept only a bearer token (Authorization: Bearer <token>)")]
    NotBearer,
    #[error("wrong bearer token for the metrics")]
    WrongToken,
}

/// The API's error shape.
fn json_error(status: StatusCode, code: &str, message: String) -> Response {
    let error = stratus_common::api::ApiError {
        code: code.to_owned(),
        message,
    };
    (status, Json(error)).into_response()
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = json_error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            self.to_string(),
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"stratus-agent metrics\""),
        );
        response
    }
}

/// The host's certificate and key as the TLS listener presents them; replaced whole when
/// the certificate is renewed, so new connections get the new one at once.
#[derive(Debug)]
pub struct HostCertificate {
    current: RwLock<Arc<CertifiedKey>>,
}

fn certified_key(identity: &Identity) -> Result<Arc<CertifiedKey>, ServeError> {
    let chain = CertificateDer::pem_slice_iter(identity.certificate_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())?;
    Ok(Arc::new(CertifiedKey::from_der(
        chain,
        key,
        &rustls::crypto::ring::default_provider(),
    )?))
}

impl HostCertificate {
    pub fn new(identity: &Identity) -> Result<Self, ServeError> {
        Ok(Self {
            current: RwLock::new(certified_key(identity)?),
        })
    }

    /// Presents `identity` from now on (a renewed certificate).
    pub fn replace(&self, identity: &Identity) -> Result<(), ServeError> {
        let key = certified_key(identity)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = key;
        Ok(())
    }
}

impl ResolvesServerCert for HostCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// The listener's TLS configuration: the host's certificate, no client certificate asked.
pub fn tls_acceptor(certificate: Arc<HostCertificate>) -> Result<TlsAcceptor, ServeError> {
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[derive(Clone)]
struct Shared {
    metrics: Arc<AgentMetrics>,
    token: Arc<BearerToken>,
}

/// `GET /metrics` behind the bearer token; everything else a JSON 404 (or 405).
pub fn router(metrics: Arc<AgentMetrics>, token: Arc<BearerToken>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(scrape).fallback(|| async {
                json_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "the metrics are read with GET".into(),
                )
            }),
        )
        .fallback(|uri: axum::http::Uri| async move {
            json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "no such path: {}; the host's metrics are at /metrics",
                    uri.path()
                ),
            )
        })
        .with_state(Shared { metrics, token })
}

async fn scrape(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(refusal) = shared.token.check(&headers) {
        return refusal.into_response();
    }
    let metrics = shared.metrics.clone();
    match tokio::task::spawn_blocking(move || metrics.render()).await {
        Ok(text) => ([(header::CONTENT_TYPE, super::CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "metrics scrape failed");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the metrics could not be gathered (see the agent's log)".into(),
            )
        }
    }
}

/// Binds the metrics listener (before the agent goes on, so a taken address stops it).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Serves `app` on `listener`, forever: over TLS with `acceptor`, plain HTTP without.
pub async fn serve(listener: TcpListener, acceptor: Option<TlsAcceptor>, app: Router) {
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: wait a little rather than spin.
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (app, acceptor) = (app.clone(), acceptor.clone());
        tokio::spawn(async move {
            let Some(acceptor) = acceptor else {
                serve_connection(TokioIo::new(tcp), remote, app).await;
                return;
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => serve_connection(TokioIo::new(tls), remote, app).await,
                Ok(Err(e)) => tracing::debug!(%remote, error = %e, "metrics: TLS handshake failed"),
                Err(_) => tracing::debug!(%remote, "metrics: TLS handshake timed out"),
            }
        });
    }
}

async fn serve_connection<I>(io: TokioIo<I>, remote: SocketAddr, app: Router)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .serve_connection(io, TowerToHyperService::new(app));
    if let Err(e) = connection.await {
        tracing::debug!(%remote, error = %e, "metrics: connection ended with an error");
    }
}
