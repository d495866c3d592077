//! Request extractors: HTTP Basic users, bearer-token agents, and JSON bodies whose errors come
//! back as the API's JSON errors naming the field at fault. A body must be a JSON object sent
//! as `application/json`: a form a cross-site page can send (`text/plain`) and an array that
//! serde would read into a struct field by field are both refused.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::Response;
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
        Ok(User(
            services
                .users
                .authenticate(&user, &password, source(parts))
                .await?,
        ))
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
            .authenticate_even_alone(&user, &password, source(parts))
            .await?;
        Ok(LocalUser)
    }
}

/// The address the request came from (the connection's peer), when the server recorded it.
fn source(parts: &Parts) -> Option<std::net::IpAddr> {
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip())
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

/// A JSON object request body, read into `T`.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let JsonObject(bytes) = JsonObject::from_request(request, state).await?;
        match Json::<T>::from_bytes(&bytes) {
            Ok(Json(value)) => Ok(Body(value)),
            // serde's message names the field: "unknown field `foo`", "missing field `image`".
            Err(rejection) => Err(error_response(
                StatusCode::BAD_REQUEST,
                "bad_request",
                rejection.body_text(),
            )),
        }
    }
}

/// The bytes of a request body that is a JSON object sent as `application/json` (or a
/// `+json` type), for handlers that look at it before choosing a type.
pub struct JsonObject(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(request.headers()) {
            return Err(error_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "body: Content-Type must be application/json".into(),
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                let status = rejection.status();
                let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    "payload_too_large"
                } else {
                    "bad_request"
                };
                error_response(status, code, format!("body: {}", rejection.body_text()))
            })?;
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(error_response(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "body: must be a JSON object".into(),
            ));
        }
        Ok(JsonObject(bytes))
    }
}

/// `application/json`, with parameters or not, or any `application/...+json`.
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json") || subtype.to_ascii_lowercase().ends_with("+json"))
}
