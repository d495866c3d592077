//! The HTTP API under `/api/v1` (axum on hyper). Handlers only turn a request into a call on
//! one of the [`Services`] and its result into JSON; errors are JSON `{code, message}` with the
//! status their [`Failure`] kind gives.

mod accounts;
mod cluster;
mod console;
mod events;
pub(crate) mod extract;
pub mod forward;
mod metrics;
mod power;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use stratus_common::agent::{CreateJoinToken, EnrolHost, HostReport, RegisterHost};
use stratus_common::api::{
    ApiError, CertificateSubject, CreateApiToken, CreateImage, CreateInstance, CreateNetwork,
    PrecacheImage, RegisterEndorser,
};
use stratus_common::marketplace::{parse_timestamp, ImageKind};
use stratus_common::volumes::{AttachVolume, CreateVolume, UpdateVolume};

use crate::failure::{Failure, InputError, Kind};
use crate::instances::IDEMPOTENCY_HEADER;
use crate::marketplace::Query as MarketplaceQuery;
use crate::services::Services;
use extract::{Agent, Body, JsonObject, MaybeAgent, User};

pub(crate) type Shared = State<Arc<Services>>;

/// Any service's error, rendered by its kind and code.
#[derive(Debug)]
pub struct ApiFailure(Box<dyn Failure>);

impl<E: Failure> From<E> for ApiFailure {
    fn from(e: E) -> Self {
        Self(Box::new(e))
    }
}

pub(crate) type Answer<T> = Result<T, ApiFailure>;

/// The whole API.
pub fn router(services: Arc<Services>) -> Router {
    Router::new()
        .route(
            "/api/v1/instances",
            get(list_instances).post(create_instance),
        )
        .route(
            "/api/v1/instances/{id}",
            get(get_instance).delete(kill_instance),
        )
        .route("/api/v1/instances/{id}/volumes", post(attach_volume))
        .route(
            "/api/v1/instances/{id}/volumes/{volume}",
            axum::routing::delete(detach_volume),
        )
        .route("/api/v1/volumes", get(list_volumes).post(create_volume))
        .route(
            "/api/v1/volumes/{id}",
            get(get_volume).patch(update_volume).delete(delete_volume),
        )
        .route("/api/v1/types", get(list_types))
        .route("/api/v1/networks", get(list_networks).post(create_network))
        .route("/api/v1/networks/{name}", get(get_network))
        .route("/api/v1/images", get(list_images).post(create_image))
        .route("/api/v1/images/{identifier}/policy", get(image_policy))
        .route(
            "/api/v1/endorsers",
            get(list_endorsers).post(register_endorser),
        )
        .route("/api/v1/hosts", get(list_hosts).post(register_host))
        .route("/api/v1/hosts/{name}/desired", get(host_desired))
        .route("/api/v1/hosts/{name}/images", post(precache_image))
        .route(
            "/api/v1/hosts/{name}/images/{sha256}",
            axum::routing::delete(unpin_image),
        )
        .route("/api/v1/hosts/{name}/report", post(host_report))
        .route("/api/v1/hosts/{name}/join-tokens", post(create_join_token))
        .route(
            "/api/v1/hosts/{name}/certificate",
            post(enrol_host).delete(revoke_host),
        )
        .route("/api/v1/users", get(list_users).post(create_user))
        .route(
            "/api/v1/users/{name}/certificate-subjects",
            post(map_subject).delete(unmap_subject),
        )
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{id}", axum::routing::delete(revoke_token))
        .merge(cluster::routes())
        .merge(power::routes())
        .merge(console::routes())
        .merge(events::routes())
        .merge(accounts::routes())
        .merge(metrics::routes())
        .merge(crate::dashboard::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            services.clone(),
            metrics::timed,
        ))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            forward::Forwarder::new(services.replica.clone(), services.forwarding_tls.clone()),
            forward::to_leader,
        ))
        .layer(axum::middleware::map_response(json_errors))
        .with_state(services)
}

/// The longest error text of the framework's own that is carried into the JSON error.
const FRAMEWORK_TEXT_LIMIT: usize = 4096;

/// Every error the API returns is the JSON error shape, also the framework's own rejections
/// that no handler saw (a path segment that is not UTF-8, a method the route does not have, a
/// body over the limit): their text becomes the message, their status picks the code.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    // JSON already, or one of the web pages (which answer their errors as pages).
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, FRAMEWORK_TEXT_LIMIT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_owned()
    } else {
        text
    };
    let code = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::UNAUTHORIZED => "unauthenticated",
        StatusCode::FORBIDDEN => "forbidden",
        s if s.is_server_error() => "unavailable",
        _ => "bad_request",
    };
    let mut rendered = error_response(status, code, message);
    // Keep what the framework said about the request (`Allow` on a 405, say).
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rendered.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rendered
}

/// The HTTP status of a failure of this kind.
pub(crate) fn status_of(kind: Kind) -> StatusCode {
    match kind {
        Kind::BadRequest => StatusCode::BAD_REQUEST,
        Kind::Unauthenticated => StatusCode::UNAUTHORIZED,
        Kind::Forbidden => StatusCode::FORBIDDEN,
        Kind::NotFound => StatusCode::NOT_FOUND,
        Kind::Conflict => StatusCode::CONFLICT,
        Kind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let status = status_of(self.0.kind());
        if status.is_server_error() {
            tracing::warn!(error = %self.0, "request not served");
        }
        let mut response = error_response(status, self.0.code(), self.0.to_string());
        if let Some(wait) = self.0.retry_after() {
            let secs = crate::users::throttle::whole_secs(wait);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        response
    }
}

fn error_response(status: StatusCode, code: &str, message: String) -> Response {
    let mut response = (
        status,
        Json(ApiError {
            code: code.to_owned(),
            message,
        }),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"stratuslab\""),
        );
    }
    response
}

async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such API resource".into(),
    )
}

fn instance_id(raw: &str) -> Result<u64, InputError> {
    raw.parse()
        .map_err(|_| InputError::new("id", format!("instance IDs are numbers, not {raw:?}")))
}

/// A query string that did not parse, as the API's error naming it.
fn bad_query(rejection: axum::extract::rejection::QueryRejection) -> InputError {
    InputError::new("query", rejection.body_text())
}

async fn list_instances(State(services): Shared, User(caller): User) -> Answer<impl IntoResponse> {
    Ok(Json(services.instances.list(&caller).await?))
}

async fn create_instance(
    State(services): Shared,
    User(caller): User,
    headers: axum::http::HeaderMap,
    Body(request): Body<CreateInstance>,
) -> Answer<impl IntoResponse> {
    let key = idempotency_key(&headers)?;
    let instance = services.instances.create(&caller, request, key).await?;
    Ok((StatusCode::CREATED, Json(instance)))
}

async fn get_instance(
    State(services): Shared,
    User(caller): User,
    Path(id): Path<String>,
) -> Answer<impl IntoResponse> {
    Ok(Json(
        services.instances.get(&caller, instance_id(&id)?).await?,
    ))
}

async fn kill_instance(
    State(services): Shared,
    User(caller): User,
    Path(id): Path<String>,
) -> Answer<impl IntoResponse> {
    Ok(Json(
        services.instances.kill(&caller, instance_id(&id)?).await?,
    ))
}

async fn list_volumes(State(services): Shared, User(caller): User) -> Answer<impl IntoResponse> {
    Ok(Json(services.volumes.list(&caller).await?))
}

async fn create_volume(
    State(services): Shared,
    User(caller): User,
    headers: axum::http::HeaderMap,
    Body(request): Body<CreateVolume>,
) -> Answer<impl IntoResponse> {
    let key = idempotency_key(&headers)?;
    Ok((
        StatusCode::CREATED,
        Json(services.volumes.create(&caller, request, key).await?),
    ))
}

/// The `Idempotency-Key` header of a creating request (the services check its form).
fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<Option<String>, InputError> {
    let Some(value) = headers.get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| InputError::new(IDEMPOTENCY_HEADER, "must be visible ASCII characters"))?;
    Ok(Some(key.to_owned()))
}

async fn get_volume(
    State(services): Shared,
    User(caller): User,
    Path(id): Path<String>,
) -> Answer<impl IntoResponse> {
    Ok(Json(services.volumes.get(&caller, &id).await?))
}

async fn update_volume(
    State(services): Shared,
    User(caller): User,
    Path(id): Path<String>,
    Body(update): Body<UpdateVolume>,
) -> Answer<impl IntoResponse> {
    Ok(Json(services.volumes.update(&caller, &id, update).await?))
}

async fn delete_volume(
    State(services): Shared,
    User(caller): User,
    Path(id): Path<String>,
) -> Answer<impl IntoResponse> {
    services.volumes.delete(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn attach_volume(
    State(services): Shared,
    User(caller): User,
    Path(id): Path<String>,
    Body(request): Body<AttachVolume>,
) -> Answer<impl IntoResponse> {
    let volume = services
        .volumes
        .attach(&caller, instance_id(&id)?, &request.volume)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(volume)))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct DetachQuery {
    /// Free a stuck attachment although the guest has not released the device.
    force: bool,
}

async fn detach_volume(
    State(services): Shared,
    User(caller): User,
    Path((id, volume)): Path<(String, String)>,
    query: Result<Query<DetachQuery>, axum::extract::rejection::QueryRejection>,
) -> Answer<impl IntoResponse> {
    let Query(query) = query.map_err(bad_query)?;
    let volume = services
        .volumes
        .detach(&caller, instance_id(&id)?, &volume, query.force)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(volume)))
}

async fn list_types(State(services): Shared, User(_): User) -> Answer<impl IntoResponse> {
    Ok(Json(services.instances.types().await?))
}

async fn list_networks(State(services): Shared, User(_): User) -> Answer<impl IntoResponse> {
    Ok(Json(services.networks.list().await?))
}

async fn get_network(
    State(services): Shared,
    User(_): User,
    Path(name): Path<String>,
) -> Answer<impl IntoResponse> {
    Ok(Json(services.networks.get(&name).await?))
}

async fn create_network(
    State(services): Shared,
    User(caller): User,
    Body(request): Body<CreateNetwork>,
) -> Answer<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json(services.networks.create(&caller, request).await?),
    ))
}

/// Query parameters of `GET /api/v1/images`, for the Marketplace part.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct ImagesQuery {
    identifier: Option<String>,
    os: Option<String>,
    endorser: Option<String>,
    kind: Option<ImageKind>,
    /// Entries created at or after this RFC 3339 time.
    from: Option<String>,
    /// Entries created at or before this RFC 3339 time.
    to: Option<String>,
    /// Every entry, not only the latest per image and endorser.
    history: bool,
    limit: Option<usize>,
    offset: usize,
}

impl ImagesQuery {
    fn into_query(self) -> Result<MarketplaceQuery, InputError> {
        let time = |field: &'static str, value: Option<String>| {
            value
                .map(|v| {
                    parse_timestamp(field, &v).map_err(|e| InputError::named(field, e.to_string()))
                })
                .transpose()
        };
        Ok(MarketplaceQuery {
            created_from: time("from", self.from)?,
            created_to: time("to", self.to)?,
            identifier: self.identifier,
            os: self.os,
            endorser: self.endorser,
            kind: self.kind,
            history: self.history,
            limit: self.limit,
            offset: self.offset,
        })
    }
}

async fn list_images(
    State(services): Shared,
    User(_): User,
    query: Result<Query<ImagesQuery>, axum::extract::rejection::QueryRejection>,
) -> Answer<impl IntoResponse> {
    let Query(query) = query.map_err(bad_query)?;
    Ok(Json(services.images.list(&query.into_query()?).await?))
}

/// `POST /api/v1/images`: a signed Marketplace entry (a JWS envelope, from anyone the site's
/// trust accepts), or an administrator's unsigned site image registration.
async fn create_image(
    State(services): Shared,
    User(caller): User,
    JsonObject(body): JsonObject,
) -> Answer<Response> {
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| InputError::new("body", format!("not JSON: {e}")))?;
    if value.get("payload").is_some() && value.get("signature").is_some() {
        let entry = services.images.upload_entry(&caller, &body).await?;
        return Ok((StatusCode::CREATED, Json(entry)).into_response());
    }
    let request: CreateImage =
        serde_json::from_value(value).map_err(|e| InputError::new("image", e))?;
    Ok((
        StatusCode::CREATED,
        Json(services.images.create(&caller, request).await?),
    )
        .into_response())
}

async fn image_policy(
    State(services): Shared,
    User(_): User,
    Path(identifier): Path<String>,
) -> Answer<impl IntoResponse> {
    Ok(Json(services.images.policy_verdict(&identifier).await?))
}

async fn list_endorsers(State(services): Shared, User(_): User) -> Answer<impl IntoResponse> {
    Ok(Json(services.images.list_endorsers().await?))
}

async fn register_endorser(
    State(services): Shared,
    User(caller): User,
    Body(request): Body<RegisterEndorser>,
) -> Answer<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json(
            services
                .images
                .register_endorser(&caller, &request.certificate)
                .await?,
        ),
    ))
}

async fn list_hosts(State(services): Shared, User(caller): User) -> Answer<impl IntoResponse> {
    Ok(Json(services.hosts.list(&caller).await?))
}

async fn precache_image(
    State(services): Shared,
    User(caller): User,
    Path(name): Path<String>,
    Body(request): Body<PrecacheImage>,
) -> Answer<impl IntoResponse> {
    Ok((
        StatusCode::ACCEPTED,
        Json(
            services
                .hosts
                .precache(&caller, &name, &request.image)
                .await?,
        ),
    ))
}

async fn unpin_image(
    State(services): Shared,
    User(caller): User,
    Path((name, sha256)): Path<(String, String)>,
) -> Answer<impl IntoResponse> {
    Ok(Json(services.hosts.unpin(&caller, &name, &sha256).await?))
}

async fn register_host(
    State(services): Shared,
    Agent(host): Agent,
    Body(request): Body<RegisterHost>,
) -> Answer<impl IntoResponse> {
    Ok(Json(services.hosts.register(&host, request).await?))
}

async fn create_join_token(
    State(services): Shared,
    User(caller): User,
    Path(name): Path<String>,
    Body(request): Body<CreateJoinToken>,
) -> Answer<impl IntoResponse> {
    let token = services
        .hosts
        .create_join_token(&caller, &name, request)
        .await?;
    Ok((StatusCode::CREATED, Json(token)))
}

/// A host's certificate: with a join token (enrolment), or renewed over mutual TLS with the
/// certificate in force.
async fn enrol_host(
    State(services): Shared,
    MaybeAgent(renewing): MaybeAgent,
    Path(name): Path<String>,
    Body(request): Body<EnrolHost>,
) -> Answer<impl IntoResponse> {
    let certificate = services.hosts.enrol(&name, request, renewing).await?;
    Ok((StatusCode::CREATED, Json(certificate)))
}

async fn revoke_host(
    State(services): Shared,
    User(caller): User,
    Path(name): Path<String>,
) -> Answer<impl IntoResponse> {
    services.hosts.revoke(&caller, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DesiredQuery {
    /// Answer once the state version is above this.
    #[serde(default)]
    since: u64,
    /// Longest wait in seconds (capped at 60).
    #[serde(default)]
    wait: u64,
}

async fn host_desired(
    State(services): Shared,
    Agent(host): Agent,
    Path(name): Path<String>,
    query: Result<Query<DesiredQuery>, axum::extract::rejection::QueryRejection>,
) -> Answer<impl IntoResponse> {
    let Query(query) = query.map_err(bad_query)?;
    let wait = Duration::from_secs(query.wait.min(60));
    Ok(Json(
        services
            .hosts
            .desired(&host, &name, query.since, wait)
            .await?,
    ))
}

async fn host_report(
    State(services): Shared,
    Agent(host): Agent,
    Path(name): Path<String>,
    Body(report): Body<HostReport>,
) -> Answer<impl IntoResponse> {
    services.hosts.report(&host, &name, report).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/users`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    /// Login name (letters, digits, `.`, `_`, `-`).
    name: String,
    /// At least 8 characters; stored only as an argon2 hash.
    password: String,
    /// Whether the user administers the cloud.
    #[serde(default)]
    admin: bool,
}

async fn create_user(
    State(services): Shared,
    User(caller): User,
    Body(request): Body<CreateUser>,
) -> Answer<impl IntoResponse> {
    let user = services
        .users
        .create_user(&caller, &request.name, &request.password, request.admin)
        .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

async fn list_users(State(services): Shared, User(caller): User) -> Answer<impl IntoResponse> {
    Ok(Json(services.users.list_users(&caller).await?))
}

async fn create_token(
    State(services): Shared,
    User(caller): User,
    Body(request): Body<CreateApiToken>,
) -> Answer<impl IntoResponse> {
    let token = services.users.create_token(&caller, request).await?;
    Ok((StatusCode::CREATED, Json(token)))
}

async fn list_tokens(State(services): Shared, User(caller): User) -> Answer<impl IntoResponse> {
    Ok(Json(services.users.list_tokens(&caller).await?))
}

async fn revoke_token(
    State(services): Shared,
    User(caller): User,
    Path(id): Path<String>,
) -> Answer<impl IntoResponse> {
    services.users.revoke_token(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn map_subject(
    State(services): Shared,
    User(caller): User,
    Path(name): Path<String>,
    Body(request): Body<CertificateSubject>,
) -> Answer<impl IntoResponse> {
    services
        .users
        .map_subject(&caller, &name, &request.subject, false)
        .await?;
    Ok((StatusCode::CREATED, Json(request)))
}

async fn unmap_subject(
    State(services): Shared,
    User(caller): User,
    Path(name): Path<String>,
    Body(request): Body<CertificateSubject>,
) -> Answer<impl IntoResponse> {
    services
        .users
        .map_subject(&caller, &name, &request.subject, true)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
