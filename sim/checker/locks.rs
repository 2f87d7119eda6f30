//! Feeds the lock-service checkers (one file each) from what replicas and
//! clients report, and keeps the history the linearizability check reads.

use super::beliefs::{Beliefs, Believed};
use super::exactly_once::ExactlyOnce;
use super::fenced_exclusion::FencedExclusion;
use super::lease_safety::LeaseSafety;
use super::lock_history::LockHistory;
use super::request_liveness::RequestLiveness;
use super::token_order::TokenOrder;
use super::waiter_liveness::WaiterLiveness;
use super::Checker;
use raftlock::linearizability::{self as lin, Verdict};
use raftlock::lock::Event;
use std::time::Duration;

#[derive(Default)]
pub struct LockChecks {
    pub fenced: FencedExclusion,
    pub tokens: TokenOrder,
    pub leases: LeaseSafety,
    pub once: ExactlyOnce,
    pub waiters: WaiterLiveness,
    pub requests: RequestLiveness,
    pub beliefs: Beliefs,
    pub history: LockHistory,
    pub writes_accepted: u64,
    pub linearizability_ops: u64,
}

impl Checker {
    /// A replica applied entries that did these things.
    pub fn on_lock_events(&mut self, node: u64, events: &[Event], lin_locks: &[String]) {
        let now = self.now;
        for e in events {
            let result = match e {
                Event::Granted(g) => {
                    use crate::trace::V;
                    let mode = format!("{:?}", g.mode);
                    self.trace_event(
                        node,
                        "grant",
                        &[
                            ("lock", V::S(&g.lock)),
                            ("session", V::N(g.session)),
                            ("token", V::N(g.token)),
                            ("mode", V::S(&mode)),
                            ("index", V::N(g.index)),
                            ("queued", V::B(g.queued)),
                        ],
                    );
                    self.mix(&[5, node, g.index, g.token]);
                    self.locks
                        .tokens
                        .on_grant(node, g)
                        .map_err(|m| (TokenOrder::NAME, m))
                }
                Event::Executed {
                    index,
                    session,
                    seq,
                } => self
                    .locks
                    .once
                    .on_executed(node, *session, *seq, *index)
                    .map_err(|m| (ExactlyOnce::NAME, m)),
                Event::Ended {
                    index,
                    session,
                    expired,
                    held,
                } => {
                    use crate::trace::V;
                    let held_text = held
                        .iter()
                        .map(|(l, t)| format!("{l}:{t}"))
                        .collect::<Vec<_>>()
                        .join(",");
                    self.trace_event(
                        node,
                        "session_end",
                        &[
                            ("session", V::N(*session)),
                            ("expired", V::B(*expired)),
                            ("held", V::S(&held_text)),
                            ("index", V::N(*index)),
                        ],
                    );
                    let first = self.locks.history.first_apply(*index, "");
                    if first && !*expired {
                        // A close is certain once applied: recorded here too
                        // (a front end's close of a session whose client left
                        // is seen by no client; a close a client saw is
                        // recorded twice, which changes nothing). Only for
                        // the checked locks it let go of, so the thousands of
                        // one-lock sessions' closes do not swell the history.
                        let held_lin = lin_locks
                            .iter()
                            .filter(|l| held.iter().any(|(h, _)| h == *l));
                        for lock in held_lin {
                            let close = lin::Op::Close { session: *session };
                            self.locks.history.record_certain(lock, close, now);
                        }
                    }
                    if *expired {
                        if first {
                            // An expiry is a certain operation at the moment
                            // the first replica applies it (the leader,
                            // right as it commits).
                            for lock in lin_locks {
                                let expire = lin::Op::Expire { session: *session };
                                self.locks.history.record_certain(lock, expire, now);
                            }
                            self.locks
                                .leases
                                .on_expired(*session, now)
                                .map_err(|m| (LeaseSafety::NAME, m))
                        } else {
                            Ok(())
                        }
                    } else {
                        Ok(())
                    }
                }
                // The driver core takes them at every flush; a drop here
                // would blind the token and exactly-once checkers, so it
                // fails the run.
                Event::Missed { count } => Err((
                    "events-missed",
                    format!("node {node}'s lock machine dropped {count} events"),
                )),
                Event::Released {
                    index,
                    session,
                    lock,
                    token,
                } => {
                    use crate::trace::V;
                    self.trace_event(
                        node,
                        "release",
                        &[
                            ("lock", V::S(lock)),
                            ("session", V::N(*session)),
                            ("token", V::N(*token)),
                            ("index", V::N(*index)),
                        ],
                    );
                    Ok(())
                }
                Event::Cancelled {
                    index,
                    session,
                    lock,
                } => {
                    use crate::trace::V;
                    self.trace_event(
                        node,
                        "cancel",
                        &[
                            ("lock", V::S(lock)),
                            ("session", V::N(*session)),
                            ("index", V::N(*index)),
                        ],
                    );
                    Ok(())
                }
                Event::Undelayed { index, lock } => {
                    if lin_locks.contains(lock) && self.locks.history.first_apply(*index, lock) {
                        let history = &mut self.locks.history;
                        history.record_certain(lock, lin::Op::Undelay, now);
                    }
                    Ok(())
                }
            };
            if let Err((checker, m)) = result {
                self.fail(checker, m);
            }
        }
    }

    /// `client` trusts `session`'s lease until real time `until`: what the
    /// client-beliefs and lease-safety checkers both need to know.
    pub fn on_lease_trusted(&mut self, client: u64, session: u64, until: Duration) {
        self.locks.beliefs.on_trusted_until(client, session, until);
        if let Err(m) = self.locks.leases.on_trusted_until(session, until) {
            self.fail_lease(m);
        }
    }

    pub fn fail_lease(&mut self, message: String) {
        self.fail(LeaseSafety::NAME, message);
    }

    pub fn fail_beliefs(&mut self, message: String) {
        self.fail(Beliefs::NAME, message);
    }

    /// A client starts to believe it holds `lock` (see `beliefs.rs`).
    pub fn on_belief(
        &mut self,
        client: u64,
        id: u64,
        session: u64,
        lock: &str,
        mode: Believed,
        token: u64,
    ) {
        let now = self.now;
        if let Err(m) = self
            .locks
            .beliefs
            .on_believe(client, id, session, lock, mode, token, now)
        {
            self.fail(Beliefs::NAME, m);
        }
    }

    /// The protected resource accepted a write.
    pub fn on_resource_write(&mut self, resource: &str, token: u64, client: u64) {
        self.locks.writes_accepted += 1;
        if let Err(m) = self.locks.fenced.on_accepted(resource, token, client) {
            self.fail(FencedExclusion::NAME, m);
        }
    }

    /// End of a lock run: the linearizability check over the history,
    /// with the calls still open as ambiguous operations.
    pub fn finish_locks(&mut self, lin_locks: &[String]) {
        let history = self.locks.history.finish(lin_locks);
        let ops = history.len() as u64;
        let limits = lin::Limits {
            steps_max: lin::LINEARIZABILITY_STEPS_MAX,
        };
        let verdict = lin::check(history, &limits);
        self.locks.linearizability_ops = ops;
        match verdict {
            Verdict::Linearizable => {}
            Verdict::Violation { lock, detail } => {
                self.fail("linearizability", format!("lock {lock}: {detail}"));
            }
            // Too costly to decide is not a failure, but it is counted.
            Verdict::Inconclusive { .. } => self.stats.linearizability_inconclusive += 1,
        }
    }

    /// An HTTP-style client's call ended: answered, or it gave up.
    pub fn on_http_call(&mut self, client: u64, invoked: Duration, given_up: bool) {
        self.locks.requests.on_call(client, invoked, given_up);
    }

    /// After faults healed: no call made once the cluster settled went
    /// unanswered, and every HTTP client had one answered (false while
    /// some has not yet; a violation past `bound`).
    pub fn check_requests(&mut self, clients: &[u64], healed: Duration, bound: Duration) -> bool {
        if let Some((client, invoked)) = self.locks.requests.first_unanswered_since(healed) {
            self.fail(
                RequestLiveness::NAME,
                format!(
                    "client {client}'s call made at {invoked:?}, after faults healed at {healed:?} and the cluster settled, was never answered"
                ),
            );
            return true;
        }
        let done = self.locks.requests.all_answered_since(clients, healed);
        if !done && self.now > healed + bound {
            self.fail(
                RequestLiveness::NAME,
                format!("within {bound:?} after faults healed at {healed:?}, not every HTTP client had a call answered"),
            );
        }
        done
    }

    pub fn check_waiters(&mut self, clients: &[u64], healed: Duration, bound: Duration) -> bool {
        let done = self.locks.waiters.all_granted_since(clients, healed);
        if !done && self.now > healed + bound {
            let stuck = self.locks.waiters.stuck(healed);
            self.fail(
                WaiterLiveness::NAME,
                format!(
                    "within {bound:?} after faults healed at {healed:?}, not every client got a lock (calls outstanding since before healing: {stuck:?})"
                ),
            );
        }
        done
    }
}
