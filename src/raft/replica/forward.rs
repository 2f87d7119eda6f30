//! Proposals made on a follower are forwarded to its leader, so a client
//! can write through any node (as in etcd). The leader appends the command
//! and says at which index and term; the follower answers its client once
//! it has applied that index itself, with its own state machine's output
//! (apply is deterministic, so it is the leader's output too). If another
//! entry ends up at that index, the outcome is unknown: `LeadershipLost`.

use super::*;
use crate::raft::config::{FORWARDS_IN_FLIGHT_BYTES_MAX, FORWARDS_IN_FLIGHT_MAX};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Forwarded {
    id: RequestId,
    /// Where the leader appended it, once it said so.
    at: Option<(Index, Term)>,
    asked_at: Instant,
    /// Its command's bytes, toward `FORWARDS_IN_FLIGHT_BYTES_MAX`.
    bytes: usize,
}

/// Outputs a follower keeps for forwarded proposals whose entries it
/// applied before the leader's answer arrived (messages reorder).
pub const FORWARD_OUTPUTS_KEPT_MAX: usize = 1024;

impl<S: StateMachine> Raft<S> {
    /// A follower that knows its leader forwards a proposal; otherwise the
    /// client is told where to go (or that nobody leads).
    pub(super) fn forward_proposal(&mut self, now: Instant, id: RequestId, command: Vec<u8>) {
        let Some(leader) = self.leader.filter(|_| self.role == Role::Follower) else {
            return self.reply_not_leader(id);
        };
        let max = self
            .config
            .pending_proposals_max
            .min(FORWARDS_IN_FLIGHT_MAX);
        // Summed, not kept: at most `FORWARDS_IN_FLIGHT_MAX` to add, and no
        // running total that one of the ways a forward settles could miss.
        let bytes: usize = self.forwarded.values().map(|f| f.bytes).sum();
        if self.forwarded.len() >= max || bytes + command.len() > FORWARDS_IN_FLIGHT_BYTES_MAX {
            return self.out.push(Effect::Reply {
                id,
                result: Err(RequestError::Busy),
            });
        }
        self.next_forward_id += 1;
        let fid = self.next_forward_id;
        self.forwarded.insert(
            fid,
            Forwarded {
                id,
                at: None,
                asked_at: now,
                bytes: command.len(),
            },
        );
        let term = self.term;
        self.send(
            leader,
            Message::Forward {
                term,
                id: fid,
                command,
            },
        );
    }

    /// Leader side: append a forwarded command like a local proposal, and
    /// tell the follower where it went (or that it was not taken).
    pub(super) fn handle_forward(&mut self, from: NodeId, id: u64, command: Vec<u8>) {
        let term = self.term;
        let busy = self.too_busy(command.len());
        // A follower checks before forwarding; a broken or hostile one does not.
        let refused = self.admit(&command).is_err();
        if self.role != Role::Leader || busy || refused {
            self.send(from, Message::ForwardResponse { term, id, at: None });
            return;
        }
        let index = self.append_as_leader(Payload::Command(command));
        if let Some(p) = self.progress.get_mut(&from) {
            p.commit_wanted = p.commit_wanted.max(index);
        }
        self.send(
            from,
            Message::ForwardResponse {
                term,
                id,
                at: Some(index),
            },
        );
        self.maybe_commit();
        self.broadcast_append();
    }

    pub(super) fn handle_forward_response(
        &mut self,
        from: NodeId,
        term: Term,
        id: u64,
        at: Option<Index>,
    ) {
        if self.leader != Some(from) {
            return;
        }
        let Some(at) = at else {
            if let Some(f) = self.forwarded.remove(&id) {
                let leader = self.leader;
                self.out.push(Effect::Reply {
                    id: f.id,
                    result: Err(RequestError::NotLeader { leader }),
                });
            }
            return;
        };
        let Some(f) = self.forwarded.get_mut(&id) else {
            return;
        };
        f.at = Some((at, term));
        if at <= self.applied {
            // Applied before the answer came: use the kept output.
            let kept = self
                .forward_outputs
                .iter()
                .find(|(i, t, _)| *i == at && *t == term)
                .map(|(_, _, o)| o.clone());
            if let Some(f) = self.forwarded.remove(&id) {
                let result = match kept {
                    Some(output) => Ok(Applied { index: at, output }),
                    None => Err(RequestError::LeadershipLost),
                };
                self.out.push(Effect::Reply { id: f.id, result });
            }
        }
    }

    /// Called for each entry this node applies: answers the forwarded
    /// proposal waiting for that index, and keeps the output a while in
    /// case the leader's answer is still on its way.
    pub(super) fn complete_forwarded(&mut self, index: Index, term: Term, output: &[u8]) {
        if self.forwarded.is_empty() {
            return;
        }
        let waiting: Vec<u64> = self
            .forwarded
            .iter()
            .filter(|(_, f)| f.at.is_some_and(|(i, _)| i == index))
            .map(|(&fid, _)| fid)
            .collect();
        for fid in waiting {
            if let Some(f) = self.forwarded.remove(&fid) {
                let result = match f.at {
                    Some((_, t)) if t == term => Ok(Applied {
                        index,
                        output: output.to_vec(),
                    }),
                    _ => Err(RequestError::LeadershipLost),
                };
                self.out.push(Effect::Reply { id: f.id, result });
            }
        }
        if self.forwarded.values().any(|f| f.at.is_none()) {
            if self.forward_outputs.len() >= FORWARD_OUTPUTS_KEPT_MAX {
                self.forward_outputs.pop_front();
            }
            self.forward_outputs
                .push_back((index, term, output.to_vec()));
        }
    }

    /// Forwards placed at or below `index`, which this node applied through
    /// a snapshot: their outputs are not known here.
    pub(super) fn fail_forwards_up_to(&mut self, index: Index) {
        let skipped: Vec<u64> = self
            .forwarded
            .iter()
            .filter(|(_, f)| f.at.is_some_and(|(i, _)| i <= index))
            .map(|(&fid, _)| fid)
            .collect();
        for fid in skipped {
            if let Some(f) = self.forwarded.remove(&fid) {
                self.out.push(Effect::Reply {
                    id: f.id,
                    result: Err(RequestError::AppliedBySnapshot),
                });
            }
        }
    }

    /// Leadership changed: forwards the old leader never placed have an
    /// unknown outcome; placed ones are settled when their index applies.
    pub(super) fn fail_unplaced_forwards(&mut self) {
        let unplaced: Vec<u64> = self
            .forwarded
            .iter()
            .filter(|(_, f)| f.at.is_none())
            .map(|(&fid, _)| fid)
            .collect();
        for fid in unplaced {
            if let Some(f) = self.forwarded.remove(&fid) {
                self.out.push(Effect::Reply {
                    id: f.id,
                    result: Err(RequestError::LeadershipLost),
                });
            }
        }
    }

    /// A forward with no answer (lost message, leader gone) gives up after
    /// two maximum election timeouts; its outcome is unknown.
    pub(super) fn expire_forwarded(&mut self, now: Instant) {
        let limit = self.config.election_timeout_max * 2;
        let expired: Vec<u64> = self
            .forwarded
            .iter()
            .filter(|(_, f)| f.at.is_none() && now.saturating_since(f.asked_at) > limit)
            .map(|(&fid, _)| fid)
            .collect();
        for fid in expired {
            if let Some(f) = self.forwarded.remove(&fid) {
                self.out.push(Effect::Reply {
                    id: f.id,
                    result: Err(RequestError::LeadershipLost),
                });
            }
        }
        if self.forwarded.is_empty() {
            self.forward_outputs.clear();
        }
    }
}
