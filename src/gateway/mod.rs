//! The request layer, sans IO: what a node decides about the requests its
//! clients send, as a deterministic actor that the actix-web handlers drive
//! in production (`http::gateway_task`) and the simulator drives with its
//! own clients (`sim/http_client.rs`, and the library's and session
//! clients' native calls). It never reads a clock or a socket: time comes
//! in with each input, and what it wants done comes out as `Effect`s.
//!
//! Inputs (`handle_*`): a client's call, the outcome of a proposal or read
//! it asked for, a lock-machine event seen on this node, a client that went
//! away, the passing of time. Outputs (`poll_*`): effects in order, and the
//! next instant it wants to be woken at.
//!
//! What it decides:
//! - a session-less acquire opens a one-lock session, keeps it alive while
//!   it waits (every TTL/3), reports how much of its lease is left, and
//!   closes it if the acquire fails or its client goes away;
//! - a waiting acquire is answered by the grant of *its own* acquire, found
//!   by the log index the acquire was queued at (a lagging or restarted
//!   node replays older grants of the same session and lock), or by a
//!   linearizable look at the session when events were missed;
//! - at its deadline a wait is cancelled, and the cancel says whether the
//!   grant won the race;
//! - the native protocol's long poll (`Request::Wait`) is answered by the
//!   grant carrying its sequence number, "not yet" at its deadline;
//! - proposals and reads pass through, except commands only a leader's own
//!   clock may decide (docs/SAFETY.md rule 1), which are refused.

mod acquire;
#[cfg(test)]
mod tests;
mod wait;

use crate::actor::Instant;
use crate::lock::auth::CredentialId;
use crate::lock::{
    encode, outcome_label, Command, Event, LockError, Query, QueryAnswer, Reply, Response,
    SessionId, KEEPALIVES_PER_ENTRY_MAX,
};
use crate::raft::{Applied, RequestError};
use crate::session::{NodeReply, WaitFor};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use thiserror::Error;

pub use acquire::{AcquireArgs, Acquired, SessionChoice};

/// A client's call, numbered by the driver (unique per gateway).
pub type CallId = u64;
/// A proposal or read the gateway asked its driver for.
pub type OpId = u64;

/// Calls in progress at once (waits included); more are refused `TooMany`.
pub const CALLS_MAX: usize = 65_536;
/// Calls in progress at once for one credential, so that one cannot fill
/// `CALLS_MAX` (with long waits, say) and starve the others.
pub const CALLS_PER_CREDENTIAL_MAX: usize = CALLS_MAX / 16;
/// Longest an acquire may wait in the queue.
pub const WAIT_MS_MAX: u64 = 300_000;
/// Longest a node holds a native wait before answering "not yet".
pub const NATIVE_WAIT_MS_MAX: u64 = 30_000;
/// TTL of a one-lock session when the caller names none.
pub const TTL_MS_DEFAULT: u64 = 10_000;
/// Grants of its session and lock an acquire keeps while it does not yet
/// know its own log index; past this it looks the session up instead.
pub const EARLY_GRANTS_MAX: usize = 16;
/// Attempts at closing a one-lock session its call left behind, while the
/// cluster answers that it cannot say (no leader, busy, outcome unknown).
pub const UNDO_ATTEMPTS_MAX: u32 = 8;
/// The first retry's delay; each later one doubles, up to
/// `UNDO_RETRY_MS_MAX`.
pub const UNDO_RETRY_MS_MIN: u64 = 100;
pub const UNDO_RETRY_MS_MAX: u64 = 5_000;
/// Proposals and reads in flight at which new calls are refused: a call has
/// at most two at once (its own and a renewal) and leaves at most one undo.
/// The driver reports every op it is given, so they drain.
pub const OPS_MAX: usize = 3 * CALLS_MAX;

/// What a client asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// A try-lock or a wait in the lock's queue (`POST /API/v1/locks/..`).
    Acquire(AcquireArgs),
    /// The native protocol's long poll for a queued acquire's grant.
    Wait(WaitFor),
    /// A postcard `Command`, proposed as is: a client's own session
    /// commands only (`Command::is_client_command`).
    Propose(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A postcard credential command (create, revoke) that the HTTP API
    /// built for an admin's call; the lock machine checks the admin.
    Manage(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A postcard `Query`, read through ReadIndex.
    Read(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// What a call is answered with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    Acquired(Acquired),
    /// A native wait: granted, `None` for "not yet, ask again", or the
    /// session is gone.
    Waited(Option<Result<Reply, LockError>>),
    /// A proposal's or read's output, as the state machine gave it.
    Output(Applied),
}

/// Why a call failed (the HTTP layer turns each into a status).
#[derive(Clone, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum GatewayError {
    #[error("{0}")]
    BadRequest(String),
    /// Never allowed from a client (leader-only commands).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    TooMany(String),
    #[error("lock {lock} not granted within {wait_ms} ms")]
    TimedOut { lock: String, wait_ms: u64 },
    /// The lock machine's answer.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// Raft's refusal, or an outcome it could not learn.
    #[error(transparent)]
    Raft(#[from] RequestError),
    #[error("the node has stopped")]
    Stopped,
    #[error("{0}")]
    Undecodable(String),
}

impl GatewayError {
    /// Whether the call's effect is unknown: it may or may not have been
    /// applied (so a wait may still be queued).
    fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            GatewayError::Raft(
                RequestError::LeadershipLost
                    | RequestError::AppliedBySnapshot
                    | RequestError::Busy
                    | RequestError::NotLeader { .. }
            ) | GatewayError::Stopped
                | GatewayError::Undecodable(_)
        )
    }
}

/// What the gateway wants done, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Propose `command` (a postcard `Command`); report with `handle_done`.
    Propose { op: OpId, command: Vec<u8> },
    /// Read `query` (a postcard `Query`); report with `handle_done`.
    Read { op: OpId, query: Vec<u8> },
    /// The call's one answer.
    Answer {
        call: CallId,
        result: Result<Answer, GatewayError>,
    },
    /// Count an outcome (`raftlock_operations_total{op, outcome}`).
    Count {
        operation: &'static str,
        outcome: &'static str,
    },
}

/// Deliberate bugs (negative controls for the simulator; sim feature only).
#[derive(Clone, Copy, Debug, Default)]
pub struct GatewayBugs {
    /// Take any grant of the session and lock as the answer to a wait (as
    /// before issue 11): a replayed older grant hands out an old token.
    pub match_grants_by_name: bool,
}

#[derive(Clone, Debug, Default)]
pub struct GatewayConfig {
    /// The cluster's clock-drift bound ρ in parts per million: a one-lock
    /// session's lease is trusted for `TTL * (1 - ρ)` from its renewal.
    pub drift_ppm: u32,
    #[cfg(feature = "sim")]
    pub bugs: GatewayBugs,
}

impl GatewayConfig {
    // The update fills `bugs` in sim builds.
    #[allow(clippy::needless_update)]
    pub fn new(drift_ppm: u32) -> Self {
        GatewayConfig {
            drift_ppm,
            ..GatewayConfig::default()
        }
    }

    fn match_grants_by_name(&self) -> bool {
        #[cfg(feature = "sim")]
        return self.bugs.match_grants_by_name;
        #[cfg(not(feature = "sim"))]
        false
    }
}

/// A call in progress.
enum Call {
    Acquire(acquire::AcquireCall),
    Wait(wait::WaitCall),
    /// A proposal or read passed through; answered when it is done.
    Pass,
}

/// What an op's outcome means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    Pass,
    Open,
    Acquire,
    Cancel,
    KeepAlive {
        sent: Instant,
    },
    Lookup,
    /// A `Command::KeepAlives` entry; its calls are in `batches`.
    KeepAlives,
    /// Undoing what an abandoned or failed call left behind: closing the
    /// one-lock session `close` (retried while the cluster cannot say,
    /// `attempt` counting), or cancelling a wait in the caller's own
    /// session (`close` is None: never retried, since by then the session
    /// may wait for the lock again on its owner's behalf).
    Undo {
        close: Option<SessionId>,
        attempt: u32,
        caller: Option<CredentialId>,
    },
}

#[derive(Clone, Copy, Debug)]
struct Op {
    call: Option<CallId>,
    purpose: Purpose,
    /// A proposal's command (`Command::label`), counted when it is done.
    label: Option<&'static str>,
}

/// A timer's kind (a call may have both).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Deadline,
    Renew,
}

#[derive(Default)]
pub struct Gateway {
    config: GatewayConfig,
    calls: BTreeMap<CallId, Call>,
    ops: BTreeMap<OpId, Op>,
    /// (session, lock) -> the calls that wait for its grant.
    waiting: BTreeMap<(SessionId, String), BTreeSet<CallId>>,
    /// Registrations in `waiting`.
    waiting_len: usize,
    timers: BTreeSet<(Instant, CallId, Timer)>,
    /// Closes of one-lock sessions to try again: (when, session) -> the
    /// attempt it will be, on whose behalf. At most `CALLS_MAX`.
    undo_retries: BTreeMap<(Instant, SessionId), (u32, Option<CredentialId>)>,
    /// The credential each call in progress was made with (none: an
    /// insecure door's anonymous call). Every proposal and read a call
    /// makes is sent on its behalf (`Command::As`, `Query::As`).
    callers: BTreeMap<CallId, CredentialId>,
    /// How many calls in `callers` each credential has.
    caller_calls: BTreeMap<CredentialId, usize>,
    effects: VecDeque<Effect>,
    next_op: OpId,
    /// Keepalives passed through since the last effect was taken: (call,
    /// encoded item), proposed together as one `Command::KeepAlives` entry
    /// (at most `KEEPALIVES_PER_ENTRY_MAX`).
    keepalives: Vec<(CallId, Vec<u8>)>,
    /// The calls each keepalive batch in flight answers, in item order.
    batches: BTreeMap<OpId, Vec<CallId>>,
}

impl Gateway {
    pub fn new(config: GatewayConfig) -> Self {
        Gateway {
            config,
            ..Gateway::default()
        }
    }

    // ---- inputs ----

    /// An anonymous client's call (an insecure door). `call` must not be
    /// in progress already.
    pub fn handle_call(&mut self, now: Instant, call: CallId, request: Request) {
        self.handle_call_as(now, call, None, request);
    }

    /// A client's call, made with `caller`'s credential (authenticated by
    /// the driver): what it proposes and reads is on that behalf, and the
    /// lock machine decides whether the credential may.
    pub fn handle_call_as(
        &mut self,
        now: Instant,
        call: CallId,
        caller: Option<CredentialId>,
        request: Request,
    ) {
        debug_assert!(!self.calls.contains_key(&call), "call {call} reused");
        if self.calls.len() >= CALLS_MAX || self.ops.len() >= OPS_MAX {
            let e = GatewayError::TooMany(format!("{CALLS_MAX} calls already in progress"));
            return self.answer(call, Err(e));
        }
        if let Some(caller) = caller {
            let in_progress = self.caller_calls.get(&caller).copied().unwrap_or(0);
            if in_progress >= CALLS_PER_CREDENTIAL_MAX {
                let e = GatewayError::TooMany(format!(
                    "this credential has {CALLS_PER_CREDENTIAL_MAX} calls in progress on this node"
                ));
                return self.answer(call, Err(e));
            }
            self.callers.insert(call, caller);
            *self.caller_calls.entry(caller).or_default() += 1;
        }
        match request {
            Request::Acquire(args) => self.start_acquire(now, call, args),
            Request::Wait(w) => self.start_wait(now, call, w),
            Request::Propose(command) => self.start_propose(call, command),
            Request::Manage(command) => self.start_manage(call, command),
            Request::Read(query) => self.start_read(call, query),
        }
        self.check_invariants();
    }

    /// The outcome of an op this gateway asked for.
    pub fn handle_done(&mut self, now: Instant, op: OpId, result: Result<Applied, GatewayError>) {
        let Some(Op {
            call,
            purpose,
            label,
        }) = self.ops.remove(&op)
        else {
            return;
        };
        if let Some(label) = label {
            self.count_proposal(label, &result);
        }
        match purpose {
            Purpose::Pass => self.pass_done(call, result),
            Purpose::KeepAlives => self.keepalives_done(op, result),
            Purpose::Undo {
                close,
                attempt,
                caller,
            } => self.undo_done(now, close, attempt, caller, &result),
            Purpose::Open
            | Purpose::Acquire
            | Purpose::Cancel
            | Purpose::KeepAlive { .. }
            | Purpose::Lookup => {
                if let Some(call) = call {
                    match self.calls.get(&call) {
                        Some(Call::Acquire(_)) => self.acquire_done(now, call, purpose, result),
                        Some(Call::Wait(_)) => self.wait_done(call, result),
                        _ => {}
                    }
                }
            }
        }
        self.check_invariants();
    }

    /// An event of this node's lock machine, in apply order.
    pub fn handle_event(&mut self, now: Instant, event: &Event) {
        match event {
            Event::Granted(g) => {
                let key = (g.session, g.lock.clone());
                let Some(calls) = self.waiting.get(&key) else {
                    return;
                };
                for call in calls.clone() {
                    match self.calls.get(&call) {
                        Some(Call::Acquire(_)) => self.acquire_granted(now, call, g),
                        Some(Call::Wait(_)) => self.wait_granted(call, g),
                        _ => {}
                    }
                }
            }
            // Events were dropped: a grant may be among them.
            Event::Missed { .. } => self.handle_missed(),
            _ => {}
        }
        self.check_invariants();
    }

    /// Events were missed (the machine's bound, or a driver that fell
    /// behind): every wait looks its session up.
    pub fn handle_missed(&mut self) {
        let waiting: Vec<CallId> = self.waiting.values().flatten().copied().collect();
        for call in waiting {
            match self.calls.get(&call) {
                Some(Call::Acquire(_)) => self.acquire_missed(call),
                Some(Call::Wait(_)) => self.wait_missed(call),
                _ => {}
            }
        }
        self.check_invariants();
    }

    /// The call's client went away: nobody reads its answer, and what it
    /// started is undone.
    pub fn handle_gone(&mut self, call: CallId) {
        match self.calls.get(&call) {
            Some(Call::Acquire(_)) => self.acquire_gone(call),
            Some(Call::Wait(_)) => self.finish(call),
            // Its op stays in flight; its outcome is counted, not answered.
            Some(Call::Pass) => self.finish(call),
            None => {}
        }
        self.check_invariants();
    }

    /// Time has passed: deadlines and renewals that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((&(at, session), &(attempt, caller))) = self.undo_retries.first_key_value() {
            if at > now {
                break;
            }
            self.undo_retries.remove(&(at, session));
            self.propose_close(session, attempt, caller);
        }
        while let Some(&(at, call, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, call, timer));
            match self.calls.get(&call) {
                Some(Call::Acquire(_)) => self.acquire_timer(now, call, timer),
                Some(Call::Wait(_)) => self.wait_deadline(call),
                _ => {}
            }
        }
        self.check_invariants();
    }

    // ---- outputs ----

    pub fn poll_effect(&mut self) -> Option<Effect> {
        if !self.keepalives.is_empty() {
            self.propose_keepalives();
        }
        self.effects.pop_front()
    }

    /// When to call `handle_timeout` next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.timers.first().map(|&(at, _, _)| at);
        let retry = self.undo_retries.keys().next().map(|&(at, _)| at);
        timer.into_iter().chain(retry).min()
    }

    /// Calls in progress.
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// Calls waiting for a grant.
    pub fn waiting(&self) -> usize {
        self.waiting_len
    }

    // ---- passing through ----

    fn start_propose(&mut self, call: CallId, command: Vec<u8>) {
        let decoded = match postcard::from_bytes::<Command>(&command) {
            Ok(c) => c,
            Err(e) => return self.answer(call, Err(bad(format!("not a command: {e}")))),
        };
        if decoded.is_leader_only() {
            let e = GatewayError::Forbidden(format!(
                "{} is decided by the leader's own clock; clients cannot propose it",
                decoded.label()
            ));
            return self.answer(call, Err(e));
        }
        if !decoded.is_client_command() {
            let e = GatewayError::Forbidden(format!(
                "{} is the node's to send, after it authenticated the caller",
                decoded.label()
            ));
            return self.answer(call, Err(e));
        }
        self.calls.insert(call, Call::Pass);
        if let Command::Unsequenced {
            op: crate::lock::Op::KeepAlive,
            ..
        } = decoded
        {
            return self.batch_keepalive(call, command);
        }
        // Sent as received when no credential wraps it (no re-encoding).
        match self.callers.get(&call) {
            None => self.propose_raw(Some(call), Purpose::Pass, decoded.label(), command),
            Some(_) => self.propose(Some(call), Purpose::Pass, &decoded),
        }
    }

    fn start_manage(&mut self, call: CallId, command: Vec<u8>) {
        match postcard::from_bytes::<Command>(&command) {
            Ok(c @ (Command::CreateCredential { .. } | Command::RevokeCredential { .. })) => {
                self.calls.insert(call, Call::Pass);
                self.propose(Some(call), Purpose::Pass, &c);
            }
            Ok(c) => {
                let e =
                    GatewayError::Forbidden(format!("{} is not a credential command", c.label()));
                self.answer(call, Err(e));
            }
            Err(e) => self.answer(call, Err(bad(format!("not a command: {e}")))),
        }
    }

    fn start_read(&mut self, call: CallId, query: Vec<u8>) {
        let decoded = match postcard::from_bytes::<Query>(&query) {
            Ok(q) => q,
            Err(e) => return self.answer(call, Err(bad(format!("not a query: {e}")))),
        };
        if matches!(decoded, Query::As { .. } | Query::Credential { .. }) {
            let e = GatewayError::Forbidden(
                "this query is the node's to send, after it authenticated the caller".into(),
            );
            return self.answer(call, Err(e));
        }
        self.calls.insert(call, Call::Pass);
        self.read_for(call, Purpose::Pass, decoded);
    }

    /// Holds a keepalive for the next batch (taken with the next effect).
    fn batch_keepalive(&mut self, call: CallId, command: Vec<u8>) {
        let item = match self.callers.get(&call) {
            Some(&credential) => encode(&Command::As {
                credential,
                command,
            }),
            None => command,
        };
        self.keepalives.push((call, item));
        if self.keepalives.len() >= KEEPALIVES_PER_ENTRY_MAX {
            self.propose_keepalives();
        }
    }

    /// Proposes the keepalives held so far as one entry.
    fn propose_keepalives(&mut self) {
        let (calls, items): (Vec<CallId>, Vec<Vec<u8>>) =
            std::mem::take(&mut self.keepalives).into_iter().unzip();
        let items = items.into_iter().map(serde_bytes::ByteBuf::from).collect();
        let command = encode(&Command::KeepAlives(items));
        // Counted per keepalive when done, not per batch.
        let op = self.new_op(None, Purpose::KeepAlives, None);
        self.batches.insert(op, calls);
        self.effects.push_back(Effect::Propose { op, command });
    }

    /// A keepalive batch's outcome, told to each of its calls as if its
    /// keepalive had been its own entry.
    fn keepalives_done(&mut self, op: OpId, result: Result<Applied, GatewayError>) {
        let calls = self.batches.remove(&op).unwrap_or_default();
        let each: Vec<Result<Applied, GatewayError>> = match result {
            Ok(applied) => match postcard::from_bytes::<Response>(&applied.output) {
                Ok(Ok(Reply::KeepAlives(responses))) if responses.len() == calls.len() => responses
                    .iter()
                    .map(|r| {
                        Ok(Applied {
                            index: applied.index,
                            output: encode(r),
                        })
                    })
                    .collect(),
                // Refused as a whole: each keepalive was refused so.
                _ => vec![Ok(applied); calls.len()],
            },
            Err(e) => vec![Err(e); calls.len()],
        };
        for (call, result) in calls.into_iter().zip(each) {
            self.count_proposal("keepalive", &result);
            self.pass_done(Some(call), result);
        }
    }

    fn pass_done(&mut self, call: Option<CallId>, result: Result<Applied, GatewayError>) {
        let Some(call) = call else { return };
        if self.calls.remove(&call).is_some() {
            self.answer(call, result.map(Answer::Output));
        }
    }

    // ---- shared helpers ----

    fn new_op(
        &mut self,
        call: Option<CallId>,
        purpose: Purpose,
        label: Option<&'static str>,
    ) -> OpId {
        self.next_op += 1;
        let op = Op {
            call,
            purpose,
            label,
        };
        self.ops.insert(self.next_op, op);
        self.next_op
    }

    /// Proposes an encoded command as is: only for calls without a
    /// credential (`propose` wraps the others).
    fn propose_raw(
        &mut self,
        call: Option<CallId>,
        purpose: Purpose,
        label: &'static str,
        command: Vec<u8>,
    ) {
        debug_assert!(self.caller(call, purpose).is_none());
        let op = self.new_op(call, purpose, Some(label));
        self.effects.push_back(Effect::Propose { op, command });
    }

    /// Proposes `command` on behalf of the call's credential, if any.
    fn propose(&mut self, call: Option<CallId>, purpose: Purpose, command: &Command) {
        let command = match self.caller(call, purpose) {
            Some(credential) => encode(&Command::As {
                credential,
                command: encode(command),
            }),
            None => encode(command),
        };
        let label = postcard::from_bytes::<Command>(&command).map_or("undecodable", |c| c.label());
        let op = self.new_op(call, purpose, Some(label));
        self.effects.push_back(Effect::Propose { op, command });
    }

    /// On whose behalf an op of `call` (or an undo, which outlives it)
    /// is sent.
    fn caller(&self, call: Option<CallId>, purpose: Purpose) -> Option<CredentialId> {
        match purpose {
            Purpose::Undo { caller, .. } => caller,
            _ => call.and_then(|c| self.callers.get(&c).copied()),
        }
    }

    fn read(&mut self, call: CallId, query: &Query) {
        self.read_for(call, Purpose::Lookup, query.clone());
    }

    fn read_for(&mut self, call: CallId, purpose: Purpose, query: Query) {
        let query = match self.caller(Some(call), purpose) {
            Some(credential) => Query::As {
                credential,
                query: encode(&query),
            },
            None => query,
        };
        let op = self.new_op(Some(call), purpose, None);
        self.effects.push_back(Effect::Read {
            op,
            query: encode(&query),
        });
    }

    fn answer(&mut self, call: CallId, result: Result<Answer, GatewayError>) {
        // A call refused before it started was never in `calls`.
        if !self.calls.contains_key(&call) {
            self.forget_caller(call);
        }
        self.effects.push_back(Effect::Answer { call, result });
    }

    fn forget_caller(&mut self, call: CallId) {
        if let Some(caller) = self.callers.remove(&call) {
            if let Some(n) = self.caller_calls.get_mut(&caller) {
                *n -= 1;
                if *n == 0 {
                    self.caller_calls.remove(&caller);
                }
            }
        }
    }

    fn count_proposal(&mut self, operation: &'static str, result: &Result<Applied, GatewayError>) {
        let outcome = match result {
            Ok(applied) => match postcard::from_bytes::<Response>(&applied.output) {
                Ok(response) => outcome_label(&response),
                Err(_) => "undecodable",
            },
            Err(_) => "unavailable",
        };
        self.effects.push_back(Effect::Count { operation, outcome });
    }

    /// Closes a one-lock session nobody uses any more.
    fn propose_close(&mut self, session: SessionId, attempt: u32, caller: Option<CredentialId>) {
        let purpose = Purpose::Undo {
            close: Some(session),
            attempt,
            caller,
        };
        let close = Command::Unsequenced {
            session,
            op: crate::lock::Op::Close,
        };
        self.propose(None, purpose, &close);
    }

    /// An undo came back. A close the cluster could not decide is tried
    /// again later (a queued wait of that session would otherwise be
    /// granted to nobody and hold the lock for the TTL and the lock-delay);
    /// the lock machine's own answer (closed, or already gone) ends it.
    fn undo_done(
        &mut self,
        now: Instant,
        close: Option<SessionId>,
        attempt: u32,
        caller: Option<CredentialId>,
        result: &Result<Applied, GatewayError>,
    ) {
        let Some(session) = close else { return };
        let decided = matches!(result, Ok(applied) if response_of(applied).is_ok());
        let next = attempt + 1;
        if decided || next >= UNDO_ATTEMPTS_MAX || self.undo_retries.len() >= CALLS_MAX {
            return;
        }
        let delay_ms = (UNDO_RETRY_MS_MIN << attempt.min(16)).min(UNDO_RETRY_MS_MAX);
        let at = now + std::time::Duration::from_millis(delay_ms);
        self.undo_retries.insert((at, session), (next, caller));
    }

    fn register(&mut self, call: CallId, session: SessionId, lock: &str) {
        let added = self
            .waiting
            .entry((session, lock.to_string()))
            .or_default()
            .insert(call);
        self.waiting_len += usize::from(added);
    }

    fn unregister(&mut self, call: CallId, session: SessionId, lock: &str) {
        let key = (session, lock.to_string());
        if let Some(set) = self.waiting.get_mut(&key) {
            let removed = set.remove(&call);
            self.waiting_len -= usize::from(removed);
            if set.is_empty() {
                self.waiting.remove(&key);
            }
        }
    }

    fn set_timer(&mut self, call: CallId, timer: Timer, old: Option<Instant>, at: Option<Instant>) {
        if let Some(old) = old {
            self.timers.remove(&(old, call, timer));
        }
        if let Some(at) = at {
            self.timers.insert((at, call, timer));
        }
    }

    /// Forgets a call: its registration, its timers; its ops in flight are
    /// left to finish unanswered.
    fn finish(&mut self, call: CallId) {
        let Some(state) = self.calls.remove(&call) else {
            return;
        };
        self.forget_caller(call);
        match state {
            Call::Acquire(a) => {
                if let Some(session) = a.session {
                    self.unregister(call, session, &a.lock);
                }
                self.set_timer(call, Timer::Deadline, a.deadline, None);
                self.set_timer(call, Timer::Renew, a.renew_at, None);
            }
            Call::Wait(w) => {
                self.unregister(call, w.session, &w.lock);
                self.set_timer(call, Timer::Deadline, Some(w.deadline), None);
            }
            Call::Pass => {}
        }
        for op in self.ops.values_mut() {
            if op.call == Some(call) {
                op.call = None;
            }
        }
    }

    /// Structural checks after every input (debug builds): every
    /// registration, timer and op names a call in progress of its kind.
    /// They walk every table, so past `CHECKED_CALLS_MAX` calls only the
    /// bounds are checked (a full walk per input would be quadratic).
    fn check_invariants(&self) {
        const CHECKED_CALLS_MAX: usize = 256;
        if !cfg!(debug_assertions) {
            return;
        }
        assert!(self.calls.len() <= CALLS_MAX);
        assert_eq!(
            self.caller_calls.values().sum::<usize>(),
            self.callers.len()
        );
        if self.calls.len() > CHECKED_CALLS_MAX {
            return;
        }
        for call in self.callers.keys() {
            assert!(self.calls.contains_key(call), "caller of ended call {call}");
        }
        let registered: usize = self.waiting.values().map(BTreeSet::len).sum();
        assert_eq!(registered, self.waiting_len);
        for ((session, lock), calls) in &self.waiting {
            assert!(!calls.is_empty());
            for call in calls {
                let ok = match self.calls.get(call) {
                    Some(Call::Acquire(a)) => a.session == Some(*session) && a.lock == *lock,
                    Some(Call::Wait(w)) => w.session == *session && w.lock == *lock,
                    _ => false,
                };
                assert!(ok, "registration of {session}/{lock} for call {call}");
            }
        }
        for (at, call, timer) in &self.timers {
            let ok = match (self.calls.get(call), timer) {
                (Some(Call::Acquire(a)), Timer::Deadline) => a.deadline == Some(*at),
                (Some(Call::Acquire(a)), Timer::Renew) => a.renew_at == Some(*at),
                (Some(Call::Wait(w)), Timer::Deadline) => w.deadline == *at,
                _ => false,
            };
            assert!(ok, "timer {timer:?} at {at:?} of call {call}");
        }
        for op in self.ops.values() {
            if let Some(call) = op.call {
                assert!(self.calls.contains_key(&call), "op of finished call {call}");
            }
        }
    }
}

fn bad(message: String) -> GatewayError {
    GatewayError::BadRequest(message)
}

/// A lock name is 1 to `name_bytes_max` bytes.
pub fn check_name(name: &str) -> Result<(), GatewayError> {
    let max = crate::lock::Limits::default().name_bytes_max;
    if name.is_empty() || name.len() > max {
        return Err(bad(format!(
            "a name is 1 to {max} bytes; this one is {}",
            name.len()
        )));
    }
    Ok(())
}

/// Decodes a proposal's output as the lock machine's response.
fn response_of(applied: &Applied) -> Result<Response, GatewayError> {
    postcard::from_bytes(&applied.output)
        .map_err(|e| GatewayError::Undecodable(format!("undecodable response: {e}")))
}

/// Decodes a read's output as a query answer.
/// A refusal of the caller's credential is the call's error.
fn query_answer_of(applied: &Applied) -> Result<QueryAnswer, GatewayError> {
    match postcard::from_bytes(&applied.output) {
        Ok(QueryAnswer::Refused(e)) => Err(GatewayError::Lock(e)),
        Ok(answer) => Ok(answer),
        Err(e) => Err(GatewayError::Undecodable(format!(
            "undecodable query answer: {e}"
        ))),
    }
}

/// What the native protocol's client (the library's session actor) is told:
/// the same mapping over HTTP (`http::native`) and in the simulator.
pub fn node_reply(result: Result<Answer, GatewayError>) -> NodeReply {
    match result {
        Ok(Answer::Output(applied)) => NodeReply::Output(applied.output),
        Ok(Answer::Waited(response)) => NodeReply::Output(encode(&QueryAnswer::Response(response))),
        Ok(Answer::Acquired(_)) => NodeReply::Refused("not a native call".into()),
        Err(GatewayError::Raft(RequestError::NotLeader { leader })) => NodeReply::NotLeader(leader),
        // The node's final word: the same wherever it is sent.
        Err(
            e @ (GatewayError::Raft(RequestError::TooLarge { .. } | RequestError::NotAllowed(_))
            | GatewayError::Forbidden(_)
            | GatewayError::BadRequest(_)
            | GatewayError::Lock(LockError::Forbidden(_) | LockError::Unauthenticated)),
        ) => NodeReply::Refused(e.to_string()),
        Err(_) => NodeReply::Unavailable,
    }
}

/// A native protocol message as a call (what `/API/v1/native/*` makes of
/// each path, and what the simulator's native clients send).
impl From<crate::session::ToNode> for Request {
    fn from(msg: crate::session::ToNode) -> Self {
        use crate::session::ToNode;
        match msg {
            ToNode::Propose(command) => Request::Propose(command),
            ToNode::Read(query) => Request::Read(query),
            ToNode::Wait(wait) => Request::Wait(wait),
        }
    }
}
