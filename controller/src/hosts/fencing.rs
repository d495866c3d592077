//! Fencing by lease, by the leader: a host's agent that has heard nothing from the controller
//! for its lease destroys its guests that may be evacuated (see the agent's `self_fence`), so
//! once the leader itself has heard nothing from the host for the lease plus a margin, it may
//! declare the host fenced and the evacuation (see [`super::replacement::evacuate_fenced`])
//! starts those instances elsewhere with no second copy running.
//!
//! The two clocks agree in the safe direction: the agent counts from when it *sent* its last
//! answered request, which is before the leader heard it, and the leader counts only what it
//! heard itself (a new leader starts from its election), so the agent's deadline always comes
//! first; the margin covers the agent's destroying and the two clocks' drift. The leader fences
//! by lease only a host whose agent showed it holds the lease (it asked this node for desired
//! state with the version of an earlier answer, and every answer carries the lease), so
//! neither a leader change nor a lease newly configured fences a host that might not know it.

use std::time::{Duration, Instant};

use super::liveness::Liveness;
use crate::decide::now_ms;
use crate::replica::{Consistency, Replica};
use crate::state::Command;

/// How long after a host's lease the leader fences it: half the lease, between 10 and 60
/// seconds.
pub fn margin(lease: Duration) -> Duration {
    (lease / 2).clamp(Duration::from_secs(10), Duration::from_secs(60))
}

/// Of `down` (hosts down and not fenced), those due to be fenced by lease at `now`, with how
/// long each has been silent.
fn due(
    down: Vec<String>,
    liveness: &Liveness,
    lease: Duration,
    now: Instant,
) -> Vec<(String, Duration)> {
    let after = lease + margin(lease);
    down.into_iter()
        // Only an agent that showed this node it holds the lease is sure to fence itself
        // (one out of touch since before this node's election is left to an administrator).
        .filter(|host| liveness.contact(host).leased)
        .filter_map(|host| {
            let silent = liveness.silent_for_at(&host, now)?;
            (silent >= after).then_some((host, silent))
        })
        .collect()
}

/// Fences every host that is down, not yet fenced, and silent for its lease plus the margin.
pub(super) async fn fence_expired(replica: &Replica, liveness: &Liveness, lease: Duration) {
    let Ok(down) = replica
        .read(Consistency::Stale, |s| {
            s.hosts
                .keys()
                .filter(|h| !s.host_life(h).up && s.fenced_since(h).is_none())
                .cloned()
                .collect::<Vec<_>>()
        })
        .await
    else {
        return;
    };
    for (host, silent) in due(down, liveness, lease, Instant::now()) {
        let at_ms = now_ms();
        let command = Command::By {
            actor: "controller".to_owned(),
            at_ms,
            command: Box::new(Command::FenceHost {
                host: host.clone(),
                at_ms,
            }),
        };
        match replica.propose(command).await {
            Ok(Ok(_)) => tracing::warn!(
                %host,
                silent_secs = silent.as_secs(),
                lease_secs = lease.as_secs(),
                "host fenced: silent past its lease, its agent has destroyed the guests that may be evacuated"
            ),
            // Back up, or removed, meanwhile.
            Ok(Err(rejection)) => tracing::debug!(%host, %rejection, "fence by lease refused"),
            Err(error) => {
                tracing::debug!(%host, %error, "fence by lease not committed");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_is_half_the_lease_within_bounds() {
        assert_eq!(margin(Duration::from_secs(10)), Duration::from_secs(10));
        assert_eq!(margin(Duration::from_secs(60)), Duration::from_secs(30));
        assert_eq!(margin(Duration::from_secs(120)), Duration::from_secs(60));
        assert_eq!(margin(Duration::from_secs(3600)), Duration::from_secs(60));
    }

    #[test]
    fn a_host_is_due_once_silent_for_the_lease_and_margin_and_only_if_it_holds_the_lease() {
        let lease = Duration::from_secs(10);
        let live = Liveness::new(Duration::from_secs(5));
        for host in ["leased", "unleased", "polling"] {
            live.touch(host, None, None);
        }
        live.leased("leased", 3);
        live.leased("polling", 3);
        let _poll = live.poll("polling");
        let down = || {
            vec![
                "leased".to_owned(),
                "unleased".to_owned(),
                "polling".to_owned(),
            ]
        };
        let start = Instant::now();
        assert!(due(down(), &live, lease, start + Duration::from_secs(19)).is_empty());
        let names: Vec<String> = due(down(), &live, lease, start + Duration::from_secs(21))
            .into_iter()
            .map(|(host, silent)| {
                assert!(silent >= Duration::from_secs(20), "{silent:?}");
                host
            })
            .collect();
        assert_eq!(
            names,
            ["leased"],
            "not one whose agent never showed the lease, nor one with a long-poll open"
        );
    }
}
