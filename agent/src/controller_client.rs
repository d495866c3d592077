//! The agent's side of the controller protocol (see `stratus_common::agent`), with failover
//! between the controller nodes of a cluster.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use reqwest::StatusCode;
use stratus_common::agent::{
    EnrolHost, HostCertificate, HostDesired, HostReport, RegisterHost, Registered, ReportAnswer,
};
use stratus_common::api::ApiError;
use stratus_common::observed::{HostObserved, ObservedAnswer};

use crate::identity::Identity;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("TLS client set-up")]
    Setup(#[source] reqwest::Error),
    #[error("controller unreachable at {url}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("controller refused {what}: {status} {message}")]
    Refused {
        what: &'static str,
        status: StatusCode,
        message: String,
    },
    #[error("the controller's answer to the {what} does not parse")]
    Answer {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// A client for the controller: one endpoint, or the controller nodes of a cluster. A call
/// goes to the node that answered last; when it cannot be reached or has no leader (503), the
/// next one is tried (a controller forwards an agent's calls to its leader, so any node will
/// do). Over TLS it trusts the site CA only and presents the host's certificate, which a
/// renewal replaces while the client is in use.
#[derive(Clone)]
pub struct ControllerClient {
    http: Arc<RwLock<reqwest::Client>>,
    ca_pem: Option<Arc<Vec<u8>>>,
    bases: Arc<Vec<String>>,
    current: Arc<AtomicUsize>,
}

impl ClientError {
    /// Whether trying again later may succeed: no controller reachable, or none could serve
    /// it now (no leader).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Refused { status, .. } => status.is_server_error(),
            ClientError::Setup(_) | ClientError::Answer { .. } => false,
        }
    }
}

impl ControllerClient {
    /// A client for the controllers at `bases`; `https://` ones are checked against the site
    /// CA `ca_pem` (and nothing else), and `identity` is presented to them.
    pub fn new(
        bases: &[String],
        ca_pem: Option<&[u8]>,
        identity: Option<&Identity>,
    ) -> Result<Self, ClientError> {
        assert!(!bases.is_empty(), "at least one controller endpoint");
        let ca_pem = ca_pem.map(|pem| Arc::new(pem.to_vec()));
        Ok(Self {
            http: Arc::new(RwLock::new(Self::build(ca_pem.as_deref(), identity)?)),
            ca_pem,
            bases: Arc::new(
                bases
                    .iter()
                    .map(|b| b.trim_end_matches('/').to_owned())
                    .collect(),
            ),
            current: Arc::new(AtomicUsize::new(0)),
        })
    }

    fn build(
        ca_pem: Option<&Vec<u8>>,
        identity: Option<&Identity>,
    ) -> Result<reqwest::Client, ClientError> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(90));
        if let Some(pem) = ca_pem {
            let ca = reqwest::Certificate::from_pem(pem).map_err(ClientError::Setup)?;
            builder = builder
                .tls_built_in_root_certs(false)
                .add_root_certificate(ca);
        }
        if let Some(identity) = identity {
            let pem = format!("{}\n{}", identity.certificate_pem, identity.key_pem);
            let identity =
                reqwest::Identity::from_pem(pem.as_bytes()).map_err(ClientError::Setup)?;
            builder = builder.identity(identity);
        }
        builder.build().map_err(ClientError::Setup)
    }

    /// From now on, presents `identity` (a renewed certificate) to the controllers.
    pub fn set_identity(&self, identity: &Identity) -> Result<(), ClientError> {
        let http = Self::build(self.ca_pem.as_deref(), Some(identity))?;
        *self.http.write().expect("client lock") = http;
        Ok(())
    }

    fn http(&self) -> reqwest::Client {
        self.http.read().expect("client lock").clone()
    }

    /// Sends the request `build` makes for a base URL to the controller nodes in turn, from
    /// the one that answered last; answers the first answer that is not "no leader".
    async fn send(
        &self,
        what: &'static str,
        build: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for step in 0..self.bases.len() {
            let index = (start + step) % self.bases.len();
            let base = &self.bases[index];
            let more = step + 1 < self.bases.len();
            match build(&self.http(), base).send().await {
                Ok(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE && more => {
                    last = Some(Self::check(what, response).await.err());
                }
                Ok(response) => {
                    self.current.store(index, Ordering::Relaxed);
                    return Self::check(what, response).await;
                }
                Err(e) if e.is_connect() && more => {
                    tracing::debug!(controller = %base, error = %e, "controller unreachable; trying the next");
                }
                Err(source) => {
                    return Err(ClientError::Unreachable {
                        url: base.clone(),
                        source,
                    })
                }
            }
        }
        Err(last.flatten().unwrap_or(ClientError::Refused {
            what,
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "no controller could serve it".into(),
        }))
    }

    fn url(base: &str, path: &str) -> String {
        format!("{base}{}{path}", stratus_common::API_PREFIX)
    }

    async fn check(
        what: &'static str,
        response: reqwest::Response,
    ) -> Result<reqwest::Response, ClientError> {
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let message = match response.json::<ApiError>().await {
            Ok(e) => e.message,
            Err(_) => String::new(),
        };
        Err(ClientError::Refused {
            what,
            status,
            message,
        })
    }

    fn unreachable(&self, source: reqwest::Error) -> ClientError {
        let index = self.current.load(Ordering::Relaxed) % self.bases.len();
        ClientError::Unreachable {
            url: self.bases[index].clone(),
            source,
        }
    }

    /// Asks for a host certificate: with a join token (enrolment) or, without one, over the
    /// certificate in force (renewal).
    pub async fn enrol(
        &self,
        host: &str,
        request: &EnrolHost,
    ) -> Result<HostCertificate, ClientError> {
        let path = format!("/hosts/{host}/certificate");
        let response = self
            .send("certificate request", |http, base| {
                http.post(Self::url(base, &path))
                    .timeout(Duration::from_secs(30))
                    .json(request)
            })
            .await?;
        response.json().await.map_err(|e| self.unreachable(e))
    }

    pub async fn register(&self, host: &RegisterHost) -> Result<Registered, ClientError> {
        let response = self
            .send("registration", |http, base| {
                http.post(Self::url(base, "/hosts"))
                    .timeout(Duration::from_secs(30))
                    .json(host)
            })
            .await?;
        response.json().await.map_err(|e| self.unreachable(e))
    }

    /// Waits (up to `wait`) for desired state newer than `since`.
    pub async fn desired(
        &self,
        host: &str,
        since: u64,
        wait: Duration,
    ) -> Result<HostDesired, ClientError> {
        let path = format!("/hosts/{host}/desired");
        let response = self
            .send("desired state", |http, base| {
                http.get(Self::url(base, &path))
                    .query(&[("since", since), ("wait", wait.as_secs())])
                    .timeout(wait + Duration::from_secs(15))
            })
            .await?;
        response.json().await.map_err(|e| self.unreachable(e))
    }

    /// Gives up the host's lease (the agent stops on purpose), having had desired state up to
    /// version `since`.
    pub async fn release_lease(&self, host: &str, since: u64) -> Result<(), ClientError> {
        let path = format!("/hosts/{host}/lease");
        self.send("lease release", |http, base| {
            http.delete(Self::url(base, &path))
                .query(&[("since", since)])
                .timeout(Duration::from_secs(5))
        })
        .await?;
        Ok(())
    }

    /// Delivers a report; answers which instance reports the controller refused (none from
    /// a controller that answers without a body).
    pub async fn report(
        &self,
        host: &str,
        report: &HostReport,
    ) -> Result<ReportAnswer, ClientError> {
        let path = format!("/hosts/{host}/report");
        let response = self
            .send("report", |http, base| {
                http.post(Self::url(base, &path))
                    .timeout(Duration::from_secs(30))
                    .json(report)
            })
            .await?;
        let body = response.bytes().await.map_err(|e| self.unreachable(e))?;
        if body.is_empty() {
            return Ok(ReportAnswer::default());
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Answer {
            what: "report",
            source: e,
        })
    }

    /// Pushes what the host observed of its guests (console output, CPU use); the answer
    /// names the consoles to send again.
    pub async fn observed(
        &self,
        host: &str,
        observed: &HostObserved,
    ) -> Result<ObservedAnswer, ClientError> {
        let path = format!("/hosts/{host}/observed");
        let response = self
            .send("observations", |http, base| {
                http.post(Self::url(base, &path))
                    .timeout(Duration::from_secs(30))
                    .json(observed)
            })
            .await?;
        response.json().await.map_err(|e| self.unreachable(e))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A server answering each connection with the next canned answer; gives back the first
    /// line of each request.
    async fn canned(
        answers: Vec<(&'static str, &'static str)>,
    ) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let handle = tokio::spawn(async move {
            let mut seen = Vec::new();
            for (status, body) in answers {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 16384];
                let n = stream.read(&mut buf).await.unwrap();
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                seen.push(head.lines().next().unwrap_or_default().to_owned());
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(answer.as_bytes()).await.unwrap();
            }
            seen
        });
        (base, handle)
    }

    fn dead() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    }

    fn report() -> HostReport {
        serde_json::from_str(r#"{"instances": []}"#).unwrap()
    }

    #[tokio::test]
    async fn calls_move_past_a_node_that_is_down_or_has_no_leader() {
        let (leaderless, seen_leaderless) = canned(vec![(
            "503 Service Unavailable",
            r#"{"code":"no_leader","message":"no controller is leader now"}"#,
        )])
        .await;
        let (good, seen_good) = canned(vec![("204 No Content", ""), ("204 No Content", "")]).await;
        let client = ControllerClient::new(&[dead(), leaderless, good], None, None).unwrap();
        client.report("h1", &report()).await.unwrap();
        // The node that answered is asked first next time.
        client.report("h1", &report()).await.unwrap();
        assert_eq!(
            seen_leaderless.await.unwrap(),
            ["POST /api/v1/hosts/h1/report HTTP/1.1"]
        );
        assert_eq!(seen_good.await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_refusal_is_not_retried_elsewhere_and_names_the_reason() {
        let (refusing, seen) = canned(vec![(
            "401 Unauthorized",
            r#"{"code":"unauthenticated","message":"bad agent token"}"#,
        )])
        .await;
        let client = ControllerClient::new(&[refusing, dead()], None, None).unwrap();
        let err = client.report("h1", &report()).await.unwrap_err();
        assert!(err.to_string().contains("bad agent token"), "{err}");
        assert_eq!(seen.await.unwrap().len(), 1);
    }
}
