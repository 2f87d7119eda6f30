//! Log replication (paper 5.3): AppendEntries on both sides, the
//! consistency check and conflict back-off, and the leader's streams.

use super::*;

impl<S: StateMachine> Raft<S> {
    pub(super) fn handle_append(&mut self, now: Instant, from: NodeId, req: AppendRequest) {
        if req.term < self.term {
            let term = self.term;
            self.send(
                from,
                Message::AppendResponse(AppendResponse {
                    term,
                    read_round: req.read_round,
                    result: AppendResult::StaleTerm,
                }),
            );
            return;
        }
        // Same term: a candidate learns it lost (paper 5.2).
        if self.role != Role::Follower {
            self.become_follower(now, req.term, Some(from));
        }
        self.leader = Some(from);
        self.leader_contact = Some(now);
        self.reset_election_timer(now);

        let Some(result) = self.append_from_leader(&req) else {
            return;
        };
        let term = self.term;
        self.send(
            from,
            Message::AppendResponse(AppendResponse {
                term,
                result,
                read_round: req.read_round,
            }),
        );
    }

    /// Entries must follow `prev_index` contiguously, with terms that never
    /// decrease, start no lower than `prev_term` and end no higher than the
    /// request's term. Anything else is not from a correct leader.
    pub(super) fn well_formed(req: &AppendRequest) -> bool {
        let mut term = req.prev_term;
        req.prev_term <= req.term
            && req.entries.iter().enumerate().all(|(i, e)| {
                let ok = e.index == req.prev_index + 1 + i as u64
                    && e.term >= term
                    && e.term <= req.term;
                term = e.term;
                ok
            })
    }

    /// Paper 5.3: the consistency check, conflict truncation, and append.
    /// None: the request contradicts a committed entry and is dropped.
    pub(super) fn append_from_leader(&mut self, req: &AppendRequest) -> Option<AppendResult> {
        let snapshot_index = self.log.snapshot_index();
        if req.prev_index < snapshot_index {
            // Entries up to this node's snapshot are committed, so they match
            // the leader's (leader completeness): check from the snapshot on.
            let Some(snapshot_term) = self.log.term_at(snapshot_index) else {
                return Some(AppendResult::StaleTerm);
            };
            let trimmed = AppendRequest {
                prev_index: snapshot_index,
                prev_term: snapshot_term,
                entries: req
                    .entries
                    .iter()
                    .filter(|e| e.index > snapshot_index)
                    .cloned()
                    .collect(),
                ..req.clone()
            };
            // A correct leader's entries after our snapshot have terms at
            // least the snapshot's; anything else is dropped.
            if !Self::well_formed(&trimmed) {
                tracing::error!(
                    node = self.id,
                    "AppendEntries inconsistent with our snapshot; dropped"
                );
                return None;
            }
            return self.append_from_leader(&trimmed);
        }
        match self.log.term_at(req.prev_index) {
            None => {
                return Some(AppendResult::Conflict {
                    prev_index: req.prev_index,
                    conflict_term: None,
                    first_index: self.log.last_index() + 1,
                })
            }
            Some(t) if t != req.prev_term && !self.config.skip_consistency_check() => {
                return Some(AppendResult::Conflict {
                    prev_index: req.prev_index,
                    conflict_term: Some(t),
                    first_index: self.log.first_index_of_term(t, req.prev_index),
                })
            }
            Some(_) => {}
        }
        let mut new_entries = Vec::new();
        let mut membership_changed = false;
        for entry in &req.entries {
            match self.log.term_at(entry.index) {
                Some(t) if t == entry.term => continue,
                Some(_) => {
                    // Committed entries never conflict (leader completeness):
                    // only a broken or hostile peer says otherwise. Keep the
                    // committed entry and drop the message; nothing of it has
                    // been applied yet (this is its first mismatch).
                    if entry.index <= self.commit {
                        tracing::error!(
                            node = self.id,
                            index = entry.index,
                            "a peer contradicts a committed entry; message dropped"
                        );
                        return None;
                    }
                    self.log.truncate_from(entry.index);
                    self.persisted = self.persisted.min(entry.index - 1);
                    self.persist(PersistOp::TruncateFrom(entry.index));
                    membership_changed = true;
                }
                None => {}
            }
            membership_changed |= matches!(entry.payload, Payload::Config(_));
            self.log.append(entry.clone());
            new_entries.push(entry.clone());
        }
        if !new_entries.is_empty() {
            self.persist(PersistOp::Append(new_entries));
        }
        if membership_changed {
            self.refresh_membership();
        }
        let last_new = req.prev_index + req.entries.len() as u64;
        let commit = req.leader_commit.min(last_new);
        if commit > self.commit {
            self.commit = commit;
            self.apply_committed();
        }
        Some(AppendResult::Success {
            match_index: last_new,
        })
    }

    pub(super) fn handle_append_response(&mut self, from: NodeId, resp: AppendResponse) {
        if self.role != Role::Leader || resp.term != self.term {
            return;
        }
        self.heard_since_check.insert(from);
        let last_index = self.log.last_index();
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        p.read_round_acked = p.read_round_acked.max(resp.read_round);
        self.handle_append_result(from, resp.result, last_index);
        self.complete_reads();
        self.maybe_send_timeout_now();
    }

    pub(super) fn handle_append_result(
        &mut self,
        from: NodeId,
        result: AppendResult,
        last_index: Index,
    ) {
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        match result {
            // A follower cannot have matched entries this leader never had
            // (a leader's log only grows): a broken or hostile peer. Counting
            // it could commit past the log; found by `fuzz/raft_inputs`.
            AppendResult::Success { match_index } if match_index > last_index => {
                tracing::warn!(
                    node = self.id,
                    from,
                    match_index,
                    last_index,
                    "ignoring an acknowledgement beyond this leader's log"
                );
                return;
            }
            AppendResult::Success { match_index } => {
                if match_index > p.matched {
                    p.matched = match_index;
                }
                p.next = p.next.max(p.matched + 1);
                p.replicating = true;
                while p.inflight.front().is_some_and(|&(i, _)| i <= p.matched) {
                    p.inflight.pop_front();
                }
                self.maybe_commit();
                // It may now hold an entry it waits to see committed.
                self.notify_commit(from);
            }
            AppendResult::Conflict {
                prev_index,
                conflict_term,
                first_index,
            } => {
                if prev_index < p.matched {
                    return; // stale rejection of an older request
                }
                // A bare heartbeat to a follower behind the snapshot point
                // names the snapshot index, which it may not have *yet*:
                // heartbeats go ahead of queued appends (the transport's
                // liveness lane). Appends in flight up to there will answer
                // for themselves (or be retransmitted after stalled ticks);
                // backing off now would start a needless snapshot transfer.
                let awaited = prev_index == self.log.snapshot_index()
                    && conflict_term.is_none()
                    && p.replicating
                    && p.inflight.back().is_some_and(|&(i, _)| i >= prev_index);
                if awaited {
                    return;
                }
                let next = match conflict_term {
                    Some(t) => match self.log.last_index_of_term(t) {
                        Some(i) => i + 1,
                        None => first_index,
                    },
                    None => first_index,
                };
                p.next = next
                    .clamp(p.matched + 1, last_index + 1)
                    .min(prev_index.max(p.matched + 1));
                p.replicating = false;
                p.inflight.clear();
            }
            AppendResult::StaleTerm => return,
        }
        self.send_append(from, false);
    }

    pub(super) fn append_as_leader(&mut self, payload: Payload) -> Index {
        let is_config = matches!(payload, Payload::Config(_));
        let entry = Entry {
            term: self.term,
            index: self.log.last_index() + 1,
            payload,
        };
        let index = entry.index;
        self.log.append(entry.clone());
        self.persist(PersistOp::Append(vec![entry]));
        if is_config {
            self.refresh_membership();
        }
        index
    }

    pub(super) fn broadcast_append(&mut self) {
        for peer in self.peers() {
            self.send_append(peer, false);
        }
    }

    /// Sends entries from `next` if the window allows, or a bare heartbeat
    /// when `heartbeat` is set and nothing else went out.
    pub(super) fn send_append(&mut self, peer: NodeId, heartbeat: bool) {
        let last_index = self.log.last_index();
        let commit = self.commit;
        let term = self.term;
        let read_round = self.read_round;
        let window = self.config.inflight_appends_max;
        let window_bytes = self.config.inflight_bytes_max;
        let max = self.config.append_entries_max;
        let bytes_max = self.config.append_bytes_max;
        let snapshot_index = self.log.snapshot_index();
        let Some(p) = self.progress.get_mut(&peer) else {
            return;
        };
        if p.next <= snapshot_index || p.snapshot.is_some() {
            // What this follower needs next is compacted away (paper 7).
            // The current chunk is resent after a few silent heartbeats, in
            // case it was lost: not at every one, since chunks are large.
            if heartbeat && p.snapshot.is_some() {
                p.snapshot_silent_ticks += 1;
                if p.snapshot_silent_ticks < SNAPSHOT_RESEND_TICKS {
                    return;
                }
            }
            if heartbeat || p.snapshot.is_none() {
                p.snapshot_silent_ticks = 0;
                self.send_snapshot_chunk(peer);
            }
            return;
        }
        let has_entries = p.next <= last_index;
        let window_open = if p.replicating {
            let bytes: usize = p.inflight.iter().map(|&(_, b)| b).sum();
            p.inflight.len() < window && bytes < window_bytes
        } else {
            p.inflight.is_empty()
        };
        let send_entries = has_entries && window_open;
        if !send_entries && !heartbeat {
            return;
        }
        // A bare heartbeat names the last index known to match, so it never
        // trips the consistency check while optimistic appends are in flight.
        let prev_index = if send_entries {
            p.next - 1
        } else {
            p.matched.max(snapshot_index)
        };
        let Some(prev_term) = self.log.term_at(prev_index) else {
            return;
        };
        let entries = if send_entries {
            self.log.slice(p.next, max, bytes_max).to_vec()
        } else {
            Vec::new()
        };
        if let Some(last) = entries.last() {
            let bytes = entries.iter().map(crate::raft::log::payload_len).sum();
            p.inflight.push_back((last.index, bytes));
            if p.replicating {
                p.next = last.index + 1;
            }
        }
        let covered = entries.last().map_or(prev_index, |e| e.index);
        p.commit_sent = p.commit_sent.max(commit.min(covered));
        let req = AppendRequest {
            term,
            prev_index,
            prev_term,
            entries,
            leader_commit: commit,
            read_round,
        };
        self.send(peer, Message::Append(req));
    }
}
