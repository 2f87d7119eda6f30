//! A simulated user of the HTTP API: what a script with curl does, sent
//! through the node's request layer (`raftlock::gateway`, the code behind
//! production's handlers) to any node, leader or lagging follower. It
//! acquires with and without its own session (a one-lock session the node
//! opens and keeps alive while it waits), re-acquires what it holds, waits,
//! gives up at its own timeout, disconnects mid-wait, keeps its session
//! alive while it holds, and lets go. It tells the client-side checker what
//! it believes, and how long it trusts each lease: its own session's from
//! each renewal's send, a one-lock session's from the answer's `lease_ms`
//! counted from its own send of the request (docs/API.md), less its own
//! clock's drift margin.

use crate::checker::Believed;
use crate::cluster::SimFrame;
use crate::library_client::lin_mode;
use crate::shared::{holders_seen, lock, Shared, TightLimits, LIN_TRY_LOCKS, LIN_WAIT_LOCK};
use madsim::net::Endpoint;
use madsim::time::{sleep, timeout};
use raftlock::actor::{Instant, NodeId};
use raftlock::gateway::{AcquireArgs, Answer, GatewayError, Request, SessionChoice};
use raftlock::linearizability as lin;
use raftlock::lock::{
    encode, Command, LockError, Mode, Op, Query, QueryAnswer, Reply, Response, SessionId, Token,
};
use raftlock::net::encode_frame;
use rand::seq::SliceRandom;
use rand::Rng;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const TAG: u64 = 1;
/// HTTP clients' clock ids start here (session clients' at 100, library
/// users' at 200).
pub const HTTP_ID_BASE: u64 = 300;
/// How long past its `wait_ms` a client waits for an answer before it
/// gives up and closes the connection.
pub const HTTP_ANSWER_SLACK_MS: u64 = 1_500;
/// The same in a tight-limits run: a follower that falls a snapshot behind
/// a leader under full load answers its clients only once it has installed
/// the next one (its forwards' outputs come from its own applies), which
/// there takes up to a second or two.
pub const TIGHT_ANSWER_SLACK_MS: u64 = 5_000;
/// Percent of acquires whose client disconnects while it waits.
const DISCONNECT_PERCENT: u32 = 8;
/// Percent of calls for which a client changes the node it sends to.
const NODE_SWITCH_PERCENT: u32 = 10;
/// Percent of rounds in which a client changes the lock it takes.
const LOCK_SWITCH_PERCENT: u32 = 30;
/// Locks HTTP clients share with the library users (so two front ends
/// contend for one lock), as (name, mode).
const HTTP_LOCKS: &[(&str, Mode)] = &[
    ("lib-x", Mode::Exclusive),
    ("lib-rw", Mode::Shared),
    ("lib-rw", Mode::Exclusive),
    ("lib-sem", Mode::Semaphore(2)),
    ("http-x", Mode::Exclusive),
    // Checked for linearizability, always in the client's own session:
    // try-locks beside session clients and library users, and waits.
    ("lin-0", Mode::Exclusive),
    ("lin-1", Mode::Shared),
    ("lin-0", Mode::Semaphore(2)),
    (LIN_WAIT_LOCK, Mode::Exclusive),
    (LIN_WAIT_LOCK, Mode::Shared),
];
/// The lock of a tight-limits run that some hold for seconds while
/// others wait for it in one-lock sessions of a short TTL.
const LONG_LOCK: &str = "long-x";
/// How long (ms) a tight-limits run's long holds last.
const LONG_HOLD_MS: std::ops::Range<u64> = 2_000..8_000;

/// How long a re-acquire of the lock only waits take may wait (a holder's
/// is answered at once; one whose session lost the lock queues).
const LIN_REACQUIRE_WAIT_MS: u64 = 200;

pub fn http_addr(k: u64) -> SocketAddr {
    SocketAddr::from(([10, 0, 4, k as u8], 9000))
}

/// The session a client opened itself and reuses across acquires.
#[derive(Clone, Copy, Debug)]
struct OwnSession {
    id: SessionId,
    ttl_ms: u64,
}

/// A grant this client holds.
struct Held<'a> {
    name: &'a str,
    mode: Mode,
    session: SessionId,
    token: Token,
    one_lock: bool,
    /// Its id for the checker (the acquire's call number).
    belief: u64,
    /// On a lock checked for linearizability.
    lin: bool,
}

struct HttpUser {
    id: u64,
    /// Its own credential's `Authorization` value, sent with every call.
    credential: String,
    shared: Arc<Shared>,
    ep: Endpoint,
    nodes: Vec<NodeId>,
    next_call: u64,
    own: Option<OwnSession>,
    /// Until when (its clock) it trusts its own session's lease.
    own_until: Option<Instant>,
    /// The node it sends to.
    home: NodeId,
    last_lock: Option<(&'static str, Mode)>,
    /// Calls recorded in the linearizability history, for their keys.
    lin_calls: u64,
    /// This round holds for seconds (a tight-limits run).
    long_hold: bool,
}

/// What became of one call, from the client's side.
enum Outcome {
    Answered(Result<Answer, GatewayError>),
    /// No answer by the client's timeout: it closed the connection.
    GaveUp,
    /// The client went away on purpose while it waited.
    LeftEarly,
}

pub async fn run_http_client(k: u64, shared: Arc<Shared>) {
    let ep = Endpoint::bind(http_addr(k))
        .await
        .expect("bind http client endpoint");
    let nodes: Vec<NodeId> = shared.addrs.keys().copied().collect();
    let name = format!("http{k}");
    let Some(bearer) = crate::credentials::enroll(&shared, http_addr(k).ip(), &name).await else {
        return;
    };
    let mut user = HttpUser {
        id: HTTP_ID_BASE + k,
        credential: crate::shared::authorization(&bearer),
        home: nodes[k as usize % nodes.len()],
        nodes,
        shared,
        ep,
        next_call: 0,
        own: None,
        own_until: None,
        last_lock: None,
        lin_calls: 0,
        long_hold: false,
    };
    loop {
        user.round().await;
        let pause = madsim::rand::thread_rng().gen_range(10..200);
        sleep(Duration::from_millis(pause)).await;
    }
}

impl HttpUser {
    /// How long past a call's own wait it waits for the answer.
    fn slack_ms(&self) -> u64 {
        match self.shared.tight_limits {
            true => TIGHT_ANSWER_SLACK_MS,
            false => HTTP_ANSWER_SLACK_MS,
        }
    }

    fn ttl_ms(&self) -> u64 {
        crate::lock_client::SIM_TTL_MS
    }

    fn drift_ppm(&self) -> u64 {
        u64::from(self.shared.lock_config.drift_ppm)
    }

    fn local_now(&self) -> Instant {
        lock(&self.shared.clocks)[&self.id].local(self.shared.elapsed())
    }

    /// The real instant this client's clock reads `at`.
    fn real_at(&self, at: Instant) -> Duration {
        let g = self.shared.elapsed();
        g + lock(&self.shared.clocks)[&self.id].global_until(g, at)
    }

    /// `d` less this client's drift margin: what it may trust of a span
    /// measured elsewhere.
    fn trusted(&self, d: Duration) -> Duration {
        d.saturating_sub(d * self.drift_ppm() as u32 / 1_000_000)
    }

    /// The client trusts `session`'s lease until its clock reads `until`;
    /// false (and nothing trusted) when that is already past.
    fn trust(&self, session: SessionId, until: Instant) -> bool {
        if until <= self.local_now() {
            return false;
        }
        let real = self.real_at(until);
        let mut checker = lock(&self.shared.checker);
        checker.now = self.shared.elapsed();
        checker.on_lease_trusted(self.id, session, real);
        true
    }

    /// One acquire, and if granted a hold and a let-go.
    async fn round(&mut self) {
        let mut rng = madsim::rand::thread_rng();
        self.long_hold = false;
        if self.shared.tight_limits {
            match rng.gen_range(0..4) {
                0 => return self.long_wait().await,
                1 => {
                    self.long_hold = true;
                    self.last_lock = Some((LONG_LOCK, Mode::Exclusive));
                }
                _ => {}
            }
        }
        // Often the lock it had last, in the same session (a lagging node
        // replays the older grants of both).
        if !self.long_hold && (self.last_lock.is_none() || rng.gen_ratio(LOCK_SWITCH_PERCENT, 100))
        {
            self.last_lock = HTTP_LOCKS.choose(&mut rng).copied();
        }
        let Some((name, mode)) = self.last_lock else {
            return;
        };
        let lin = is_lin(name);
        let one_lock = !lin && rng.gen_bool(0.5);
        if !one_lock && self.own.is_none() {
            self.open().await;
            if self.own.is_none() {
                return;
            }
        }
        let wait_ms = match rng.gen_range(0..10) {
            _ if lin && name != LIN_WAIT_LOCK => 0,
            _ if lin => rng.gen_range(100..self.ttl_ms() / 2),
            0..=2 => 0,
            // A one-lock session's wait may outlast its TTL: the node
            // keeps it alive. The client's own is its own to keep.
            _ if one_lock => rng.gen_range(100..3 * self.ttl_ms()),
            _ => rng.gen_range(100..self.ttl_ms() / 2),
        };
        if let Some(own) = self.own.filter(|_| !one_lock) {
            // Renewed before it waits: nothing renews it during the call.
            if !self.keepalive(own).await {
                return;
            }
        }
        let session = match self.own.filter(|_| !one_lock) {
            Some(own) => SessionChoice::Existing(own.id),
            None => SessionChoice::OneLock {
                ttl_ms: self.ttl_ms(),
                nonce: rng.gen(),
            },
        };
        let sent = self.local_now();
        let request = Request::Acquire(AcquireArgs {
            lock: name.to_string(),
            mode,
            wait_ms,
            session,
        });
        let leave_after = rng
            .gen_ratio(DISCONNECT_PERCENT, 100)
            .then(|| Duration::from_millis(rng.gen_range(0..wait_ms.max(1))));
        let limit = Duration::from_millis(wait_ms + self.slack_ms());
        let checked = match (lin, session) {
            (true, SessionChoice::Existing(id)) => Some(self.lin_acquire(name, mode, id)),
            _ => None,
        };
        let outcome = self.call(request, limit, leave_after).await;
        if let Some(checked) = checked {
            self.lin_acquired(checked, &outcome);
        }
        let acquired = match outcome {
            Outcome::Answered(Ok(Answer::Acquired(a))) => a,
            Outcome::Answered(Err(GatewayError::Lock(LockError::SessionNotFound(_)))) => {
                self.lose_own();
                return;
            }
            // Its own session may hold the lock now (a grant that raced
            // its leaving, or an acquire whose outcome is unknown, stays in
            // the session): the documented recipe is to close the session.
            Outcome::GaveUp | Outcome::LeftEarly if !one_lock => {
                self.close_own().await;
                return;
            }
            Outcome::Answered(Err(e)) if !one_lock && outcome_unknown(&e) => {
                self.close_own().await;
                return;
            }
            _ => return,
        };
        // The lease this client may count on, on its own clock: a grant
        // whose lease is already over is let go unbelieved.
        let session = acquired.session;
        let live = match acquired.lease_ms {
            Some(lease_ms) => {
                let lease = self.trusted(Duration::from_millis(lease_ms));
                self.trust(session, sent + lease)
            }
            None => self.own_until.is_some_and(|until| self.local_now() < until),
        };
        if !live {
            self.let_go(session, name, acquired.token, acquired.ttl_ms.is_some())
                .await;
            return;
        }
        let belief = self.next_call;
        {
            let mut checker = lock(&self.shared.checker);
            checker.now = self.shared.elapsed();
            let token = acquired.token;
            if let Err(m) = checker.locks.beliefs.on_new_grant(self.id, name, token) {
                checker.fail_beliefs(m);
            }
            checker.on_belief(self.id, belief, session, name, believed(mode), token);
        }
        let held = Held {
            name,
            mode,
            session,
            token: acquired.token,
            one_lock: acquired.ttl_ms.is_some(),
            belief,
            lin,
        };
        self.hold(held).await;
    }

    /// Holds a while, renewing the session, maybe re-acquiring what it
    /// holds (which must answer with the same token), then lets go.
    async fn hold(&mut self, h: Held<'_>) {
        let Held {
            name,
            mode,
            session,
            token,
            one_lock,
            belief,
            lin,
        } = h;
        let mut rng = madsim::rand::thread_rng();
        let ttl = Duration::from_millis(self.ttl_ms());
        let hold_ms = match self.long_hold {
            true => rng.gen_range(LONG_HOLD_MS),
            false => rng.gen_range(20..self.ttl_ms()),
        };
        let hold = Duration::from_millis(hold_ms);
        let s = OwnSession {
            id: session,
            ttl_ms: self.ttl_ms(),
        };
        let mut held = Duration::ZERO;
        while held < hold {
            let step = (ttl / 3).min(hold - held);
            sleep(step).await;
            held += step;
            if !self.keepalive(s).await {
                break;
            }
        }
        if lin && rng.gen_bool(0.3) {
            self.lin_query(name).await;
        }
        if !one_lock && rng.gen_bool(0.2) {
            let wait_ms = match name {
                LIN_WAIT_LOCK => LIN_REACQUIRE_WAIT_MS,
                _ => 0,
            };
            let again = Request::Acquire(AcquireArgs {
                lock: name.to_string(),
                mode,
                wait_ms,
                session: SessionChoice::Existing(session),
            });
            let limit = Duration::from_millis(wait_ms + self.slack_ms());
            let checked = lin.then(|| self.lin_acquire(name, mode, session));
            let outcome = self.call(again, limit, None).await;
            if let Some(checked) = checked {
                self.lin_acquired(checked, &outcome);
            }
            if let Outcome::Answered(Ok(Answer::Acquired(a))) = outcome {
                if a.token != token {
                    let mut checker = lock(&self.shared.checker);
                    checker.now = self.shared.elapsed();
                    checker.fail_beliefs(format!(
                        "client {} re-acquired {name} it holds with token {token} in session {session} and was answered token {}",
                        self.id, a.token
                    ));
                }
            }
        }
        // It stops believing as it asks to let go.
        {
            let mut checker = lock(&self.shared.checker);
            checker.now = self.shared.elapsed();
            checker.locks.beliefs.on_unbelieve(self.id, belief);
        }
        self.let_go(session, name, token, one_lock).await;
    }

    /// A one-lock wait of more than `LONG_WAIT_TTLS` of its session's
    /// short TTL, for the lock others hold for seconds: the node must keep
    /// the session alive all along, or the answer is a lost session rather
    /// than a grant or a timeout. A grant is let go at once.
    async fn long_wait(&mut self) {
        let ttl_ms = TightLimits::SHORT_TTL_MS;
        let (ttls, nonce) = {
            let mut rng = madsim::rand::thread_rng();
            let least = TightLimits::LONG_WAIT_TTLS + 1;
            let extra = TightLimits::LONG_WAIT_EXTRA_TTLS_MAX;
            (rng.gen_range(least..least + extra), rng.gen())
        };
        let wait_ms = ttl_ms * ttls;
        let request = Request::Acquire(AcquireArgs {
            lock: LONG_LOCK.to_string(),
            mode: Mode::Exclusive,
            wait_ms,
            session: SessionChoice::OneLock { ttl_ms, nonce },
        });
        let started = self.shared.elapsed();
        let limit = Duration::from_millis(wait_ms + self.slack_ms());
        let outcome = self.call(request, limit, None).await;
        let waited = self.shared.elapsed() - started;
        let long = waited >= Duration::from_millis(ttl_ms * TightLimits::LONG_WAIT_TTLS);
        let answered = match outcome {
            Outcome::Answered(Ok(Answer::Acquired(a))) => {
                self.let_go(a.session, LONG_LOCK, a.token, true).await;
                true
            }
            Outcome::Answered(Err(GatewayError::TimedOut { .. })) => true,
            _ => false,
        };
        if answered && long {
            lock(&self.shared.checker).stats.limits.long_waits += 1;
        }
    }

    /// Records an acquire of a checked lock in `session`, about to be sent.
    fn lin_acquire(&mut self, name: &str, mode: Mode, session: SessionId) -> LinCall {
        self.lin_calls += 1;
        let key = (self.id, self.lin_calls);
        let op = lin::Op::Acquire {
            session,
            mode: lin_mode(mode),
        };
        let event = self.shared.lin_invoke(key, name, op);
        LinCall {
            key,
            event,
            session,
        }
    }

    /// What became of a checked acquire. One whose outcome the client
    /// cannot know may have been granted; the request layer keeps a grant
    /// in the caller's own session, and what lets go of it is the client's
    /// close of that session (recorded from the log) or its expiry.
    fn lin_acquired(&mut self, call: LinCall, outcome: &Outcome) {
        let seen = match outcome {
            Outcome::Answered(Ok(Answer::Acquired(a))) if a.session == call.session => {
                Some(lin::Outcome::Granted(a.token))
            }
            Outcome::Answered(Err(GatewayError::Lock(e))) => match e {
                LockError::Busy => Some(lin::Outcome::Busy),
                LockError::LimitMismatch { .. } => Some(lin::Outcome::LimitMismatch),
                LockError::ModeConflict { .. } => Some(lin::Outcome::ModeConflict),
                _ => None,
            },
            _ => None,
        };
        let outcome = seen.unwrap_or(lin::Outcome::Unknown);
        self.shared.lin_complete(call.key, call.event, outcome);
    }

    /// Asks who holds a checked lock.
    async fn lin_query(&mut self, name: &str) {
        self.lin_calls += 1;
        let key = (self.id, self.lin_calls);
        let event = self.shared.lin_invoke(key, name, lin::Op::Query);
        let query = Query::Lock {
            name: name.to_string(),
        };
        let limit = Duration::from_millis(self.slack_ms());
        let answer = self.call(Request::Read(encode(&query)), limit, None).await;
        let outcome = match answer {
            Outcome::Answered(Ok(Answer::Output(applied))) => {
                match postcard::from_bytes::<QueryAnswer>(&applied.output) {
                    Ok(QueryAnswer::Lock(info)) => holders_seen(&info),
                    _ => lin::Outcome::Unknown,
                }
            }
            _ => lin::Outcome::Unknown,
        };
        self.shared.lin_complete(key, event, outcome);
    }

    /// Releases the lock (closes a one-lock session). When the outcome is
    /// unknown the session may hold it still: the client closes the
    /// session, so a later grant is never mistaken for this one.
    async fn let_go(&mut self, session: SessionId, name: &str, token: Token, one_lock: bool) {
        let op = if one_lock {
            Op::Close
        } else {
            Op::Release {
                lock: name.to_string(),
                token,
            }
        };
        let limit = Duration::from_millis(self.slack_ms());
        let checked = (is_lin(name) && !one_lock).then(|| {
            self.lin_calls += 1;
            let key = (self.id, self.lin_calls);
            let op = lin::Op::Release { session, token };
            (key, self.shared.lin_invoke(key, name, op))
        });
        let done = self
            .propose(Command::Unsequenced { session, op }, limit)
            .await;
        if let Some((key, event)) = checked {
            let outcome = match done {
                Some(Ok(Reply::Released)) => lin::Outcome::Released,
                Some(Err(LockError::NotHolder)) => lin::Outcome::NotHolder,
                _ => lin::Outcome::Unknown,
            };
            self.shared.lin_complete(key, event, outcome);
        }
        let definite = matches!(
            done,
            Some(Ok(Reply::Released | Reply::Closed))
                | Some(Err(LockError::NotHolder | LockError::SessionNotFound(_)))
        );
        if !definite && !one_lock {
            self.lose_own();
            let close = Command::Unsequenced {
                session,
                op: Op::Close,
            };
            let _ = self.propose(close, limit).await;
        }
    }

    /// Opens the client's own session.
    async fn open(&mut self) {
        let nonce = madsim::rand::thread_rng().gen();
        let ttl_ms = self.ttl_ms();
        let sent = self.local_now();
        let limit = Duration::from_millis(self.slack_ms());
        if let Some(Ok(Reply::Opened { session, .. })) =
            self.propose(Command::Open { nonce, ttl_ms }, limit).await
        {
            let trusted = self.trusted(Duration::from_millis(ttl_ms));
            self.trust(session, sent + trusted);
            self.own_until = Some(sent + trusted);
            self.own = Some(OwnSession {
                id: session,
                ttl_ms,
            });
        }
    }

    /// Renews `s`; false when it is gone (everything in it is let go).
    async fn keepalive(&mut self, s: OwnSession) -> bool {
        let sent = self.local_now();
        let limit = Duration::from_millis(self.slack_ms());
        let op = Op::KeepAlive;
        match self
            .propose(Command::Unsequenced { session: s.id, op }, limit)
            .await
        {
            Some(Ok(Reply::Renewed)) => {
                let trusted = self.trusted(Duration::from_millis(s.ttl_ms));
                self.trust(s.id, sent + trusted);
                if self.own.is_some_and(|o| o.id == s.id) {
                    self.own_until = self.own_until.max(Some(sent + trusted));
                }
                true
            }
            Some(Err(LockError::SessionNotFound(_))) => {
                if self.own.is_some_and(|o| o.id == s.id) {
                    self.lose_own();
                } else {
                    lock(&self.shared.checker)
                        .locks
                        .beliefs
                        .on_client_reset(self.id);
                }
                false
            }
            // Unknown: the lease still runs from the last renewal.
            _ => true,
        }
    }

    /// Forgets its own session and closes it.
    async fn close_own(&mut self) {
        if let Some(own) = self.own {
            self.lose_own();
            let close = Command::Unsequenced {
                session: own.id,
                op: Op::Close,
            };
            let limit = Duration::from_millis(self.slack_ms());
            let _ = self.propose(close, limit).await;
        }
    }

    fn lose_own(&mut self) {
        self.own = None;
        self.own_until = None;
        lock(&self.shared.checker)
            .locks
            .beliefs
            .on_client_reset(self.id);
    }

    /// Proposes `command`; the lock machine's response, if one came.
    async fn propose(&mut self, command: Command, limit: Duration) -> Option<Response> {
        match self
            .call(Request::Propose(encode(&command)), limit, None)
            .await
        {
            Outcome::Answered(Ok(Answer::Output(applied))) => {
                postcard::from_bytes(&applied.output).ok()
            }
            _ => None,
        }
    }

    /// Sends a call to a random node and waits for its answer, at most
    /// `limit`; with `leave_after`, goes away that soon instead.
    async fn call(
        &mut self,
        request: Request,
        limit: Duration,
        leave_after: Option<Duration>,
    ) -> Outcome {
        self.next_call += 1;
        let id = self.next_call;
        // A user configured with one node's address, who sometimes tries
        // another (a load balancer, a retry elsewhere).
        let mut rng = madsim::rand::thread_rng();
        if rng.gen_ratio(NODE_SWITCH_PERCENT, 100) {
            self.home = *self.nodes.choose(&mut rng).expect("nodes");
        }
        let to = self.home;
        let addr = self.shared.addrs[&to];
        let invoked = self.shared.elapsed();
        let what = match crate::trace::on() {
            true => request_kind(&request),
            false => String::new(),
        };
        let credential = Some(self.credential.clone());
        let frame = SimFrame::Call {
            id,
            credential,
            request,
        };
        self.send(addr, &frame).await;
        let answer = crate::cluster::answer_to(&self.ep, id);
        let wait = leave_after.unwrap_or(limit).min(limit);
        let outcome = match timeout(wait, answer).await {
            Ok(Some(result)) => Outcome::Answered(result),
            _ => {
                self.send(addr, &SimFrame::Gone { id }).await;
                if leave_after.is_some() {
                    Outcome::LeftEarly
                } else {
                    Outcome::GaveUp
                }
            }
        };
        let mut checker = lock(&self.shared.checker);
        checker.now = self.shared.elapsed();
        if crate::trace::on() {
            use crate::trace::V;
            let result = match &outcome {
                Outcome::Answered(r) => format!("{r:?}"),
                Outcome::GaveUp => "gave up".to_string(),
                Outcome::LeftEarly => "left early".to_string(),
            };
            let fields = [
                ("call_id", V::N(id)),
                ("to", V::N(to)),
                ("invoked_us", V::N(invoked.as_micros() as u64)),
                ("call", V::S(&what)),
                (
                    "result",
                    V::S(&result.chars().take(200).collect::<String>()),
                ),
            ];
            checker.trace_event(self.id, "http_call", &fields);
        }
        checker.on_http_call(self.id, invoked, matches!(outcome, Outcome::GaveUp));
        outcome
    }

    async fn send(&self, addr: SocketAddr, frame: &SimFrame) {
        if let Ok(bytes) = encode_frame(frame) {
            let _ = self.ep.send_to_raw(addr, TAG, Box::new(bytes)).await;
        }
    }
}

/// Whether an acquire that failed with `e` may have been granted all the
/// same (a 503 over HTTP): only the lock machine's and the request layer's
/// own refusals are certain.
fn outcome_unknown(e: &GatewayError) -> bool {
    !matches!(
        e,
        GatewayError::Lock(_)
            | GatewayError::TimedOut { .. }
            | GatewayError::BadRequest(_)
            | GatewayError::Forbidden(_)
            | GatewayError::TooMany(_)
    )
}

/// What a call asks, for the trace.
fn request_kind(request: &Request) -> String {
    match request {
        Request::Acquire(a) => format!("acquire {} wait {} ms", a.lock, a.wait_ms),
        Request::Propose(bytes) => match postcard::from_bytes::<Command>(bytes) {
            Ok(Command::Unsequenced { session, op }) => format!("{} in {session}", op.label()),
            Ok(c) => c.label().to_string(),
            Err(_) => "undecodable".to_string(),
        },
        Request::Read(_) => "read".to_string(),
        Request::Wait(_) => "wait".to_string(),
        Request::Manage(_) => "manage credentials".to_string(),
    }
}

/// A checked call on its way.
struct LinCall {
    key: crate::checker::lock_history::CallKey,
    event: lin::Event,
    session: SessionId,
}

fn is_lin(name: &str) -> bool {
    name == LIN_WAIT_LOCK || LIN_TRY_LOCKS.contains(&name)
}

fn believed(mode: Mode) -> Believed {
    match mode {
        Mode::Exclusive => Believed::Exclusive,
        Mode::Shared => Believed::Shared,
        Mode::Semaphore(n) => Believed::Semaphore(n),
    }
}
