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

use super::error_response;
use crate::cloud::{Caller, Cloud, CloudError};

/// An authenticated user.
pub struct User(pub Caller);

impl FromRequestParts<Arc<Cloud>> for User {
    type Rejection = CloudError;

    async fn from_request_parts(
        parts: &mut Parts,
        cloud: &Arc<Cloud>,
    ) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(CloudError::Unauthenticated)?;
        let encoded = value
            .strip_prefix("Basic ")
            .ok_or(CloudError::Unauthenticated)?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| CloudError::Unauthenticated)?;
        let decoded = String::from_utf8(decoded).map_err(|_| CloudError::Unauthenticated)?;
        let (user, password) = decoded.split_once(':').ok_or(CloudError::Unauthenticated)?;
        let cloud = cloud.clone();
        let (user, password) = (user.to_owned(), password.to_owned());
        // argon2 is deliberately slow: keep it off the async workers.
        let caller = tokio::task::spawn_blocking(move || cloud.authenticate(&user, &password))
            .await
            .map_err(|_| CloudError::Unavailable("authentication task failed".into()))??;
        Ok(User(caller))
    }
}

/// A host agent, authenticated by the site's agent token.
pub struct Agent;

impl FromRequestParts<Arc<Cloud>> for Agent {
    type Rejection = CloudError;

    async fn from_request_parts(
        parts: &mut Parts,
        cloud: &Arc<Cloud>,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(CloudError::Unauthenticated)?;
        cloud.authenticate_agent(token.trim())?;
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
