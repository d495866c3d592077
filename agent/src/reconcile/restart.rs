//! The restart policy: a guest that stopped by itself (its emulator crashed or was killed, or
//! it powered itself off) is started again, with its data, when its instance says `always`,
//! also while the controller is out of reach; the report that it runs again says why. A guest
//! that keeps stopping is restarted at most [`MAX_RESTARTS`] times within [`RESTART_WINDOW`],
//! then left Stopped with the reason. The restarts are recorded in `instances/<id>/restarts`
//! (one line of Unix seconds each), so an agent that restarts itself still counts them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stratus_common::agent::DesiredInstance;
use stratus_common::api::RestartPolicy;

use super::{InstanceDirs, Reconciler};

/// At most this many restarts of one guest within [`RESTART_WINDOW`].
pub(super) const MAX_RESTARTS: usize = 3;
pub(super) const RESTART_WINDOW: Duration = Duration::from_secs(600);

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl InstanceDirs {
    fn restarts_file(&self, id: u64) -> std::path::PathBuf {
        self.dir(id).join("restarts")
    }

    /// When the guest was restarted by its host, oldest first (Unix seconds).
    pub(super) fn restarts(&self, id: u64) -> Vec<u64> {
        std::fs::read_to_string(self.restarts_file(id))
            .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Records a restart now; answers how many there were in all.
    pub(super) fn record_restart(&self, id: u64) -> std::io::Result<usize> {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.restarts_file(id))?;
        writeln!(file, "{}", now_secs())?;
        file.sync_all()?;
        Ok(self.restarts(id).len())
    }
}

/// Whether a guest that stopped by itself is started again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum AfterStop {
    Restart,
    /// Reported Stopped, with this reason.
    Report(String),
}

impl Reconciler {
    /// What to do about `instance`, whose guest stopped by itself.
    pub(super) fn after_stop(&self, instance: &DesiredInstance) -> AfterStop {
        let stopped = "the guest powered off (or its emulator stopped)";
        if instance.restart != RestartPolicy::Always {
            return AfterStop::Report(stopped.to_owned());
        }
        let since = now_secs().saturating_sub(RESTART_WINDOW.as_secs());
        let recent = self
            .dirs
            .restarts(instance.id)
            .into_iter()
            .filter(|&at| at >= since)
            .count();
        if recent >= MAX_RESTARTS {
            return AfterStop::Report(format!(
                "{stopped} again after {recent} restarts within {} minutes: left stopped",
                RESTART_WINDOW.as_secs() / 60
            ));
        }
        AfterStop::Restart
    }
}
