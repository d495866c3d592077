//! Request extractors: users (client certificate, API token or HTTP Basic), host agents (by
//! their host certificate), and JSON bodies whose errors come back as the API's JSON errors
//! naming the field at fault. A body must be a JSON object sent
//! as `application/json`: a form a cross-site page can send (`text/plain`) and an array that
//! serde would read into a struct field by field are both refused.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::Json;
use base64::Engine as _;
use serde::de::DeserializeOwned;

use super::forward::{FORWARDED_CERTIFICATE, FORWARDED_FOR, FORWARDED_HOST};
use super::{error_response, ApiFailure};
use crate::hosts::enrolment::HostIdentity;
use crate::pki::tls::PeerCertificate;
use crate::pki::{holder_of, Holder};
use crate::services::Services;
use crate::users::{Caller, UserError};

/// An authenticated user: by a client certificate an administrator mapped to the user (which
/// takes precedence), by an API token (`Authorization: Bearer`), or by HTTP Basic.
pub struct User(pub Caller);

impl FromRequestParts<Arc<Services>> for User {
    type Rejection = ApiFailure;

    async fn from_request_parts(
        parts: &mut Parts,
        services: &Arc<Services>,
    ) -> Result<Self, Self::Rejection> {
        let origin = origin(parts);
        let subject = origin
            .certificate
            .as_deref()
            .and_then(|der| match holder_of(der) {
                Some(Holder::User { subject }) => Some(subject),
                _ => None,
            });
        let authorization = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if let Some(subject) = subject {
            match services.users.authenticate_certificate(&subject).await {
                Ok(caller) => return Ok(User(caller)),
                // Other credentials may still say who it is.
                Err(UserError::UnmappedSubject(_)) if authorization.is_some() => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(token) = authorization.and_then(|v| v.strip_prefix("Bearer ")) {
            return Ok(User(services.users.authenticate_token(token.trim()).await?));
        }
        // The web pages' session: an API token in a SameSite=Strict cookie, so no other site's
        // page can make a browser send it (and API bodies must be JSON, which a form cannot
        // send without a CORS preflight this API never grants).
        if let (None, Some(token)) = (authorization, session_cookie(parts)) {
            return Ok(User(services.users.authenticate_token(&token).await?));
        }
        let (user, password) = basic_credentials(parts)?;
        Ok(User(
            services
                .users
                .authenticate(&user, &password, origin.address)
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
        let Ok((user, password)) = basic_credentials(parts) else {
            User::from_request_parts(parts, services).await?;
            return Ok(LocalUser);
        };
        services
            .users
            .authenticate_even_alone(&user, &password, source(parts))
            .await?;
        Ok(LocalUser)
    }
}

/// Where a request really came from: its connection's address and the certificate the
/// connection presented or, on a request another controller forwarded (its connection holds a
/// controller's certificate), what that controller said of its own client.
pub struct Origin {
    pub address: Option<IpAddr>,
    pub certificate: Option<Arc<Vec<u8>>>,
    /// The `Host` the client asked for.
    pub host: Option<String>,
}

pub fn origin(parts: &Parts) -> Origin {
    let address = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let certificate = parts
        .extensions
        .get::<PeerCertificate>()
        .map(|c| c.0.clone());
    let from_controller = certificate
        .as_deref()
        .is_some_and(|der| matches!(holder_of(der), Some(Holder::Controller(_))));
    let header = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v: &axum::http::HeaderValue| v.to_str().ok())
    };
    if !from_controller {
        return Origin {
            address,
            certificate,
            host: request_host(parts),
        };
    }
    Origin {
        host: header(FORWARDED_HOST).map(str::to_owned),
        address: header(FORWARDED_FOR)
            .and_then(|v| v.parse().ok())
            .or(address),
        certificate: header(FORWARDED_CERTIFICATE)
            .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
            .map(Arc::new),
    }
}

/// The host the client addressed: HTTP/1.1's `Host` header, or HTTP/2's `:authority` (which
/// arrives as the URI's authority).
pub fn request_host(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.as_str().to_owned()))
}

/// The address the request came from, when the server recorded it.
/// The name of the web pages' session cookie.
pub const SESSION_COOKIE: &str = "stratus_session";

/// The session cookie's value, if the request carries one.
pub fn session_cookie(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

pub fn source(parts: &Parts) -> Option<IpAddr> {
    origin(parts).address
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

/// A host agent, by the host certificate (in force) its connection presented, or that the
/// controller which forwarded the request says its client presented.
pub struct Agent(pub HostIdentity);

impl FromRequestParts<Arc<Services>> for Agent {
    type Rejection = ApiFailure;

    async fn from_request_parts(
        parts: &mut Parts,
        services: &Arc<Services>,
    ) -> Result<Self, Self::Rejection> {
        let certificate = origin(parts).certificate;
        Ok(Agent(
            services
                .hosts
                .identify(certificate.as_deref().map(Vec::as_slice))
                .await?,
        ))
    }
}

/// An [`Agent`] if the request presented a host certificate in force, else nobody (a host
/// enrolling with a join token has no certificate yet).
pub struct MaybeAgent(pub Option<HostIdentity>);

impl FromRequestParts<Arc<Services>> for MaybeAgent {
    type Rejection = ApiFailure;

    async fn from_request_parts(
        parts: &mut Parts,
        services: &Arc<Services>,
    ) -> Result<Self, Self::Rejection> {
        let certificate = origin(parts).certificate;
        let Some(der) = certificate else {
            return Ok(MaybeAgent(None));
        };
        Ok(MaybeAgent(Some(services.hosts.identify(Some(&der)).await?)))
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
