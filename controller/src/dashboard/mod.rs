//! The web pages every controller node serves: the administrators' dashboard (overview, hosts,
//! instances, volumes, images, events) rendered on the server (maud, escaped) and kept current
//! in the browser from the event stream (`assets/*.js`, no framework, no build step; uPlot for
//! graphs, its file pinned in `assets/`).
//!
//! - **Login.** `GET /login` is a form; `POST /login` checks the password like the API does
//!   (the same bounded pool and failure limits) and starts a session: an API token named
//!   `dashboard`, lasting [`SESSION_SECS`], kept replicated (so it survives a leader change)
//!   and sent back as an `HttpOnly; Secure; SameSite=Strict` cookie. `POST /logout` revokes
//!   it. The administrators' pages refuse other users (403).
//! - **Cross-site requests.** The cookie is never sent by another site's page (SameSite
//!   Strict), and the login form also refuses a request whose `Origin` is another site.
//!   Every other form that changes something also carries the session's token ([`csrf`]).
//! - **Users' pages.** The Marketplace ([`marketplace`]) and Storage ([`storage`]) pages are
//!   for every logged-in user; a user who is not an administrator lands on the first.

mod csrf;
mod events_log;
mod hosts;
mod images;
mod instances;
mod layout;
mod marketplace;
mod overview;
mod storage;
mod volumes;

use std::sync::Arc;

use axum::extract::{Form, FromRequest, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use stratus_common::api::CreateApiToken;

use crate::api::extract::{origin, session_cookie, SESSION_COOKIE};
use crate::api::{status_of, Answer, Shared};
use crate::failure::{Failure, Kind};
use crate::replica::Consistency;
use crate::services::Services;
use crate::users::Caller;
use layout::Section;

/// How long a session lasts.
pub const SESSION_SECS: u64 = 12 * 3600;
/// The name of the API token a session is.
const SESSION_TOKEN_NAME: &str = "dashboard";

pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/", get(overview))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/ui/{file}", get(asset))
        .merge(instances::routes())
        .merge(hosts::routes())
        .merge(volumes::routes())
        .merge(images::routes())
        .merge(events_log::routes())
        .merge(marketplace::routes())
        .merge(storage::routes())
}

/// The pages' scripts, styles and graph library: (name, content type, bytes).
const ASSETS: &[(&str, &str, &str)] = &[
    ("style.css", "text/css", include_str!("assets/style.css")),
    ("live.js", "text/javascript", include_str!("assets/live.js")),
    (
        "hosts.js",
        "text/javascript",
        include_str!("assets/hosts.js"),
    ),
    (
        "volumes.js",
        "text/javascript",
        include_str!("assets/volumes.js"),
    ),
    (
        "events.js",
        "text/javascript",
        include_str!("assets/events.js"),
    ),
    (
        "overview.js",
        "text/javascript",
        include_str!("assets/overview.js"),
    ),
    (
        "instances.js",
        "text/javascript",
        include_str!("assets/instances.js"),
    ),
    (
        "uplot.js",
        "text/javascript",
        include_str!("assets/uPlot.iife.min.js"),
    ),
    (
        "marketplace.js",
        "text/javascript",
        include_str!("assets/marketplace.js"),
    ),
    (
        "storage.js",
        "text/javascript",
        include_str!("assets/storage.js"),
    ),
    (
        "uplot.css",
        "text/css",
        include_str!("assets/uPlot.min.css"),
    ),
];

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, kind, text)) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_str(&format!("{kind}; charset=utf-8")).expect("ASCII"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
            ],
            *text,
        )
            .into_response(),
        None => html(StatusCode::NOT_FOUND, String::from("not found")),
    }
}

/// An HTML answer with the headers every page gets: no caching, no framing, no sniffing,
/// scripts and styles from this origin only.
fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, Html(body)).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        ("cache-control", "no-store"),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
        (
            "content-security-policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Request parts holding `headers`, for the API's extractors' helpers.
fn parts_of(headers: &HeaderMap) -> axum::http::request::Parts {
    let mut parts = axum::http::Request::new(()).into_parts().0;
    parts.headers = headers.clone();
    parts
}

/// The caller of the session cookie, if it is one in force.
async fn session(services: &Services, headers: &HeaderMap) -> Option<Caller> {
    let token = session_cookie(&parts_of(headers))?;
    services.users.authenticate_token(&token).await.ok()
}

/// The caller of a page anyone logged in may see; without a session, the answer is the way
/// to the login form.
pub(crate) async fn viewer(services: &Services, headers: &HeaderMap) -> Result<Caller, Response> {
    session(services, headers)
        .await
        .ok_or_else(|| Redirect::to("/login").into_response())
}

/// The caller of an administrators' page; anyone else is refused it.
pub(crate) async fn administrator(
    services: &Services,
    headers: &HeaderMap,
) -> Result<Caller, Response> {
    let caller = viewer(services, headers).await?;
    if !caller.admin {
        return Err(refusal(&caller));
    }
    Ok(caller)
}

/// The answer to a page `caller` may not see.
fn refusal(caller: &Caller) -> Response {
    html(
        StatusCode::FORBIDDEN,
        layout::refused(&caller.name).into_string(),
    )
}

/// A page's answer: the page, or where the browser goes instead.
type Page = Answer<Response>;

async fn overview(State(services): Shared, headers: HeaderMap) -> Page {
    let caller = match viewer(&services, &headers).await {
        Ok(caller) => caller,
        Err(answer) => return Ok(answer),
    };
    if !caller.admin {
        // Another user's first page is elsewhere, if the site has one for them.
        return Ok(match Section::home(&caller) {
            "/" => refusal(&caller),
            home => Redirect::to(home).into_response(),
        });
    }
    let view = overview::Overview {
        cluster: services.cluster.view().await?,
        hosts: services.hosts.list(&caller).await?,
        instances: services.instances.list(&caller).await?,
        activity: services
            .events
            .latest(overview::ACTIVITY, |e| e.visible_to(&caller))
            .iter()
            .map(|e| e.envelope.clone())
            .collect(),
        position: services.events.position(),
        cache: {
            let latest = services.observed.hosts.latest();
            (!latest.is_empty()).then(|| {
                latest.iter().fold((0, 0), |(h, m), (_, s)| {
                    (h + s.cache_hits, m + s.cache_misses)
                })
            })
        },
    };
    Ok(html(
        StatusCode::OK,
        overview::render(&caller, &view).into_string(),
    ))
}

async fn login_form() -> Response {
    html(StatusCode::OK, layout::login(None).into_string())
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
}

async fn login(State(services): Shared, request: axum::extract::Request) -> Answer<Response> {
    let (parts, body) = request.into_parts();
    let client = origin(&parts);
    if !same_origin(&parts.headers, client.host.as_deref()) {
        return Ok(html(
            StatusCode::FORBIDDEN,
            layout::login(Some("This form can only be sent from this site.")).into_string(),
        ));
    }
    // The client's address as the API's own login sees it (for the per-source limits).
    let source = client.address;
    let request = axum::extract::Request::from_parts(parts, body);
    let Ok(Form(form)) = Form::<LoginForm>::from_request(request, &()).await else {
        return Ok(html(
            StatusCode::BAD_REQUEST,
            layout::login(Some("Give a user name and a password.")).into_string(),
        ));
    };
    let caller = match services
        .users
        .authenticate(&form.username, &form.password, source)
        .await
    {
        Ok(caller) => caller,
        Err(e) => {
            let status = status_of(e.kind());
            let message = match e.kind() {
                Kind::Unauthenticated => "Wrong user name or password.".to_owned(),
                _ => e.to_string(),
            };
            return Ok(html(status, layout::login(Some(&message)).into_string()));
        }
    };
    let created = services
        .users
        .create_token(
            &caller,
            CreateApiToken {
                name: SESSION_TOKEN_NAME.into(),
                expires_in_secs: Some(SESSION_SECS),
            },
        )
        .await?;
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; Max-Age={SESSION_SECS}; HttpOnly; Secure; SameSite=Strict",
        created.token
    );
    let mut response = Redirect::to(Section::home(&caller)).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("a token is visible ASCII"),
    );
    Ok(response)
}

/// Ends the session: its token is revoked and the cookie cleared.
async fn logout(State(services): Shared, headers: HeaderMap) -> Answer<Response> {
    if let (Some(caller), Some(id)) = (
        session(&services, &headers).await,
        session_token_id(&services, &headers).await,
    ) {
        services.users.revoke_token(&caller, &id).await?;
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "stratus_session=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict",
        ),
    );
    Ok(response)
}

/// The ID of the token the session cookie holds.
async fn session_token_id(services: &Services, headers: &HeaderMap) -> Option<String> {
    let secret = session_cookie(&parts_of(headers))?;
    let digest = crate::decide::secret_digest(&secret);
    services
        .replica
        .read(Consistency::Linearizable, |s| {
            s.trust.api_tokens.get(&digest).map(|t| t.id.clone())
        })
        .await
        .ok()
        .flatten()
}

/// Whether the request's `Origin`, if it has one, is the site the client asked for (`host`:
/// its `Host`, or the one a controller that passed the request on says it had).
fn same_origin(headers: &HeaderMap, host: Option<&str>) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = host.unwrap_or_default();
    origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .is_some_and(|o| o.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_origin(origin: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        headers
    }

    #[test]
    fn the_login_form_is_taken_only_from_the_site_the_client_asked_for() {
        let host = Some("ctl1.example.org:8440");
        assert!(same_origin(&with_origin(None), host));
        assert!(same_origin(
            &with_origin(Some("https://ctl1.example.org:8440")),
            host
        ));
        assert!(!same_origin(
            &with_origin(Some("https://evil.example")),
            host
        ));
        assert!(!same_origin(&with_origin(Some("null")), host));
        assert!(!same_origin(
            &with_origin(Some("https://ctl1.example.org:8440")),
            None
        ));
    }
}
