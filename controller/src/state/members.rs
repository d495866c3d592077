//! The controller nodes of the Raft group as the replicated state knows them: each member's
//! ID and the address its peers reach it at. Changed only by committed configuration changes,
//! in log order, so every replica knows the same addresses.

use serde::{Deserialize, Serialize};

use super::{Effects, Event, State};

/// One membership change (what a ConfChangeV2 entry carries in its context).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberChange {
    /// A new node, reachable by its peers at `address`, joins as a learner.
    AddLearner { id: u64, address: String },
    /// A learner becomes a voter.
    Promote { id: u64 },
    /// A voter or learner leaves the group.
    Remove { id: u64 },
}

impl MemberChange {
    pub fn id(&self) -> u64 {
        match self {
            MemberChange::AddLearner { id, .. }
            | MemberChange::Promote { id }
            | MemberChange::Remove { id } => *id,
        }
    }
}

/// A controller node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub id: u64,
    /// Where its peers reach it (host:port of its peer listener).
    pub address: String,
    /// False while it is a learner.
    pub voter: bool,
}

impl State {
    /// Records a committed membership change. Pure, like `apply`.
    pub fn apply_member_change(&mut self, change: &MemberChange) -> Effects {
        let id = change.id();
        match change {
            MemberChange::AddLearner { address, .. } => {
                self.members.insert(
                    id,
                    MemberRecord {
                        id,
                        address: address.clone(),
                        voter: false,
                    },
                );
            }
            MemberChange::Promote { .. } => {
                if let Some(member) = self.members.get_mut(&id) {
                    member.voter = true;
                }
            }
            MemberChange::Remove { .. } => {
                self.members.remove(&id);
            }
        }
        Effects {
            events: vec![Event::MemberChanged {
                change: change.clone(),
            }],
            hosts: Default::default(),
        }
    }
}
