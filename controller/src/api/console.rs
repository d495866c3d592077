//! The serial console of an instance, as its host pushes it: `GET
//! /api/v1/instances/{id}/console` (owner or administrator) answers the kept output (the
//! last 256 KiB) as `text/plain`; with `?follow=true` the answer goes on streaming new output
//! as it comes, until the instance is Done or Failed or the client goes. Hosts push to
//! `POST /api/v1/hosts/{name}/observed` (their own name only, as their certificate says).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body as HttpBody, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use stratus_common::observed::{HostObserved, ObservedAnswer};
use tokio::sync::watch;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Agent, Body, User};
use super::{bad_query, instance_id, Answer, Shared};
use crate::services::Services;
use crate::users::Caller;

/// How often a follower with nothing new checks that the instance still exists.
const FOLLOW_CHECK: Duration = Duration::from_secs(2);

pub fn routes() -> OpenApiRouter<Arc<Services>> {
    OpenApiRouter::new()
        .routes(routes!(console))
        .routes(routes!(host_observed))
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(default, deny_unknown_fields)]
struct ConsoleQuery {
    /// Keep the answer open and stream new output as it comes.
    follow: bool,
}

#[utoipa::path(get, path = "/api/v1/instances/{id}/console", tag = "instances", params(("id" = u64, Path, description = "The instance's ID"), ConsoleQuery),
    responses((status = OK, description = "The serial console's kept output (the last 256 KiB); with `follow`, new output streams on", body = String, content_type = "text/plain")))]
async fn console(
    State(services): Shared,
    User(caller): User,
    Path(id): Path<String>,
    query: Result<Query<ConsoleQuery>, axum::extract::rejection::QueryRejection>,
) -> Answer<Response> {
    let Query(query) = query.map_err(bad_query)?;
    let id = instance_id(&id)?;
    services.instances.get(&caller, id).await?;
    let text = |body: HttpBody| ([(header::CONTENT_TYPE, "text/plain")], body).into_response();
    if !query.follow {
        let kept = services.observed.consoles.read(id, 0);
        return Ok(text(HttpBody::from(
            kept.map(|k| k.bytes).unwrap_or_default(),
        )));
    }
    let follow = Follow {
        end: services.observed.consoles.watch(id),
        services,
        caller,
        id,
        position: 0,
    };
    Ok(text(HttpBody::from_stream(futures_util::stream::unfold(
        follow,
        Follow::next,
    ))))
}

/// A reader following one console.
struct Follow {
    services: Arc<Services>,
    caller: Caller,
    id: u64,
    /// The log offset sent up to.
    position: u64,
    end: watch::Receiver<u64>,
}

impl Follow {
    /// The next output, once there is some; `None` ends the stream.
    async fn next(mut self) -> Option<(Result<Bytes, std::io::Error>, Self)> {
        loop {
            if let Some(kept) = self.services.observed.consoles.read(self.id, self.position) {
                if !kept.bytes.is_empty() {
                    self.position = kept.start + kept.bytes.len() as u64;
                    return Some((Ok(Bytes::from(kept.bytes)), self));
                }
            }
            match tokio::time::timeout(FOLLOW_CHECK, self.end.changed()).await {
                Ok(Ok(())) => {}
                // Dropped to keep the consoles' budget: nothing more will come this way.
                Ok(Err(_)) => return None,
                Err(_) => match self.services.instances.get(&self.caller, self.id).await {
                    Ok(instance) if !instance.state.is_terminal() => {}
                    _ => return None,
                },
            }
        }
    }
}

#[utoipa::path(post, path = "/api/v1/hosts/{name}/observed", tag = "agents", request_body = HostObserved,
    params(("name" = String, Path, description = "The host's name (its certificate's)")),
    security(("host_certificate" = [])),
    responses((status = OK, body = ObservedAnswer)))]
async fn host_observed(
    State(services): Shared,
    Agent(host): Agent,
    Path(name): Path<String>,
    Body(observed): Body<HostObserved>,
) -> Answer<impl IntoResponse> {
    // A host speaks only for itself (its certificate names it).
    host.require(&name)?;
    Ok(Json(services.observed.accept(&name, observed).await?))
}
