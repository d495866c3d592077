//! The agent's side of the controller protocol (see `stratus_common::agent`).

use std::time::Duration;

use reqwest::StatusCode;
use stratus_common::agent::{HostDesired, HostReport, RegisterHost, Registered};
use stratus_common::api::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
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
}

/// A client for one controller endpoint.
#[derive(Clone)]
pub struct ControllerClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl ControllerClient {
    pub fn new(base: &str, token: &str) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .expect("HTTP client");
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}{path}", self.base, stratus_common::API_PREFIX)
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
        ClientError::Unreachable {
            url: self.base.clone(),
            source,
        }
    }

    pub async fn register(&self, host: &RegisterHost) -> Result<Registered, ClientError> {
        let response = self
            .http
            .post(self.url("/hosts"))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(30))
            .json(host)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        Self::check("registration", response)
            .await?
            .json()
            .await
            .map_err(|e| self.unreachable(e))
    }

    /// Waits (up to `wait`) for desired state newer than `since`.
    pub async fn desired(
        &self,
        host: &str,
        since: u64,
        wait: Duration,
    ) -> Result<HostDesired, ClientError> {
        let response = self
            .http
            .get(self.url(&format!("/hosts/{host}/desired")))
            .query(&[("since", since), ("wait", wait.as_secs())])
            .bearer_auth(&self.token)
            .timeout(wait + Duration::from_secs(15))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        Self::check("desired state", response)
            .await?
            .json()
            .await
            .map_err(|e| self.unreachable(e))
    }

    pub async fn report(&self, host: &str, report: &HostReport) -> Result<(), ClientError> {
        let response = self
            .http
            .post(self.url(&format!("/hosts/{host}/report")))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(30))
            .json(report)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        Self::check("report", response).await?;
        Ok(())
    }
}
