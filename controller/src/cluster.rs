//! The controller nodes as an operator manages them: the group's view for
//! `GET /api/v1/cluster` (role, match index, lag and last contact of every member), adding a
//! node (invited over the peer link, added as a learner, promoted to voter by the leader once
//! it caught up) and removing one. Membership changes go one at a time through the
//! [`Replica`]; the rules on them live in `replica::membership`.

use std::time::Duration;

use stratus_common::api::{AddMember, Cluster, ClusterMember, MemberRole};

use crate::failure::{impl_failure, AdminOnly, InputError};
use crate::peer::{self, InviteError, Me};
use crate::replica::{
    Consistency, MemberChange, MembershipError, RaftStatus, Replica, ReplicaError,
};
use crate::users::Caller;

/// A learner this close to the leader's commit index is promoted to voter.
const PROMOTE_LAG: u64 = 16;
/// How long `add` waits for the new node to be promoted before answering it is a learner.
const PROMOTE_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    AdminOnly(#[from] AdminOnly),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error(transparent)]
    Membership(MembershipError),
    #[error(transparent)]
    Invite(#[from] InviteError),
}

impl From<MembershipError> for ClusterError {
    fn from(e: MembershipError) -> Self {
        match e {
            MembershipError::Replica(r) => ClusterError::Replica(r),
            other => ClusterError::Membership(other),
        }
    }
}

impl_failure!(ClusterError {
    delegate: [AdminOnly, Input, Replica],
    own: [
        ClusterError::Membership(m) => match m {
            MembershipError::NotLeader { .. } | MembershipError::NoLeader => Kind::Unavailable,
            MembershipError::ZeroId | MembershipError::NoAddress => Kind::BadRequest,
            MembershipError::NotMember(_) => Kind::NotFound,
            MembershipError::ChangePending
            | MembershipError::AlreadyMember(_)
            | MembershipError::NotLearner(_)
            | MembershipError::LastVoter(_) => Kind::Conflict,
            MembershipError::Replica(_) => Kind::Unavailable,
        },
        ClusterError::Invite(i) => match i {
            InviteError::NoCluster | InviteError::Unreachable { .. } => Kind::Unavailable,
            InviteError::Refused { .. } => Kind::Conflict,
        },
    ],
    codes: [
        ClusterError::Membership(MembershipError::LastVoter(_)) => "last_voter",
        ClusterError::Membership(MembershipError::ChangePending) => "change_pending",
        ClusterError::Invite(InviteError::Unreachable { .. }) => "member_unreachable",
        ClusterError::Invite(InviteError::Refused { .. }) => "member_refused",
    ],
});

pub struct ClusterService {
    replica: Replica,
    me: Me,
}

/// What adding a member came to.
#[derive(Debug)]
pub struct Added {
    pub member: ClusterMember,
    /// It is a voter already (else still a learner, to be promoted once caught up).
    pub promoted: bool,
}

fn address(field: &'static str, value: &str) -> Result<String, InputError> {
    let value = value.trim();
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| InputError::new(field, format!("{value:?} is not host:port")))?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(InputError::new(
            field,
            format!("{value:?} is not host:port"),
        ));
    }
    Ok(value.to_owned())
}

impl ClusterService {
    /// Starts the leader's promoter of caught-up learners on the current runtime.
    pub fn start(replica: Replica, me: Me) -> Self {
        tokio::spawn(promote_caught_up(replica.clone()));
        Self { replica, me }
    }

    /// The group as this node sees it (progress of the others only when it leads).
    pub async fn view(&self) -> Result<Cluster, ReplicaError> {
        let status = self.replica.status();
        let (cluster_id, records) = self
            .replica
            .read(Consistency::Stale, |s| {
                (s.cluster_id.clone(), s.members.clone())
            })
            .await?;
        let members = status
            .voters
            .iter()
            .chain(status.learners.iter())
            .map(|&id| {
                let record = records.get(&id);
                member_view(&status, id, record)
            })
            .collect();
        Ok(Cluster {
            cluster_id,
            node_id: status.node_id,
            leader: status.leader,
            term: status.term,
            commit_index: status.commit_index,
            applied_index: status.applied_index,
            members,
        })
    }

    /// Invites the node, adds it as a learner and waits (a while) for its promotion.
    pub async fn add(&self, caller: &Caller, request: AddMember) -> Result<Added, ClusterError> {
        caller.require_admin("change the cluster's members")?;
        if request.id == 0 {
            return Err(InputError::new("id", "must be at least 1").into());
        }
        let peer_address = address("address", &request.address)?;
        let api_address = address("api_address", &request.api_address)?;
        // The same rules `change_membership` applies, checked before the invitation: a node
        // that is invited adopts this cluster for good, so it must not be invited in vain.
        let status = self.replica.status();
        if status.voters.contains(&request.id) || status.learners.contains(&request.id) {
            return Err(ClusterError::Membership(MembershipError::AlreadyMember(
                request.id,
            )));
        }
        if status.leader != Some(status.node_id) {
            return Err(ClusterError::Membership(match status.leader {
                Some(leader) => MembershipError::NotLeader { leader },
                None => MembershipError::NoLeader,
            }));
        }
        let incarnation = peer::invite(&self.me, &self.replica, &peer_address, request.id).await?;
        self.replica
            .change_membership(MemberChange::AddLearner {
                id: request.id,
                address: peer_address,
                api_address,
                incarnation,
            })
            .await?;
        tracing::info!(id = request.id, "controller added as a learner");
        let id = request.id;
        let promoted = self
            .replica
            .wait_for_status(PROMOTE_WAIT, |s| s.voters.contains(&id))
            .await;
        let view = self.view().await?;
        let member = view
            .members
            .into_iter()
            .find(|m| m.id == id)
            .ok_or(ClusterError::Membership(MembershipError::NotMember(id)))?;
        Ok(Added { member, promoted })
    }

    /// Removes node `id` from the group.
    pub async fn remove(&self, caller: &Caller, id: u64) -> Result<(), ClusterError> {
        caller.require_admin("change the cluster's members")?;
        self.replica
            .change_membership(MemberChange::Remove { id })
            .await?;
        tracing::info!(id, "controller removed from the cluster");
        Ok(())
    }
}

fn member_view(
    status: &RaftStatus,
    id: u64,
    record: Option<&crate::state::MemberRecord>,
) -> ClusterMember {
    let role = if status.leader == Some(id) {
        MemberRole::Leader
    } else if status.learners.contains(&id) {
        MemberRole::Learner
    } else {
        MemberRole::Voter
    };
    let leading = status.leader == Some(status.node_id);
    let (match_index, last_contact_ms) = if !leading {
        (None, None)
    } else if id == status.node_id {
        (Some(status.last_index), Some(0))
    } else {
        let progress = status.peers.iter().find(|p| p.id == id);
        (
            progress.map(|p| p.matched),
            progress.and_then(|p| p.last_heard_ms),
        )
    };
    ClusterMember {
        id,
        address: record.map(|r| r.address.clone()).unwrap_or_default(),
        api_address: record.map(|r| r.api_address.clone()).unwrap_or_default(),
        role,
        match_index,
        lag: match_index.map(|m| status.commit_index.saturating_sub(m)),
        last_contact_ms,
    }
}

/// A learner the leader has heard from lately that is close enough to its commit index.
fn caught_up_learner(s: &RaftStatus) -> Option<u64> {
    if s.leader != Some(s.node_id) {
        return None;
    }
    s.learners.iter().copied().find(|id| {
        s.peers
            .iter()
            .any(|p| p.id == *id && p.recent_active && p.matched + PROMOTE_LAG >= s.commit_index)
    })
}

/// On the leader: promotes each learner that caught up, one change at a time.
async fn promote_caught_up(replica: Replica) {
    loop {
        let ready = |s: &RaftStatus| caught_up_learner(s).is_some();
        if !replica
            .wait_for_status(Duration::from_secs(3600), ready)
            .await
        {
            continue;
        }
        let Some(id) = caught_up_learner(&replica.status()) else {
            continue;
        };
        match replica
            .change_membership(MemberChange::Promote { id })
            .await
        {
            Ok(()) => tracing::info!(id, "learner caught up: promoted to voter"),
            Err(e) => {
                tracing::info!(id, error = %e, "promotion not made yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
