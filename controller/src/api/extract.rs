//! Request extractors: HTTP Basic users, bearer-token agents, and JSON bodies whose errors come
//! back as the API's JSON errors naming the field at fault.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::de::DeserializeOwned;

use super::{error_response, ApiFailure};
use crate::hosts::HostError;
use crate::services::Services;
use crate::users::{Caller, UserError};

/// An authenticated user.
pub struct User(pub Caller);

impl FromRequestParts<Arc<Services>> for User {
    type Rejection = ApiFailure;

    async fn from_request_parts(
        parts: &mut Parts,
        services: &Arc<Services>,
    ) -> Result<Self, Self::Rejection> {
        let (user, password) = basic_credentials(parts)?;
        Ok(User(services.users.authenticate(&user, &password).await?))
    }
}

/// A user authenticated as [`User`] is, or, when that cannot be done for want of a leader,
/// against this node's own copy of the users: for the views that must answer without a leader
/// (what this node knows of the cluster, when it is cut off). Who it is does not matter to
/// those views.
pub struct LocalUser;

impl FromRequestParts<Arc<Services>> for LocalUser {
    type Rejection = ApiFailure;

    async fn from_request_parts(
        parts: &mut Parts,
        services: &Arc<Services>,
    ) -> Result<Self, Self::Rejection> {
        let (user, password) = basic_credentials(parts)?;
        services
            .users
            .authenticate_even_alone(&user, &password)
            .await?;
        Ok(LocalUser)
    }
}

/// The user name and password of an HTTP Basic `Authorization` header.
fn basic_credentials(parts: &Parts) -> Result<(String, String), UserError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(UserError::Unauthenticated)?;
    let encoded = value
        .strip_prefix("Basic ")
        .ok_or(UserError::Unauthenticated)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| UserError::Unauthenticated)?;
    let decoded = String::from_utf8(decoded).map_err(|_| UserError::Unauthenticated)?;
    let (user, password) = decoded.split_once(':').ok_or(UserError::Unauthenticated)?;
    Ok((user.to_owned(), password.to_owned()))
}

/// A host agent, authenticated by the site's agent token.
pub struct Agent;

impl FromRequestParts<Arc<Services>> for Agent {
    type Rejection = ApiFailure;

    async fn from_request_parts(
        parts: &mut Parts,
        services: &Arc<Services>,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(HostError::Unauthenticated)?;
        services.hosts.authenticate_agent(token.trim())?;
        Ok(Agent)
    }
}

/// A JSON request body.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> Response {
    let status = match rejection {
        JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        _ => StatusCode::BAD_REQUEST,
    };
    // serde's message names the field: "unknown field `foo`", "missing field `image`".
    error_response(status, "bad_request", rejection.body_text()).into_response()
}
