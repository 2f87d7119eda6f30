//! Commitment (paper 5.4.2: a leader commits entries of its own term by
//! majority) and in-order apply to the state machine.

use super::*;

impl<S: StateMachine> Raft<S> {
    /// Paper 5.3/5.4.2: advance the commit index to the highest index stored
    /// on a majority, but only by counting replicas of a current-term entry.
    pub(super) fn maybe_commit(&mut self) {
        // Thesis 4.2.2: only voters of the configuration in effect count,
        // the leader itself included only if it is one.
        let membership = &self.membership;
        let learners_count = self.config.count_learners();
        let mut matched: Vec<Index> = self
            .progress
            .iter()
            .filter(|(&id, _)| membership.is_voter(id) || learners_count)
            .map(|(_, p)| p.matched)
            .collect();
        if membership.is_voter(self.id) {
            // Only what is durable here counts (thesis 10.2.1).
            matched.push(self.persisted.min(self.log.last_index()));
        }
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&candidate) = matched.get(self.quorum() - 1) else {
            return;
        };
        if candidate > self.commit && self.log.term_at(candidate) == Some(self.term) {
            self.commit = candidate;
            self.apply_committed();
            let peers: Vec<NodeId> = self.progress.keys().copied().collect();
            for peer in peers {
                self.notify_commit(peer);
            }
        }
    }

    /// Tells a follower that waits for a commit (it forwarded a proposal,
    /// or serves a read) the commit index as soon as it can use it: a write
    /// or read through a follower then takes a round trip more than through
    /// the leader, not a heartbeat interval more.
    pub(super) fn notify_commit(&mut self, peer: NodeId) {
        let commit = self.commit;
        let Some(p) = self.progress.get(&peer) else {
            return;
        };
        let usable = commit.min(p.matched);
        if p.commit_wanted > p.commit_sent && usable > p.commit_sent {
            self.send_append(peer, true);
        }
    }

    pub(super) fn fail_pending(&mut self) {
        for (_, id) in std::mem::take(&mut self.pending) {
            self.out.push(Effect::Reply {
                id,
                result: Err(RequestError::LeadershipLost),
            });
        }
    }

    pub(super) fn apply_committed(&mut self) {
        while self.applied < self.commit {
            let index = self.applied + 1;
            let Some(entry) = self.log.get(index) else {
                break;
            };
            let term = entry.term;
            let output = match &entry.payload {
                Payload::Command(cmd) => self.sm.apply(index, self.now, cmd),
                Payload::Noop | Payload::Config(_) => Vec::new(),
            };
            self.applied = index;
            self.complete_forwarded(index, term, &output);
            if let Some(id) = self.pending.remove(&index) {
                self.out.push(Effect::Reply {
                    id,
                    result: Ok(Applied { index, output }),
                });
            }
        }
        self.complete_reads();
        self.maybe_snapshot();
    }
}
