//! `PATCH /api/v1/users/{name}` (`{password?, admin?}`) and `DELETE /api/v1/users/{name}`:
//! administrators change and remove accounts; `DELETE /api/v1/images/{name}` removes a site
//! image.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, patch};
use axum::{Json, Router};

use super::extract::{Body, User};
use super::{Answer, Shared};
use crate::accounts::UpdateUser;
use crate::services::Services;

pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route(
            "/api/v1/users/{name}",
            patch(update_user).delete(delete_user),
        )
        .route("/api/v1/images/{name}", delete(delete_image))
}

async fn update_user(
    State(services): Shared,
    User(caller): User,
    Path(name): Path<String>,
    Body(update): Body<UpdateUser>,
) -> Answer<impl IntoResponse> {
    Ok(Json(
        services.accounts.update(&caller, &name, update).await?,
    ))
}

async fn delete_user(
    State(services): Shared,
    User(caller): User,
    Path(name): Path<String>,
) -> Answer<impl IntoResponse> {
    services.accounts.delete(&caller, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_image(
    State(services): Shared,
    User(caller): User,
    Path(name): Path<String>,
) -> Answer<impl IntoResponse> {
    services.images.delete(&caller, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
