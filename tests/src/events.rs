//! A client of the event stream (`GET /api/v1/events`) for tests: the stream is read on a
//! thread of its own, each event handed over as it comes, so a test waits for the event it
//! means, with a deadline.

use std::io::BufRead;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use reqwest::StatusCode;
use stratus_common::events::{EventEnvelope, SseParser};

use crate::TestCloud;

/// An open stream.
pub struct EventStream {
    events: mpsc::Receiver<EventEnvelope>,
    /// The stream's position before its first event (the SSE `id` it starts with).
    pub position: Option<u64>,
}

impl EventStream {
    /// Opens `/events<query>` (e.g. `?types=instance-`) as `user`, from `last_event_id` if
    /// given (sent as `Last-Event-ID`).
    pub fn open(
        cloud: &TestCloud,
        user: &str,
        query: &str,
        last_event_id: Option<u64>,
    ) -> anyhow::Result<Self> {
        Self::connect(
            &cloud.streaming_client()?,
            &cloud.url(&format!("/events{query}")),
            user,
            &cloud.password(user),
            last_event_id,
        )
    }

    /// Opens the stream at `url` (a cluster node's, say) with `http`, which must not time
    /// the whole answer out.
    pub fn connect(
        http: &reqwest::blocking::Client,
        url: &str,
        user: &str,
        password: &str,
        last_event_id: Option<u64>,
    ) -> anyhow::Result<Self> {
        let mut request = http.get(url).basic_auth(user, Some(password));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send()?;
        if response.status() != StatusCode::OK {
            let status = response.status();
            bail!("events: {status}: {}", response.text().unwrap_or_default());
        }
        let (tx, rx) = mpsc::channel();
        let (position_tx, position_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut parser = SseParser::default();
            let mut position = Some(position_tx);
            for line in std::io::BufReader::new(response).lines() {
                let Ok(line) = line else { return };
                let message = parser.line(&line);
                if let (Some(tx), Some(id)) = (&position, parser.last_id()) {
                    let _ = tx.send(id.parse::<u64>().ok());
                    position = None;
                }
                let Some(message) = message else { continue };
                let event: EventEnvelope = match serde_json::from_str(&message.data) {
                    Ok(event) => event,
                    Err(e) => panic!("not an event envelope ({e}): {}", message.data),
                };
                if tx.send(event).is_err() {
                    return;
                }
            }
        });
        let position = position_rx
            .recv_timeout(Duration::from_secs(10))
            .context("the stream did not say where it starts")?;
        Ok(Self {
            events: rx,
            position,
        })
    }

    /// The events up to and including the first that `done` accepts; fails after `timeout`
    /// with what came.
    pub fn until(
        &mut self,
        timeout: Duration,
        done: impl Fn(&EventEnvelope) -> bool,
    ) -> anyhow::Result<Vec<EventEnvelope>> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) => {
                    let last = done(&event);
                    seen.push(event);
                    if last {
                        return Ok(seen);
                    }
                }
                Err(_) => bail!(
                    "the awaited event did not come in {timeout:?}; came: {:?}",
                    seen.iter()
                        .map(|e| format!("{} {} {}", e.seq, e.kind, e.object.key()))
                        .collect::<Vec<_>>()
                ),
            }
        }
    }

    /// The events that came so far, without waiting.
    pub fn drain(&mut self) -> Vec<EventEnvelope> {
        self.events.try_iter().collect()
    }
}
