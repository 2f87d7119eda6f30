//! The native protocol's long poll: a queued acquire's client asks to be
//! told of its grant. Registered first, then the session is looked up (the
//! grant may have happened already); then held until the grant carrying
//! the acquire's sequence number, or "not yet" at the deadline.

use super::{
    check_name, query_answer_of, Answer, Call, CallId, Gateway, GatewayError, Timer,
    NATIVE_WAIT_MS_MAX,
};
use crate::actor::Instant;
use crate::lock::{Grant, LockError, Query, QueryAnswer, Reply, SessionId};
use crate::raft::Applied;
use crate::session::WaitFor;
use std::time::Duration;

pub(super) struct WaitCall {
    pub(super) session: SessionId,
    pub(super) lock: String,
    seq: u64,
    pub(super) deadline: Instant,
    /// A look at the session is in flight.
    looking: bool,
    /// Events were missed while it was: look again.
    missed: bool,
    /// The caller may use the session: anonymous, or its credential's
    /// first look at the session came back. Until then a grant is kept in
    /// `early`, not told (it would tell a token to a credential the lock
    /// machine may refuse).
    authorized: bool,
    early: Option<crate::lock::Token>,
}

impl Gateway {
    fn waiter(&mut self, call: CallId) -> Option<&mut WaitCall> {
        match self.calls.get_mut(&call) {
            Some(Call::Wait(w)) => Some(w),
            _ => None,
        }
    }

    pub(super) fn start_wait(&mut self, now: Instant, call: CallId, w: WaitFor) {
        if let Err(e) = check_name(&w.lock) {
            return self.answer(call, Err(e));
        }
        let timeout_ms = w.timeout_ms.min(NATIVE_WAIT_MS_MAX);
        let deadline = now + Duration::from_millis(timeout_ms);
        let state = WaitCall {
            session: w.session,
            lock: w.lock.clone(),
            seq: w.seq,
            deadline,
            looking: true,
            missed: false,
            authorized: !self.callers.contains_key(&call),
            early: None,
        };
        self.calls.insert(call, Call::Wait(state));
        self.register(call, w.session, &w.lock);
        self.set_timer(call, Timer::Deadline, None, Some(deadline));
        self.read(call, &Query::Session { session: w.session });
    }

    pub(super) fn wait_done(&mut self, call: CallId, result: Result<Applied, GatewayError>) {
        let Some(w) = self.waiter(call) else { return };
        w.looking = false;
        let (session, lock) = (w.session, w.lock.clone());
        let answer = match result.and_then(|a| query_answer_of(&a)) {
            // A grant seen before the caller was known to own the session.
            Ok(QueryAnswer::Session(Some(_))) if !w.authorized && w.early.is_some() => {
                let token = w.early.take().unwrap_or_default();
                Ok(Some(Ok(Reply::Granted { token })))
            }
            // The acquire queued before this wait was sent: if the session
            // holds the lock now, it is this grant.
            Ok(QueryAnswer::Session(Some(info))) => {
                w.authorized = true;
                match info.held.iter().find(|(l, _)| *l == lock) {
                    Some(&(_, token)) => Ok(Some(Ok(Reply::Granted { token }))),
                    None if std::mem::take(&mut w.missed) => {
                        w.looking = true;
                        return self.read(call, &Query::Session { session });
                    }
                    None => return,
                }
            }
            Ok(QueryAnswer::Session(None)) => Ok(Some(Err(LockError::SessionNotFound(session)))),
            Ok(other) => Err(GatewayError::Undecodable(format!(
                "unexpected answer {other:?}"
            ))),
            Err(e) => Err(e),
        };
        self.finish(call);
        self.answer(call, answer.map(Answer::Waited));
    }

    pub(super) fn wait_granted(&mut self, call: CallId, g: &Grant) {
        let by_name = self.config.match_grants_by_name();
        let Some(w) = self.waiter(call) else { return };
        if g.seq != w.seq && !by_name {
            // An older grant of the same session and lock, replayed.
            return;
        }
        if !w.authorized {
            w.early = Some(g.token);
            return;
        }
        self.finish(call);
        let granted = Ok(Reply::Granted { token: g.token });
        self.answer(call, Ok(Answer::Waited(Some(granted))));
    }

    pub(super) fn wait_missed(&mut self, call: CallId) {
        let Some(w) = self.waiter(call) else { return };
        if w.looking {
            w.missed = true;
            return;
        }
        w.looking = true;
        let session = w.session;
        self.read(call, &Query::Session { session });
    }

    pub(super) fn wait_deadline(&mut self, call: CallId) {
        self.finish(call);
        self.answer(call, Ok(Answer::Waited(None)));
    }
}
