//! Cluster membership: who votes, who only learns, and where to reach them.
//!
//! Changes go one server at a time (thesis 4.1): any two consecutive
//! configurations then have overlapping majorities, so no joint consensus is
//! needed. A configuration is a log entry carrying the whole new membership
//! and takes effect on a server as soon as it is in its log, committed or
//! not (thesis 4.1); a truncated configuration entry reverts it.

use crate::actor::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Where peers reach this node. Opaque to Raft; drivers dial it.
    pub addr: String,
    /// Voters count in elections and commit majorities; learners only
    /// receive the log (thesis 4.2.1), until promoted.
    pub voter: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub members: BTreeMap<NodeId, Member>,
}

/// One single-server change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfChange {
    AddLearner { id: NodeId, addr: String },
    Promote { id: NodeId },
    Remove { id: NodeId },
}

#[derive(Clone, Debug, Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipError {
    #[error("node {0} is already a member")]
    AlreadyMember(NodeId),
    #[error("node {0} is not a member")]
    NotMember(NodeId),
    #[error("node {0} is not a learner")]
    NotLearner(NodeId),
    #[error("removing node {0} would leave no voter")]
    LastVoter(NodeId),
    #[error("node id 0 is reserved")]
    ZeroId,
}

impl Membership {
    /// Every listed node a voter.
    pub fn voters_at(addrs: impl IntoIterator<Item = (NodeId, String)>) -> Self {
        let members = addrs
            .into_iter()
            .map(|(id, addr)| (id, Member { addr, voter: true }))
            .collect();
        Membership { members }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.members.contains_key(&id)
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.members.get(&id).is_some_and(|m| m.voter)
    }

    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members
            .iter()
            .filter(|(_, m)| m.voter)
            .map(|(&id, _)| id)
    }

    pub fn voter_count(&self) -> usize {
        self.members.values().filter(|m| m.voter).count()
    }

    /// Votes or acknowledgements needed: a majority of the voters.
    pub fn quorum(&self) -> usize {
        self.voter_count() / 2 + 1
    }

    pub fn addr(&self, id: NodeId) -> Option<&str> {
        self.members.get(&id).map(|m| m.addr.as_str())
    }

    /// The membership after `change`, or why the change is invalid.
    pub fn apply(&self, change: &ConfChange) -> Result<Membership, MembershipError> {
        let mut next = self.clone();
        match change {
            ConfChange::AddLearner { id, addr } => {
                if *id == 0 {
                    return Err(MembershipError::ZeroId);
                }
                if self.contains(*id) {
                    return Err(MembershipError::AlreadyMember(*id));
                }
                next.members.insert(
                    *id,
                    Member {
                        addr: addr.clone(),
                        voter: false,
                    },
                );
            }
            ConfChange::Promote { id } => match next.members.get_mut(id) {
                None => return Err(MembershipError::NotMember(*id)),
                Some(m) if m.voter => return Err(MembershipError::NotLearner(*id)),
                Some(m) => m.voter = true,
            },
            ConfChange::Remove { id } => {
                if !self.contains(*id) {
                    return Err(MembershipError::NotMember(*id));
                }
                if self.is_voter(*id) && self.voter_count() == 1 {
                    return Err(MembershipError::LastVoter(*id));
                }
                next.members.remove(id);
            }
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Membership {
        Membership::voters_at((1..=3).map(|i| (i, format!("n{i}"))))
    }

    #[test]
    fn single_server_changes_and_their_errors() {
        let m = three();
        assert_eq!(m.quorum(), 2);
        let m = m
            .apply(&ConfChange::AddLearner {
                id: 4,
                addr: "n4".into(),
            })
            .unwrap();
        assert_eq!(
            (m.voter_count(), m.quorum(), m.is_voter(4), m.contains(4)),
            (3, 2, false, true)
        );
        let m = m.apply(&ConfChange::Promote { id: 4 }).unwrap();
        assert_eq!((m.voter_count(), m.quorum()), (4, 3));
        assert_eq!(
            m.apply(&ConfChange::Promote { id: 4 }),
            Err(MembershipError::NotLearner(4))
        );
        assert_eq!(
            m.apply(&ConfChange::AddLearner {
                id: 1,
                addr: String::new()
            }),
            Err(MembershipError::AlreadyMember(1))
        );
        let m = m.apply(&ConfChange::Remove { id: 1 }).unwrap();
        assert_eq!(m.voters().collect::<Vec<_>>(), vec![2, 3, 4]);
        assert_eq!(
            m.apply(&ConfChange::Remove { id: 9 }),
            Err(MembershipError::NotMember(9))
        );
        let single = Membership::voters_at([(1, String::new())]);
        assert_eq!(
            single.apply(&ConfChange::Remove { id: 1 }),
            Err(MembershipError::LastVoter(1))
        );
    }
}
