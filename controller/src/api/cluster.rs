//! `/api/v1/cluster`: the controller group as this node sees it, and its members
//! (`GET/POST /api/v1/cluster/members`, `DELETE /api/v1/cluster/members/{id}`, admin only to
//! change).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use stratus_common::api::{AddMember, Cluster, ClusterMember};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Body, LocalUser, User};
use super::{Answer, Shared};
use crate::failure::InputError;
use crate::services::Services;

pub fn routes() -> OpenApiRouter<Arc<Services>> {
    OpenApiRouter::new()
        .routes(routes!(cluster))
        .routes(routes!(list_members, add_member))
        .routes(routes!(remove_member))
}

/// What this node knows of the group; it answers without a leader (see `forward.rs` for why a
/// follower passes it to the leader when it can).
#[utoipa::path(get, path = "/api/v1/cluster", tag = "cluster",
    responses((status = OK, description = "The controller group as this node sees it", body = Cluster)))]
async fn cluster(State(services): Shared, _: LocalUser) -> Answer<impl IntoResponse> {
    Ok(Json(services.cluster.view().await?))
}

#[utoipa::path(get, path = "/api/v1/cluster/members", tag = "cluster",
    responses((status = OK, body = Vec<ClusterMember>)))]
async fn list_members(State(services): Shared, _: LocalUser) -> Answer<impl IntoResponse> {
    Ok(Json(services.cluster.view().await?.members))
}

/// 201 with the member once it is a voter; 202 while it is still a learner catching up.
#[utoipa::path(post, path = "/api/v1/cluster/members", tag = "cluster", request_body = AddMember,
    responses((status = CREATED, description = "A voter already", body = ClusterMember),
              (status = ACCEPTED, description = "Still a learner, catching up before it is promoted", body = ClusterMember)))]
async fn add_member(
    State(services): Shared,
    User(caller): User,
    Body(request): Body<AddMember>,
) -> Answer<impl IntoResponse> {
    let added = services.cluster.add(&caller, request).await?;
    let status = if added.promoted {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(added.member)))
}

#[utoipa::path(delete, path = "/api/v1/cluster/members/{id}", tag = "cluster",
    params(("id" = u64, Path, description = "The member's node ID")),
    responses((status = NO_CONTENT, description = "Removed from the group")))]
async fn remove_member(
    State(services): Shared,
    User(caller): User,
    Path(id): Path<String>,
) -> Answer<impl IntoResponse> {
    let id: u64 = id
        .parse()
        .map_err(|_| InputError::new("id", format!("{id:?} is not a node ID")))?;
    services.cluster.remove(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
