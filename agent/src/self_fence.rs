//! Self-fencing: the watchdog that destroys this host's guests that may be evacuated once its
//! lease with the controller ran out (see [`crate::lease`] for the clocks and what is kept on
//! disk). It runs from the agent's start, before the controller is reached, so an agent that
//! restarts while cut off still fences in time. While the lease stays out it looks again every
//! second (a start under way when it ran out, a destroy libvirt refused), and it marks each
//! destroyed guest's instance directory so that the reconciler knows why it is gone.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use stratus_common::agent::domain_name;

use crate::controller_client::ControllerClient;
use crate::failure::error_chain;
use crate::hypervisor::{Hypervisor, HypervisorError};
use crate::instance_dir::InstanceDirs;
use crate::lease::{boottime, Lease};

/// What one self-fencing pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fenced {
    /// Instances whose guest it destroyed.
    pub destroyed: Vec<u64>,
    /// Guests it could not destroy (still running, maybe).
    pub failed: usize,
}

/// Destroys the guests of `evacuable` that this host runs for `cluster_id`, after `silent`
/// without the controller, marking each instance directory. Disks and files stay.
pub fn fence(
    hv: &dyn Hypervisor,
    dirs: &InstanceDirs,
    cluster_id: &str,
    host: &str,
    evacuable: &BTreeSet<u64>,
    silent: Duration,
) -> Result<Fenced, HypervisorError> {
    let domains = hv.list()?;
    let mut fenced = Fenced::default();
    for &id in evacuable {
        let name = domain_name(cluster_id, id);
        let ours = domains
            .iter()
            .any(|d| d.name == name && d.tag.as_ref().is_some_and(|t| t.is_of(cluster_id, host)));
        if !ours {
            continue;
        }
        let why = format!(
            "its host destroyed the guest after {} s out of touch with the controller \
             (self-fencing, as the instance may be evacuated)",
            silent.as_secs()
        );
        if let Err(e) = dirs.mark_fenced(id, &why) {
            tracing::warn!(instance = id, error = %e, "cannot mark the instance fenced");
        }
        match hv.destroy(&name) {
            Ok(_) => {
                tracing::warn!(
                    instance = id,
                    silent_secs = silent.as_secs(),
                    "self-fencing: guest destroyed"
                );
                fenced.destroyed.push(id);
            }
            Err(e) => {
                tracing::error!(instance = id, error = %error_chain(&e), "self-fencing cannot destroy the guest; trying again");
                // It runs on: no mark saying it was destroyed.
                dirs.unfence(id);
                fenced.failed += 1;
            }
        }
    }
    Ok(fenced)
}

/// How long a stopping agent tries to give its lease back before it fences the host instead.
const GIVE_UP_WAIT: Duration = Duration::from_secs(10);

/// As the agent stops on purpose (its guests run on without it): gives the lease back, so the
/// leader does not fence the host by lease, having had desired state up to version `since`.
/// When no controller takes it back in time, fences the host now: once this agent is gone
/// nobody would when the lease runs out, and the leader would start those instances elsewhere.
pub async fn give_up(
    lease: &Lease,
    client: &ControllerClient,
    hv: Arc<dyn Hypervisor>,
    dirs: InstanceDirs,
    host: &str,
    since: u64,
) {
    if !lease.held() {
        return;
    }
    let deadline = tokio::time::Instant::now() + GIVE_UP_WAIT;
    loop {
        match client.release_lease(host, since).await {
            Ok(()) => {
                match lease.release() {
                    Ok(()) => tracing::info!("lease given back to the controller"),
                    Err(e) => {
                        tracing::warn!(error = %error_chain(&e), "lease given back, but not recorded")
                    }
                }
                return;
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %error_chain(&e), "cannot give the lease back yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                tracing::error!(error = %error_chain(&e), "cannot give the lease back: fencing the host before stopping");
                break;
            }
        }
    }
    fence_now(
        lease,
        hv,
        dirs,
        host,
        "stopping out of touch: fenced itself",
    )
    .await;
}

/// One fencing pass on a blocking thread, from the lease's last contact; the first pass that
/// destroys every guest it covers logs `why` and records the host fenced.
async fn fence_now(
    lease: &Lease,
    hv: Arc<dyn Hypervisor>,
    dirs: InstanceDirs,
    host: &str,
    why: &'static str,
) {
    let now = boottime();
    let silent = now.saturating_sub(lease.contact().unwrap_or(now));
    let (evacuable, cluster_id, host) = (lease.evacuable(), lease.cluster_id(), host.to_owned());
    let pass = tokio::task::spawn_blocking(move || {
        fence(hv.as_ref(), &dirs, &cluster_id, &host, &evacuable, silent)
    })
    .await;
    match pass {
        Ok(Ok(fenced)) if fenced.failed == 0 && !lease.fenced() => {
            tracing::warn!(silent_secs = silent.as_secs(), destroyed = ?fenced.destroyed, "{why}");
            if let Err(e) = lease.mark_fenced() {
                tracing::warn!(error = %error_chain(&e), "cannot record the self-fencing");
            }
        }
        Ok(Ok(fenced)) if fenced.failed == 0 && !fenced.destroyed.is_empty() => {
            tracing::warn!(destroyed = ?fenced.destroyed, "self-fencing: more guests destroyed");
        }
        // Each failure was logged by the pass; the caller tries again (or is stopping).
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %error_chain(&e), "self-fencing cannot list the domains")
        }
        Err(e) => tracing::error!(error = %e, "self-fencing pass panicked"),
    }
}

/// Watches the lease for ever: writes the last contact every quarter lease, and fences the
/// host while the lease is out.
pub async fn watch(lease: Arc<Lease>, hv: Arc<dyn Hypervisor>, dirs: InstanceDirs, host: String) {
    loop {
        let (Some(deadline), Some(period)) = (lease.deadline(), lease.lease()) else {
            lease.changed.notified().await;
            continue;
        };
        let now = boottime();
        if now < deadline {
            let wait = (deadline - now).min(period / 4);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = lease.changed.notified() => {}
            }
            if let Err(e) = lease.save() {
                tracing::warn!(error = %error_chain(&e), "cannot keep the lease's last contact");
            }
            continue;
        }
        fence_now(
            &lease,
            hv.clone(),
            dirs.clone(),
            &host,
            "the host's lease ran out: fenced itself (guests that may be evacuated destroyed)",
        )
        .await;
        // Again in a second while the lease stays out (a start under way, a refused destroy).
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = lease.changed.notified() => {}
        }
    }
}
