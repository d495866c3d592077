//! Server groups: `POST`/`GET /api/v1/groups`, `GET`/`DELETE /api/v1/groups/{name}`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use stratus_common::api::{CreateGroup, Group};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Body, User};
use super::{Answer, Shared};
use crate::services::Services;

pub fn routes() -> OpenApiRouter<Arc<Services>> {
    OpenApiRouter::new()
        .routes(routes!(create_group, list_groups))
        .routes(routes!(get_group, delete_group))
}

/// A server group of the caller's: instances run with `group` set to its name are placed on
/// one host (affinity) or each on a host of its own (anti-affinity).
#[utoipa::path(post, path = "/api/v1/groups", tag = "groups", request_body = CreateGroup,
    responses((status = CREATED, body = Group),
        (status = CONFLICT, description = "The caller has a group of that name", body = stratus_common::api::ApiError)))]
async fn create_group(
    State(services): Shared,
    User(caller): User,
    Body(request): Body<CreateGroup>,
) -> Answer<(StatusCode, Json<Group>)> {
    let group = services.groups.create(&caller, request).await?;
    Ok((StatusCode::CREATED, Json(group)))
}

/// The caller's server groups (an administrator's: every user's).
#[utoipa::path(get, path = "/api/v1/groups", tag = "groups",
    responses((status = OK, body = [Group])))]
async fn list_groups(State(services): Shared, User(caller): User) -> Answer<Json<Vec<Group>>> {
    Ok(Json(services.groups.list(&caller).await?))
}

#[utoipa::path(get, path = "/api/v1/groups/{name}", tag = "groups",
    params(("name" = String, Path, description = "The group's name")),
    responses((status = OK, body = Group)))]
async fn get_group(
    State(services): Shared,
    User(caller): User,
    Path(name): Path<String>,
) -> Answer<Json<Group>> {
    Ok(Json(services.groups.get(&caller, &name).await?))
}

#[utoipa::path(delete, path = "/api/v1/groups/{name}", tag = "groups",
    params(("name" = String, Path, description = "The group's name")),
    responses((status = NO_CONTENT, description = "The group is deleted"),
        (status = CONFLICT, description = "An instance in it is not Done", body = stratus_common::api::ApiError)))]
async fn delete_group(
    State(services): Shared,
    User(caller): User,
    Path(name): Path<String>,
) -> Answer<StatusCode> {
    services.groups.delete(&caller, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
