//! The events page (administrators): `/events`, the latest events this node keeps, newest
//! first, then every new one as it comes (`assets/events.js`), filtered in the page by type
//! (a prefix such as `instance-` or a whole type) and object (`instance/12`, or a kind).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;
use maud::html;
use serde::Deserialize;

use super::layout::{page, Section};
use super::overview::activity_item;
use super::{administrator, html, Page};
use crate::api::Shared;
use crate::services::Services;

/// How many of the latest events the page starts with.
const SHOWN: usize = 500;

pub fn routes() -> Router<Arc<Services>> {
    Router::new().route("/events", get(list))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Filter {
    #[serde(rename = "type")]
    kind: String,
    object: String,
}

async fn list(State(services): Shared, headers: HeaderMap, Query(filter): Query<Filter>) -> Page {
    let caller = match administrator(&services, &headers).await {
        Ok(caller) => caller,
        Err(answer) => return Ok(answer),
    };
    let position = services.events.position();
    let events = services.events.latest(SHOWN, |e| e.visible_to(&caller));
    let page = page(
        &caller,
        Section::Events,
        "Events",
        Some(position),
        &["events.js"],
        html! {
            section {
                h2 { "Events" }
                form.filter #event-filter method="get" action="/events" {
                    label { "type " input name="type" value=(filter.kind) placeholder="instance- or volume-attached"; }
                    label { "object " input name="object" value=(filter.object) placeholder="instance/12 or volume"; }
                    button type="submit" { "Filter" }
                    span.muted { "the latest " (SHOWN) " this node keeps, then live" }
                }
                ol #event-list reversed {
                    @for event in events.iter().rev() {
                        (activity_item(&event.envelope))
                    }
                }
            }
        },
    );
    Ok(html(StatusCode::OK, page.into_string()))
}
