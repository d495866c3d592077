//! The HTTP API under `/api/v1` (axum on hyper). Handlers only turn a request into a call on
//! one of the [`Services`] and its result into JSON; errors are JSON `{code, message}` with the
//! status their [`Failure`] kind gives.

mod accounts;
mod cluster;
mod console;
mod events;
pub(crate) mod extract;
pub mod forward;
mod groups;
mod hosts;
mod metrics;
pub mod openapi;
mod power;
#[cfg(test)]
mod tests;
mod usage;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Deserialize;
use stratus_common::agent::{CreateJoinToken, EnrolHost, HostReport, RegisterHost, ReportAnswer};
use stratus_common::agent::{HostCertificate, HostDesired, JoinTokenCreated, Registered};
use stratus_common::api::{
    ApiError, CertificateSubject, CreateApiToken, CreateImage, CreateInstance, CreateNetwork,
    PrecacheImage, RegisterEndorser,
};
use stratus_common::api::{
    ApiTokenCreated, ApiTokenView, Endorser, Host, Image, ImageList, Instance, InstanceType,
    MarketplaceEntry, Network, PolicyVerdict,
};
use stratus_common::marketplace::SignedMetadata;
use stratus_common::marketplace::{parse_timestamp, ImageKind};
use stratus_common::volumes::{AttachVolume, CreateVolume, UpdateVolume, Volume};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::failure::{Failure, InputError, Kind};
use crate::instances::IDEMPOTENCY_HEADER;
use crate::marketplace::Query as MarketplaceQuery;
use crate::services::Services;
use crate::users::UserView;
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

/// The API's routes, each registered with its entry in the OpenAPI document (`openapi.rs`).
/// Routes are added here only through `routes!`, which is what keeps the two in step.
pub(crate) fn api_routes() -> OpenApiRouter<Arc<Services>> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(list_instances, create_instance))
        .routes(routes!(get_instance, kill_instance))
        .routes(routes!(attach_volume))
        .routes(routes!(detach_volume))
        .routes(routes!(list_volumes, create_volume))
        .routes(routes!(get_volume, update_volume, delete_volume))
        .routes(routes!(list_types))
        .routes(routes!(list_networks, create_network))
        .routes(routes!(get_network))
        .routes(routes!(list_images, create_image))
        .routes(routes!(image_policy))
        .routes(routes!(list_endorsers, register_endorser))
        .routes(routes!(list_hosts, register_host))
        .routes(routes!(host_desired))
        .routes(routes!(precache_image))
        .routes(routes!(unpin_image))
        .routes(routes!(host_report))
        .routes(routes!(host_lease_release))
        .routes(routes!(create_join_token))
        .routes(routes!(enrol_host, revoke_host))
        .routes(routes!(list_users, create_user))
        .routes(routes!(map_subject, unmap_subject))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(openapi::document))
        .merge(cluster::routes())
        .merge(power::routes())
        .merge(console::routes())
        .merge(events::routes())
        .merge(accounts::routes())
        .merge(metrics::routes())
        .merge(usage::routes())
        .merge(hosts::routes())
        .merge(groups::routes())
}

/// The whole HTTP service: the API and the dashboard's pages.
pub fn router(services: Arc<Services>) -> Router {
    let (api, _) = api_routes().split_for_parts();
    api.merge(crate::dashboard::routes())
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

/// At most this many items in one page of a list.
const MAX_PAGE: usize = 1000;

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(default, deny_unknown_fields)]
struct PageQuery {
    /// At most this many items (1 to 1000); all of them when absent. When more follow, the
    /// answer's `Link` header (`rel="next"`) gives the next page's address.
    limit: Option<usize>,
    /// Only items whose ID is above this one (the last ID of the previous page).
    after: Option<u64>,
}

#[utoipa::path(get, path = "/api/v1/instances", tag = "instances", params(PageQuery),
    responses((status = OK, description = "The caller's instances (every instance, to an administrator), in ID order", body = Vec<Instance>,
        headers(("Link" = String, description = "`</api/v1/instances?limit=N&after=ID>; rel=\"next\"` when a limited page has more after it")))))]
async fn list_instances(
    State(services): Shared,
    User(caller): User,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Answer<Response> {
    let Query(query) = query.map_err(bad_query)?;
    let limit = match query.limit {
        None => usize::MAX,
        Some(limit @ 1..=MAX_PAGE) => limit,
        Some(other) => {
            return Err(
                InputError::new("limit", format!("must be 1 to {MAX_PAGE}, not {other}")).into(),
            )
        }
    };
    let (page, next) = services
        .instances
        .list_page(&caller, query.after.unwrap_or(0), limit)
        .await?;
    let mut response = Json(page).into_response();
    if let Some(last) = next {
        let link = format!("</api/v1/instances?limit={limit}&after={last}>; rel=\"next\"");
        if let Ok(value) = header::HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    Ok(response)
}

#[utoipa::path(post, path = "/api/v1/instances", tag = "instances", request_body = CreateInstance,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retried create return the first answer instead of creating twice (visible ASCII)")),
    responses((status = CREATED, description = "Accepted and placed (Pending until its host runs it)", body = Instance)))]
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

#[utoipa::path(get, path = "/api/v1/instances/{id}", tag = "instances", params(("id" = u64, Path, description = "The instance's ID")),
    responses((status = OK, description = "The instance, with its state history", body = Instance)))]
async fn get_instance(
    State(services): Shared,
    User(caller): User,
    Path(id): Path<String>,
) -> Answer<impl IntoResponse> {
    Ok(Json(
        services.instances.get(&caller, instance_id(&id)?).await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/instances/{id}", tag = "instances", params(("id" = u64, Path, description = "The instance's ID")),
    responses((status = OK, description = "The instance, now being killed (Done once its host has destroyed it)", body = Instance)))]
async fn kill_instance(
    State(services): Shared,
    User(caller): User,
    Path(id): Path<String>,
) -> Answer<impl IntoResponse> {
    Ok(Json(
        services.instances.kill(&caller, instance_id(&id)?).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/volumes", tag = "volumes",
    responses((status = OK, description = "The caller's volumes and the public ones", body = Vec<Volume>)))]
async fn list_volumes(State(services): Shared, User(caller): User) -> Answer<impl IntoResponse> {
    Ok(Json(services.volumes.list(&caller).await?))
}

#[utoipa::path(post, path = "/api/v1/volumes", tag = "volumes", request_body = CreateVolume,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retried create return the first answer instead of creating twice (visible ASCII)")),
    responses((status = CREATED, description = "The volume, being created on its storage host", body = Volume)))]
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

#[utoipa::path(get, path = "/api/v1/volumes/{id}", tag = "volumes",
    params(("id" = String, Path, description = "The volume's UUID")),
    responses((status = OK, body = Volume)))]
async fn get_volume(
    State(services): Shared,
    User(caller): User,
    Path(id): Path<String>,
) -> Answer<impl IntoResponse> {
    Ok(Json(services.volumes.get(&caller, &id).await?))
}

#[utoipa::path(patch, path = "/api/v1/volumes/{id}", tag = "volumes", request_body = UpdateVolume,
    params(("id" = String, Path, description = "The volume's UUID")),
    responses((status = OK, description = "The volume as updated", body = Volume)))]
async fn update_volume(
    State(services): Shared,
    User(caller): User,
    Path(id): Path<String>,
    Body(update): Body<UpdateVolume>,
) -> Answer<impl IntoResponse> {
    Ok(Json(services.volumes.update(&caller, &id, update).await?))
}

#[utoipa::path(delete, path = "/api/v1/volumes/{id}", tag = "volumes",
    params(("id" = String, Path, description = "The volume's UUID")),
    responses((status = NO_CONTENT, description = "Deleted (its storage host removes the file)")))]
async fn delete_volume(
    State(services): Shared,
    User(caller): User,
    Path(id): Path<String>,
) -> Answer<impl IntoResponse> {
    services.volumes.delete(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/instances/{id}/volumes", tag = "volumes", request_body = AttachVolume,
    params(("id" = u64, Path, description = "The instance's ID")),
    responses((status = ACCEPTED, description = "Attaching: the volume's attachment turns `attached` once the guest has the disk", body = Volume)))]
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

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(default, deny_unknown_fields)]
struct DetachQuery {
    /// Free a stuck attachment although the guest has not released the device.
    force: bool,
}

#[utoipa::path(delete, path = "/api/v1/instances/{id}/volumes/{volume}", tag = "volumes",
    params(("id" = u64, Path, description = "The instance's ID"), ("volume" = String, Path, description = "The volume's UUID"), DetachQuery),
    responses((status = ACCEPTED, description = "Detaching: the attachment goes once the guest has released the disk", body = Volume)))]
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

#[utoipa::path(get, path = "/api/v1/types", tag = "instances",
    responses((status = OK, description = "The instance types (CPU and memory sizes)", body = Vec<InstanceType>)))]
async fn list_types(State(services): Shared, User(_): User) -> Answer<impl IntoResponse> {
    Ok(Json(services.instances.types().await?))
}

#[utoipa::path(get, path = "/api/v1/networks", tag = "networks",
    responses((status = OK, body = Vec<Network>)))]
async fn list_networks(State(services): Shared, User(_): User) -> Answer<impl IntoResponse> {
    Ok(Json(services.networks.list().await?))
}

#[utoipa::path(get, path = "/api/v1/networks/{name}", tag = "networks",
    params(("name" = String, Path, description = "The network's name")),
    responses((status = OK, body = Network)))]
async fn get_network(
    State(services): Shared,
    User(_): User,
    Path(name): Path<String>,
) -> Answer<impl IntoResponse> {
    Ok(Json(services.networks.get(&name).await?))
}

#[utoipa::path(post, path = "/api/v1/networks", tag = "networks", request_body = CreateNetwork,
    responses((status = CREATED, body = Network)))]
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
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
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

#[utoipa::path(get, path = "/api/v1/images", tag = "images", params(ImagesQuery),
    responses((status = OK, description = "Site images and the Marketplace entries that match", body = ImageList)))]
async fn list_images(
    State(services): Shared,
    User(_): User,
    query: Result<Query<ImagesQuery>, axum::extract::rejection::QueryRejection>,
) -> Answer<impl IntoResponse> {
    let Query(query) = query.map_err(bad_query)?;
    Ok(Json(services.images.list(&query.into_query()?).await?))
}

/// The body of `POST /api/v1/images`: one of two.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // Only its schema is used: the handler tells the two apart itself.
enum CreateImageBody {
    Signed(SignedMetadata),
    Site(CreateImage),
}

/// What `POST /api/v1/images` created: one of two.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // Only its schema is used.
enum CreatedImage {
    Entry(Box<MarketplaceEntry>),
    Site(Box<Image>),
}

/// `POST /api/v1/images`: a signed Marketplace entry (a JWS envelope, from anyone the site's
/// trust accepts), or an administrator's unsigned site image registration.
#[utoipa::path(post, path = "/api/v1/images", tag = "images",
    request_body(content = CreateImageBody, description = "A signed Marketplace entry (a JWS envelope with `payload` and `signature`), or an administrator's site image"),
    responses((status = CREATED, description = "The Marketplace entry, or the site image", body = CreatedImage)))]
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

#[utoipa::path(get, path = "/api/v1/images/{identifier}/policy", tag = "images",
    params(("identifier" = String, Path, description = "The image's Marketplace identifier")),
    responses((status = OK, description = "Whether this site's policy lets instances run the image, and why", body = PolicyVerdict)))]
async fn image_policy(
    State(services): Shared,
    User(_): User,
    Path(identifier): Path<String>,
) -> Answer<impl IntoResponse> {
    Ok(Json(services.images.policy_verdict(&identifier).await?))
}

#[utoipa::path(get, path = "/api/v1/endorsers", tag = "images",
    responses((status = OK, body = Vec<Endorser>)))]
async fn list_endorsers(State(services): Shared, User(_): User) -> Answer<impl IntoResponse> {
    Ok(Json(services.images.list_endorsers().await?))
}

#[utoipa::path(post, path = "/api/v1/endorsers", tag = "images", request_body = RegisterEndorser,
    responses((status = CREATED, body = Endorser)))]
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

#[utoipa::path(get, path = "/api/v1/hosts", tag = "hosts",
    responses((status = OK, body = Vec<Host>)))]
async fn list_hosts(State(services): Shared, User(caller): User) -> Answer<impl IntoResponse> {
    Ok(Json(services.hosts.list(&caller).await?))
}

#[utoipa::path(post, path = "/api/v1/hosts/{name}/images", tag = "hosts", request_body = PrecacheImage,
    params(("name" = String, Path, description = "The host's name")),
    responses((status = ACCEPTED, description = "The host, with the image pinned in its cache", body = Host)))]
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

#[utoipa::path(delete, path = "/api/v1/hosts/{name}/images/{sha256}", tag = "hosts",
    params(("name" = String, Path, description = "The host's name"), ("sha256" = String, Path, description = "The image's SHA-256 (hex)")),
    responses((status = OK, description = "The host, with the image no longer pinned", body = Host)))]
async fn unpin_image(
    State(services): Shared,
    User(caller): User,
    Path((name, sha256)): Path<(String, String)>,
) -> Answer<impl IntoResponse> {
    Ok(Json(services.hosts.unpin(&caller, &name, &sha256).await?))
}

#[utoipa::path(post, path = "/api/v1/hosts", tag = "agents", request_body = RegisterHost,
    security(("host_certificate" = [])),
    responses((status = OK, body = Registered)))]
async fn register_host(
    State(services): Shared,
    Agent(host): Agent,
    Body(request): Body<RegisterHost>,
) -> Answer<impl IntoResponse> {
    Ok(Json(services.hosts.register(&host, request).await?))
}

#[utoipa::path(post, path = "/api/v1/hosts/{name}/join-tokens", tag = "hosts", request_body = CreateJoinToken,
    params(("name" = String, Path, description = "The host's name")),
    responses((status = CREATED, description = "A one-time token the host's agent enrols with", body = JoinTokenCreated)))]
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
#[utoipa::path(post, path = "/api/v1/hosts/{name}/certificate", tag = "agents", request_body = EnrolHost,
    params(("name" = String, Path, description = "The host's name")),
    security((), ("host_certificate" = [])),
    responses((status = CREATED, description = "The host's certificate, issued for a join token or renewed", body = HostCertificate),
        (status = UNAUTHORIZED, description = "Neither a valid join token nor the host's certificate", body = ApiError)))]
async fn enrol_host(
    State(services): Shared,
    MaybeAgent(renewing): MaybeAgent,
    Path(name): Path<String>,
    Body(request): Body<EnrolHost>,
) -> Answer<impl IntoResponse> {
    let certificate = services.hosts.enrol(&name, request, renewing).await?;
    Ok((StatusCode::CREATED, Json(certificate)))
}

#[utoipa::path(delete, path = "/api/v1/hosts/{name}/certificate", tag = "hosts",
    params(("name" = String, Path, description = "The host's name")),
    responses((status = NO_CONTENT, description = "The host's certificate is revoked")))]
async fn revoke_host(
    State(services): Shared,
    User(caller): User,
    Path(name): Path<String>,
) -> Answer<impl IntoResponse> {
    services.hosts.revoke(&caller, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The longest a host's long poll may wait for a change.
const MAX_DESIRED_WAIT_SECS: u64 = 60;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct DesiredQuery {
    /// Answer once the state version is above this.
    #[serde(default)]
    since: u64,
    /// Longest wait in seconds (at most 60).
    #[serde(default)]
    #[param(maximum = 60)]
    wait: u64,
}

#[utoipa::path(get, path = "/api/v1/hosts/{name}/desired", tag = "agents",
    params(("name" = String, Path, description = "The host's name (its certificate's)"), DesiredQuery),
    security(("host_certificate" = [])),
    responses((status = OK, description = "What the host should run (a long poll)", body = HostDesired)))]
async fn host_desired(
    State(services): Shared,
    Agent(host): Agent,
    Path(name): Path<String>,
    query: Result<Query<DesiredQuery>, axum::extract::rejection::QueryRejection>,
) -> Answer<impl IntoResponse> {
    let Query(query) = query.map_err(bad_query)?;
    if query.wait > MAX_DESIRED_WAIT_SECS {
        return Err(
            InputError::new("wait", format!("at most {MAX_DESIRED_WAIT_SECS} seconds")).into(),
        );
    }
    let wait = Duration::from_secs(query.wait);
    Ok(Json(
        services
            .hosts
            .desired(&host, &name, query.since, wait)
            .await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/hosts/{name}/report", tag = "agents", request_body = HostReport,
    params(("name" = String, Path, description = "The host's name (its certificate's)")),
    security(("host_certificate" = [])),
    responses((status = OK, description = "Recorded, but for the instance reports it names as refused", body = ReportAnswer)))]
async fn host_report(
    State(services): Shared,
    Agent(host): Agent,
    Path(name): Path<String>,
    Body(report): Body<HostReport>,
) -> Answer<Json<ReportAnswer>> {
    Ok(Json(services.hosts.report(&host, &name, report).await?))
}

/// The agent gives up its lease as it stops on purpose: the leader will not fence the host by
/// lease (its guests run on without the agent; an administrator's fence is still possible).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ReleaseQuery {
    /// The version of the last desired state the agent had: a long-poll asking from this
    /// version or an older one (sent before the release) does not give the lease back.
    #[serde(default)]
    since: u64,
}

#[utoipa::path(delete, path = "/api/v1/hosts/{name}/lease", tag = "agents",
    params(("name" = String, Path, description = "The host's name (its certificate's)"), ReleaseQuery),
    security(("host_certificate" = [])),
    responses((status = NO_CONTENT, description = "The host holds no lease any more")))]
async fn host_lease_release(
    State(services): Shared,
    Agent(host): Agent,
    Path(name): Path<String>,
    query: Result<Query<ReleaseQuery>, axum::extract::rejection::QueryRejection>,
) -> Answer<StatusCode> {
    let Query(query) = query.map_err(bad_query)?;
    services
        .hosts
        .release_lease(&host, &name, query.since)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/users`.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"name": "bob", "password": "correct horse battery"}))]
#[serde(deny_unknown_fields)]
struct CreateUser {
    /// Login name (letters, digits, `.`, `_`, `-`).
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
    name: String,
    /// At least 8 characters; stored only as an argon2 hash.
    #[schema(min_length = 8)]
    password: String,
    /// Whether the user administers the cloud.
    #[serde(default)]
    admin: bool,
}

#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = CreateUser,
    responses((status = CREATED, body = UserView)))]
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

#[utoipa::path(get, path = "/api/v1/users", tag = "users",
    responses((status = OK, body = Vec<UserView>)))]
async fn list_users(State(services): Shared, User(caller): User) -> Answer<impl IntoResponse> {
    Ok(Json(services.users.list_users(&caller).await?))
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "users", request_body = CreateApiToken,
    responses((status = CREATED, description = "The token: its secret is shown this once", body = ApiTokenCreated)))]
async fn create_token(
    State(services): Shared,
    User(caller): User,
    Body(request): Body<CreateApiToken>,
) -> Answer<impl IntoResponse> {
    let token = services.users.create_token(&caller, request).await?;
    Ok((StatusCode::CREATED, Json(token)))
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "users",
    responses((status = OK, description = "The caller's tokens (never their secrets)", body = Vec<ApiTokenView>)))]
async fn list_tokens(State(services): Shared, User(caller): User) -> Answer<impl IntoResponse> {
    Ok(Json(services.users.list_tokens(&caller).await?))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "users",
    params(("id" = String, Path, description = "The token's ID")),
    responses((status = NO_CONTENT, description = "Revoked")))]
async fn revoke_token(
    State(services): Shared,
    User(caller): User,
    Path(id): Path<String>,
) -> Answer<impl IntoResponse> {
    services.users.revoke_token(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/users/{name}/certificate-subjects", tag = "users", request_body = CertificateSubject,
    params(("name" = String, Path, description = "The user's name")),
    responses((status = CREATED, description = "Client certificates with this subject now log in as the user", body = CertificateSubject)))]
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

#[utoipa::path(delete, path = "/api/v1/users/{name}/certificate-subjects", tag = "users", request_body = CertificateSubject,
    params(("name" = String, Path, description = "The user's name")),
    responses((status = NO_CONTENT, description = "The subject no longer logs in")))]
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
