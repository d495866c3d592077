//! The typed HTTP client of the cloud API (`/api/v1`): one blocking reqwest client with timeouts,
//! HTTP Basic credentials, failover between the cloud's controller nodes, and the mapping of
//! transport failures and error answers to the messages users see. Every command talks to the
//! cloud through this module.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::blocking::{Request, RequestBuilder, Response};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Serialize;
pub use stratus_common::api::PowerAction;
use stratus_common::api::{
    ApiError, CreateGroup, CreateInstance, Endorser, Group, Host, ImageList, Instance,
    InstanceType, MarketplaceEntry, PolicyVerdict, RegisterEndorser, UpdateHost, User,
};
use stratus_common::events::{EventEnvelope, SseParser};
use stratus_common::marketplace::{is_identifier, ImageKind, SignedMetadata};
use stratus_common::volumes::{is_uuid, AttachVolume, CreateVolume, UpdateVolume, Volume};
use thiserror::Error;

use crate::endpoint::{Endpoint, Endpoints};

/// How long to wait for the TCP (and TLS) connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The header that makes a creating request safe to repeat.
const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// How long a whole request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot reach the cloud endpoint {endpoint}: {cause}")]
    Unreachable { endpoint: String, cause: String },
    #[error("authentication failed for user {username} at {endpoint}")]
    AuthenticationFailed { username: String, endpoint: String },
    #[error(
        "authentication failed at {endpoint}: no username configured \
         (set username in the configuration file, STRATUSLAB_USERNAME or --username)"
    )]
    NoCredentials { endpoint: String },
    #[error("instance {id} not found")]
    InstanceNotFound { id: u64 },
    #[error(
        "{identifier:?} is not a Marketplace image identifier \
         (27 characters: letters, digits, - and _)"
    )]
    NotAnIdentifier { identifier: String },
    #[error("{id:?} is not a disk UUID (like 9c5a2c03-8243-4a1b-a248-0f0d22d948c2)")]
    NotADiskUuid { id: String },
    /// An error answer of the API: its message is meant for users as it is.
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unexpected answer from {endpoint}: {detail}")]
    BadResponse { endpoint: String, detail: String },
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
    #[error("cannot write the output: {0}")]
    Output(String),
    #[error(
        "cannot verify the cloud endpoint {endpoint}: {cause}; its certificate must chain to \
         {trusted} (set ca_certificate in the configuration file, STRATUSLAB_CA_CERTIFICATE or \
         --ca-certificate to the site CA)"
    )]
    Untrusted {
        endpoint: String,
        cause: String,
        /// What was trusted: the configured CA file, or the system's roots.
        trusted: String,
    },
}

impl ClientError {
    /// Whether trying again later may work: the cloud could not be reached, or had no leader.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Api { status, code, .. } => code == "no_leader" || *status >= 500,
            _ => false,
        }
    }

    /// True when the failure concerns the whole endpoint (unreachable, credentials refused, not
    /// speaking our API), so a command working through a list of IDs should stop, not go on.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { .. }
                | Self::Untrusted { .. }
                | Self::AuthenticationFailed { .. }
                | Self::NoCredentials { .. }
                | Self::BadResponse { .. }
                | Self::Setup(_)
                | Self::Output(_)
        )
    }
}

/// The query of `GET /images`: filters and the page of Marketplace entries wanted. Absent
/// values are left out of the URL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImageQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// Endorser email.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endorser: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<ImageKind>,
    /// RFC 3339: entries created at or after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// RFC 3339: entries created at or before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Every entry, not only the latest per image and endorser.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub history: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// HTTP Basic credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// How the client checks the cloud's TLS certificate, and the certificate it presents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// The CA (PEM) the cloud's certificate must chain to; the system's roots when absent.
    pub ca_certificate: Option<std::path::PathBuf>,
    /// A client certificate and its (unencrypted) key, PEM, to log in with: it takes
    /// precedence over a username and password.
    pub identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl Tls {
    fn trusted(&self) -> String {
        match &self.ca_certificate {
            Some(path) => format!("the CA in {}", path.display()),
            None => "one of the system's root CAs".into(),
        }
    }
}

pub struct Client {
    http: reqwest::blocking::Client,
    tls: Tls,
    /// URLs are built on the first; a request goes to `current` first.
    endpoints: Endpoints,
    /// The endpoint that answered last.
    current: AtomicUsize,
    credentials: Option<Credentials>,
}

impl Client {
    pub fn new(
        endpoints: impl Into<Endpoints>,
        credentials: Option<Credentials>,
        tls: &Tls,
    ) -> Result<Self, ClientError> {
        let endpoints = endpoints.into();
        let mut builder = reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("stratus-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &tls.ca_certificate {
            let pem = std::fs::read(path).map_err(|e| {
                ClientError::Setup(format!("ca_certificate {}: {e}", path.display()))
            })?;
            let ca = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                ClientError::Setup(format!(
                    "ca_certificate {}: {}",
                    path.display(),
                    deepest_cause(&e)
                ))
            })?;
            builder = builder
                .tls_built_in_root_certs(false)
                .add_root_certificate(ca);
        }
        if let Some((certificate, key)) = &tls.identity {
            let read = |path: &std::path::Path, what: &str| {
                std::fs::read(path)
                    .map_err(|e| ClientError::Setup(format!("{what} {}: {e}", path.display())))
            };
            let mut pem = read(certificate, "pem_certificate")?;
            pem.push(b'\n');
            pem.extend(read(key, "pem_key")?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                ClientError::Setup(format!(
                    "pem_certificate {} with pem_key {}: {} (the key must be unencrypted PEM)",
                    certificate.display(),
                    key.display(),
                    deepest_cause(&e)
                ))
            })?;
            builder = builder.identity(identity);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Setup(deepest_cause(&e)))?;
        Ok(Self {
            http,
            tls: tls.clone(),
            endpoints,
            current: AtomicUsize::new(0),
            credentials,
        })
    }

    /// `POST /instances`, with an idempotency key of its own: if the answer is lost (a
    /// timeout, a controller node failing), the request is sent again to the next node and the
    /// cloud answers the instance the first one made instead of making a second.
    pub fn create_instance(&self, request: &CreateInstance) -> Result<Instance, ClientError> {
        let builder = self
            .http
            .post(self.endpoints.primary().api_url("/instances"))
            .header(IDEMPOTENCY_KEY, uuid::Uuid::new_v4().to_string());
        self.call(builder.json(request), None)
    }

    /// `GET /instances`: every instance the user may see.
    pub fn list_instances(&self) -> Result<Vec<Instance>, ClientError> {
        self.call(
            self.http
                .get(self.endpoints.primary().api_url("/instances")),
            None,
        )
    }

    /// `GET /instances/{id}`.
    pub fn get_instance(&self, id: u64) -> Result<Instance, ClientError> {
        let url = self
            .endpoints
            .primary()
            .api_url(&format!("/instances/{id}"));
        self.call(self.http.get(url), Some(id))
    }

    /// `DELETE /instances/{id}`: asks for a kill; the answer shows the instance Stopping.
    pub fn kill_instance(&self, id: u64) -> Result<Instance, ClientError> {
        let url = self
            .endpoints
            .primary()
            .api_url(&format!("/instances/{id}"));
        self.call(self.http.delete(url), Some(id))
    }

    /// `POST /instances/{id}/stop|start|reboot`: asks for the change; the answer shows the
    /// instance PoweringOff, Starting or Rebooting.
    pub fn power_instance(&self, id: u64, action: PowerAction) -> Result<Instance, ClientError> {
        let url = self
            .endpoints
            .primary()
            .api_url(&format!("/instances/{id}/{}", action.as_str()));
        self.call(self.http.post(url), Some(id))
    }

    /// `GET /instances/{id}/console[?follow=true]`: the instance's kept console output,
    /// copied to `out` as it comes (with `follow`, until the instance ends or the cloud closes
    /// the stream).
    pub fn console(
        &self,
        id: u64,
        follow: bool,
        out: &mut dyn std::io::Write,
    ) -> Result<(), ClientError> {
        let url = self
            .endpoints
            .primary()
            .api_url(&format!("/instances/{id}/console"));
        let mut builder = self.http.get(url);
        if follow {
            // Followed output has no end to wait for: only the connection is timed.
            builder = builder
                .query(&[("follow", "true")])
                .timeout(Duration::from_secs(u64::from(u32::MAX)));
        }
        let (endpoint, mut response) = self.respond(builder, Some(id))?;
        let mut buffer = [0u8; 8192];
        loop {
            let read = std::io::Read::read(&mut response, &mut buffer).map_err(|e| {
                ClientError::Unreachable {
                    endpoint: endpoint.to_string(),
                    cause: e.to_string(),
                }
            })?;
            if read == 0 {
                return Ok(());
            }
            // Written as it comes: a follower sees each line when the guest prints it.
            out.write_all(&buffer[..read])
                .and_then(|()| out.flush())
                .map_err(|e| ClientError::Output(e.to_string()))?;
        }
    }

    /// `GET /events`: the events `query` asks for, each handed to `on` as it comes. With
    /// `follow`, the stream is followed until `on` fails or the cloud refuses it: a stream
    /// that ends (its controller went away) is opened again, on any endpoint, from where it
    /// stood (`Last-Event-ID`, which the stream gives as it starts and with every event), so
    /// nothing is missed and nothing repeated.
    pub fn events(
        &self,
        query: &[(&str, String)],
        follow: bool,
        on: &mut dyn FnMut(EventEnvelope) -> Result<(), ClientError>,
    ) -> Result<(), ClientError> {
        let mut position: Option<String> = None;
        let mut delay = Duration::from_millis(200);
        loop {
            let builder = self
                .http
                .get(self.endpoints.primary().api_url("/events"))
                .query(&[("follow", follow.to_string())])
                // A followed stream has no end to wait for: only the connection is timed.
                .timeout(Duration::from_secs(u64::from(u32::MAX)));
            let builder = match &position {
                // Resumed: the same filters, from where the stream stood.
                Some(id) => builder.header("Last-Event-ID", id.as_str()).query(
                    &query
                        .iter()
                        .filter(|(k, _)| matches!(*k, "types" | "object"))
                        .collect::<Vec<_>>(),
                ),
                None => builder.query(query),
            };
            let (endpoint, response) = match self.respond(builder, None) {
                Ok(answer) => answer,
                Err(e) if follow && position.is_some() && e.is_transient() => {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                    continue;
                }
                Err(e) => return Err(e),
            };
            delay = Duration::from_millis(200);
            let mut parser = SseParser::default();
            for line in std::io::BufRead::lines(std::io::BufReader::new(response)) {
                // A broken connection ends this stream like a closed one.
                let Ok(line) = line else { break };
                let message = parser.line(&line);
                if let Some(id) = parser.last_id() {
                    position = Some(id.to_owned());
                }
                let Some(message) = message else { continue };
                let event: EventEnvelope =
                    serde_json::from_str(&message.data).map_err(|e| ClientError::BadResponse {
                        endpoint: endpoint.to_string(),
                        detail: format!("an event that is not an event envelope: {e}"),
                    })?;
                on(event)?;
            }
            if !follow {
                return Ok(());
            }
        }
    }

    /// `GET /types`.
    pub fn list_types(&self) -> Result<Vec<InstanceType>, ClientError> {
        self.call(
            self.http.get(self.endpoints.primary().api_url("/types")),
            None,
        )
    }

    /// `POST /images` with a signed Marketplace entry.
    pub fn upload_entry(&self, envelope: &SignedMetadata) -> Result<MarketplaceEntry, ClientError> {
        let builder = self.http.post(self.endpoints.primary().api_url("/images"));
        self.call(builder.json(envelope), None)
    }

    /// `GET /images`: the site's images and a page of Marketplace entries.
    pub fn list_images(&self, query: &ImageQuery) -> Result<ImageList, ClientError> {
        let builder = self.http.get(self.endpoints.primary().api_url("/images"));
        self.call(builder.query(query), None)
    }

    /// `GET /images/{identifier}/policy`: whether the site policy lets the image run. Only
    /// Marketplace identifiers are asked about (they need no escaping in a URL path).
    pub fn image_policy(&self, identifier: &str) -> Result<PolicyVerdict, ClientError> {
        if !is_identifier(identifier) {
            return Err(ClientError::NotAnIdentifier {
                identifier: identifier.to_string(),
            });
        }
        let url = self
            .endpoints
            .primary()
            .api_url(&format!("/images/{identifier}/policy"));
        self.call(self.http.get(url), None)
    }

    /// `GET /endorsers`: the registered endorser certificates.
    pub fn list_endorsers(&self) -> Result<Vec<Endorser>, ClientError> {
        self.call(
            self.http
                .get(self.endpoints.primary().api_url("/endorsers")),
            None,
        )
    }

    /// `POST /endorsers` (administrators): trust one endorser certificate.
    pub fn register_endorser(&self, request: &RegisterEndorser) -> Result<Endorser, ClientError> {
        let builder = self
            .http
            .post(self.endpoints.primary().api_url("/endorsers"));
        self.call(builder.json(request), None)
    }

    /// `GET /volumes`: the user's disks and everyone's public ones, in the API's order.
    pub fn list_volumes(&self) -> Result<Vec<Volume>, ClientError> {
        self.call(
            self.http.get(self.endpoints.primary().api_url("/volumes")),
            None,
        )
    }

    /// `POST /volumes`: the new disk (still `creating` if its storage host is slow). With an
    /// idempotency key of its own, as for instances: a retry never makes a second disk.
    pub fn create_volume(&self, request: &CreateVolume) -> Result<Volume, ClientError> {
        let builder = self
            .http
            .post(self.endpoints.primary().api_url("/volumes"))
            .header(IDEMPOTENCY_KEY, uuid::Uuid::new_v4().to_string());
        self.call(builder.json(request), None)
    }

    /// `GET /volumes/{id}`.
    pub fn get_volume(&self, id: &str) -> Result<Volume, ClientError> {
        let url = self.endpoints.primary().api_url(&volume_path(id)?);
        self.call(self.http.get(url), None)
    }

    /// `PATCH /volumes/{id}`: the disk as changed.
    pub fn update_volume(&self, id: &str, update: &UpdateVolume) -> Result<Volume, ClientError> {
        let url = self.endpoints.primary().api_url(&volume_path(id)?);
        self.call(self.http.patch(url).json(update), None)
    }

    /// `POST /groups`: a server group of the caller's. No idempotency key: a repeated request
    /// cannot make a second group, only meet the first one's name (409).
    pub fn create_group(&self, request: &CreateGroup) -> Result<Group, ClientError> {
        let url = self.endpoints.primary().api_url("/groups");
        self.call(self.http.post(url).json(request), None)
    }

    /// `GET /groups`: the caller's server groups (an administrator's: every user's), in the
    /// API's order.
    pub fn list_groups(&self) -> Result<Vec<Group>, ClientError> {
        self.call(
            self.http.get(self.endpoints.primary().api_url("/groups")),
            None,
        )
    }

    /// `GET /groups/{name}`: the caller's group `name`.
    pub fn get_group(&self, name: &str) -> Result<Group, ClientError> {
        let url = self.endpoints.primary().api_url(&group_path(name)?);
        self.call(self.http.get(url), None)
    }

    /// `DELETE /groups/{name}`: refused (409 `group_in_use`) while an instance in it is not
    /// Done.
    pub fn delete_group(&self, name: &str) -> Result<(), ClientError> {
        let url = self.endpoints.primary().api_url(&group_path(name)?);
        self.send(self.http.delete(url), None).map(drop)
    }

    /// `GET /users` (administrators).
    pub fn list_users(&self) -> Result<Vec<User>, ClientError> {
        self.call(
            self.http.get(self.endpoints.primary().api_url("/users")),
            None,
        )
    }

    /// `POST /users` (administrators).
    pub fn create_user(
        &self,
        name: &str,
        password: &str,
        admin: bool,
    ) -> Result<User, ClientError> {
        let body = serde_json::json!({"name": name, "password": password, "admin": admin});
        let url = self.endpoints.primary().api_url("/users");
        self.call(self.http.post(url).json(&body), None)
    }

    /// `PATCH /users/{name}` (administrators): a new password, the admin flag, or both.
    pub fn update_user(
        &self,
        name: &str,
        password: Option<&str>,
        admin: Option<bool>,
    ) -> Result<User, ClientError> {
        let mut body = serde_json::Map::new();
        if let Some(password) = password {
            body.insert("password".into(), password.into());
        }
        if let Some(admin) = admin {
            body.insert("admin".into(), admin.into());
        }
        let url = self.endpoints.primary().api_url(&user_path(name)?);
        self.call(self.http.patch(url).json(&body), None)
    }

    /// `DELETE /users/{name}` (administrators).
    pub fn delete_user(&self, name: &str) -> Result<(), ClientError> {
        let url = self.endpoints.primary().api_url(&user_path(name)?);
        self.send(self.http.delete(url), None).map(drop)
    }

    /// `POST /hosts/{name}/join-tokens` (administrators): a one-time token the host enrols
    /// with, valid `ttl` seconds (the cloud's default without it).
    pub fn create_join_token(
        &self,
        host: &str,
        ttl: Option<u64>,
    ) -> Result<stratus_common::agent::JoinTokenCreated, ClientError> {
        let url = self
            .endpoints
            .primary()
            .api_url(&format!("/hosts/{}/join-tokens", path_name(host)?));
        let body = stratus_common::agent::CreateJoinToken { ttl_secs: ttl };
        self.call(self.http.post(url).json(&body), None)
    }

    /// `DELETE /hosts/{name}/certificate` (administrators): every certificate of the host out
    /// of force.
    pub fn revoke_host(&self, host: &str) -> Result<(), ClientError> {
        let url = self
            .endpoints
            .primary()
            .api_url(&format!("/hosts/{}/certificate", path_name(host)?));
        self.send(self.http.delete(url), None).map(drop)
    }

    /// `GET /hosts` (administrators), in the API's order.
    pub fn list_hosts(&self) -> Result<Vec<Host>, ClientError> {
        self.call(
            self.http.get(self.endpoints.primary().api_url("/hosts")),
            None,
        )
    }

    /// `PATCH /hosts/{name}` (administrators): into maintenance or back in service, new roles,
    /// new labels; the host as it is now.
    pub fn update_host(&self, host: &str, update: &UpdateHost) -> Result<Host, ClientError> {
        let url = self.endpoints.primary().api_url(&host_path(host)?);
        self.call(self.http.patch(url).json(update), None)
    }

    /// `POST /hosts/{name}/fence` (administrators): declare a host that is down dead, so that
    /// its instances that may be evacuated start elsewhere.
    pub fn fence_host(&self, host: &str) -> Result<Host, ClientError> {
        let url = self
            .endpoints
            .primary()
            .api_url(&format!("{}/fence", host_path(host)?));
        self.call(self.http.post(url).json(&serde_json::json!({})), None)
    }

    /// `DELETE /hosts/{name}` (administrators): forget a host that holds no instance or disk,
    /// or with `force` one that is down whatever it holds (its instances fail, its disks are
    /// lost).
    pub fn remove_host(&self, host: &str, force: bool) -> Result<(), ClientError> {
        let url = self.endpoints.primary().api_url(&host_path(host)?);
        let builder = self.http.delete(url);
        let builder = if force {
            builder.query(&[("force", "true")])
        } else {
            builder
        };
        self.send(builder, None).map(drop)
    }

    /// `DELETE /images/{name}`: remove a site image (administrators).
    pub fn delete_image(&self, name: &str) -> Result<(), ClientError> {
        let url = self
            .endpoints
            .primary()
            .api_url(&format!("/images/{}", path_name(name)?));
        self.send(self.http.delete(url), None).map(drop)
    }

    /// `DELETE /volumes/{id}` (its owner or an administrator).
    pub fn delete_volume(&self, id: &str) -> Result<(), ClientError> {
        let url = self.endpoints.primary().api_url(&volume_path(id)?);
        self.send(self.http.delete(url), None).map(drop)
    }

    /// `POST /instances/{instance}/volumes`: hot-plug a disk; the answer shows the attachment
    /// `attaching` (the host plugs it in afterwards).
    pub fn attach_volume(&self, instance: u64, volume: &str) -> Result<Volume, ClientError> {
        check_uuid(volume)?;
        let url = self
            .endpoints
            .primary()
            .api_url(&format!("/instances/{instance}/volumes"));
        let request = AttachVolume {
            volume: volume.to_owned(),
        };
        self.call(self.http.post(url).json(&request), None)
    }

    /// `DELETE /instances/{instance}/volumes/{volume}`: ask the guest to release a disk, or with
    /// `force` free an attachment that is stuck. The answer shows the attachment `detaching`
    /// (gone when forced).
    pub fn detach_volume(
        &self,
        instance: u64,
        volume: &str,
        force: bool,
    ) -> Result<Volume, ClientError> {
        check_uuid(volume)?;
        let url = self
            .endpoints
            .primary()
            .api_url(&format!("/instances/{instance}/volumes/{volume}"));
        let builder = self.http.delete(url);
        let builder = if force {
            builder.query(&[("force", "true")])
        } else {
            builder
        };
        self.call(builder, None)
    }

    /// Sends a request and decodes a success body as `T`. `instance` names the instance a 404
    /// is about.
    fn call<T: DeserializeOwned>(
        &self,
        builder: RequestBuilder,
        instance: Option<u64>,
    ) -> Result<T, ClientError> {
        let (status, body) = self.send(builder, instance)?;
        serde_json::from_slice(&body).map_err(|e| ClientError::BadResponse {
            endpoint: self.endpoints.to_string(),
            detail: format!("cannot decode the {status} answer: {e}"),
        })
    }

    /// Sends a request; a success gives its status and body (empty for 204), anything else the
    /// error it means. `instance` names the instance a 404 is about. With several endpoints, a
    /// request that could not be delivered (no connection) or that found no leader (503
    /// `no_leader`: nothing was done) goes to the next one; a request that was sent and got no
    /// answer in time is repeated only if it carries an idempotency key (otherwise it may have
    /// been carried out).
    fn send(
        &self,
        builder: RequestBuilder,
        instance: Option<u64>,
    ) -> Result<(StatusCode, Vec<u8>), ClientError> {
        let (endpoint, response) = self.respond(builder, instance)?;
        let status = response.status();
        let body = response
            .bytes()
            .map_err(|e| self.transport_error(&endpoint, &e, &[]))?;
        Ok((status, body.to_vec()))
    }

    /// Like [`Self::send`], but a success gives the endpoint that answered and the response
    /// with its body still to read (a stream, for a followed console).
    fn respond(
        &self,
        builder: RequestBuilder,
        instance: Option<u64>,
    ) -> Result<(Endpoint, Response), ClientError> {
        let builder = match &self.credentials {
            Some(c) => builder.basic_auth(&c.username, Some(&c.password)),
            None => builder,
        };
        let request = builder
            .build()
            .map_err(|e| ClientError::Setup(deepest_cause(&e)))?;
        let repeatable = request.headers().contains_key(IDEMPOTENCY_KEY);
        let all = self.endpoints.all();
        let start = self.current.load(Ordering::Relaxed) % all.len();
        let mut refused = Vec::new();
        let mut request = Some(request);
        for step in 0..all.len() {
            let index = (start + step) % all.len();
            let endpoint = &all[index];
            let last = step + 1 == all.len();
            let Some(original) = request.take() else {
                break;
            };
            // A body that cannot be replayed (a stream) gets one attempt.
            let spare = if last { None } else { original.try_clone() };
            let attempt = rebase(original, self.endpoints.primary(), endpoint);
            let can_retry = spare.is_some();
            request = spare;
            let response = match self.http.execute(attempt) {
                Ok(response) => response,
                Err(e) if (e.is_connect() || (e.is_timeout() && repeatable)) && can_retry => {
                    refused.push(format!("{endpoint}: {}", deepest_cause(&e)));
                    continue;
                }
                Err(e) => return Err(self.transport_error(endpoint, &e, &refused)),
            };
            let status = response.status();
            if status.is_success() {
                self.current.store(index, Ordering::Relaxed);
                return Ok((endpoint.clone(), response));
            }
            let error = self.error_answer(endpoint, status, instance, response);
            match &error {
                ClientError::Api { code, .. } if code == "no_leader" && can_retry => {
                    refused.push(format!("{endpoint}: {error}"));
                }
                _ => {
                    self.current.store(index, Ordering::Relaxed);
                    return Err(error);
                }
            }
        }
        Err(ClientError::Unreachable {
            endpoint: self.endpoints.to_string(),
            cause: refused.join("; "),
        })
    }

    fn error_answer(
        &self,
        endpoint: &Endpoint,
        status: StatusCode,
        instance: Option<u64>,
        response: Response,
    ) -> ClientError {
        let endpoint = endpoint.to_string();
        if status == StatusCode::UNAUTHORIZED {
            return match &self.credentials {
                Some(c) => ClientError::AuthenticationFailed {
                    username: c.username.clone(),
                    endpoint,
                },
                None => ClientError::NoCredentials { endpoint },
            };
        }
        if let (StatusCode::NOT_FOUND, Some(id)) = (status, instance) {
            return ClientError::InstanceNotFound { id };
        }
        let body = response.bytes().unwrap_or_default();
        match serde_json::from_slice::<ApiError>(&body) {
            Ok(api) => ClientError::Api {
                status: status.as_u16(),
                code: api.code,
                message: api.message,
            },
            Err(_) => ClientError::BadResponse {
                endpoint,
                detail: format!("HTTP {status}"),
            },
        }
    }

    /// `refused`: what the endpoints tried before this one said.
    fn transport_error(
        &self,
        endpoint: &Endpoint,
        error: &reqwest::Error,
        refused: &[String],
    ) -> ClientError {
        if let Some(refusal) = certificate_refusal(error) {
            return ClientError::Untrusted {
                endpoint: endpoint.to_string(),
                cause: refusal,
                trusted: self.tls.trusted(),
            };
        }
        let mut cause = if error.is_timeout() {
            "no answer in time (timed out)".to_string()
        } else {
            deepest_cause(error)
        };
        if !refused.is_empty() {
            cause = format!("{cause} (and {})", refused.join("; "));
        }
        ClientError::Unreachable {
            endpoint: endpoint.to_string(),
            cause,
        }
    }
}

/// The reason the TLS handshake refused the server's certificate, if that is why `error`
/// happened (found among its causes, as rustls reported it).
fn certificate_refusal(error: &reqwest::Error) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if let Some(rustls::Error::InvalidCertificate(why)) =
            current.downcast_ref::<rustls::Error>()
        {
            return Some(format!("its certificate was refused ({why:?})"));
        }
        // An I/O error's `source` skips the error it wraps (which may wrap another).
        cause = match current.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => current.source(),
        };
    }
    None
}

/// `request`, sent to `to` instead of `from` (the URL's path and query kept).
fn rebase(mut request: Request, from: &Endpoint, to: &Endpoint) -> Request {
    if from == to {
        return request;
    }
    let url = request.url().as_str();
    if let Some(rest) = url.strip_prefix(&from.base_url()) {
        if let Ok(moved) = reqwest::Url::parse(&format!("{}{rest}", to.base_url())) {
            *request.url_mut() = moved;
        }
    }
    request
}

/// Disk UUIDs go into URL paths: only well-formed ones are sent (a UUID needs no escaping).
fn check_uuid(id: &str) -> Result<(), ClientError> {
    if is_uuid(id) {
        Ok(())
    } else {
        Err(ClientError::NotADiskUuid { id: id.to_owned() })
    }
}

/// `/users/{name}` for a valid account name.
fn user_path(name: &str) -> Result<String, ClientError> {
    Ok(format!("/users/{}", path_name(name)?))
}

/// `/groups/{name}` for a valid group name.
fn group_path(name: &str) -> Result<String, ClientError> {
    Ok(format!("/groups/{}", path_name(name)?))
}

/// `/hosts/{name}` for a valid host name.
fn host_path(name: &str) -> Result<String, ClientError> {
    Ok(format!("/hosts/{}", path_name(name)?))
}

/// A name as one path segment: the names the cloud accepts (letters, digits, `.`, `_`, `-`).
fn path_name(name: &str) -> Result<&str, ClientError> {
    stratus_common::names::validate_name("name", name).map_err(|e| ClientError::Api {
        status: 400,
        code: "bad_request".into(),
        message: e.to_string(),
    })?;
    Ok(name)
}

fn volume_path(id: &str) -> Result<String, ClientError> {
    check_uuid(id)?;
    Ok(format!("/volumes/{id}"))
}

/// The innermost error of a chain: for a refused connection that is the OS error ("Connection
/// refused (os error 111)"), for a DNS failure the resolver's message; the outer layers only say
/// "error sending request for url (...)".
fn deepest_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::thread::{self, JoinHandle};

    use super::*;
    use crate::output;

    /// A one-shot HTTP server on 127.0.0.1 answering each connection with the next canned
    /// response, and giving back the requests it saw (head and body).
    struct CannedServer {
        endpoint: Endpoint,
        handle: JoinHandle<Vec<String>>,
    }

    impl CannedServer {
        fn start(responses: Vec<String>) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let handle = thread::spawn(move || {
                let mut seen = Vec::new();
                for response in responses {
                    let (stream, _) = listener.accept().unwrap();
                    let mut reader = BufReader::new(stream);
                    let mut request = String::new();
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        reader.read_line(&mut line).unwrap();
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                        request.push_str(&line);
                        if line == "\r\n" || line.is_empty() {
                            break;
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    request.push_str(&String::from_utf8(body).unwrap());
                    seen.push(request);
                    let mut stream = reader.into_inner();
                    stream.write_all(response.as_bytes()).unwrap();
                }
                seen
            });
            Self {
                endpoint: Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
                handle,
            }
        }

        fn requests(self) -> Vec<String> {
            self.handle.join().unwrap()
        }
    }

    fn http_response(status: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
    }

    fn alice() -> Option<Credentials> {
        Some(Credentials {
            username: "alice".into(),
            password: "wrong".into(),
        })
    }

    const INSTANCE_5507: &str = r#"{"id":5507,"name":"vm-5507","owner":"alice","image":"ttylinux",
        "type":"m1.small","vcpus":1,"memory_mib":128,"host":"node-1","state":"Pending",
        "domain":"one-5507","created":"2024-05-01T10:00:00Z","updated":"2024-05-01T10:00:00Z",
        "history":[{"state":"Pending","at":"2024-05-01T10:00:00Z"}]}"#;

    #[test]
    fn unauthorized_becomes_the_authentication_message() {
        let server = CannedServer::start(vec![http_response(
            "401 Unauthorized",
            r#"{"code":"unauthorized","message":"bad credentials"}"#,
        )]);
        let client = Client::new(server.endpoint.clone(), alice(), &Tls::default()).unwrap();
        let err = client.list_instances().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "authentication failed for user alice at {}",
                server.endpoint
            )
        );
        assert!(err.is_fatal());
        let requests = server.requests();
        assert!(
            requests[0].starts_with("GET /api/v1/instances HTTP/1.1\r\n"),
            "{}",
            requests[0]
        );
        // alice:wrong
        assert!(
            requests[0].contains("authorization: Basic YWxpY2U6d3Jvbmc=\r\n"),
            "{}",
            requests[0]
        );
    }

    fn dead_endpoint() -> Endpoint {
        // Bind then drop: nothing listens on that port any more.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap()
    }

    fn ttylinux() -> CreateInstance {
        CreateInstance {
            image: "ttylinux".into(),
            instance_type: None,
            name: None,
            network: None,
            ssh_key: None,
            user_data: None,
            persistent_disks: Vec::new(),
            group: None,
            labels: Vec::new(),
            evacuate: false,
            restart: Default::default(),
        }
    }

    fn endpoints(list: &[&Endpoint]) -> Endpoints {
        let text: Vec<String> = list.iter().map(|e| e.to_string()).collect();
        Endpoints::parse(&text.join(",")).unwrap()
    }

    #[test]
    fn a_controller_node_that_is_down_is_passed_over_and_the_next_one_kept() {
        let dead = dead_endpoint();
        let server = CannedServer::start(vec![
            http_response("200 OK", INSTANCE_5507),
            http_response("200 OK", INSTANCE_5507),
        ]);
        let client = Client::new(
            endpoints(&[&dead, &server.endpoint]),
            alice(),
            &Tls::default(),
        )
        .unwrap();
        let body = ttylinux();
        assert_eq!(client.create_instance(&body).unwrap().id, 5507);
        // The node that answered is asked first from then on.
        assert_eq!(client.get_instance(5507).unwrap().id, 5507);
        let requests = server.requests();
        assert!(
            requests[0].starts_with("POST /api/v1/instances HTTP/1.1\r\n"),
            "{}",
            requests[0]
        );
        assert!(
            requests[0].contains("\"image\":\"ttylinux\""),
            "{}",
            requests[0]
        );
        assert!(
            requests[1].starts_with("GET /api/v1/instances/5507 "),
            "{}",
            requests[1]
        );
    }

    #[test]
    fn a_node_without_a_leader_is_passed_over_but_other_errors_are_not() {
        let leaderless = CannedServer::start(vec![http_response(
            "503 Service Unavailable",
            r#"{"code":"no_leader","message":"no controller is leader now; retry shortly"}"#,
        )]);
        let good = CannedServer::start(vec![http_response("200 OK", INSTANCE_5507)]);
        let client = Client::new(
            endpoints(&[&leaderless.endpoint, &good.endpoint]),
            alice(),
            &Tls::default(),
        )
        .unwrap();
        assert_eq!(client.get_instance(5507).unwrap().id, 5507);
        assert_eq!(leaderless.requests().len(), 1);
        assert_eq!(good.requests().len(), 1);

        // A refusal is the cloud's answer: the next node would say the same.
        let refusing = CannedServer::start(vec![http_response(
            "409 Conflict",
            r#"{"code":"conflict","message":"network w1 exists"}"#,
        )]);
        let unused = dead_endpoint();
        let client = Client::new(
            endpoints(&[&refusing.endpoint, &unused]),
            alice(),
            &Tls::default(),
        )
        .unwrap();
        let err = client.list_types().unwrap_err();
        assert_eq!(err.to_string(), "network w1 exists");
        assert_eq!(refusing.requests().len(), 1);
    }

    #[test]
    fn a_creation_carries_one_idempotency_key_to_every_node_it_tries() {
        let leaderless = CannedServer::start(vec![http_response(
            "503 Service Unavailable",
            r#"{"code":"no_leader","message":"leadership is moving; retry"}"#,
        )]);
        let good = CannedServer::start(vec![http_response("201 Created", INSTANCE_5507)]);
        let client = Client::new(
            endpoints(&[&leaderless.endpoint, &good.endpoint]),
            alice(),
            &Tls::default(),
        )
        .unwrap();
        let body = ttylinux();
        assert_eq!(client.create_instance(&body).unwrap().id, 5507);
        let key = |request: &str| -> String {
            request
                .lines()
                .find_map(|l| l.strip_prefix("idempotency-key: "))
                .unwrap_or_else(|| panic!("no idempotency key in {request}"))
                .trim()
                .to_owned()
        };
        let (first, second) = (leaderless.requests(), good.requests());
        assert_eq!(key(&first[0]), key(&second[0]));
        assert_eq!(key(&first[0]).len(), 36, "a UUID");
    }

    #[test]
    fn when_every_node_is_down_the_message_names_each() {
        let (a, b) = (dead_endpoint(), dead_endpoint());
        let client = Client::new(endpoints(&[&a, &b]), alice(), &Tls::default()).unwrap();
        let message = client.list_types().unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("cannot reach the cloud endpoint {b}: ")),
            "{message}"
        );
        assert!(message.contains(&format!("(and {a}: ")), "{message}");
    }

    #[test]
    fn connection_refused_becomes_the_unreachable_message() {
        // Bind then drop: nothing listens on that port any more.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let endpoint = Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let client = Client::new(endpoint, alice(), &Tls::default()).unwrap();
        let err = client.list_types().unwrap_err();
        let message = err.to_string();
        let expected = format!("cannot reach the cloud endpoint http://127.0.0.1:{port}: ");
        assert!(message.starts_with(&expected), "{message}");
        assert!(
            message.to_lowercase().contains("connection refused"),
            "{message}"
        );
        assert!(err.is_fatal());
    }

    #[test]
    fn created_instance_renders_as_in_the_guide() {
        let server = CannedServer::start(vec![http_response("201 Created", INSTANCE_5507)]);
        let client = Client::new(server.endpoint.clone(), alice(), &Tls::default()).unwrap();
        let request = CreateInstance {
            image: "ttylinux".into(),
            instance_type: Some("m1.small".into()),
            name: None,
            network: None,
            ssh_key: None,
            user_data: None,
            persistent_disks: Vec::new(),
            group: None,
            labels: Vec::new(),
            evacuate: false,
            restart: Default::default(),
        };
        let instance = client.create_instance(&request).unwrap();
        assert_eq!(
            output::render_run(&[instance]),
            "\n :::::::::::::::::::::::::\n :: Starting machine(s) ::\n :::::::::::::::::::::::::\n \
             :: Starting 1 machine\n :: Machine 1 (vm ID: 5507)\n :: Done!\n"
        );
        let requests = server.requests();
        assert!(requests[0].starts_with("POST /api/v1/instances HTTP/1.1\r\n"));
        assert!(
            requests[0].ends_with(r#"{"image":"ttylinux","type":"m1.small"}"#),
            "{}",
            requests[0]
        );
    }

    #[test]
    fn placement_rules_go_in_the_instance_request() {
        let server = CannedServer::start(vec![http_response("201 Created", INSTANCE_5507)]);
        let client = Client::new(server.endpoint.clone(), alice(), &Tls::default()).unwrap();
        let request = CreateInstance {
            group: Some("web".into()),
            labels: vec!["ssd".into(), "gpu".into()],
            ..ttylinux()
        };
        client.create_instance(&request).unwrap();
        let requests = server.requests();
        assert!(
            requests[0].ends_with(r#"{"image":"ttylinux","group":"web","labels":["ssd","gpu"]}"#),
            "{}",
            requests[0]
        );
    }

    #[test]
    fn api_errors_carry_the_api_message_and_404_names_the_instance() {
        let server = CannedServer::start(vec![
            http_response(
                "404 Not Found",
                r#"{"code":"not_found","message":"no such thing"}"#,
            ),
            http_response(
                "409 Conflict",
                r#"{"code":"conflict","message":"instance 7 is already Done"}"#,
            ),
            http_response("502 Bad Gateway", "<html>oops</html>"),
            http_response("200 OK", "[{\"not\":\"a type\"}]"),
        ]);
        let client = Client::new(server.endpoint.clone(), alice(), &Tls::default()).unwrap();
        let err = client.get_instance(42).unwrap_err();
        assert_eq!(err.to_string(), "instance 42 not found");
        assert!(!err.is_fatal());
        let err = client.kill_instance(7).unwrap_err();
        assert_eq!(err.to_string(), "instance 7 is already Done");
        assert!(matches!(err, ClientError::Api { status: 409, .. }));
        let err = client.list_instances().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "unexpected answer from {}: HTTP 502 Bad Gateway",
                server.endpoint
            )
        );
        let err = client.list_types().unwrap_err();
        assert!(
            err.to_string().contains("cannot decode the 200 OK answer"),
            "{err}"
        );
        let requests = server.requests();
        assert!(requests[1].starts_with("DELETE /api/v1/instances/7 HTTP/1.1\r\n"));
    }

    #[test]
    fn no_username_means_no_authorization_header_and_a_hint_on_401() {
        let server = CannedServer::start(vec![http_response(
            "401 Unauthorized",
            r#"{"code":"unauthorized","message":"who are you"}"#,
        )]);
        let client = Client::new(server.endpoint.clone(), None, &Tls::default()).unwrap();
        let err = client.list_types().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("authentication failed at http://127.0.0.1:"),
            "{err}"
        );
        assert!(!server.requests()[0]
            .to_lowercase()
            .contains("authorization"));
    }

    #[test]
    fn image_queries_and_policy_urls() {
        let empty_list =
            r#"{"site":[],"marketplace":{"items":[],"total":0,"offset":0,"limit":100}}"#;
        let server = CannedServer::start(vec![
            http_response("200 OK", empty_list),
            http_response("200 OK", empty_list),
            http_response(
                "404 Not Found",
                r#"{"code":"not_found","message":"no Marketplace entry for image Y1eUkuvLYkdEPIbC0IkhELmre4o"}"#,
            ),
        ]);
        let client = Client::new(server.endpoint.clone(), None, &Tls::default()).unwrap();
        let list = client
            .list_images(&ImageQuery {
                identifier: Some("a b&c".into()),
                endorser: Some("jane@example.org".into()),
                kind: Some(ImageKind::Disk),
                from: Some("2024-01-01T00:00:00Z".into()),
                history: true,
                limit: Some(5),
                offset: Some(0),
                ..ImageQuery::default()
            })
            .unwrap();
        assert_eq!(list.marketplace.total, 0);
        client.list_images(&ImageQuery::default()).unwrap();
        let err = client
            .image_policy("Y1eUkuvLYkdEPIbC0IkhELmre4o")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "no Marketplace entry for image Y1eUkuvLYkdEPIbC0IkhELmre4o"
        );
        assert!(!err.is_fatal());
        // Not an identifier: refused before asking (it would not be one URL path segment).
        let err = client.image_policy("../users").unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"../users\" is not a Marketplace image identifier (27 characters: letters, \
             digits, - and _)"
        );
        assert!(!err.is_fatal());

        let requests = server.requests();
        assert!(
            requests[0].starts_with(
                "GET /api/v1/images?identifier=a+b%26c&endorser=jane%40example.org&kind=disk\
                 &from=2024-01-01T00%3A00%3A00Z&history=true&limit=5&offset=0 HTTP/1.1\r\n"
            ),
            "{}",
            requests[0]
        );
        assert!(requests[1].starts_with("GET /api/v1/images HTTP/1.1\r\n"));
        assert!(requests[2]
            .starts_with("GET /api/v1/images/Y1eUkuvLYkdEPIbC0IkhELmre4o/policy HTTP/1.1\r\n"));
    }

    #[test]
    fn volume_calls_and_their_urls() {
        const DISK: &str = "9c5a2c03-8243-4a1b-a248-0f0d22d948c2";
        let volume = output::tests::volume(DISK);
        let view = serde_json::to_string(&volume).unwrap();
        let server = CannedServer::start(vec![
            http_response("204 No Content", ""),
            http_response("202 Accepted", &view),
            http_response("200 OK", &format!("[{view}]")),
            http_response(
                "404 Not Found",
                &format!(r#"{{"code":"not_found","message":"disk {DISK} not found"}}"#),
            ),
        ]);
        let client = Client::new(server.endpoint.clone(), alice(), &Tls::default()).unwrap();
        client.delete_volume(DISK).unwrap();
        assert_eq!(client.detach_volume(7, DISK, true).unwrap(), volume);
        assert_eq!(client.list_volumes().unwrap(), vec![volume]);
        // A 404 about a disk is the API's message, not "instance ... not found".
        let err = client.get_volume(DISK).unwrap_err();
        assert_eq!(err.to_string(), format!("disk {DISK} not found"));
        assert!(!err.is_fatal());
        // Not a UUID: refused before asking (it would not be one URL path segment).
        for bad in ["../instances/1", "9C5A2C03-8243-4A1B-A248-0F0D22D948C2"] {
            let err = client.delete_volume(bad).unwrap_err();
            assert!(matches!(err, ClientError::NotADiskUuid { .. }), "{err}");
            assert!(!err.is_fatal());
            assert!(client.attach_volume(1, bad).is_err());
            assert!(client.detach_volume(1, bad, false).is_err());
        }

        let requests = server.requests();
        assert!(requests[0].starts_with(&format!("DELETE /api/v1/volumes/{DISK} HTTP/1.1\r\n")));
        assert!(requests[1].starts_with(&format!(
            "DELETE /api/v1/instances/7/volumes/{DISK}?force=true HTTP/1.1\r\n"
        )));
        assert!(requests[2].starts_with("GET /api/v1/volumes HTTP/1.1\r\n"));
        assert!(requests[3].starts_with(&format!("GET /api/v1/volumes/{DISK} HTTP/1.1\r\n")));
    }

    #[test]
    fn host_calls_and_their_urls() {
        let host = output::tests::host("node-1");
        let view = serde_json::to_string(&host).unwrap();
        let server = CannedServer::start(vec![
            http_response("200 OK", &format!("[{view}]")),
            http_response("200 OK", &view),
            http_response("200 OK", &view),
            http_response("204 No Content", ""),
            http_response(
                "409 Conflict",
                r#"{"code":"host_in_use","message":"host node-1 still holds 2 instances"}"#,
            ),
        ]);
        let client = Client::new(server.endpoint.clone(), alice(), &Tls::default()).unwrap();
        assert_eq!(client.list_hosts().unwrap(), vec![host.clone()]);
        let update = UpdateHost {
            maintenance: Some(true),
            reason: Some("disk replacement".into()),
            ..UpdateHost::default()
        };
        assert_eq!(client.update_host("node-1", &update).unwrap(), host);
        let profile = UpdateHost {
            roles: Some(vec![stratus_common::api::HostRole::Storage]),
            labels: Some(Vec::new()),
            ..UpdateHost::default()
        };
        assert_eq!(client.update_host("node-1", &profile).unwrap(), host);
        client.remove_host("node-1", true).unwrap();
        let err = client.remove_host("node-1", false).unwrap_err();
        assert_eq!(err.to_string(), "host node-1 still holds 2 instances");
        assert!(!err.is_fatal());
        // Not a name: refused before asking (it would not be one URL path segment).
        assert!(client.remove_host("../users/alice", true).is_err());
        assert!(client.update_host("a/b", &update).is_err());

        let requests = server.requests();
        assert!(requests[0].starts_with("GET /api/v1/hosts HTTP/1.1\r\n"));
        assert!(requests[1].starts_with("PATCH /api/v1/hosts/node-1 HTTP/1.1\r\n"));
        assert!(
            requests[1].ends_with(r#"{"maintenance":true,"reason":"disk replacement"}"#),
            "{}",
            requests[1]
        );
        // Left-out fields stay out: the cloud leaves them as they are; no labels clears them.
        assert!(
            requests[2].ends_with(r#"{"roles":["storage"],"labels":[]}"#),
            "{}",
            requests[2]
        );
        assert!(requests[3].starts_with("DELETE /api/v1/hosts/node-1?force=true HTTP/1.1\r\n"));
        assert!(requests[4].starts_with("DELETE /api/v1/hosts/node-1 HTTP/1.1\r\n"));
    }

    #[test]
    fn group_calls_and_their_urls() {
        let group = output::tests::group("web");
        let view = serde_json::to_string(&group).unwrap();
        let server = CannedServer::start(vec![
            http_response("201 Created", &view),
            http_response("200 OK", &format!("[{view}]")),
            http_response("200 OK", &view),
            http_response("204 No Content", ""),
            http_response(
                "409 Conflict",
                r#"{"code":"group_in_use","message":"server group web still holds instance 7"}"#,
            ),
            http_response(
                "404 Not Found",
                r#"{"code":"not_found","message":"server group db not found"}"#,
            ),
        ]);
        let client = Client::new(server.endpoint.clone(), alice(), &Tls::default()).unwrap();
        let request = CreateGroup {
            name: "web".into(),
            policy: stratus_common::api::GroupPolicy::AntiAffinity,
        };
        assert_eq!(client.create_group(&request).unwrap(), group);
        assert_eq!(client.list_groups().unwrap(), vec![group.clone()]);
        assert_eq!(client.get_group("web").unwrap(), group);
        client.delete_group("web").unwrap();
        let err = client.delete_group("web").unwrap_err();
        assert_eq!(err.to_string(), "server group web still holds instance 7");
        assert!(
            matches!(err, ClientError::Api { status: 409, ref code, .. } if code == "group_in_use")
        );
        assert!(!err.is_fatal());
        // A 404 about a group is the API's message, not "instance ... not found".
        let err = client.get_group("db").unwrap_err();
        assert_eq!(err.to_string(), "server group db not found");
        assert!(!err.is_fatal());
        // Not a name: refused before asking (it would not be one URL path segment).
        for bad in ["../instances", "a/b", ""] {
            assert!(client.get_group(bad).is_err(), "{bad:?}");
            assert!(client.delete_group(bad).is_err(), "{bad:?}");
        }

        let requests = server.requests();
        assert!(requests[0].starts_with("POST /api/v1/groups HTTP/1.1\r\n"));
        assert!(
            requests[0].ends_with(r#"{"name":"web","policy":"anti-affinity"}"#),
            "{}",
            requests[0]
        );
        assert!(!requests[0].to_lowercase().contains("idempotency-key"));
        assert!(requests[1].starts_with("GET /api/v1/groups HTTP/1.1\r\n"));
        assert!(requests[2].starts_with("GET /api/v1/groups/web HTTP/1.1\r\n"));
        assert!(requests[3].starts_with("DELETE /api/v1/groups/web HTTP/1.1\r\n"));
        assert!(requests[4].starts_with("DELETE /api/v1/groups/web HTTP/1.1\r\n"));
        assert!(requests[5].starts_with("GET /api/v1/groups/db HTTP/1.1\r\n"));
    }

    #[test]
    fn credentials_debug_hides_the_password() {
        let text = format!("{:?}", alice().unwrap());
        assert!(!text.contains("wrong"), "{text}");
    }

    /// A TLS server on loopback with a certificate of `ca` for 127.0.0.1, answering one
    /// handshake (or failing it) and then closing.
    fn tls_server(ca: &stratus_controller::pki::SiteCa) -> (u16, std::thread::JoinHandle<()>) {
        use rustls_pki_types::pem::PemObject;
        use std::sync::Arc;
        let issued = ca.issue_node(1, &["127.0.0.1".into()]).unwrap();
        let chain =
            rustls_pki_types::CertificateDer::pem_slice_iter(issued.certificate_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
        let key =
            rustls_pki_types::PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (mut tcp, _) = listener.accept().unwrap();
            let mut tls = rustls::ServerConnection::new(Arc::new(config)).unwrap();
            while tls.is_handshaking() {
                if tls.complete_io(&mut tcp).is_err() {
                    return;
                }
            }
        });
        (port, handle)
    }

    #[test]
    fn a_server_whose_certificate_the_configured_ca_did_not_sign_is_refused_as_untrusted() {
        let dir = tempfile::tempdir().unwrap();
        let make = |name: &str| {
            stratus_controller::pki::SiteCa::load_or_create(
                &dir.path().join(name).join("ca.pem"),
                &dir.path().join(name).join("ca.key"),
                true,
            )
            .unwrap()
            .0
        };
        let (theirs, ours) = (make("theirs"), make("ours"));
        let (port, server) = tls_server(&theirs);
        let tls = Tls {
            ca_certificate: Some(dir.path().join("ours/ca.pem")),
            identity: None,
        };
        let endpoint = Endpoint::parse(&format!("127.0.0.1:{port}")).unwrap();
        let client = Client::new(endpoint, alice(), &tls).unwrap();
        let err = client.list_instances().unwrap_err();
        server.join().unwrap();
        let ClientError::Untrusted { cause, trusted, .. } = &err else {
            panic!("not refused as untrusted: {err:?}");
        };
        assert_eq!(cause, "its certificate was refused (UnknownIssuer)");
        assert!(trusted.ends_with("ours/ca.pem"), "{trusted}");
        assert!(err.is_fatal());
        drop(ours);
    }
}
