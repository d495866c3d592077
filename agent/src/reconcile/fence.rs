//! Self-fencing, in the reconciler: while the host's lease has run out (see [`crate::lease`]
//! and [`crate::self_fence`]) no guest of an instance that may be evacuated is started,
//! restarted or rebooted. Each guest destroyed for the lease leaves a `fenced` mark with why in
//! its instance directory: if the controller, answering again, still wants it here (it did not
//! move it elsewhere), the guest is started again from its disk, and the report says why.

use super::Reconciler;

impl Reconciler {
    /// Whether the host's lease ran out: guests that may be evacuated must not run.
    pub(super) fn lease_expired(&self) -> bool {
        self.lease.as_ref().is_some_and(|lease| lease.expired())
    }
}
