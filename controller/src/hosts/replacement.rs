//! Placing existing instances again, by the leader, for hosts that are down: a Pending
//! instance never started there, so it is placed again (or fails when no host can take it);
//! an Unknown one that may be evacuated is started elsewhere once an administrator fenced
//! its host. Each round reads a stale view and proposes; apply checks again, and what it
//! refuses (the state moved on) is looked at in the next round.

use stratus_common::api::InstanceState;

use super::liveness::Liveness;
use crate::decide::now_ms;
use crate::replica::{Consistency, Replica};
use crate::scheduler::{self, SitePlacement, Strategy};
use crate::state::Command;

/// Places again (or fails, when no host can take it) every Pending instance whose host is
/// down: it never started there, as a host starts a guest only once the controller recorded
/// Booting, so it may run elsewhere.
pub(super) async fn replace_pending(replica: &Replica, liveness: &Liveness, strategy: Strategy) {
    let Ok(stranded) = replica
        .read(Consistency::Stale, |s| {
            s.instances
                .values()
                .filter(|i| i.state == InstanceState::Pending)
                .filter_map(|i| {
                    let host = i.host.as_deref()?;
                    (!s.host_life(host).up)
                        .then(|| (i.id, host.to_owned(), i.image_spec.disk.sha256.clone()))
                })
                .collect::<Vec<_>>()
        })
        .await
    else {
        return;
    };
    for (id, from, sha256) in stranded {
        let holding = liveness.holding(&sha256);
        let Ok(Some(placement)) = replica
            .read(Consistency::Stale, |s| {
                s.instances
                    .get(&id)
                    .map(|i| scheduler::place_again(s, i, &holding, strategy))
            })
            .await
        else {
            continue;
        };
        let (to, failure) = match placement {
            Ok(host) => (Some(host), None),
            Err(none) => (None, Some(none.to_string())),
        };
        let at_ms = now_ms();
        let command = Command::ReplaceInstance {
            id,
            from: from.clone(),
            to: to.clone(),
            failure,
            at_ms,
        };
        match propose(replica, command, at_ms).await {
            Proposed::Applied => tracing::warn!(
                instance = id,
                %from,
                to = to.as_deref().unwrap_or("nowhere: failed"),
                "Pending instance of a host that is down placed again"
            ),
            Proposed::Refused => {}
            Proposed::NotCommitted => return,
        }
    }
}

/// Starts elsewhere every Unknown instance of a host that is down and fenced, when it may be
/// evacuated (run with `evacuate`, or the site evacuates all) and carries no persistent disk.
/// One no host can take now stays Unknown (its host was declared dead, not its data) and is
/// tried again next round.
pub(super) async fn evacuate_fenced(replica: &Replica, liveness: &Liveness, site: SitePlacement) {
    let Ok(stranded) = replica
        .read(Consistency::Stale, |s| {
            s.instances
                .values()
                .filter(|i| i.state == InstanceState::Unknown)
                .filter(|i| site.evacuate || s.placement_rules(i.id).evacuate)
                .filter_map(|i| {
                    let host = i.host.as_deref()?;
                    let fenced = !s.host_life(host).up && s.fenced_since(host).is_some();
                    (fenced && s.volumes_of_instance(i.id).is_empty())
                        .then(|| (i.id, host.to_owned(), i.image_spec.disk.sha256.clone()))
                })
                .collect::<Vec<_>>()
        })
        .await
    else {
        return;
    };
    for (id, from, sha256) in stranded {
        let holding = liveness.holding(&sha256);
        let Ok(Some(Ok(to))) = replica
            .read(Consistency::Stale, |s| {
                s.instances
                    .get(&id)
                    .map(|i| scheduler::place_again(s, i, &holding, site.strategy))
            })
            .await
        else {
            continue;
        };
        let at_ms = now_ms();
        let command = Command::EvacuateInstance {
            id,
            from: from.clone(),
            to: to.clone(),
            at_ms,
        };
        match propose(replica, command, at_ms).await {
            Proposed::Applied => {
                tracing::warn!(instance = id, %from, %to, "instance of a fenced host evacuated")
            }
            Proposed::Refused => {}
            Proposed::NotCommitted => return,
        }
    }
}

enum Proposed {
    Applied,
    /// The state moved on (it started after all, another placement took the room): looked at
    /// again in the next round.
    Refused,
    /// No longer leader, or the group is unavailable: the round ends.
    NotCommitted,
}

/// Proposes `command` as the controller's own.
async fn propose(replica: &Replica, command: Command, at_ms: u64) -> Proposed {
    let command = Command::By {
        actor: "controller".to_owned(),
        at_ms,
        command: Box::new(command),
    };
    match replica.propose(command).await {
        Ok(Ok(_)) => Proposed::Applied,
        Ok(Err(rejection)) => {
            tracing::debug!(%rejection, "placing again refused");
            Proposed::Refused
        }
        Err(error) => {
            tracing::debug!(%error, "placing again not committed");
            Proposed::NotCommitted
        }
    }
}
