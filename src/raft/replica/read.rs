//! Linearizable reads with ReadIndex (thesis 6.4), no clock assumption.
//!
//! The leader notes its commit index (or, before its term's no-op commits,
//! that no-op's index), confirms it is still leader by a round of
//! AppendEntries answered by a majority (`read_round`), waits until that
//! index is applied, and then answers. A follower asks the leader for a read
//! index, waits until it has applied that far itself, and answers locally.

use super::*;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum ReadFrom {
    Client { id: RequestId, query: Vec<u8> },
    Peer { node: NodeId, id: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct LeaderRead {
    from: ReadFrom,
    index: Index,
    round: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct FollowerRead {
    id: RequestId,
    query: Vec<u8>,
    /// Set once the leader answered.
    index: Option<Index>,
    asked_at: Instant,
}

impl<S: StateMachine> Raft<S> {
    pub(super) fn handle_read(&mut self, now: Instant, id: RequestId, query: Vec<u8>) {
        if self.config.stale_reads() {
            // Negative control: answer from local state, unconfirmed.
            let output = self.sm.query(self.now, &query);
            let index = self.applied;
            self.out.push(Effect::Reply {
                id,
                result: Ok(Applied { index, output }),
            });
            return;
        }
        let full =
            self.leader_reads.len() + self.follower_reads.len() >= self.config.pending_reads_max;
        match (self.role, self.leader) {
            _ if full => self.out.push(Effect::Reply {
                id,
                result: Err(RequestError::Busy),
            }),
            (Role::Leader, _) => self.register_leader_read(ReadFrom::Client { id, query }),
            (Role::Follower, Some(leader)) => {
                self.next_forward_id += 1;
                let fid = self.next_forward_id;
                let read = FollowerRead {
                    id,
                    query,
                    index: None,
                    asked_at: now,
                };
                self.follower_reads.insert(fid, read);
                let term = self.term;
                self.send(leader, Message::ReadIndex { term, id: fid });
            }
            (_, leader) => self.out.push(Effect::Reply {
                id,
                result: Err(RequestError::NotLeader { leader }),
            }),
        }
    }

    fn register_leader_read(&mut self, from: ReadFrom) {
        self.read_round += 1;
        let index = self.commit.max(self.term_start);
        let round = self.read_round;
        self.leader_reads
            .push_back(LeaderRead { from, index, round });
        // Ask for the confirmation now rather than at the next heartbeat.
        for peer in self.peers() {
            self.send_append(peer, true);
        }
        self.complete_reads();
    }

    pub(super) fn handle_read_index(&mut self, from: NodeId, id: u64) {
        let full = self.leader_reads.len() >= self.config.pending_reads_max;
        if self.role != Role::Leader || full {
            let term = self.term;
            self.send(
                from,
                Message::ReadIndexResponse {
                    term,
                    id,
                    index: None,
                },
            );
            return;
        }
        self.register_leader_read(ReadFrom::Peer { node: from, id });
    }

    pub(super) fn handle_read_index_response(
        &mut self,
        from: NodeId,
        id: u64,
        index: Option<Index>,
    ) {
        if self.leader != Some(from) {
            return;
        }
        match index {
            Some(i) => {
                if let Some(read) = self.follower_reads.get_mut(&id) {
                    read.index = Some(i);
                }
                self.complete_reads();
            }
            None => {
                if let Some(read) = self.follower_reads.remove(&id) {
                    let leader = self.leader;
                    self.out.push(Effect::Reply {
                        id: read.id,
                        result: Err(RequestError::NotLeader { leader }),
                    });
                }
            }
        }
    }

    /// The highest read round a majority (this leader included) answered.
    fn confirmed_read_round(&self) -> u64 {
        let membership = &self.membership;
        let mut rounds: Vec<u64> = self
            .progress
            .iter()
            .filter(|(&id, _)| membership.is_voter(id))
            .map(|(_, p)| p.read_round_acked)
            .collect();
        if membership.is_voter(self.id) {
            rounds.push(self.read_round);
        }
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        rounds.get(self.quorum() - 1).copied().unwrap_or(0)
    }

    /// Answers every read that is confirmed and applied, in order.
    pub(super) fn complete_reads(&mut self) {
        if self.role == Role::Leader {
            let confirmed = self.confirmed_read_round();
            while let Some(read) = self.leader_reads.front() {
                if read.round > confirmed || read.index > self.applied {
                    break;
                }
                let Some(read) = self.leader_reads.pop_front() else {
                    break;
                };
                let index = read.index;
                match read.from {
                    ReadFrom::Client { id, query } => {
                        let output = self.sm.query(self.now, &query);
                        self.out.push(Effect::Reply {
                            id,
                            result: Ok(Applied { index, output }),
                        });
                    }
                    ReadFrom::Peer { node, id } => {
                        let term = self.term;
                        self.send(
                            node,
                            Message::ReadIndexResponse {
                                term,
                                id,
                                index: Some(index),
                            },
                        );
                        // It answers once it applied `index`: say at once
                        // that it is committed.
                        if let Some(p) = self.progress.get_mut(&node) {
                            p.commit_wanted = p.commit_wanted.max(index);
                        }
                        self.notify_commit(node);
                    }
                }
            }
        }
        let applied = self.applied;
        let ready: Vec<u64> = self
            .follower_reads
            .iter()
            .filter(|(_, r)| r.index.is_some_and(|i| i <= applied))
            .map(|(&fid, _)| fid)
            .collect();
        for fid in ready {
            if let Some(read) = self.follower_reads.remove(&fid) {
                let output = self.sm.query(self.now, &read.query);
                let index = read.index.unwrap_or(applied);
                self.out.push(Effect::Reply {
                    id: read.id,
                    result: Ok(Applied { index, output }),
                });
            }
        }
    }

    /// Fails every pending read: leadership or the term changed.
    pub(super) fn fail_reads(&mut self) {
        let term = self.term;
        for read in std::mem::take(&mut self.leader_reads) {
            match read.from {
                ReadFrom::Client { id, .. } => self.out.push(Effect::Reply {
                    id,
                    result: Err(RequestError::LeadershipLost),
                }),
                ReadFrom::Peer { node, id } => self.send(
                    node,
                    Message::ReadIndexResponse {
                        term,
                        id,
                        index: None,
                    },
                ),
            }
        }
        for (_, read) in std::mem::take(&mut self.follower_reads) {
            self.out.push(Effect::Reply {
                id: read.id,
                result: Err(RequestError::LeadershipLost),
            });
        }
    }

    /// A forwarded read whose answer never came (lost message) gives up
    /// after two maximum election timeouts.
    pub(super) fn expire_follower_reads(&mut self, now: Instant) {
        let limit = self.config.election_timeout_max * 2;
        let expired: Vec<u64> = self
            .follower_reads
            .iter()
            .filter(|(_, r)| r.index.is_none() && now.saturating_since(r.asked_at) > limit)
            .map(|(&fid, _)| fid)
            .collect();
        for fid in expired {
            if let Some(read) = self.follower_reads.remove(&fid) {
                self.out.push(Effect::Reply {
                    id: read.id,
                    result: Err(RequestError::LeadershipLost),
                });
            }
        }
    }
}
