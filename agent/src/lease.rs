//! The host's lease with the controller, for self-fencing: where the site sets a lease, an
//! agent that has heard nothing from the controller for that long since it *sent* its last
//! answered request destroys its guests that may be evacuated, because the leader may fence
//! the host and start them elsewhere once it has heard nothing for the lease plus a margin
//! (see the controller's `hosts::fencing`). Counting from the sending keeps this deadline
//! before the leader's, which counts from when it heard the request.
//!
//! The clock is `CLOCK_BOOTTIME` (it runs on while the host is suspended and never jumps with
//! the wall clock). What must survive an agent restart is kept in `<state_dir>/lease`: the
//! lease, which instances may be evacuated (written before any of them is started), and the
//! last contact (written at least every quarter lease, so a restarted agent counts from a
//! contact no later than the real one and fences early rather than late). A record from an
//! earlier host boot is ignored: its guests went with the boot.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stratus_common::agent::{Desire, HostDesired};

use crate::durable::{self, WriteError};

/// Time since the host booted, suspended time included.
pub fn boottime() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(Duration::from)
        .expect("CLOCK_BOOTTIME is available on Linux")
}

/// What is kept on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    /// The host boot it was written in.
    boot: String,
    /// The cluster the controller serves (its guests' domain names carry it).
    #[serde(default)]
    cluster_id: String,
    /// [`boottime`] in milliseconds when the last answered request was sent.
    contact_ms: Option<u64>,
    lease_secs: Option<u64>,
    /// Instances that may be evacuated, as the last answer listed them.
    evacuable: BTreeSet<u64>,
    /// Their guests were destroyed for the lease; no contact since.
    fenced: bool,
    /// The agent gave the lease up as it stopped: it runs out no more until the next answer.
    #[serde(default)]
    released: bool,
}

/// The lease, its last renewal, and whether this host fenced itself.
pub struct Lease {
    path: PathBuf,
    state: Mutex<State>,
    /// Wakes the watchdog: the lease or the contact changed.
    pub changed: tokio::sync::Notify,
}

struct State {
    record: Record,
    /// The contact last written to disk.
    saved_contact_ms: Option<u64>,
}

impl Lease {
    /// The lease kept at `path`, if it was written during host boot `boot`.
    pub fn open(path: PathBuf, boot: &str) -> Self {
        let record = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Record>(&bytes).ok())
            .filter(|r| r.boot == boot)
            .unwrap_or_else(|| Record {
                boot: boot.to_owned(),
                ..Record::default()
            });
        if record.lease_secs.is_some() {
            tracing::info!(
                lease_secs = record.lease_secs,
                evacuable = record.evacuable.len(),
                fenced = record.fenced,
                "lease kept from before this agent started"
            );
        }
        Self {
            path,
            state: Mutex::new(State {
                saved_contact_ms: record.contact_ms,
                record,
            }),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// The controller answered a request sent at `sent_at` (a [`boottime`]) with `desired`.
    /// Written to disk at once when what may be evacuated or the lease changed, or the host
    /// had fenced itself; otherwise the watchdog writes the contact later.
    pub fn renewed(&self, sent_at: Duration, desired: &HostDesired) -> Result<(), WriteError> {
        let evacuable: BTreeSet<u64> = desired
            .instances
            .iter()
            .filter(|i| i.evacuate && i.desire != Desire::Destroy)
            .map(|i| i.id)
            .collect();
        let mut state = self.state.lock().expect("lease lock");
        let sent_ms = sent_at.as_millis() as u64;
        let contact_ms = Some(state.record.contact_ms.map_or(sent_ms, |c| c.max(sent_ms)));
        let urgent = state.record.evacuable != evacuable
            || state.record.lease_secs != desired.lease_secs
            || state.record.fenced
            || state.record.released;
        if state.record.fenced {
            tracing::info!("in touch with the controller again: the host is no longer fenced");
        }
        let urgent = urgent || state.record.cluster_id != desired.cluster_id;
        state.record.cluster_id.clone_from(&desired.cluster_id);
        state.record.contact_ms = contact_ms;
        state.record.lease_secs = desired.lease_secs;
        state.record.evacuable = evacuable;
        state.record.fenced = false;
        state.record.released = false;
        if urgent {
            self.write(&mut state)?;
        }
        drop(state);
        self.changed.notify_one();
        Ok(())
    }

    /// When the lease runs out (a [`boottime`]), when there is one.
    pub fn deadline(&self) -> Option<Duration> {
        let state = self.state.lock().expect("lease lock");
        let record = &state.record;
        if record.released {
            return None;
        }
        Some(Duration::from_millis(record.contact_ms?) + Duration::from_secs(record.lease_secs?))
    }

    /// When the last answered request was sent (a [`boottime`]).
    pub fn contact(&self) -> Option<Duration> {
        let contact_ms = self.state.lock().expect("lease lock").record.contact_ms;
        contact_ms.map(Duration::from_millis)
    }

    /// The cluster of the last answer.
    pub fn cluster_id(&self) -> String {
        self.state
            .lock()
            .expect("lease lock")
            .record
            .cluster_id
            .clone()
    }

    /// Whether the lease ran out: guests that may be evacuated must not run.
    pub fn expired(&self) -> bool {
        self.expired_at(boottime())
    }

    fn expired_at(&self, now: Duration) -> bool {
        self.deadline().is_some_and(|deadline| now >= deadline)
    }

    /// Whether the host fenced itself and has not been in touch since.
    pub fn fenced(&self) -> bool {
        self.state.lock().expect("lease lock").record.fenced
    }

    /// The instances that may be evacuated.
    pub fn evacuable(&self) -> BTreeSet<u64> {
        self.state
            .lock()
            .expect("lease lock")
            .record
            .evacuable
            .clone()
    }

    /// The lease, when the site has one.
    pub fn lease(&self) -> Option<Duration> {
        let secs = self.state.lock().expect("lease lock").record.lease_secs;
        secs.map(Duration::from_secs)
    }

    /// Whether there is a lease to give up or honour: one is held, and it neither ran out into
    /// a self-fencing nor was given up.
    pub fn held(&self) -> bool {
        let state = self.state.lock().expect("lease lock");
        let record = &state.record;
        record.lease_secs.is_some() && !record.fenced && !record.released
    }

    /// Records that the controller took the lease back (the agent stops on purpose): it runs
    /// out no more, also after a restart, until the controller answers again.
    pub fn release(&self) -> Result<(), WriteError> {
        let mut state = self.state.lock().expect("lease lock");
        state.record.released = true;
        self.write(&mut state)?;
        drop(state);
        self.changed.notify_one();
        Ok(())
    }

    /// Records that the guests that may be evacuated were destroyed for the lease.
    pub fn mark_fenced(&self) -> Result<(), WriteError> {
        let mut state = self.state.lock().expect("lease lock");
        state.record.fenced = true;
        self.write(&mut state)
    }

    /// Writes the last contact when it moved since it was last written.
    pub fn save(&self) -> Result<(), WriteError> {
        let mut state = self.state.lock().expect("lease lock");
        if state.saved_contact_ms == state.record.contact_ms {
            return Ok(());
        }
        self.write(&mut state)
    }

    fn write(&self, state: &mut State) -> Result<(), WriteError> {
        let bytes = serde_json::to_vec(&state.record).expect("a lease record serializes");
        durable::replace(&self.path, &bytes, 0o600, None)?;
        state.saved_contact_ms = state.record.contact_ms;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(lease_secs: Option<u64>, instances: &[(u64, bool, Desire)]) -> HostDesired {
        let image = stratus_common::agent::ImageSpec {
            name: "img".into(),
            format: stratus_common::api::DiskFormat::Raw,
            disk: stratus_common::api::Artifact {
                locations: vec![],
                sha256: String::new(),
                size: None,
                compression: stratus_common::api::Compression::None,
            },
            kernel: None,
            initrd: None,
            cmdline: None,
        };
        let items: Vec<(u64, Desire)> = instances.iter().map(|&(id, _, d)| (id, d)).collect();
        let mut want = crate::reconcile::tests::desired(&image, &items);
        for (instance, &(_, evacuate, _)) in want.instances.iter_mut().zip(instances) {
            instance.evacuate = evacuate;
        }
        want.lease_secs = lease_secs;
        want
    }

    #[test]
    fn the_lease_runs_from_the_sending_of_the_last_answered_request() {
        let dir = tempfile::tempdir().unwrap();
        let lease = Lease::open(dir.path().join("lease"), "boot-1");
        assert_eq!(lease.deadline(), None, "no lease before any answer");
        assert!(!lease.expired());
        let sent = Duration::from_secs(1000);
        let want = desired(
            Some(60),
            &[
                (1, true, Desire::Run),
                (2, false, Desire::Run),
                (3, true, Desire::Destroy),
            ],
        );
        lease.renewed(sent, &want).unwrap();
        assert_eq!(lease.deadline(), Some(Duration::from_secs(1060)));
        assert_eq!(lease.evacuable(), BTreeSet::from([1]));
        assert!(!lease.expired_at(Duration::from_secs(1059)));
        assert!(lease.expired_at(Duration::from_secs(1060)));
        // An answer to an older request (sent before) does not move the contact back.
        lease.renewed(Duration::from_secs(990), &want).unwrap();
        assert_eq!(lease.deadline(), Some(Duration::from_secs(1060)));
        // No lease: never expires.
        lease.renewed(sent, &desired(None, &[])).unwrap();
        assert!(!lease.expired_at(Duration::from_secs(1_000_000)));
    }

    #[test]
    fn what_may_be_evacuated_survives_a_restart_in_the_same_boot_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lease");
        let lease = Lease::open(path.clone(), "boot-1");
        lease
            .renewed(
                Duration::from_secs(100),
                &desired(Some(30), &[(7, true, Desire::Run)]),
            )
            .unwrap();
        // Written at once: the set of evacuable instances changed.
        let again = Lease::open(path.clone(), "boot-1");
        assert_eq!(again.evacuable(), BTreeSet::from([7]));
        assert_eq!(again.deadline(), Some(Duration::from_secs(130)));
        // A later contact alone waits for save().
        lease
            .renewed(
                Duration::from_secs(200),
                &desired(Some(30), &[(7, true, Desire::Run)]),
            )
            .unwrap();
        assert_eq!(
            Lease::open(path.clone(), "boot-1").deadline(),
            Some(Duration::from_secs(130)),
            "an older contact on disk: a restarted agent fences early, never late"
        );
        lease.save().unwrap();
        assert_eq!(
            Lease::open(path.clone(), "boot-1").deadline(),
            Some(Duration::from_secs(230))
        );
        lease.release().unwrap();
        let released = Lease::open(path.clone(), "boot-1");
        assert_eq!(released.deadline(), None, "given up: it runs out no more");
        assert!(!released.held());
        lease
            .renewed(
                Duration::from_secs(300),
                &desired(Some(30), &[(7, true, Desire::Run)]),
            )
            .unwrap();
        assert!(lease.held());
        assert_eq!(
            Lease::open(path.clone(), "boot-1").deadline(),
            Some(Duration::from_secs(330)),
            "held again with the next answer, on disk at once"
        );
        lease.mark_fenced().unwrap();
        assert!(Lease::open(path.clone(), "boot-1").fenced());
        let other_boot = Lease::open(path, "boot-2");
        assert_eq!(other_boot.deadline(), None, "the guests went with the boot");
        assert!(other_boot.evacuable().is_empty());
        assert!(!other_boot.fenced());
    }

    #[test]
    fn the_boot_clock_moves_forward() {
        let a = boottime();
        let b = boottime();
        assert!(b >= a && a > Duration::ZERO);
    }
}
