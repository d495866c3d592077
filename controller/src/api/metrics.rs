//! `GET /metrics` (administrators; Prometheus scrapes it with a token or a password) and the
//! layer that times every API request by its route template, method and status.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::User;
use super::{Answer, Shared};
use crate::services::Services;

pub fn routes() -> OpenApiRouter<Arc<Services>> {
    OpenApiRouter::new().routes(routes!(metrics))
}

#[utoipa::path(get, path = "/metrics", tag = "monitoring",
    responses((status = OK, description = "Prometheus text format 0.0.4 (administrators)", body = String, content_type = "text/plain; version=0.0.4; charset=utf-8")))]
async fn metrics(State(services): Shared, User(caller): User) -> Answer<Response> {
    caller.require_admin("read the metrics")?;
    let text = services.metrics.render(&services).await?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

/// Times the request through its handler (a route layer: it runs once a route matched).
pub async fn timed(State(services): Shared, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    services.metrics.observe_request(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}
