//! The event stream's envelope (`GET /api/v1/events`, server-sent events): one applied change
//! of the cloud, as the controller, the CLI (`stratus-events`) and the dashboard see it.

use serde::{Deserialize, Serialize};

/// The event type a stream sends when it cannot say everything that happened since the
/// client's last event (the node's window no longer reaches back that far, or the node was
/// given a snapshot): the client reads the current state again.
pub const EVENTS_LOST: &str = "events-lost";

/// Every event type the stream sends (the SSE `event` field): a client listening to typed
/// events listens to these. The controller's tests check that every event it makes has its
/// type here.
pub const TYPES: &[&str] = &[
    "cluster-bootstrapped",
    "user-created",
    "host-registered",
    "host-enrolled",
    "host-certificate-renewed",
    "host-revoked",
    "host-up",
    "host-down",
    "host-maintenance",
    "host-in-service",
    "host-fenced",
    "host-removed",
    "image-pinned",
    "image-unpinned",
    "image-registered",
    "image-entry-appended",
    "endorser-registered",
    "network-defined",
    "instance-created",
    "instance-rescheduled",
    "instance-booting",
    "instance-running",
    "instance-unknown",
    "instance-stopping",
    "instance-powering-off",
    "instance-stopped",
    "instance-starting",
    "instance-rebooting",
    "instance-done",
    "instance-failed",
    "volume-created",
    "volume-available",
    "volume-failed",
    "volume-deleting",
    "volume-deleted",
    "volume-attaching",
    "volume-attached",
    "volume-detaching",
    "volume-stuck",
    "volume-detached",
    "member-added",
    "member-promoted",
    "member-removed",
    "leader-changed",
    EVENTS_LOST,
];

/// How many events of one Raft entry a sequence number can tell apart: the sequence number of
/// the `k`-th event of entry `index` is `index * EVENTS_PER_ENTRY + k`.
pub const EVENTS_PER_ENTRY: u64 = 10_000;

/// One event.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EventEnvelope {
    /// Increasing, the same on every controller node for the same change (the SSE `id`).
    pub seq: u64,
    /// When it happened (RFC 3339, UTC).
    pub time: String,
    /// `instance-created`, `instance-running`, `volume-attached`, `leader-changed`, ...
    #[serde(rename = "type")]
    pub kind: String,
    pub object: EventObject,
    /// The user the object belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The host the object is on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// What else there is to say, by event type (a state's reason, a disk's target, ...).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// What an event is about: `instance` `5`, `volume` `<uuid>`, `host` `node-1`, ...
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EventObject {
    pub kind: String,
    pub id: String,
}

impl EventObject {
    /// `kind/id`, as the stream's `object` filter names it.
    pub fn key(&self) -> String {
        format!("{}/{}", self.kind, self.id)
    }
}

/// One message of a server-sent event stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseMessage {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// Reads a server-sent event stream a line at a time (the WHATWG rules the clients need:
/// `field: value` lines, comments, a blank line ending a message, data lines joined by
/// newlines, and the last event ID kept across messages, also from a message with no data,
/// which a stream sends to say where it stands).
#[derive(Debug, Default)]
pub struct SseParser {
    last_id: Option<String>,
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    /// Takes one line (without its line ending); a message once a blank line ends one.
    pub fn line(&mut self, line: &str) -> Option<SseMessage> {
        if line.is_empty() {
            let event = self.event.take();
            return self.data.take().map(|data| SseMessage {
                id: self.last_id.clone(),
                event,
                data,
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "id" => self.last_id = Some(value.to_owned()),
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
        None
    }

    /// The last event ID the stream gave, to reconnect with.
    pub fn last_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_end_at_a_blank_line_and_comments_are_skipped() {
        let mut parser = SseParser::default();
        let mut messages = Vec::new();
        for line in [
            ": position",
            "id: 69999",
            "",
            "id: 70001",
            "event: instance-running",
            "data: {\"a\":",
            "data:1}",
            "retry: 1000",
            "",
            "data",
            "",
        ] {
            messages.extend(parser.line(line));
        }
        assert_eq!(
            messages,
            [
                SseMessage {
                    id: Some("70001".into()),
                    event: Some("instance-running".into()),
                    data: "{\"a\":\n1}".into(),
                },
                SseMessage {
                    id: Some("70001".into()),
                    ..SseMessage::default()
                },
            ]
        );
        assert_eq!(parser.last_id(), Some("70001"));
        let mut fresh = SseParser::default();
        assert_eq!(fresh.line("id: 5"), None);
        assert_eq!(fresh.line(""), None);
        assert_eq!(fresh.last_id(), Some("5"));
    }
}
