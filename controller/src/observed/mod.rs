//! What hosts observe of their guests and of themselves, kept outside the replicated state:
//! console output ([`console`]), guests' CPU use ([`usage`]) and the hosts' own use over time
//! ([`host_usage`]). A host pushes them (`POST
//! /api/v1/hosts/{name}/observed`) only for the instances placed on it; users read an
//! instance's console (`GET /api/v1/instances/{id}/console`, owner or administrator) and see
//! its CPU use in its view.

pub mod console;
pub mod host_usage;
pub mod usage;

use std::time::Instant;

use base64::Engine;
use stratus_common::observed::{ConsoleResend, HostObserved, ObservedAnswer};

use crate::failure::{impl_failure, InputError};
use crate::replica::{Consistency, Replica, ReplicaError};
use console::Consoles;
use host_usage::HostUsages;
use usage::Usage;

#[derive(Debug, thiserror::Error)]
pub enum ObservedError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error("instance {instance} is not placed on host {host}")]
    WrongHost { instance: u64, host: String },
}

impl_failure!(ObservedError {
    delegate: [Input, Replica],
    own: [ObservedError::WrongHost { .. } => Kind::Forbidden],
});

pub struct Observed {
    replica: Replica,
    pub consoles: Consoles,
    usage: Usage,
    pub hosts: HostUsages,
}

impl Observed {
    pub fn new(replica: Replica) -> Self {
        Self {
            replica,
            consoles: Consoles::new(),
            usage: Usage::default(),
            hosts: HostUsages::default(),
        }
    }

    /// Takes a host's push: every instance must be placed on that host (a host speaks only for
    /// its own guests); returns the consoles it should send again.
    pub async fn accept(
        &self,
        host: &str,
        observed: HostObserved,
    ) -> Result<ObservedAnswer, ObservedError> {
        let mut decoded = Vec::with_capacity(observed.consoles.len());
        for chunk in &observed.consoles {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&chunk.data)
                .map_err(|e| InputError::new("consoles.data", format!("not base64: {e}")))?;
            if bytes.len() as u64 > stratus_common::observed::CONSOLE_KEEP_BYTES {
                return Err(InputError::new(
                    "consoles.data",
                    "longer than a console's kept window",
                )
                .into());
            }
            decoded.push((chunk.instance, chunk.offset, bytes));
        }
        let ids: Vec<u64> = decoded
            .iter()
            .map(|(id, _, _)| *id)
            .chain(observed.usage.iter().map(|u| u.instance))
            .collect();
        let stranger = self
            .replica
            .read(Consistency::Stale, |s| {
                ids.iter()
                    .copied()
                    .find(|id| s.instances.get(id).and_then(|i| i.host.as_deref()) != Some(host))
            })
            .await?;
        if let Some(instance) = stranger {
            return Err(ObservedError::WrongHost {
                instance,
                host: host.to_owned(),
            });
        }
        if observed.history.as_ref().is_some_and(|h| !h.is_bounded()) {
            return Err(InputError::new("history", "holds more than a day of samples").into());
        }
        let send_history = self.hosts.record(host, observed.host, observed.history);
        let now = Instant::now();
        for usage in observed.usage {
            self.usage.record(usage.instance, usage.cpu_percent, now);
        }
        let resend = decoded
            .into_iter()
            .filter_map(|(instance, offset, bytes)| {
                self.consoles
                    .push(instance, offset, &bytes)
                    .map(|from| ConsoleResend { instance, from })
            })
            .collect();
        Ok(ObservedAnswer {
            resend,
            send_history,
        })
    }

    /// The instance's CPU use, if its host measured it lately.
    pub fn cpu_percent(&self, instance: u64) -> Option<u32> {
        self.usage.cpu_percent(instance, Instant::now())
    }
}
