//! `GET /api/v1/events`: the event stream, as server-sent events. Each event is one SSE
//! message whose `id` is its sequence number, `event` its type and `data` its envelope
//! (JSON). A user receives the events of their own objects (and the site's catalogues), an
//! administrator everything.
//!
//! - `Last-Event-ID` (what browsers send when they reconnect) or `?since=<seq>`: first the
//!   kept events after it, preceded by `events-lost` when this node's window no longer
//!   reaches back that far; `?last=<n>`: the latest `n` events first. Neither: from now on.
//! - `?types=instance-running,volume-` (a name ending in `-` is a prefix) and
//!   `?object=instance/5` filter; `?follow=false` ends the answer after what is kept.
//! - Any node serves it: the numbers are the same on every node, so a client whose node
//!   went away reconnects to another with its last number.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde::Deserialize;
use stratus_common::events::EventEnvelope;
use tokio::sync::broadcast::{self, error::RecvError};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::User;
use super::{bad_query, Answer, Shared};
use crate::events::envelope::{lost, Published};
use crate::events::{now_ms, EventHub, Item};
use crate::failure::InputError;
use crate::services::Services;
use crate::users::Caller;

/// The most events `?last=` replays.
const MAX_LAST: usize = 1000;
/// How often an idle stream sends a comment, so proxies and clients see it alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub fn routes() -> OpenApiRouter<Arc<Services>> {
    OpenApiRouter::new().routes(routes!(events))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(default, deny_unknown_fields)]
struct EventsQuery {
    since: Option<u64>,
    last: Option<usize>,
    types: Option<String>,
    object: Option<String>,
    follow: bool,
}

impl Default for EventsQuery {
    fn default() -> Self {
        Self {
            since: None,
            last: None,
            types: None,
            object: None,
            follow: true,
        }
    }
}

/// Which events a client asked for.
#[derive(Debug, Default, PartialEq, Eq)]
struct Filter {
    /// Exact type names, or prefixes (ending in `-`); empty: every type.
    types: Vec<String>,
    /// `kind/id`.
    object: Option<String>,
}

impl Filter {
    fn parse(types: Option<&str>, object: Option<&str>) -> Result<Self, InputError> {
        let types: Vec<String> = types
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        if let Some(bad) = types
            .iter()
            .find(|t| !t.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'))
        {
            return Err(InputError::new(
                "types",
                format!("{bad:?} is not an event type (lowercase letters and '-')"),
            ));
        }
        let object = match object {
            None => None,
            Some(o)
                if o.split_once('/')
                    .is_some_and(|(k, id)| !k.is_empty() && !id.is_empty()) =>
            {
                Some(o.to_owned())
            }
            Some(o) => {
                return Err(InputError::new(
                    "object",
                    format!("{o:?} is not kind/id (instance/5, volume/<uuid>, host/<name>)"),
                ))
            }
        };
        Ok(Self { types, object })
    }

    fn matches(&self, event: &EventEnvelope) -> bool {
        let type_ok = self.types.is_empty()
            || self.types.iter().any(|t| {
                if t.ends_with('-') {
                    event.kind.starts_with(t.as_str())
                } else {
                    event.kind == *t
                }
            });
        type_ok
            && self
                .object
                .as_ref()
                .is_none_or(|o| *o == event.object.key())
    }
}

/// `Last-Event-ID`, if the client sent one.
fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, InputError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| InputError::new("Last-Event-ID", "must be an event's sequence number"))
}

#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventsQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this event (what a reconnecting browser sends)")),
    responses((status = OK, description = "Server-sent events: `id` the sequence number, `event` the type, `data` the envelope", body = EventEnvelope, content_type = "text/event-stream")))]
async fn events(
    State(services): Shared,
    User(caller): User,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Answer<Response> {
    let Query(query) = query.map_err(bad_query)?;
    let filter = Filter::parse(query.types.as_deref(), query.object.as_deref())?;
    let since = last_event_id(&headers)?.or(query.since);
    if query.last.is_some_and(|n| n > MAX_LAST) {
        return Err(InputError::new("last", format!("at most {MAX_LAST}")).into());
    }
    let hub = services.events.clone();
    // Subscribed before reading the window, so no event falls between the two.
    let live = hub.subscribe();
    let mut stream = Follow {
        hub: hub.clone(),
        live,
        caller,
        filter,
        pending: VecDeque::new(),
        sent_through: 0,
        follow: query.follow,
        position: None,
    };
    stream.start(since, query.last);
    let body = Sse::new(stream::unfold(stream, Follow::next));
    Ok(body
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// One client's stream.
struct Follow {
    hub: Arc<EventHub>,
    live: broadcast::Receiver<Item>,
    caller: Caller,
    filter: Filter,
    /// Ready to send.
    pending: VecDeque<EventEnvelope>,
    /// Every event numbered up to this one was sent or skipped.
    sent_through: u64,
    follow: bool,
    /// Where the stream starts (before what `pending` holds), told to the client first (an
    /// SSE `id` with no data), so it can resume from there even before its first event.
    position: Option<u64>,
}

impl Follow {
    fn wanted(&self, event: &Published) -> bool {
        event.visible_to(&self.caller) && self.filter.matches(&event.envelope)
    }

    /// What the client is sent before live events.
    fn start(&mut self, since: Option<u64>, last: Option<usize>) {
        match (since, last) {
            (Some(since), _) => {
                self.position = Some(since);
                self.replay(since);
            }
            (None, Some(count)) => {
                let latest = self.hub.latest(count, |e| self.wanted(e));
                let horizon = self.hub.horizon();
                self.sent_through = latest
                    .last()
                    .map_or(horizon, |e| e.envelope.seq.max(horizon));
                // Everything kept after the latest wanted one is unwanted; later ones come live.
                self.skip_kept();
                self.position = Some(
                    latest
                        .first()
                        .map_or(self.sent_through, |e| e.envelope.seq - 1),
                );
                self.pending
                    .extend(latest.iter().map(|e| e.envelope.clone()));
            }
            (None, None) => {
                self.skip_kept();
                self.position = Some(self.sent_through);
            }
        }
    }

    /// Marks every kept event as seen, without sending it.
    fn skip_kept(&mut self) {
        let replay = self.hub.replay(self.sent_through);
        if let Some(last) = replay.events.last() {
            self.sent_through = last.envelope.seq;
        }
        self.sent_through = self.sent_through.max(self.hub.horizon());
    }

    /// Queues the kept events after `since`, told first if some are lost.
    fn replay(&mut self, since: u64) {
        let replay = self.hub.replay(since);
        self.sent_through = since;
        if let Some(through) = replay.lost_through {
            self.lose(through);
        }
        for event in replay.events {
            self.offer(&event);
        }
    }

    fn lose(&mut self, through: u64) {
        if through > self.sent_through {
            self.pending.push_back(lost(through, now_ms()));
            self.sent_through = through;
        }
    }

    fn offer(&mut self, event: &Published) {
        if event.envelope.seq <= self.sent_through {
            return;
        }
        self.sent_through = event.envelope.seq;
        if self.wanted(event) {
            self.pending.push_back(event.envelope.clone());
        }
    }

    async fn next(mut self) -> Option<(Result<SseEvent, Infallible>, Self)> {
        if let Some(position) = self.position.take() {
            let marker = SseEvent::default()
                .id(position.to_string())
                .comment("position");
            return Some((Ok(marker), self));
        }
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(sse(&event)), self));
            }
            if !self.follow {
                return None;
            }
            match self.live.recv().await {
                Ok(Item::Event(event)) => self.offer(&event),
                Ok(Item::Lost(through)) => self.lose(through),
                // This client fell behind: what it missed comes from the window, if still there.
                Err(RecvError::Lagged(_)) => self.replay(self.sent_through),
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

fn sse(event: &EventEnvelope) -> SseEvent {
    let data = serde_json::to_string(event).expect("an envelope serializes");
    SseEvent::default()
        .id(event.seq.to_string())
        .event(&event.kind)
        .data(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_common::events::EventObject;

    fn envelope(kind: &str, object: &str) -> EventEnvelope {
        let (k, id) = object.split_once('/').unwrap();
        EventEnvelope {
            seq: 1,
            time: String::new(),
            kind: kind.into(),
            object: EventObject {
                kind: k.into(),
                id: id.into(),
            },
            owner: None,
            host: None,
            details: Default::default(),
        }
    }

    #[test]
    fn filters_take_types_prefixes_and_an_object() {
        let all = Filter::parse(None, None).unwrap();
        assert!(all.matches(&envelope("volume-attached", "volume/v")));
        let some = Filter::parse(Some("instance-running, volume-"), Some("volume/v")).unwrap();
        assert!(some.matches(&envelope("volume-attached", "volume/v")));
        assert!(!some.matches(&envelope("volume-attached", "volume/w")));
        assert!(!some.matches(&envelope("instance-running", "volume/v2")));
        let running = Filter::parse(Some("instance-running"), None).unwrap();
        assert!(running.matches(&envelope("instance-running", "instance/1")));
        assert!(!running.matches(&envelope("instance-running-late", "instance/1")));
        for (types, object, field) in [
            (Some("Instance"), None, "types"),
            (Some("a b"), None, "types"),
            (None, Some("instance"), "object"),
            (None, Some("/5"), "object"),
        ] {
            let err = Filter::parse(types, object).unwrap_err();
            assert_eq!(err.field, field, "{types:?} {object:?}");
        }
    }
}
