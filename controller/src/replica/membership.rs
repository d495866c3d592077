//! Changes to the Raft group's membership, one at a time: a node joins as a learner (it
//! receives the log but does not vote), is promoted to voter once it caught up, and can be
//! removed. Each change is one ConfChangeV2 entry whose context carries the change itself, so
//! every replica records the members' addresses in the same place of the log.

use raft::prelude::{ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState};

pub use crate::state::MemberChange;

/// The raft-rs configuration change of `change`, with the change itself as its context.
pub fn conf_change(change: &MemberChange) -> ConfChangeV2 {
    let kind = match change {
        MemberChange::AddLearner { .. } => ConfChangeType::AddLearnerNode,
        MemberChange::Promote { .. } => ConfChangeType::AddNode,
        MemberChange::Remove { .. } => ConfChangeType::RemoveNode,
    };
    let mut single = ConfChangeSingle::default();
    single.set_change_type(kind);
    single.node_id = change.id();
    let mut cc = ConfChangeV2::default();
    cc.set_changes(vec![single].into());
    cc.context = crate::codec::encode(change).into();
    cc
}

/// The change carried by a committed configuration change; none for one without a context
/// (raft-rs's own, such as leaving a joint configuration).
pub fn from_conf_change(
    cc: &ConfChangeV2,
) -> Result<Option<MemberChange>, crate::codec::CodecError> {
    if cc.context.is_empty() {
        return Ok(None);
    }
    crate::codec::decode(&cc.context).map(Some)
}

/// Why a membership change is refused before it is proposed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error("only the leader changes the membership; ask node {leader}")]
    NotLeader { leader: u64 },
    #[error("no Raft leader is available; retry shortly")]
    NoLeader,
    #[error("a membership change is still being applied; retry when it is done")]
    ChangePending,
    #[error("node {0} is already a member")]
    AlreadyMember(u64),
    #[error("node {0} is not a member")]
    NotMember(u64),
    #[error("node {0} is not a learner")]
    NotLearner(u64),
    #[error("node {0} is the last voter: a cluster cannot lose its last voter")]
    LastVoter(u64),
    #[error("node ID must not be 0")]
    ZeroId,
    #[error("address must not be empty")]
    NoAddress,
    #[error(transparent)]
    Replica(#[from] super::ReplicaError),
}

/// Checks `change` against the current configuration.
pub fn check(change: &MemberChange, conf: &ConfState) -> Result<(), MembershipError> {
    let id = change.id();
    let voter = conf.voters.contains(&id);
    let learner = conf.learners.contains(&id);
    match change {
        MemberChange::AddLearner { address, .. } => {
            if id == 0 {
                return Err(MembershipError::ZeroId);
            }
            if address.trim().is_empty() {
                return Err(MembershipError::NoAddress);
            }
            if voter || learner {
                return Err(MembershipError::AlreadyMember(id));
            }
        }
        MemberChange::Promote { .. } if !learner => {
            return Err(if voter {
                MembershipError::NotLearner(id)
            } else {
                MembershipError::NotMember(id)
            })
        }
        MemberChange::Promote { .. } => {}
        MemberChange::Remove { .. } => {
            if !voter && !learner {
                return Err(MembershipError::NotMember(id));
            }
            if voter && conf.voters.len() == 1 {
                return Err(MembershipError::LastVoter(id));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(voters: &[u64], learners: &[u64]) -> ConfState {
        ConfState {
            voters: voters.to_vec(),
            learners: learners.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn changes_are_checked_against_the_configuration() {
        let c = conf(&[1], &[2]);
        let add = |id| MemberChange::AddLearner {
            id,
            address: "127.0.0.1:1".into(),
            api_address: String::new(),
            incarnation: String::new(),
        };
        assert_eq!(check(&add(3), &c), Ok(()));
        assert_eq!(check(&add(2), &c), Err(MembershipError::AlreadyMember(2)));
        assert_eq!(check(&add(0), &c), Err(MembershipError::ZeroId));
        let blank = MemberChange::AddLearner {
            id: 4,
            address: " ".into(),
            api_address: String::new(),
            incarnation: String::new(),
        };
        assert_eq!(check(&blank, &c), Err(MembershipError::NoAddress));
        assert_eq!(check(&MemberChange::Promote { id: 2 }, &c), Ok(()));
        assert_eq!(
            check(&MemberChange::Promote { id: 1 }, &c),
            Err(MembershipError::NotLearner(1))
        );
        assert_eq!(
            check(&MemberChange::Promote { id: 9 }, &c),
            Err(MembershipError::NotMember(9))
        );
        assert_eq!(
            check(&MemberChange::Remove { id: 1 }, &c),
            Err(MembershipError::LastVoter(1))
        );
        assert_eq!(check(&MemberChange::Remove { id: 2 }, &c), Ok(()));
        assert_eq!(
            check(&MemberChange::Remove { id: 1 }, &conf(&[1, 3], &[])),
            Ok(())
        );
    }

    #[test]
    fn a_change_travels_in_its_conf_change() {
        let change = MemberChange::AddLearner {
            id: 7,
            address: "10.0.0.7:8441".into(),
            api_address: String::new(),
            incarnation: String::new(),
        };
        let cc = conf_change(&change);
        assert_eq!(cc.changes[0].node_id, 7);
        assert_eq!(
            cc.changes[0].get_change_type(),
            ConfChangeType::AddLearnerNode
        );
        assert_eq!(from_conf_change(&cc).unwrap(), Some(change));
    }
}
