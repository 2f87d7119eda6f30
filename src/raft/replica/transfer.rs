//! Leadership transfer (thesis 3.10): the leader stops taking proposals,
//! brings the target up to date, and sends it `TimeoutNow`; the target
//! starts an election at once, and voters ignore that they still hear from
//! the old leader. A transfer not done within an election timeout is
//! abandoned and the leader carries on.

use super::*;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Transfer {
    id: RequestId,
    to: NodeId,
    deadline: Instant,
    sent: bool,
}

impl<S: StateMachine> Raft<S> {
    pub(super) fn handle_transfer(&mut self, now: Instant, id: RequestId, to: NodeId) {
        if self.role != Role::Leader {
            return self.reply_not_leader(id);
        }
        if to == self.id {
            let index = self.log.last_index();
            self.out.push(Effect::Reply {
                id,
                result: Ok(Applied {
                    index,
                    output: Vec::new(),
                }),
            });
            return;
        }
        if !self.membership.is_voter(to) || self.transfer.is_some() {
            let error = if self.transfer.is_some() {
                RequestError::Busy
            } else {
                RequestError::UnknownNode(to)
            };
            self.out.push(Effect::Reply {
                id,
                result: Err(error),
            });
            return;
        }
        let deadline = now + self.config.election_timeout_min;
        self.transfer = Some(Transfer {
            id,
            to,
            deadline,
            sent: false,
        });
        self.maybe_send_timeout_now();
        self.send_append(to, true);
    }

    /// Sends `TimeoutNow` once the target's log matches the leader's.
    pub(super) fn maybe_send_timeout_now(&mut self) {
        let last = self.log.last_index();
        let term = self.term;
        let Some(t) = self.transfer.as_mut() else {
            return;
        };
        if t.sent || self.progress.get(&t.to).is_none_or(|p| p.matched < last) {
            return;
        }
        t.sent = true;
        let (id, to) = (t.id, t.to);
        self.send(to, Message::TimeoutNow { term });
        self.out.push(Effect::Reply {
            id,
            result: Ok(Applied {
                index: last,
                output: Vec::new(),
            }),
        });
    }

    /// Abandons a transfer that outlived its deadline, or on step-down.
    pub(super) fn end_transfer(&mut self, now: Option<Instant>) {
        let Some(t) = &self.transfer else { return };
        if now.is_some_and(|now| now < t.deadline) {
            return;
        }
        if !t.sent {
            let id = t.id;
            self.out.push(Effect::Reply {
                id,
                result: Err(RequestError::TransferFailed),
            });
        }
        self.transfer = None;
    }

    /// On a leader: the voter whose log matches furthest, the natural
    /// target of a handover before shutdown.
    pub fn best_successor(&self) -> Option<NodeId> {
        if self.role != Role::Leader {
            return None;
        }
        self.progress
            .iter()
            .filter(|(&id, _)| self.membership.is_voter(id))
            .max_by_key(|(&id, p)| (p.matched, std::cmp::Reverse(id)))
            .map(|(&id, _)| id)
    }

    pub(super) fn transferring(&self) -> bool {
        self.transfer.is_some()
    }

    pub(super) fn handle_timeout_now(&mut self, now: Instant, from: NodeId, term: Term) {
        if term == self.term && self.role == Role::Follower && self.leader == Some(from) {
            self.start_election(now, true);
        }
    }
}
