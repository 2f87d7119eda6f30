//! Membership changes in the replica (thesis 4): one server at a time, the
//! configuration in effect being the latest one in the log.

use super::*;

impl<S: StateMachine> Raft<S> {
    /// Recomputes the configuration in effect from the log (after an append
    /// or truncation that may have added or removed a configuration entry),
    /// and on a leader keeps one `Progress` per member.
    pub(super) fn refresh_membership(&mut self) {
        let (index, membership) = self.membership_at(self.log.last_index());
        self.membership_index = index;
        self.membership = membership;
        if self.role == Role::Leader {
            // A server new to the configuration has nothing yet: probe it
            // from the start (a snapshot takes over if that is compacted).
            let members: Vec<NodeId> = self.peers().collect();
            self.progress.retain(|id, _| members.contains(id));
            for id in members {
                self.progress.entry(id).or_insert_with(|| Progress::new(1));
            }
        }
    }

    /// The configuration in effect at `index`, and the index that set it.
    pub(super) fn membership_at(&self, index: Index) -> (Index, Membership) {
        let first = self.log.first_index();
        let mut i = index.min(self.log.last_index());
        while i >= first {
            if let Some(Entry {
                payload: Payload::Config(m),
                ..
            }) = self.log.get(i)
            {
                return (i, m.clone());
            }
            i -= 1;
        }
        (self.log.snapshot_index(), self.base_membership.clone())
    }

    pub(super) fn handle_change(&mut self, id: RequestId, change: ConfChange) {
        let result = self.validate_change(&change);
        let next = match result {
            Ok(next) => next,
            Err(error) => {
                self.out.push(Effect::Reply {
                    id,
                    result: Err(error),
                });
                return;
            }
        };
        let index = self.append_as_leader(Payload::Config(next));
        self.pending.insert(index, id);
        self.maybe_commit();
        self.broadcast_append();
    }

    fn validate_change(&self, change: &ConfChange) -> Result<Membership, RequestError> {
        if self.role != Role::Leader {
            return Err(RequestError::NotLeader {
                leader: self.leader,
            });
        }
        // Thesis 4.1: one change at a time, and (errata to 4.1) a new leader
        // must commit an entry of its own term before changing membership.
        let pending = self.membership_index > self.commit;
        let full = self.pending.len() >= self.config.pending_proposals_max;
        if pending || full || self.commit < self.term_start || self.transferring() {
            return Err(RequestError::Busy);
        }
        if let ConfChange::Promote { id } = change {
            // Thesis 4.2.1: a server joins the majority only once caught up,
            // or the cluster could stall waiting for it.
            let matched = self.progress.get(id).map_or(0, |p| p.matched);
            if self.membership.contains(*id) && !self.caught_up(matched) {
                return Err(RequestError::NotCaughtUp(*id));
            }
        }
        self.membership
            .apply(change)
            .map_err(RequestError::Membership)
    }

    fn caught_up(&self, matched: Index) -> bool {
        matched + self.config.append_entries_max as u64 >= self.commit
    }

    /// A server asks to join (thesis 4.2.1): add it as a learner, then
    /// promote it once it has caught up. Followers pass it to the leader.
    pub(super) fn handle_join(&mut self, id: NodeId, addr: String) {
        match (self.role, self.leader) {
            (Role::Leader, _) => {
                if !self.membership.contains(id)
                    && self
                        .validate_change(&ConfChange::AddLearner {
                            id,
                            addr: addr.clone(),
                        })
                        .is_ok()
                {
                    let next = self
                        .membership
                        .apply(&ConfChange::AddLearner { id, addr })
                        .ok();
                    if let Some(next) = next {
                        self.append_as_leader(Payload::Config(next));
                        self.maybe_commit();
                        self.broadcast_append();
                    }
                }
                if self.membership.contains(id) && !self.membership.is_voter(id) {
                    self.auto_promote.insert(id);
                }
            }
            (_, Some(leader)) if leader != self.id => self.send(leader, Message::Join { id, addr }),
            _ => {}
        }
    }

    /// At each heartbeat: promote a joined learner that has caught up.
    pub(super) fn promote_caught_up_learners(&mut self) {
        let membership = &self.membership;
        self.auto_promote
            .retain(|id| membership.contains(*id) && !membership.is_voter(*id));
        let ready = self.auto_promote.iter().copied().find(|id| {
            self.progress
                .get(id)
                .is_some_and(|p| self.caught_up(p.matched))
        });
        if let Some(id) = ready {
            if let Ok(next) = self.validate_change(&ConfChange::Promote { id }) {
                self.auto_promote.remove(&id);
                self.append_as_leader(Payload::Config(next));
                self.maybe_commit();
                self.broadcast_append();
            }
        }
    }

    /// Thesis 4.2.2: a leader removed from the configuration manages the
    /// cluster until that configuration commits, then steps down.
    pub(super) fn step_down_if_removed(&mut self, now: Instant) {
        if self.role == Role::Leader
            && self.membership_index <= self.commit
            && !self.membership.is_voter(self.id)
        {
            tracing::info!(
                node = self.id,
                term = self.term,
                "removed from the configuration; stepping down"
            );
            self.become_follower(now, self.term, None);
        }
    }
}
