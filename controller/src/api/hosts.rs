//! One host, for administrators: `GET`, `PATCH` (maintenance, roles, labels), `DELETE`
//! (removal) and `POST .../fence` (declared dead) of
//! `/api/v1/hosts/{name}`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use stratus_common::api::{Host, UpdateHost};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Body, User};
use super::{bad_query, Answer, Shared};
use crate::services::Services;

pub fn routes() -> OpenApiRouter<Arc<Services>> {
    OpenApiRouter::new()
        .routes(routes!(get_host, update_host, remove_host))
        .routes(routes!(fence_host))
}

#[utoipa::path(get, path = "/api/v1/hosts/{name}", tag = "hosts",
    params(("name" = String, Path, description = "The host's name")),
    responses((status = OK, body = Host)))]
async fn get_host(
    State(services): Shared,
    User(caller): User,
    Path(name): Path<String>,
) -> Answer<Json<Host>> {
    Ok(Json(services.hosts.show(&caller, &name).await?))
}

/// Maintenance keeps new instances and disks off the host; those it holds stay (it is drained
/// once none is left).
#[utoipa::path(patch, path = "/api/v1/hosts/{name}", tag = "hosts", request_body = UpdateHost,
    params(("name" = String, Path, description = "The host's name")),
    responses((status = OK, description = "The host as it is now", body = Host)))]
async fn update_host(
    State(services): Shared,
    User(caller): User,
    Path(name): Path<String>,
    Body(request): Body<UpdateHost>,
) -> Answer<Json<Host>> {
    Ok(Json(services.hosts.update(&caller, &name, request).await?))
}

/// Declares a host that is down dead (powered off, or cut off for good): its instances run
/// with `evacuate` (or while the site evacuated all) start again on other hosts, from their
/// image. Where the site has a host lease, the leader also fences a host silent past its lease. When it comes back it destroys its copies of them.
#[utoipa::path(post, path = "/api/v1/hosts/{name}/fence", tag = "hosts",
    params(("name" = String, Path, description = "The host's name")),
    responses((status = OK, description = "The host as it is now", body = Host),
        (status = CONFLICT, description = "The host is up (code host_up)", body = stratus_common::api::ApiError)))]
async fn fence_host(
    State(services): Shared,
    User(caller): User,
    Path(name): Path<String>,
) -> Answer<Json<Host>> {
    Ok(Json(services.hosts.fence(&caller, &name).await?))
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(default, deny_unknown_fields)]
struct RemoveQuery {
    /// Remove it even though it holds instances or disks: for a host that is down and gone
    /// for good. Its instances fail and the disks it stored are lost.
    force: bool,
}

#[utoipa::path(delete, path = "/api/v1/hosts/{name}", tag = "hosts",
    params(("name" = String, Path, description = "The host's name"), RemoveQuery),
    responses((status = NO_CONTENT, description = "The host is removed and its certificates revoked"),
        (status = CONFLICT, description = "It holds instances or disks (code host_in_use), or is up (forced removal)", body = stratus_common::api::ApiError)))]
async fn remove_host(
    State(services): Shared,
    User(caller): User,
    Path(name): Path<String>,
    query: Result<Query<RemoveQuery>, axum::extract::rejection::QueryRejection>,
) -> Answer<StatusCode> {
    let Query(query) = query.map_err(bad_query)?;
    services.hosts.remove(&caller, &name, query.force).await?;
    Ok(StatusCode::NO_CONTENT)
}
