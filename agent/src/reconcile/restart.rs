//! The restart policy: a guest that stopped by itself (its emulator crashed or was killed, or
//! it powered itself off) is started again, with its data, when its instance says `always`,
//! also while the controller is out of reach; the report that it runs again says why. A guest
//! that keeps stopping is restarted at most [`MAX_RESTARTS`] times within [`RESTART_WINDOW`],
//! then left Stopped with the reason. The restarts are recorded in `instances/<id>/restarts`
//! (one line of Unix seconds each), so an agent that restarts itself still counts them.

use std::time::Duration;

use stratus_common::agent::DesiredInstance;
use stratus_common::api::RestartPolicy;

use super::Reconciler;
use crate::instance_dir::now_secs;

/// At most this many restarts of one guest within [`RESTART_WINDOW`].
pub(super) const MAX_RESTARTS: usize = 3;
pub(super) const RESTART_WINDOW: Duration = Duration::from_secs(600);

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
        if self.dirs.fenced(instance.id).is_some() {
            // Destroyed by this host for its lease, not stopped by itself; the controller,
            // answering again, still wants it here.
            return AfterStop::Restart;
        }
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
