//! `PATCH /api/v1/users/{name}` (`{password?, admin?}`) and `DELETE /api/v1/users/{name}`:
//! administrators change and remove accounts; `DELETE /api/v1/images/{name}` removes a site
//! image.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Body, User};
use super::{Answer, Shared};
use crate::accounts::UpdateUser;
use crate::services::Services;
use crate::users::UserView;

pub fn routes() -> OpenApiRouter<Arc<Services>> {
    OpenApiRouter::new()
        .routes(routes!(update_user, delete_user))
        .routes(routes!(delete_image))
}

#[utoipa::path(patch, path = "/api/v1/users/{name}", tag = "users", request_body = UpdateUser,
    params(("name" = String, Path, description = "The user's name")),
    responses((status = OK, body = UserView)))]
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

#[utoipa::path(delete, path = "/api/v1/users/{name}", tag = "users",
    params(("name" = String, Path, description = "The user's name")),
    responses((status = NO_CONTENT, description = "Removed")))]
async fn delete_user(
    State(services): Shared,
    User(caller): User,
    Path(name): Path<String>,
) -> Answer<impl IntoResponse> {
    services.accounts.delete(&caller, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/images/{name}", tag = "images",
    params(("name" = String, Path, description = "The site image's name")),
    responses((status = NO_CONTENT, description = "Removed")))]
async fn delete_image(
    State(services): Shared,
    User(caller): User,
    Path(name): Path<String>,
) -> Answer<impl IntoResponse> {
    services.images.delete(&caller, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
