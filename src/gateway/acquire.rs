//! Acquires: a try-lock, or a wait in the lock's FIFO queue, in the
//! caller's session or in a one-lock session the node opens for it.
//!
//! A call goes Opening (one-lock sessions only) -> Proposing -> done, or,
//! when the acquire queues, -> Waiting for the grant of its own acquire
//! (LookingUp the session when events were missed) -> Cancelling at its
//! deadline, where the cancel's answer says whether the grant won.

use super::{
    check_name, query_answer_of, response_of, Answer, Call, Gateway, GatewayError, Purpose, Timer,
    WAIT_MS_MAX,
};
use super::{CallId, EARLY_GRANTS_MAX};
use crate::actor::Instant;
use crate::lock::auth::CredentialId;
use crate::lock::{
    Command, Grant, LockError, Mode, Op, Query, QueryAnswer, Reply, SessionId, Token,
};
use crate::raft::{Applied, Index};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcquireArgs {
    pub lock: String,
    pub mode: Mode,
    /// 0 for a try-lock; otherwise how long to wait in the queue.
    pub wait_ms: u64,
    pub session: SessionChoice,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionChoice {
    /// The caller's own session.
    Existing(SessionId),
    /// A session opened for this acquire alone and kept alive while it
    /// waits; `nonce` (random, chosen by the driver) makes a retried open
    /// return the same session.
    OneLock { ttl_ms: u64, nonce: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acquired {
    pub lock: String,
    pub token: Token,
    pub session: SessionId,
    pub mode: Mode,
    /// The TTL of the one-lock session this call opened.
    pub ttl_ms: Option<u64>,
    /// How much of that session's lease is certain to be left as the node
    /// answers (`TTL * (1 - ρ)` from the latest renewal's send).
    pub lease_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Opening,
    Proposing,
    Waiting { acquire: Index },
    LookingUp { acquire: Index },
    Cancelling,
}

/// A one-lock session this call opened and keeps alive.
#[derive(Clone, Copy, Debug)]
struct Owned {
    ttl_ms: u64,
    /// When the latest renewal (the open, or a keepalive) was sent: the
    /// lease counts from there (docs/SAFETY.md rule 2).
    renewed_at: Instant,
}

pub(super) struct AcquireCall {
    pub(super) lock: String,
    mode: Mode,
    wait_ms: u64,
    pub(super) session: Option<SessionId>,
    owned: Option<Owned>,
    phase: Phase,
    /// When the wait ends (its timer may have fired already).
    pub(super) deadline: Option<Instant>,
    /// When to renew the one-lock session (no timer while a renewal runs).
    pub(super) renew_at: Option<Instant>,
    /// Grants of this session and lock applied while the acquire's own
    /// index is unknown: (the acquire each answers, its token).
    early: Vec<(Index, Token)>,
    /// Events were missed while they could not be acted on: look again.
    missed: bool,
    /// The client went away; finish once the op in flight returns.
    gone: bool,
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

impl Gateway {
    fn acq(&mut self, call: CallId) -> Option<&mut AcquireCall> {
        match self.calls.get_mut(&call) {
            Some(Call::Acquire(a)) => Some(a),
            _ => None,
        }
    }

    pub(super) fn start_acquire(&mut self, now: Instant, call: CallId, args: super::AcquireArgs) {
        if let Err(e) = check_name(&args.lock) {
            return self.answer(call, Err(e));
        }
        if args.wait_ms > WAIT_MS_MAX {
            let e = GatewayError::BadRequest(format!("wait_ms is at most {WAIT_MS_MAX}"));
            return self.answer(call, Err(e));
        }
        let (session, owned, phase) = match args.session {
            SessionChoice::Existing(s) => (Some(s), None, Phase::Proposing),
            SessionChoice::OneLock { ttl_ms, .. } => (
                None,
                Some(Owned {
                    ttl_ms,
                    renewed_at: now,
                }),
                Phase::Opening,
            ),
        };
        let state = AcquireCall {
            lock: args.lock,
            mode: args.mode,
            wait_ms: args.wait_ms,
            session,
            owned,
            phase,
            deadline: None,
            renew_at: None,
            early: Vec::new(),
            missed: false,
            gone: false,
        };
        self.calls.insert(call, Call::Acquire(state));
        match args.session {
            SessionChoice::Existing(_) => self.propose_acquire(now, call),
            SessionChoice::OneLock { ttl_ms, nonce } => {
                let open = Command::Open { nonce, ttl_ms };
                self.propose(Some(call), Purpose::Open, &open);
            }
        }
    }

    /// Registers a waiting acquire (before proposing it, so its grant
    /// cannot slip by), then proposes it.
    fn propose_acquire(&mut self, now: Instant, call: CallId) {
        let Some(a) = self.acq(call) else { return };
        let Some(session) = a.session else { return };
        a.phase = Phase::Proposing;
        let (lock, mode, wait_ms) = (a.lock.clone(), a.mode, a.wait_ms);
        if wait_ms > 0 {
            let deadline = now + ms(wait_ms);
            a.deadline = Some(deadline);
            self.register(call, session, &lock);
            self.set_timer(call, Timer::Deadline, None, Some(deadline));
        }
        let op = Op::Acquire {
            lock,
            mode,
            wait: wait_ms > 0,
        };
        self.propose(
            Some(call),
            Purpose::Acquire,
            &Command::Unsequenced { session, op },
        );
    }

    pub(super) fn acquire_done(
        &mut self,
        now: Instant,
        call: CallId,
        purpose: Purpose,
        result: Result<Applied, GatewayError>,
    ) {
        match purpose {
            Purpose::Open => self.opened(now, call, result),
            Purpose::Acquire => self.proposed(now, call, result),
            Purpose::Cancel => self.cancelled(now, call, result),
            Purpose::KeepAlive { sent } => self.renewed(now, call, sent, result),
            Purpose::Lookup => self.looked_up(now, call, result),
            Purpose::Pass | Purpose::KeepAlives | Purpose::Undo { .. } => {}
        }
    }

    fn opened(&mut self, now: Instant, call: CallId, result: Result<Applied, GatewayError>) {
        let session = match result.and_then(|a| response_of(&a)) {
            Ok(Ok(Reply::Opened { session, .. })) => session,
            Ok(Ok(other)) => return self.fail(now, call, unexpected(other)),
            Ok(Err(e)) => return self.fail(now, call, e.into()),
            // An open whose outcome is unknown may have opened a session
            // nobody knows the id of: it expires after its TTL.
            Err(e) => return self.fail(now, call, e),
        };
        let Some(a) = self.acq(call) else { return };
        a.session = Some(session);
        if a.gone {
            return self.abandon(call, false);
        }
        let renew_at = a.owned.map(|o| o.renewed_at + ms(o.ttl_ms) / 3);
        a.renew_at = renew_at;
        self.set_timer(call, Timer::Renew, None, renew_at);
        self.propose_acquire(now, call);
    }

    fn proposed(&mut self, now: Instant, call: CallId, result: Result<Applied, GatewayError>) {
        let index = result.as_ref().map_or(0, |a| a.index);
        match result.and_then(|a| response_of(&a)) {
            Ok(Ok(Reply::Granted { token })) => self.granted(now, call, token),
            Ok(Ok(Reply::Queued { .. })) => self.queued(now, call, index),
            Ok(Ok(other)) => self.fail(now, call, unexpected(other)),
            Ok(Err(e)) => self.fail(now, call, e.into()),
            Err(e) => self.fail(now, call, e),
        }
    }

    /// The acquire queued at `acquire`: its grant may have been seen
    /// already; otherwise wait (or look, or cancel).
    fn queued(&mut self, now: Instant, call: CallId, acquire: Index) {
        let by_name = self.config.match_grants_by_name();
        let Some(a) = self.acq(call) else { return };
        if a.wait_ms == 0 {
            return self.fail(now, call, unexpected(Reply::Queued { position: 0 }));
        }
        let early = std::mem::take(&mut a.early);
        if let Some(&(_, token)) = early.iter().find(|(i, _)| *i == acquire || by_name) {
            return self.granted(now, call, token);
        }
        if a.gone {
            return self.abandon(call, false);
        }
        if std::mem::take(&mut a.missed) {
            return self.lookup(call, acquire);
        }
        self.wait_or_cancel(now, call, acquire);
    }

    fn wait_or_cancel(&mut self, now: Instant, call: CallId, acquire: Index) {
        let Some(a) = self.acq(call) else { return };
        if a.deadline.is_some_and(|d| now >= d) {
            return self.cancel(call);
        }
        a.phase = Phase::Waiting { acquire };
    }

    fn lookup(&mut self, call: CallId, acquire: Index) {
        let Some(a) = self.acq(call) else { return };
        let Some(session) = a.session else { return };
        a.phase = Phase::LookingUp { acquire };
        self.read(call, &Query::Session { session });
    }

    fn cancel(&mut self, call: CallId) {
        let Some(a) = self.acq(call) else { return };
        let Some(session) = a.session else { return };
        a.phase = Phase::Cancelling;
        let op = Op::Cancel {
            lock: a.lock.clone(),
        };
        self.propose(
            Some(call),
            Purpose::Cancel,
            &Command::Unsequenced { session, op },
        );
    }

    fn cancelled(&mut self, now: Instant, call: CallId, result: Result<Applied, GatewayError>) {
        match result.and_then(|a| response_of(&a)) {
            // The grant won the race.
            Ok(Ok(Reply::Granted { token })) => self.granted(now, call, token),
            Ok(Ok(_)) => {
                let Some(a) = self.acq(call) else { return };
                let e = GatewayError::TimedOut {
                    lock: a.lock.clone(),
                    wait_ms: a.wait_ms,
                };
                self.fail(now, call, e);
            }
            Ok(Err(e)) => self.fail(now, call, e.into()),
            Err(e) => self.fail(now, call, e),
        }
    }

    fn renewed(
        &mut self,
        now: Instant,
        call: CallId,
        sent: Instant,
        result: Result<Applied, GatewayError>,
    ) {
        let outcome = result.and_then(|a| response_of(&a));
        let Some(a) = self.acq(call) else { return };
        let Some(mut owned) = a.owned else { return };
        let ttl = ms(owned.ttl_ms);
        let next = match outcome {
            Ok(Ok(Reply::Renewed)) => {
                owned.renewed_at = sent;
                a.owned = Some(owned);
                sent + ttl / 3
            }
            // Expired under us (renewals were delayed): the wait is over.
            Ok(Err(e @ LockError::SessionNotFound(_))) => return self.fail(now, call, e.into()),
            // Unavailable for a moment: try again soon.
            _ => now + ttl / 12,
        };
        a.renew_at = Some(next);
        self.set_timer(call, Timer::Renew, None, Some(next));
    }

    fn looked_up(&mut self, now: Instant, call: CallId, result: Result<Applied, GatewayError>) {
        let Some(a) = self.acq(call) else { return };
        let Phase::LookingUp { acquire } = a.phase else {
            return;
        };
        let lock = a.lock.clone();
        match result.and_then(|a| query_answer_of(&a)) {
            // After its acquire queued, only its grant can make the session
            // hold the lock.
            Ok(QueryAnswer::Session(Some(info))) => {
                match info.held.iter().find(|(l, _)| *l == lock) {
                    Some(&(_, token)) => self.granted(now, call, token),
                    None if a.gone => self.abandon(call, false),
                    // Past its deadline it cancels, however often events
                    // were missed meanwhile.
                    None if a.deadline.is_some_and(|d| now >= d) => self.cancel(call),
                    None if std::mem::take(&mut a.missed) => self.lookup(call, acquire),
                    None => self.wait_or_cancel(now, call, acquire),
                }
            }
            Ok(QueryAnswer::Session(None)) => {
                let e = LockError::SessionNotFound(a.session.unwrap_or(0));
                self.fail(now, call, e.into());
            }
            Ok(other) => {
                let e = GatewayError::Undecodable(format!("unexpected answer {other:?}"));
                self.fail(now, call, e);
            }
            Err(e) => self.fail(now, call, e),
        }
    }

    pub(super) fn acquire_granted(&mut self, now: Instant, call: CallId, g: &Grant) {
        let by_name = self.config.match_grants_by_name();
        let Some(a) = self.acq(call) else { return };
        match a.phase {
            Phase::Opening => {}
            Phase::Proposing if a.early.len() < EARLY_GRANTS_MAX => {
                a.early.push((g.acquire, g.token));
            }
            Phase::Proposing => a.missed = true,
            Phase::Waiting { acquire } | Phase::LookingUp { acquire } => {
                if g.acquire == acquire || by_name {
                    self.granted(now, call, g.token);
                }
            }
            // Its cancel will say so too; this is sooner.
            Phase::Cancelling => {}
        }
    }

    pub(super) fn acquire_missed(&mut self, call: CallId) {
        let Some(a) = self.acq(call) else { return };
        match a.phase {
            Phase::Waiting { acquire } => self.lookup(call, acquire),
            Phase::Proposing | Phase::LookingUp { .. } => a.missed = true,
            Phase::Opening | Phase::Cancelling => {}
        }
    }

    pub(super) fn acquire_timer(&mut self, now: Instant, call: CallId, timer: Timer) {
        let Some(a) = self.acq(call) else { return };
        match timer {
            // Other phases look at the deadline when their op returns.
            Timer::Deadline => {
                if let Phase::Waiting { .. } = a.phase {
                    self.cancel(call);
                }
            }
            Timer::Renew => {
                a.renew_at = None;
                let Some(session) = a.session else { return };
                let sent = now;
                let keepalive = Command::Unsequenced {
                    session,
                    op: Op::KeepAlive,
                };
                self.propose(Some(call), Purpose::KeepAlive { sent }, &keepalive);
            }
        }
    }

    pub(super) fn acquire_gone(&mut self, call: CallId) {
        let Some(a) = self.acq(call) else { return };
        a.gone = true;
        match a.phase {
            // Nothing of its own in flight: undo now.
            Phase::Waiting { .. } | Phase::LookingUp { .. } => self.abandon(call, false),
            // Undone when the open, acquire or cancel returns.
            Phase::Opening | Phase::Proposing | Phase::Cancelling => {}
        }
    }

    /// The acquire holds `token`: answer, unless its client went away.
    fn granted(&mut self, now: Instant, call: CallId, token: Token) {
        let drift_ppm = self.config.drift_ppm;
        let Some(a) = self.acq(call) else { return };
        if a.gone {
            // A one-lock session is closed, which releases the grant nobody
            // was told of. A grant in the caller's own session stays (it
            // cannot be told from an older one; GET /sessions/{id} shows it).
            return self.abandon(call, true);
        }
        let Some(session) = a.session else { return };
        let acquired = super::Acquired {
            lock: a.lock.clone(),
            token,
            session,
            mode: a.mode,
            ttl_ms: a.owned.map(|o| o.ttl_ms),
            lease_ms: a.owned.map(|o| lease_left_ms(drift_ppm, o, now)),
        };
        let waited = a.wait_ms > 0;
        self.finish(call);
        if waited {
            self.count_wait("granted");
        }
        self.answer(call, Ok(Answer::Acquired(acquired)));
    }

    /// The call fails with `e`; a one-lock session that served nothing is
    /// closed now (not left to expire), and a wait whose outcome is unknown
    /// is cancelled.
    fn fail(&mut self, _now: Instant, call: CallId, e: GatewayError) {
        let Some(a) = self.acq(call) else { return };
        if a.gone {
            return self.abandon(call, false);
        }
        let session_gone = matches!(e, GatewayError::Lock(LockError::SessionNotFound(_)));
        let close = a.owned.is_some() && !session_gone;
        let cancel = a.wait_ms > 0 && e.outcome_unknown();
        let (session, lock, waited) = (a.session, a.lock.clone(), a.wait_ms > 0);
        let caller = self.caller(Some(call), super::Purpose::Pass);
        self.finish(call);
        if let Some(session) = session {
            self.undo(session, &lock, close, cancel, caller);
        }
        if waited {
            let outcome = match e {
                GatewayError::TimedOut { .. } => "timed_out",
                _ => "error",
            };
            self.count_wait(outcome);
        }
        self.answer(call, Err(e));
    }

    /// The client went away: leave nothing queued and no one-lock session
    /// open; nobody is answered. `granted`: the acquire holds the lock.
    fn abandon(&mut self, call: CallId, granted: bool) {
        let Some(a) = self.acq(call) else { return };
        let (session, lock) = (a.session, a.lock.clone());
        let close = a.owned.is_some();
        let cancel = a.wait_ms > 0 && !granted && !matches!(a.phase, Phase::Opening);
        let waited = a.wait_ms > 0;
        let caller = self.caller(Some(call), super::Purpose::Pass);
        self.finish(call);
        if let Some(session) = session {
            self.undo(session, &lock, close, cancel, caller);
        }
        if waited {
            self.count_wait("abandoned");
        }
    }

    fn undo(
        &mut self,
        session: SessionId,
        lock: &str,
        close: bool,
        cancel: bool,
        caller: Option<CredentialId>,
    ) {
        if close {
            return self.propose_close(session, 0, caller);
        }
        if cancel {
            let purpose = Purpose::Undo {
                close: None,
                attempt: 0,
                caller,
            };
            let op = Op::Cancel {
                lock: lock.to_string(),
            };
            self.propose(None, purpose, &Command::Unsequenced { session, op });
        }
    }

    fn count_wait(&mut self, outcome: &'static str) {
        self.effects.push_back(super::Effect::Count {
            operation: "wait",
            outcome,
        });
    }
}

fn unexpected(reply: Reply) -> GatewayError {
    GatewayError::Undecodable(format!("unexpected reply {reply:?}"))
}

/// The part of a one-lock session's lease certain to remain at `now`, in ms:
/// `TTL * (1 - ρ)` from the renewal's send.
fn lease_left_ms(drift_ppm: u32, owned: Owned, now: Instant) -> u64 {
    let ttl = ms(owned.ttl_ms);
    let trusted = ttl.saturating_sub(ttl * drift_ppm / 1_000_000);
    let left = trusted.saturating_sub(now.saturating_since(owned.renewed_at));
    u64::try_from(left.as_millis()).unwrap_or(u64::MAX)
}
