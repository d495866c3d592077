//! Placing existing instances again, by the leader, for hosts that are down: a Pending
//! instance never started there, so it is placed again (or fails when no host can take it);
//! an Unknown one that may be evacuated is started elsewhere once an administrator fenced
//! its host. Each round reads a stale view and proposes; apply checks again, and what it
//! refuses (the state moved on) is looked at in the next round.

use stratus_common::api::InstanceState;

use super::liveness::Liveness;
use crate::decide::now_ms;
use crate::replica::{Consistency, Replica};
use crate::scheduler::{self, NoValidHost, Strategy};
use crate::state::{Command, InstanceRecord, State};

/// Places again (or fails, when no host can take it) every Pending instance whose host is
/// down: it never started there, as a host starts a guest only once the controller recorded
/// Booting, so it may run elsewhere.
pub(super) async fn replace_pending(replica: &Replica, liveness: &Liveness, strategy: Strategy) {
    let stranded = |s: &State, i: &InstanceRecord, host: &str| {
        i.state == InstanceState::Pending && !s.host_life(host).up
    };
    place_each(
        replica,
        liveness,
        strategy,
        stranded,
        |id, from, placement, at_ms| {
            let (to, failure) = match placement {
                Ok(host) => (Some(host), None),
                Err(none) => (None, Some(none.to_string())),
            };
            Some(Command::ReplaceInstance {
                id,
                from,
                to,
                failure,
                at_ms,
            })
        },
    )
    .await;
}

/// Starts elsewhere every Unknown instance of a host that is down and fenced, when it may be
/// evacuated (run with `evacuate`, or while the site evacuated all) and carries no persistent
/// disk.
/// One no host can take now stays Unknown (its host was declared dead, not its data) and is
/// tried again next round.
pub(super) async fn evacuate_fenced(replica: &Replica, liveness: &Liveness, strategy: Strategy) {
    let stranded = move |s: &State, i: &InstanceRecord, host: &str| {
        i.state == InstanceState::Unknown
            && s.placement_rules(i.id).evacuate
            && !s.host_life(host).up
            && s.fenced_since(host).is_some()
            && s.volumes_of_instance(i.id).is_empty()
    };
    place_each(
        replica,
        liveness,
        strategy,
        stranded,
        |id, from, placement, at_ms| {
            placement.ok().map(|to| Command::EvacuateInstance {
                id,
                from,
                to,
                at_ms,
            })
        },
    )
    .await;
}

/// Places again each instance `stranded` picks (with its host), and proposes what `command`
/// makes of the placement (nothing, for `None`) as the controller's own.
async fn place_each(
    replica: &Replica,
    liveness: &Liveness,
    strategy: Strategy,
    stranded: impl Fn(&State, &InstanceRecord, &str) -> bool,
    command: impl Fn(u64, String, Result<String, NoValidHost>, u64) -> Option<Command>,
) {
    let Ok(picked) = replica
        .read(Consistency::Stale, |s| {
            s.instances
                .values()
                .filter_map(|i| {
                    let host = i.host.as_deref()?;
                    stranded(s, i, host)
                        .then(|| (i.id, host.to_owned(), i.image_spec.disk.sha256.clone()))
                })
                .collect::<Vec<_>>()
        })
        .await
    else {
        return;
    };
    for (id, from, sha256) in picked {
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
        let at_ms = now_ms();
        let Some(command) = command(id, from.clone(), placement, at_ms) else {
            continue;
        };
        let what = format!("{command:?}");
        let command = Command::By {
            actor: "controller".to_owned(),
            at_ms,
            command: Box::new(command),
        };
        match replica.propose(command).await {
            Ok(Ok(_)) => tracing::warn!(instance = id, %from, "placed again: {what}"),
            // The state moved on (it started after all, another placement took the room):
            // looked at again in the next round.
            Ok(Err(rejection)) => {
                tracing::debug!(instance = id, %rejection, "placing again refused")
            }
            // No longer leader, or the group is unavailable: the round ends.
            Err(error) => {
                tracing::debug!(instance = id, %error, "placing again not committed");
                return;
            }
        }
    }
}
