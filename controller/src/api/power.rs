//! `POST /api/v1/instances/{id}/stop|start|reboot`: power an instance off (keeping its host,
//! disk, addresses and persistent disks), boot a Stopped one again, restart a Running one.
//! Accepted (202) once the change is committed; the instance's state then follows what its
//! host does. Owner or administrator; a state the action does not apply to is a 409.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use stratus_common::api::Instance;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::User;
use super::{instance_id, Answer, Shared};
use crate::services::Services;
use crate::state::PowerAction;

pub fn routes() -> OpenApiRouter<Arc<Services>> {
    OpenApiRouter::new()
        .routes(routes!(stop))
        .routes(routes!(start))
        .routes(routes!(reboot))
}

async fn power(
    services: &Services,
    caller: &crate::users::Caller,
    id: &str,
    action: PowerAction,
) -> Answer<impl IntoResponse> {
    let instance = services
        .instances
        .power(caller, instance_id(id)?, action)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(instance)))
}

#[utoipa::path(post, path = "/api/v1/instances/{id}/stop", tag = "instances", params(("id" = u64, Path, description = "The instance's ID")),
    responses((status = ACCEPTED, description = "Stopping (its host powers the guest off, keeping its disks)", body = Instance)))]
async fn stop(
    State(services): Shared,
    User(caller): User,
    Path(id): Path<String>,
) -> Answer<impl IntoResponse> {
    power(&services, &caller, &id, PowerAction::Stop).await
}

#[utoipa::path(post, path = "/api/v1/instances/{id}/start", tag = "instances", params(("id" = u64, Path, description = "The instance's ID")),
    responses((status = ACCEPTED, description = "Starting a Stopped instance again on its host", body = Instance)))]
async fn start(
    State(services): Shared,
    User(caller): User,
    Path(id): Path<String>,
) -> Answer<impl IntoResponse> {
    power(&services, &caller, &id, PowerAction::Start).await
}

#[utoipa::path(post, path = "/api/v1/instances/{id}/reboot", tag = "instances", params(("id" = u64, Path, description = "The instance's ID")),
    responses((status = ACCEPTED, description = "Rebooting", body = Instance)))]
async fn reboot(
    State(services): Shared,
    User(caller): User,
    Path(id): Path<String>,
) -> Answer<impl IntoResponse> {
    power(&services, &caller, &id, PowerAction::Reboot).await
}
