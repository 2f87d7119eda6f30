//! Elections: timers, PreVote (thesis 9.6), votes (paper 5.2), CheckQuorum
//! leases (thesis 4.2.3, 6.2), and the role changes they lead to.

use super::*;

impl<S: StateMachine> Raft<S> {
    pub(super) fn handle_election_timer(&mut self, now: Instant) {
        if self.role == Role::Leader {
            // CheckQuorum (thesis 6.2): a leader that has not heard from a
            // majority within an election timeout steps down, so a leader cut
            // off by a partition stops acting as one.
            let membership = &self.membership;
            let heard = self
                .heard_since_check
                .iter()
                .filter(|&&id| membership.is_voter(id))
                .count()
                + usize::from(membership.is_voter(self.id));
            self.heard_since_check.clear();
            if heard < self.quorum() {
                tracing::info!(
                    node = self.id,
                    term = self.term,
                    heard,
                    quorum = self.quorum(),
                    "CheckQuorum failed; stepping down"
                );
                self.become_follower(now, self.term, None);
            } else {
                self.election_at = Some(now + self.config.election_timeout_min);
            }
            return;
        }
        self.start_pre_vote(now);
    }

    pub(super) fn handle_pre_vote(&mut self, now: Instant, from: NodeId, req: VoteRequest) {
        let granted = req.term > self.term
            && !self.leader_lease_active(now)
            && self.role != Role::Leader
            && self
                .log
                .is_up_to_date(req.last_log_index, req.last_log_term);
        let term = if granted { req.term } else { self.term };
        self.send(
            from,
            Message::PreVoteResponse(VoteResponse { term, granted }),
        );
    }

    pub(super) fn handle_pre_vote_response(
        &mut self,
        now: Instant,
        from: NodeId,
        resp: VoteResponse,
    ) {
        if self.role != Role::PreCandidate
            || !resp.granted
            || resp.term != self.term + 1
            || !self.membership.is_voter(from)
        {
            return;
        }
        self.votes.insert(from);
        if self.votes.len() >= self.quorum() {
            self.start_election(now, false);
        }
    }

    pub(super) fn handle_vote(&mut self, now: Instant, from: NodeId, req: VoteRequest) {
        let can_vote = self.voted_for.is_none()
            || self.voted_for == Some(from)
            || self.config.vote_twice_per_term();
        // A pre-candidate has not voted in this term yet, so it may vote too.
        let eligible = matches!(self.role, Role::Follower | Role::PreCandidate);
        let granted = req.term == self.term
            && can_vote
            && eligible
            && self
                .log
                .is_up_to_date(req.last_log_index, req.last_log_term);
        if granted {
            self.role = Role::Follower;
            self.votes.clear();
            self.voted_for = Some(from);
            self.persist_hard_state();
            // Paper 5.2: granting a vote resets the election timer.
            self.reset_election_timer(now);
        }
        let term = self.term;
        self.send(from, Message::VoteResponse(VoteResponse { term, granted }));
    }

    pub(super) fn handle_vote_response(&mut self, now: Instant, from: NodeId, resp: VoteResponse) {
        if self.role != Role::Candidate
            || resp.term != self.term
            || !resp.granted
            || !self.membership.is_voter(from)
        {
            return;
        }
        self.votes.insert(from);
        if self.votes.len() >= self.quorum() {
            self.become_leader(now);
        }
    }

    pub(super) fn start_pre_vote(&mut self, now: Instant) {
        if !self.membership.is_voter(self.id) {
            // Learners, removed and joining servers never campaign.
            self.reset_election_timer(now);
            return;
        }
        self.role = Role::PreCandidate;
        self.leader = None;
        self.fail_reads();
        self.fail_unplaced_forwards();
        self.votes = BTreeSet::from([self.id]);
        self.reset_election_timer(now);
        if self.votes.len() >= self.quorum() {
            return self.start_election(now, false);
        }
        let req = self.vote_request(self.term + 1, false);
        for peer in self.voter_peers() {
            self.send(peer, Message::PreVote(req.clone()));
        }
    }

    /// `transfer`: started by `TimeoutNow`, so voters skip the lease check.
    pub(super) fn start_election(&mut self, now: Instant, transfer: bool) {
        self.role = Role::Candidate;
        self.term += 1;
        self.voted_for = Some(self.id);
        self.leader = None;
        self.leader_contact = None;
        self.votes = BTreeSet::from([self.id]);
        self.persist_hard_state();
        self.reset_election_timer(now);
        if self.votes.len() >= self.quorum() {
            return self.become_leader(now);
        }
        let req = self.vote_request(self.term, transfer);
        for peer in self.voter_peers() {
            self.send(peer, Message::Vote(req.clone()));
        }
    }

    pub(super) fn become_follower(&mut self, now: Instant, term: Term, leader: Option<NodeId>) {
        debug_assert!(term >= self.term);
        let new_term = term > self.term;
        if term > self.term {
            self.term = term;
            self.voted_for = None;
            self.persist_hard_state();
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.progress.clear();
        self.heard_since_check.clear();
        self.fail_pending();
        self.fail_reads();
        if leader.is_none() || new_term {
            self.fail_unplaced_forwards();
        }
        self.end_transfer(None);
        self.heartbeat_at = None;
        self.reset_election_timer(now);
    }

    pub(super) fn become_leader(&mut self, now: Instant) {
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.votes.clear();
        self.heard_since_check.clear();
        let next = self.log.last_index() + 1;
        self.progress = self
            .peers()
            .map(|peer| (peer, Progress::new(next)))
            .collect();
        // Thesis 6.4: a no-op of the new term lets the leader learn the
        // commit index, since only current-term entries commit by counting.
        self.term_start = self.append_as_leader(Payload::Noop);
        self.maybe_commit();
        self.broadcast_append();
        self.election_at = Some(now + self.config.election_timeout_min);
        self.heartbeat_at = Some(now + self.config.heartbeat_interval);
    }

    pub(super) fn vote_request(&self, term: Term, transfer: bool) -> VoteRequest {
        VoteRequest {
            term,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            transfer,
        }
    }

    pub(super) fn leader_lease_active(&self, now: Instant) -> bool {
        if self.role == Role::Leader {
            return true;
        }
        self.leader.is_some()
            && self
                .leader_contact
                .is_some_and(|t| now.saturating_since(t) < self.config.election_timeout_min)
    }

    pub(super) fn reset_election_timer(&mut self, now: Instant) {
        let min = self.config.election_timeout_min.as_micros() as u64;
        let max = self.config.election_timeout_max.as_micros() as u64;
        let timeout = self.rng.gen_range(min..max);
        self.election_at = Some(Instant::from_micros(
            now.as_micros().saturating_add(timeout),
        ));
    }
}
