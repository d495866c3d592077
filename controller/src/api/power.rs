//! `POST /api/v1/instances/{id}/stop|start|reboot`: power an instance off (keeping its host,
//! disk, addresses and persistent disks), boot a Stopped one again, restart a Running one.
//! Accepted (202) once the change is committed; the instance's state then follows what its
//! host does. Owner or administrator; a state the action does not apply to is a 409.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};

use super::extract::User;
use super::{instance_id, Answer, Shared};
use crate::services::Services;
use crate::state::PowerAction;

pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/api/v1/instances/{id}/stop", post(stop))
        .route("/api/v1/instances/{id}/start", post(start))
        .route("/api/v1/instances/{id}/reboot", post(reboot))
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

async fn stop(
    State(services): Shared,
    User(caller): User,
    Path(id): Path<String>,
) -> Answer<impl IntoResponse> {
    power(&services, &caller, &id, PowerAction::Stop).await
}

async fn start(
    State(services): Shared,
    User(caller): User,
    Path(id): Path<String>,
) -> Answer<impl IntoResponse> {
    power(&services, &caller, &id, PowerAction::Start).await
}

async fn reboot(
    State(services): Shared,
    User(caller): User,
    Path(id): Path<String>,
) -> Answer<impl IntoResponse> {
    power(&services, &caller, &id, PowerAction::Reboot).await
}
