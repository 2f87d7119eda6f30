//! Snapshots and log compaction (paper 7).
//!
//! Every replica snapshots its own state machine once
//! `snapshot_threshold_entries` applied entries sit in its log, and drops
//! them. A leader whose follower needs compacted entries sends the latest
//! snapshot in chunks of `snapshot_chunk_bytes`, one at a time, each
//! answered with the offset the follower expects next; a chunk is resent
//! after a few silent heartbeats. A transfer, once started, finishes with
//! the snapshot it started with, though the leader takes newer ones.

use super::*;

/// How many snapshot thresholds of entries a leader may keep while a
/// follower installs a snapshot (`Raft::defers_compaction`).
pub const COMPACTION_DEFER_THRESHOLDS: u64 = 10;

/// A snapshot by entry count waits until the log it would replace holds at
/// least 1/this of the last snapshot's bytes: writing snapshots then costs
/// at most this many bytes per byte of log, whatever the state's size. A
/// million sessions make a snapshot of tens of megabytes; taken every
/// `snapshot_threshold_entries` (10,000) entries regardless, it was written
/// and fsynced every second by every node while they opened, and opens
/// slowed from 40,000/s to 9,000/s.
pub const SNAPSHOT_BYTES_PER_LOG_BYTE_MAX: usize = 4;

/// A snapshot of our own state being serialized off our thread: what
/// goes with its bytes once they come back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Building {
    index: Index,
    term: Term,
    membership: Membership,
}

/// A snapshot being received, chunk by chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Incoming {
    index: Index,
    term: Term,
    data: Vec<u8>,
}

impl<S: StateMachine> Raft<S> {
    /// Starts a snapshot if enough applied entries have accumulated and
    /// none is being built: freezes the state machine (cheap) and asks the
    /// driver to serialize it off this thread (`Effect::BuildSnapshot`).
    /// The log is compacted once the bytes come back
    /// (`handle_snapshot_built`).
    pub(super) fn maybe_snapshot(&mut self) {
        if self.building.is_some() {
            return;
        }
        let entries = self.applied.saturating_sub(self.log.snapshot_index());
        let last_bytes = self.snapshot.as_ref().map_or(0, |s| s.data.len());
        let worth_it = self.log.payload_bytes()
            >= (last_bytes / SNAPSHOT_BYTES_PER_LOG_BYTE_MAX)
                .min(self.config.snapshot_threshold_bytes);
        let by_count = entries >= self.config.snapshot_threshold_entries && worth_it;
        let by_bytes =
            entries > 0 && self.log.payload_bytes() >= self.config.snapshot_threshold_bytes;
        if !by_count && !by_bytes {
            return;
        }
        if self.defers_compaction(entries) {
            return;
        }
        let Some(term) = self.log.term_at(self.applied) else {
            return;
        };
        let (_, membership) = self.membership_at(self.applied);
        self.building = Some(Building {
            index: self.applied,
            term,
            membership,
        });
        self.out.push(Effect::BuildSnapshot(SnapshotJob {
            index: self.applied,
            state: self.sm.freeze(),
        }));
    }

    /// The driver serialized the state frozen at `index`: compact the log
    /// up to it and persist the snapshot, unless it is no longer wanted
    /// (not the one being built, or an installed snapshot passed it) or a
    /// transfer under way now needs the entries it would drop.
    pub(super) fn handle_snapshot_built(
        &mut self,
        index: Index,
        result: Result<Vec<u8>, SnapshotError>,
    ) {
        if self.building.as_ref().is_none_or(|b| b.index != index) {
            return;
        }
        let Some(building) = self.building.take() else {
            return;
        };
        let data = match result {
            Ok(data) => data,
            Err(e) => {
                tracing::error!(node = self.id, error = %e, "snapshot failed; keeping the log");
                return;
            }
        };
        let base = self.log.snapshot_index();
        if building.index <= base || self.defers_compaction(building.index - base) {
            return;
        }
        // Applied entries are committed: never truncated, so still here
        // with the term they had when frozen.
        debug_assert_eq!(self.log.term_at(building.index), Some(building.term));
        let snapshot = Snapshot {
            index: building.index,
            term: building.term,
            membership: building.membership,
            data,
        };
        self.log.compact(snapshot.index);
        self.persist_snapshot(snapshot);
    }

    /// A leader holds off compacting while a follower installs a snapshot,
    /// so that the entries after that snapshot are still here when it is
    /// done; else it needs another snapshot at once, and where writes
    /// outpace a transfer it never catches up (soak seed 4 of
    /// `locks_limits_3`: a follower installed snapshot after snapshot, one
    /// second each, and its readers waited). Only for a transfer that can
    /// still help (its snapshot not yet compacted past, its follower still
    /// answering), only up to half the room between the threshold and the
    /// log's bound (the other half stays for entries not yet applied, so
    /// clients meet `Busy` later, not never), and for at most
    /// `COMPACTION_DEFER_THRESHOLDS` thresholds of entries.
    fn defers_compaction(&self, entries: u64) -> bool {
        let base = self.log.snapshot_index();
        let helps = |p: &Progress| {
            p.snapshot.as_ref().is_some_and(|(s, _)| s.index >= base)
                && p.snapshot_silent_ticks < SNAPSHOT_RESEND_TICKS
        };
        if self.role != Role::Leader || !self.progress.values().any(helps) {
            return false;
        }
        let threshold = self.config.snapshot_threshold_bytes;
        let room = self.config.log_bytes_max.saturating_sub(threshold) / 2;
        let bytes_ok = self.log.payload_bytes() < threshold.saturating_add(room);
        let entries_max = self
            .config
            .snapshot_threshold_entries
            .saturating_mul(COMPACTION_DEFER_THRESHOLDS);
        bytes_ok && entries < entries_max
    }

    fn persist_snapshot(&mut self, snapshot: Snapshot) {
        self.base_membership = snapshot.membership.clone();
        let hard_state = HardState {
            term: self.term,
            voted_for: self.voted_for,
        };
        let tail = self.log.entries().to_vec();
        let snapshot = Arc::new(snapshot);
        self.persist(PersistOp::Snapshot {
            snapshot: snapshot.clone(),
            hard_state,
            tail,
        });
        self.snapshot = Some(snapshot);
    }

    /// Sends the chunk this follower expects of the snapshot it is being
    /// sent, or the first of the latest one.
    pub(super) fn send_snapshot_chunk(&mut self, peer: NodeId) {
        let term = self.term;
        let chunk = self.config.snapshot_chunk_bytes;
        let latest = self.snapshot.clone();
        let Some(p) = self.progress.get_mut(&peer) else {
            return;
        };
        let (snap, offset) = match (p.snapshot.take(), latest) {
            (Some((snap, offset)), _) => {
                let offset = offset.min(snap.data.len() as u64);
                (snap, offset)
            }
            (None, Some(latest)) => (latest, 0),
            (None, None) => return,
        };
        p.snapshot = Some((snap.clone(), offset));
        let start = offset as usize;
        let end = start.saturating_add(chunk).min(snap.data.len());
        let req = InstallSnapshotRequest {
            term,
            last_index: snap.index,
            last_term: snap.term,
            membership: snap.membership.clone(),
            offset,
            data: snap.data[start..end].to_vec(),
            done: end == snap.data.len(),
        };
        self.send(peer, Message::InstallSnapshot(req));
    }

    pub(super) fn handle_install_snapshot(
        &mut self,
        now: Instant,
        from: NodeId,
        req: InstallSnapshotRequest,
    ) {
        let respond = |this: &mut Self, next_offset: u64, done: bool| {
            let resp = InstallSnapshotResponse {
                term: this.term,
                last_index: req.last_index,
                next_offset,
                done,
            };
            this.send(from, Message::InstallSnapshotResponse(resp));
        };
        if req.term < self.term {
            return respond(self, 0, false);
        }
        if self.role != Role::Follower {
            self.become_follower(now, req.term, Some(from));
        }
        self.leader = Some(from);
        self.leader_contact = Some(now);
        self.reset_election_timer(now);
        if req.last_index <= self.commit {
            // Already have all of it: the leader may move on.
            self.incoming = None;
            return respond(self, 0, true);
        }
        let continues = self.incoming.as_ref().is_some_and(|inc| {
            inc.index == req.last_index
                && inc.term == req.last_term
                && inc.data.len() as u64 == req.offset
        });
        if continues {
            if let Some(inc) = self.incoming.as_mut() {
                inc.data.extend_from_slice(&req.data);
            }
        } else if req.offset == 0 {
            self.incoming = Some(Incoming {
                index: req.last_index,
                term: req.last_term,
                data: req.data.clone(),
            });
        } else {
            // Out of order: say where to resume (the start, if it is another snapshot).
            let expected = match &self.incoming {
                Some(inc) if inc.index == req.last_index && inc.term == req.last_term => {
                    inc.data.len() as u64
                }
                _ => 0,
            };
            return respond(self, expected, false);
        }
        let received = self.incoming.as_ref().map_or(0, |inc| inc.data.len());
        if received > self.config.snapshot_bytes_max {
            tracing::warn!(
                from,
                bytes = received,
                "snapshot exceeds snapshot_bytes_max; dropped"
            );
            self.incoming = None;
            return respond(self, 0, false);
        }
        if !req.done {
            return respond(self, received as u64, false);
        }
        let Some(inc) = self.incoming.take() else {
            return;
        };
        if let Err(e) = self.sm.restore(&inc.data) {
            tracing::warn!(from, error = %e, "snapshot from the leader does not restore; dropped");
            return respond(self, 0, false);
        }
        // Paper 7: keep entries after the snapshot if the log agrees at its
        // last entry; otherwise the whole log is superseded.
        if self.log.term_at(inc.index) == Some(inc.term) {
            self.log.compact(inc.index);
        } else {
            self.log.reset(inc.index, inc.term);
            self.persisted = self.persisted.min(inc.index);
        }
        self.commit = inc.index;
        self.applied = inc.index;
        // A snapshot of our own state being built is older: not wanted.
        self.building = None;
        // Forwarded proposals placed at or below the snapshot will never be
        // applied one by one here: answer them now, or they wait forever
        // and fill the table.
        self.fail_forwards_up_to(inc.index);
        self.persist_snapshot(Snapshot {
            index: inc.index,
            term: inc.term,
            membership: req.membership.clone(),
            data: inc.data,
        });
        self.refresh_membership();
        respond(self, received as u64, true);
        self.complete_reads();
    }

    pub(super) fn handle_install_snapshot_response(
        &mut self,
        from: NodeId,
        resp: InstallSnapshotResponse,
    ) {
        if self.role != Role::Leader || resp.term != self.term {
            return;
        }
        self.heard_since_check.insert(from);
        let current = self.snapshot.as_ref().map(|s| s.index);
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        let sending = p.snapshot.as_ref().map(|(s, _)| s.index);
        // A follower answers for a snapshot this leader sent, never past it:
        // a larger index is a broken or hostile peer (it would commit past
        // the log).
        if current.is_none_or(|i| resp.last_index > i) {
            return;
        }
        if resp.done && sending.is_some_and(|s| resp.last_index < s) {
            // A late answer for an earlier transfer: the one under way
            // goes on.
            p.matched = p.matched.max(resp.last_index);
        } else if resp.done {
            p.matched = p.matched.max(resp.last_index);
            p.next = p.matched + 1;
            p.snapshot = None;
            p.replicating = false;
            p.inflight.clear();
            self.maybe_commit();
            self.send_append(from, false);
        } else if sending == Some(resp.last_index) {
            if resp.next_offset == 0 && current > sending {
                // The follower starts over (it restarted, or could not
                // restore): start over with the latest snapshot instead.
                p.snapshot = None;
            } else if let Some((_, offset)) = p.snapshot.as_mut() {
                *offset = resp.next_offset;
            }
            self.send_snapshot_chunk(from);
        }
    }
}
