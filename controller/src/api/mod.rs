//! The HTTP API under `/api/v1` (axum on hyper). Handlers only turn a request into a call on
//! [`Cloud`] and its result into JSON; errors are JSON `{code, message}` with the right status.

mod extract;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use stratus_common::agent::{HostReport, RegisterHost};
use stratus_common::api::{
    ApiError, CreateImage, CreateInstance, CreateNetwork, PrecacheImage, RegisterEndorser,
};
use stratus_common::marketplace::{parse_timestamp, ImageKind};
use stratus_common::volumes::{AttachVolume, CreateVolume, UpdateVolume};

use crate::cloud::{Cloud, CloudError};
use crate::marketplace::Query as MarketplaceQuery;
use extract::{Agent, Body, User};

type Shared = State<Arc<Cloud>>;

/// The whole API.
pub fn router(cloud: Arc<Cloud>) -> Router {
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
        .route("/api/v1/cluster", get(cluster))
        .route("/api/v1/users", get(list_users).post(create_user))
        .fallback(not_found)
        .with_state(cloud)
}

impl IntoResponse for CloudError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            CloudError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            CloudError::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            CloudError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            CloudError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            CloudError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            CloudError::Exhausted(_) => (StatusCode::CONFLICT, "network_exhausted"),
            CloudError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            CloudError::Invalid { code, .. } => (StatusCode::BAD_REQUEST, *code),
            CloudError::Refused { code, .. } => (StatusCode::FORBIDDEN, *code),
        };
        error_response(status, code, self.to_string())
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

fn instance_id(raw: &str) -> Result<u64, CloudError> {
    raw.parse()
        .map_err(|_| CloudError::BadRequest(format!("id: instance IDs are numbers, not {raw:?}")))
}

async fn list_instances(State(cloud): Shared, User(caller): User) -> impl IntoResponse {
    Json(cloud.list_instances(&caller))
}

async fn create_instance(
    State(cloud): Shared,
    User(caller): User,
    Body(request): Body<CreateInstance>,
) -> Result<impl IntoResponse, CloudError> {
    let instance = cloud.create_instance(&caller, request).await?;
    Ok((StatusCode::CREATED, Json(instance)))
}

async fn get_instance(
    State(cloud): Shared,
    User(caller): User,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, CloudError> {
    Ok(Json(cloud.get_instance(&caller, instance_id(&id)?)?))
}

async fn kill_instance(
    State(cloud): Shared,
    User(caller): User,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, CloudError> {
    Ok(Json(cloud.kill_instance(&caller, instance_id(&id)?).await?))
}

async fn list_volumes(State(cloud): Shared, User(caller): User) -> impl IntoResponse {
    Json(cloud.list_volumes(&caller))
}

async fn create_volume(
    State(cloud): Shared,
    User(caller): User,
    Body(request): Body<CreateVolume>,
) -> Result<impl IntoResponse, CloudError> {
    Ok((
        StatusCode::CREATED,
        Json(cloud.create_volume(&caller, request).await?),
    ))
}

async fn get_volume(
    State(cloud): Shared,
    User(caller): User,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, CloudError> {
    Ok(Json(cloud.get_volume(&caller, &id)?))
}

async fn update_volume(
    State(cloud): Shared,
    User(caller): User,
    Path(id): Path<String>,
    Body(update): Body<UpdateVolume>,
) -> Result<impl IntoResponse, CloudError> {
    Ok(Json(cloud.update_volume(&caller, &id, update).await?))
}

async fn delete_volume(
    State(cloud): Shared,
    User(caller): User,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, CloudError> {
    cloud.delete_volume(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn attach_volume(
    State(cloud): Shared,
    User(caller): User,
    Path(id): Path<String>,
    Body(request): Body<AttachVolume>,
) -> Result<impl IntoResponse, CloudError> {
    let volume = cloud
        .attach_volume(&caller, instance_id(&id)?, &request.volume)
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
    State(cloud): Shared,
    User(caller): User,
    Path((id, volume)): Path<(String, String)>,
    query: Result<Query<DetachQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, CloudError> {
    let Query(query) = query.map_err(|e| CloudError::BadRequest(e.body_text()))?;
    let volume = cloud
        .detach_volume(&caller, instance_id(&id)?, &volume, query.force)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(volume)))
}

async fn list_types(State(cloud): Shared, User(_): User) -> impl IntoResponse {
    Json(cloud.list_types())
}

async fn list_networks(State(cloud): Shared, User(_): User) -> impl IntoResponse {
    Json(cloud.list_networks())
}

async fn get_network(
    State(cloud): Shared,
    User(_): User,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, CloudError> {
    Ok(Json(cloud.get_network(&name)?))
}

async fn create_network(
    State(cloud): Shared,
    User(caller): User,
    Body(request): Body<CreateNetwork>,
) -> Result<impl IntoResponse, CloudError> {
    Ok((
        StatusCode::CREATED,
        Json(cloud.create_network(&caller, request).await?),
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
    fn into_query(self) -> Result<MarketplaceQuery, CloudError> {
        let time = |field: &'static str, value: Option<String>| {
            value
                .map(|v| {
                    parse_timestamp(field, &v).map_err(|e| CloudError::BadRequest(e.to_string()))
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
    State(cloud): Shared,
    User(_): User,
    query: Result<Query<ImagesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, CloudError> {
    let Query(query) = query.map_err(|e| CloudError::BadRequest(e.body_text()))?;
    Ok(Json(cloud.list_images(&query.into_query()?)))
}

/// `POST /api/v1/images`: a signed Marketplace entry (a JWS envelope, from anyone the site's
/// trust accepts), or an administrator's unsigned site image registration.
async fn create_image(
    State(cloud): Shared,
    User(caller): User,
    body: axum::body::Bytes,
) -> Result<Response, CloudError> {
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| CloudError::BadRequest(format!("body is not JSON: {e}")))?;
    if value.get("payload").is_some() && value.get("signature").is_some() {
        let entry = cloud.upload_entry(&caller, &body).await?;
        return Ok((StatusCode::CREATED, Json(entry)).into_response());
    }
    let request: CreateImage =
        serde_json::from_value(value).map_err(|e| CloudError::BadRequest(format!("image: {e}")))?;
    Ok((
        StatusCode::CREATED,
        Json(cloud.create_image(&caller, request).await?),
    )
        .into_response())
}

async fn image_policy(
    State(cloud): Shared,
    User(_): User,
    Path(identifier): Path<String>,
) -> Result<impl IntoResponse, CloudError> {
    Ok(Json(cloud.policy_verdict(&identifier)?))
}

async fn list_endorsers(State(cloud): Shared, User(_): User) -> impl IntoResponse {
    Json(cloud.list_endorsers())
}

async fn register_endorser(
    State(cloud): Shared,
    User(caller): User,
    Body(request): Body<RegisterEndorser>,
) -> Result<impl IntoResponse, CloudError> {
    Ok((
        StatusCode::CREATED,
        Json(
            cloud
                .register_endorser(&caller, &request.certificate)
                .await?,
        ),
    ))
}

async fn list_hosts(
    State(cloud): Shared,
    User(caller): User,
) -> Result<impl IntoResponse, CloudError> {
    if !caller.admin {
        return Err(CloudError::Forbidden(
            "only an administrator may list hosts".into(),
        ));
    }
    Ok(Json(cloud.list_hosts()))
}

async fn precache_image(
    State(cloud): Shared,
    User(caller): User,
    Path(name): Path<String>,
    Body(request): Body<PrecacheImage>,
) -> Result<impl IntoResponse, CloudError> {
    Ok((
        StatusCode::ACCEPTED,
        Json(cloud.precache(&caller, &name, &request.image).await?),
    ))
}

async fn unpin_image(
    State(cloud): Shared,
    User(caller): User,
    Path((name, sha256)): Path<(String, String)>,
) -> Result<impl IntoResponse, CloudError> {
    Ok(Json(cloud.unpin(&caller, &name, &sha256).await?))
}

async fn register_host(
    State(cloud): Shared,
    _: Agent,
    Body(request): Body<RegisterHost>,
) -> Result<impl IntoResponse, CloudError> {
    Ok(Json(cloud.register_host(request).await?))
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
    State(cloud): Shared,
    _: Agent,
    Path(name): Path<String>,
    Query(query): Query<DesiredQuery>,
) -> Result<impl IntoResponse, CloudError> {
    let wait = Duration::from_secs(query.wait.min(60));
    Ok(Json(cloud.desired(&name, query.since, wait).await?))
}

async fn host_report(
    State(cloud): Shared,
    _: Agent,
    Path(name): Path<String>,
    Body(report): Body<HostReport>,
) -> Result<impl IntoResponse, CloudError> {
    cloud.report(&name, report).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn cluster(State(cloud): Shared, User(_): User) -> impl IntoResponse {
    Json(cloud.cluster())
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

/// A user as the API shows it (never with the password hash).
#[derive(Serialize)]
struct UserView {
    name: String,
    admin: bool,
}

async fn create_user(
    State(cloud): Shared,
    User(caller): User,
    Body(request): Body<CreateUser>,
) -> Result<impl IntoResponse, CloudError> {
    cloud
        .create_user(&caller, &request.name, &request.password, request.admin)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(UserView {
            name: request.name,
            admin: request.admin,
        }),
    ))
}

async fn list_users(
    State(cloud): Shared,
    User(caller): User,
) -> Result<impl IntoResponse, CloudError> {
    let users = cloud.list_users(&caller)?;
    Ok(Json(
        users
            .into_iter()
            .map(|(name, admin)| UserView { name, admin })
            .collect::<Vec<_>>(),
    ))
}
