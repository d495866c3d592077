//! `/api/v1/cluster`: the controller group as this node sees it, and its members
//! (`GET/POST /api/v1/cluster/members`, `DELETE /api/v1/cluster/members/{id}`, admin only to
//! change).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use stratus_common::api::AddMember;

use super::extract::{Body, LocalUser, User};
use super::{Answer, Shared};
use crate::failure::InputError;
use crate::services::Services;

pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/api/v1/cluster", get(cluster))
        .route(
            "/api/v1/cluster/members",
            get(list_members).post(add_member),
        )
        .route(
            "/api/v1/cluster/members/{id}",
            axum::routing::delete(remove_member),
        )
}

/// What this node knows of the group; it answers without a leader (see `forward.rs` for why a
/// follower passes it to the leader when it can).
async fn cluster(State(services): Shared, _: LocalUser) -> Answer<impl IntoResponse> {
    Ok(Json(services.cluster.view().await?))
}

async fn list_members(State(services): Shared, _: LocalUser) -> Answer<impl IntoResponse> {
    Ok(Json(services.cluster.view().await?.members))
}

/// 201 with the member once it is a voter; 202 while it is still a learner catching up.
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
