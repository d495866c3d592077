//! The controller nodes of the Raft group as the replicated state knows them: each member's
//! ID and the address its peers reach it at. Changed only by committed configuration changes,
//! in log order, so every replica knows the same addresses.

use serde::{Deserialize, Serialize};

use super::{Effects, Event, State};

/// One membership change (what a ConfChangeV2 entry carries in its context).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberChange {
    /// A new node joins as a learner: its peers reach it at `address`, clients at
    /// `api_address`, and its store's incarnation is `incarnation` (a node that comes back
    /// with another one lost its disk and is refused).
    AddLearner {
        id: u64,
        address: String,
        #[serde(default)]
        api_address: String,
        #[serde(default)]
        incarnation: String,
    },
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
    /// Where clients and other nodes reach its HTTP API (host:port).
    #[serde(default)]
    pub api_address: String,
    /// The incarnation of its store when it joined.
    #[serde(default)]
    pub incarnation: String,
    /// False while it is a learner.
    pub voter: bool,
}

impl State {
    /// Records a committed membership change. Pure, like `apply`.
    pub fn apply_member_change(&mut self, change: &MemberChange) -> Effects {
        let id = change.id();
        match change {
            MemberChange::AddLearner {
                address,
                api_address,
                incarnation,
                ..
            } => {
                self.members.insert(
                    id,
                    MemberRecord {
                        id,
                        address: address.clone(),
                        api_address: api_address.clone(),
                        incarnation: incarnation.clone(),
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
            at_ms: None,
        }
    }
}
