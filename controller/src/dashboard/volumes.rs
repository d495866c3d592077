//! The volumes page (administrators): `/volumes`, every persistent disk with its owner,
//! visibility, size, state and storage host, and each attachment with its instance, device
//! and state (`detaching` and `stuck` shown as such, with since when). `assets/volumes.js`
//! keeps each row current: on any `volume-*` event it reads that volume again from the API
//! (`GET /api/v1/volumes/{id}`) and redraws its row.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};
use stratus_common::volumes::Volume;

use super::instances::label;
use super::layout::{page, Section};
use super::{administrator, html, Page};
use crate::api::Shared;
use crate::services::Services;
use crate::users::Caller;

pub fn routes() -> Router<Arc<Services>> {
    Router::new().route("/volumes", get(list))
}

async fn list(State(services): Shared, headers: HeaderMap) -> Page {
    let caller = match administrator(&services, &headers).await {
        Ok(caller) => caller,
        Err(answer) => return Ok(answer),
    };
    let position = services.events.position();
    let volumes = services.volumes.list(&caller).await?;
    Ok(html(
        StatusCode::OK,
        render(&caller, &volumes, position).into_string(),
    ))
}

fn render(caller: &Caller, volumes: &[Volume], position: u64) -> Markup {
    page(
        caller,
        Section::Volumes,
        "Volumes",
        Some(position),
        &["volumes.js"],
        html! {
            section {
                h2 { "Volumes" }
                table #volumes {
                    thead { tr {
                        th { "volume" } th { "tag" } th { "owner" } th { "visibility" } th { "size" }
                        th { "state" } th { "storage host" } th { "attachments" } th { "created" }
                    } }
                    tbody #volume-rows {
                        @for volume in volumes.iter().rev() {
                            tr id=(volume.id) data-volume=(volume.id) data-state=(label(&volume.state)) {
                                td { code { (volume.id) } }
                                td.tag { (volume.tag) }
                                td.owner { (volume.owner) }
                                td.visibility { (volume.visibility) }
                                td.size { (volume.size) " GiB" }
                                td.state { (label(&volume.state)) @if let Some(reason) = &volume.reason { " (" (reason) ")" } }
                                td.host { a href={ "/hosts/" (volume.host) } { (volume.host) } }
                                td.attachments {
                                    @if volume.attachments.is_empty() { "–" }
                                    ul {
                                        @for a in &volume.attachments {
                                            li data-instance=(a.instance) data-state=(label(&a.state)) {
                                                a href={ "/instances/" (a.instance) } { "instance " (a.instance) }
                                                " " (a.device) " " span.state { (label(&a.state)) }
                                                " since " (a.since)
                                                @if a.read_only { " (read-only)" }
                                                @if a.remote { " (over NBD)" }
                                            }
                                        }
                                    }
                                }
                                td.since { (volume.created) }
                            }
                        }
                    }
                }
            }
        },
    )
}
