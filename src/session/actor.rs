use crate::actor::{Instant, NodeId};
use crate::lock::{
    encode, Command, Grant, LockError, Mode, Op, Query, QueryAnswer, Reply, Request, Response,
    SessionId, Token,
};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use thiserror::Error;

/// Identifies a user call; chosen by the caller.
pub type CallId = u64;
/// Identifies one message to a node; the reply names it.
pub type RpcId = u64;

/// Calls accepted before the session is open; more are refused.
pub const CALLS_QUEUED_MAX: usize = 1024;
/// Reads (queries and grant polls) in flight; more calls are refused.
pub const READS_PENDING_MAX: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// The cluster's nodes, tried in turn until one leads.
    pub nodes: Vec<NodeId>,
    pub ttl: Duration,
    /// The clock-rate bound ρ in ppm; at least the cluster's.
    pub drift_ppm: u32,
    pub keepalive_interval: Duration,
    /// How long one attempt may go unanswered before the next node is tried.
    pub request_timeout: Duration,
    /// How long a queued acquire's wait for its grant (`ToNode::Wait`) may
    /// be held by the node before it answers "not yet" and is asked again
    /// (grants may also be pushed; the wait covers lost pushes and leader
    /// changes).
    pub poll_interval: Duration,
    /// Must not exceed the cluster's `requests_inflight_max`.
    pub requests_inflight_max: u64,
}

impl SessionConfig {
    pub fn new(nodes: Vec<NodeId>, ttl: Duration) -> Self {
        SessionConfig {
            nodes,
            ttl,
            drift_ppm: crate::lock::DRIFT_PPM_DEFAULT,
            keepalive_interval: ttl / 3,
            request_timeout: Duration::from_millis(500),
            poll_interval: Duration::from_millis(500),
            requests_inflight_max: crate::lock::Limits::default().requests_inflight_max,
        }
    }

    /// The part of a TTL the client may trust on its own clock.
    fn trusted(&self) -> Duration {
        self.ttl
            .saturating_sub(self.ttl * self.drift_ppm / 1_000_000)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// `wait: None` is a try-lock; `Some(d)` waits in the queue up to `d`.
    Acquire {
        lock: String,
        mode: Mode,
        wait: Option<Duration>,
    },
    Release {
        lock: String,
        token: Token,
    },
    Append {
        file: String,
        token: Token,
        data: Vec<u8>,
    },
    Query(Query),
    Close,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Done {
    /// `session`: the session the lock was granted in, whose lease is the
    /// grant's (the client may be in another one by the time it hears).
    Granted {
        token: Token,
        session: SessionId,
    },
    Released,
    Appended {
        offset: u64,
    },
    Answer(QueryAnswer),
    Closed,
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CallError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("the wait timed out; the lock was not granted")]
    Timeout,
    /// The lease ran out before the call's outcome was known: it may or
    /// may not have happened, and any lock it got is lost with the session.
    #[error("the session's lease ran out; outcome unknown")]
    SessionLost,
    #[error("too many calls in flight")]
    TooManyCalls,
    #[error("the session is closed")]
    Closed,
    /// The node refused the request for good (too large, not allowed).
    #[error("refused: {0}")]
    Refused(String),
}

/// What a node answered to one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeReply {
    /// The state machine's output (a `Response` or a `QueryAnswer`).
    Output(Vec<u8>),
    NotLeader(Option<NodeId>),
    /// Busy, leadership lost, timed out: try again, maybe elsewhere.
    Unavailable,
    /// Refused for good, wherever it is sent (too large, not allowed):
    /// the call fails.
    Refused(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToNode {
    /// A `Command` for the log.
    Propose(Vec<u8>),
    /// A `Query`, served through ReadIndex.
    Read(Vec<u8>),
    /// Wait for the grant of a queued acquire (a long poll): the node
    /// answers `QueryAnswer::Response(Some(Granted))` once the session holds
    /// the lock, `Response(None)` after `timeout_ms` without it.
    Wait(WaitFor),
}

/// A queued acquire's wait for its grant, as sent to a node.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WaitFor {
    pub session: SessionId,
    /// The queued acquire's sequence number: a grant answers it only if it
    /// carries it (an older grant of the same lock, replayed by a node
    /// catching up, does not).
    pub seq: u64,
    pub lock: String,
    pub timeout_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Opens the session (again, after it was lost or closed).
    Start,
    Call {
        id: CallId,
        call: Call,
    },
    Reply {
        rpc: RpcId,
        reply: NodeReply,
    },
    /// A node pushed the grant of a queued acquire.
    Pushed(Grant),
    /// A node pushed that `session` ended (expired or closed), at a
    /// committed log index: if it is this client's open session, every
    /// lock it held is lost now, before the lease timer would say so.
    Ended {
        session: SessionId,
    },
    /// The caller of `id` no longer waits for it: a queued acquire is
    /// cancelled (and one not queued yet, as soon as it is).
    Abandon {
        id: CallId,
    },
    /// The wake-up asked for with `WakeAt` (early or late is fine).
    Tick,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    Send {
        to: NodeId,
        rpc: RpcId,
        msg: ToNode,
    },
    WakeAt(Instant),
    Done {
        id: CallId,
        result: Result<Done, CallError>,
    },
    Opened(SessionId),
    /// The local lease ran out: stop using this lock now (its token may
    /// already be fenced off).
    Lost {
        lock: String,
        token: Token,
    },
    /// The session is over (lease ran out or the cluster said so).
    SessionLost,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Purpose {
    Call(CallId),
    /// Cancels the queued acquire with this sequence number.
    Cancel(u64),
}

/// The keepalive in flight. Keepalives are not numbered requests: a renewal
/// may run twice harmlessly, and outside the exactly-once window it can
/// never be blocked by requests that wait (a queued acquire may wait for
/// hours; the session must live through it).
#[derive(Clone, Debug)]
struct KeepAlive {
    /// The lease counts from the first send of the renewal answered.
    first_sent: Instant,
    rpc: RpcId,
    retry_at: Instant,
}

#[derive(Clone, Debug)]
struct Pending {
    purpose: Purpose,
    op: Op,
    rpc: RpcId,
    retry_at: Instant,
    /// Set once a waiting acquire is queued.
    wait: Option<Wait>,
}

impl Pending {
    /// Answered `Queued`: waiting for its grant, no longer resent.
    fn is_queued(&self) -> bool {
        self.wait.as_ref().is_some_and(|w| w.poll_at.is_some())
    }
}

#[derive(Clone, Debug)]
struct Wait {
    deadline: Instant,
    /// `None` until the node says Queued: a cancel before the acquire is
    /// applied could be overtaken by it and leave a forgotten waiter.
    poll_at: Option<Instant>,
    cancelling: bool,
    /// The caller went away: cancel as soon as it is queued.
    abandoned: bool,
}

#[derive(Clone, Debug)]
enum Phase {
    Idle,
    Opening {
        nonce: u64,
        first_sent: Instant,
        rpc: RpcId,
        retry_at: Instant,
    },
    Open(SessionId),
}

#[derive(Clone, Debug)]
enum ReadPurpose {
    Call(CallId, Query),
    /// Has the queued acquire with this sequence number been granted? Asked
    /// of the session's state (`Query::Session`): its kept response may be
    /// forgotten, since a queued acquire does not hold the window back.
    Poll(u64),
}

#[derive(Clone, Debug)]
struct PendingRead {
    purpose: ReadPurpose,
    retry_at: Instant,
}

pub struct Session {
    config: SessionConfig,
    rng: ChaCha8Rng,
    phase: Phase,
    target: NodeId,
    next_rpc: RpcId,
    next_seq: u64,
    requests: BTreeMap<u64, Pending>,
    reads: BTreeMap<RpcId, PendingRead>,
    queued: VecDeque<(CallId, Call)>,
    /// Trust the lease until here (local clock).
    lease_until: Option<Instant>,
    keepalive_at: Option<Instant>,
    keepalive: Option<KeepAlive>,
    held: BTreeMap<String, Token>,
    out: Vec<Effect>,
}

impl Session {
    pub fn new(config: SessionConfig, seed: u64) -> Self {
        let target = config.nodes.first().copied().unwrap_or(0);
        Session {
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            phase: Phase::Idle,
            target,
            next_rpc: 0,
            next_seq: 0,
            requests: BTreeMap::new(),
            reads: BTreeMap::new(),
            queued: VecDeque::new(),
            lease_until: None,
            keepalive_at: None,
            keepalive: None,
            held: BTreeMap::new(),
            out: Vec::new(),
        }
    }

    pub fn session_id(&self) -> Option<SessionId> {
        match self.phase {
            Phase::Open(id) => Some(id),
            _ => None,
        }
    }

    /// Until when (local clock) the lease may be trusted.
    pub fn lease_until(&self) -> Option<Instant> {
        self.lease_until
    }

    /// The token of `lock` if this client holds it and its lease is valid
    /// at `now`: check right before touching the protected resource (and
    /// let the resource check the token, since a pause may come between).
    pub fn holds(&self, lock: &str, now: Instant) -> Option<Token> {
        let valid = self.lease_until.is_some_and(|until| now < until);
        self.held.get(lock).copied().filter(|_| valid)
    }

    // ---- input ----

    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Effect> {
        match input {
            Input::Start => self.handle_start(now),
            Input::Call { id, call } => self.handle_call(now, id, call),
            Input::Reply { rpc, reply } => self.handle_reply(now, rpc, reply),
            Input::Pushed(grant) => self.handle_pushed(grant),
            Input::Ended { session } => {
                if matches!(self.phase, Phase::Open(s) if s == session) {
                    self.lose_session();
                }
            }
            Input::Abandon { id } => self.handle_abandon(now, id),
            Input::Tick => {}
        }
        self.handle_timers(now);
        self.poll_wake(now);
        self.check_invariants();
        std::mem::take(&mut self.out)
    }

    /// Postconditions of every input (TigerBeetle style). The bounds are
    /// cheap and checked in every build; the walks only in debug builds.
    fn check_invariants(&self) {
        assert!(
            self.queued.len() <= CALLS_QUEUED_MAX,
            "calls queued past their bound"
        );
        assert!(
            self.reads.len() <= READS_PENDING_MAX,
            "reads pending past their bound"
        );
        if !cfg!(debug_assertions) {
            return;
        }
        let open = matches!(self.phase, Phase::Open(_));
        assert!(
            open || self.held.is_empty(),
            "holds locks without a session"
        );
        assert!(
            open || self.requests.is_empty(),
            "requests without a session"
        );
        assert!(
            open || self.keepalive_at.is_none(),
            "keepalives without a session"
        );
        assert!(
            open || self.lease_until.is_none(),
            "a lease without a session"
        );
        assert!(
            self.requests
                .keys()
                .all(|&seq| seq >= 1 && seq <= self.next_seq),
            "a request numbered past the last one sent"
        );
        assert!(
            self.requests.values().all(|p| p.rpc <= self.next_rpc),
            "a request waiting for an rpc never sent"
        );
    }

    fn handle_start(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::Idle) {
            return;
        }
        let nonce = self.rng.next_u64();
        self.send_open(now, nonce, now);
    }

    /// (Re)sends the open with its nonce; the lease will count from the
    /// first send, whichever attempt is answered.
    fn send_open(&mut self, now: Instant, nonce: u64, first_sent: Instant) {
        let rpc = self.send_propose(&Command::Open {
            nonce,
            ttl_ms: self.config.ttl.as_millis() as u64,
        });
        self.phase = Phase::Opening {
            nonce,
            first_sent,
            rpc,
            retry_at: now + self.config.request_timeout,
        };
    }

    fn handle_call(&mut self, now: Instant, id: CallId, call: Call) {
        let Phase::Open(session) = self.phase else {
            if matches!(self.phase, Phase::Idle) {
                return self.done(id, Err(CallError::Closed));
            }
            if self.queued.len() >= CALLS_QUEUED_MAX {
                return self.done(id, Err(CallError::TooManyCalls));
            }
            self.queued.push_back((id, call));
            return;
        };
        let op = match call {
            Call::Query(query) => {
                if self.reads.len() >= READS_PENDING_MAX {
                    return self.done(id, Err(CallError::TooManyCalls));
                }
                let rpc = self.send_read(&query);
                self.reads.insert(
                    rpc,
                    PendingRead {
                        purpose: ReadPurpose::Call(id, query),
                        retry_at: now + self.config.request_timeout,
                    },
                );
                return;
            }
            Call::Acquire { lock, mode, wait } => {
                let op = Op::Acquire {
                    lock,
                    mode,
                    wait: wait.is_some(),
                };
                return self.start_request(now, session, Purpose::Call(id), op, wait);
            }
            Call::Release { lock, token } => Op::Release { lock, token },
            Call::Append { file, token, data } => Op::Append { file, token, data },
            Call::Close => Op::Close,
        };
        self.start_request(now, session, Purpose::Call(id), op, None);
    }

    fn start_request(
        &mut self,
        now: Instant,
        session: SessionId,
        purpose: Purpose,
        op: Op,
        wait: Option<Duration>,
    ) {
        if self.next_seq + 1 > self.acked() + self.config.requests_inflight_max {
            if let Purpose::Call(id) = purpose {
                self.done(id, Err(CallError::TooManyCalls));
            }
            return;
        }
        self.next_seq += 1;
        let seq = self.next_seq;
        let rpc = self.send_request(session, seq, &op);
        self.requests.insert(
            seq,
            Pending {
                purpose,
                op,
                rpc,
                retry_at: now + self.config.request_timeout,
                // The deadline counts from the call, not from the queueing.
                wait: wait.map(|d| Wait {
                    deadline: now + d,
                    poll_at: None,
                    cancelling: false,
                    abandoned: false,
                }),
            },
        );
    }

    fn handle_reply(&mut self, now: Instant, rpc: RpcId, reply: NodeReply) {
        let output = match reply {
            NodeReply::Output(output) => output,
            NodeReply::NotLeader(hint) => {
                self.follow(hint);
                return self.resend(now, rpc);
            }
            NodeReply::Unavailable => {
                self.follow(None);
                // A wait is asked again at the next node after a request
                // timeout, as other requests are retried, not after a
                // whole poll interval (the read's own patience).
                if let Some(PendingRead {
                    purpose: ReadPurpose::Poll(seq),
                    ..
                }) = self.reads.get(&rpc)
                {
                    let seq = *seq;
                    self.reads.remove(&rpc);
                    let retry = now + self.config.request_timeout;
                    if let Some(w) = self.requests.get_mut(&seq).and_then(|p| p.wait.as_mut()) {
                        w.poll_at = Some(retry);
                    }
                }
                return;
            }
            NodeReply::Refused(why) => return self.refused(rpc, why),
        };
        if let Phase::Opening {
            rpc: opening,
            first_sent,
            ..
        } = self.phase
        {
            if opening == rpc {
                return self.handle_opened(now, first_sent, &output);
            }
        }
        if self.keepalive.as_ref().is_some_and(|k| k.rpc == rpc) {
            return self.handle_renewed(&output);
        }
        if let Some(read) = self.reads.remove(&rpc) {
            let answer = postcard::from_bytes::<QueryAnswer>(&output)
                .unwrap_or_else(|e| QueryAnswer::Malformed(e.to_string()));
            return match read.purpose {
                ReadPurpose::Call(id, _) => self.done(id, Ok(Done::Answer(answer))),
                ReadPurpose::Poll(seq) => self.handle_poll(now, seq, answer),
            };
        }
        let Some((&seq, _)) = self.requests.iter().find(|(_, p)| p.rpc == rpc) else {
            return; // a late reply to an attempt already answered
        };
        let response = postcard::from_bytes::<Response>(&output)
            .unwrap_or_else(|e| Err(LockError::Malformed(e.to_string())));
        self.handle_response(now, seq, response);
    }

    fn handle_opened(&mut self, now: Instant, first_sent: Instant, output: &[u8]) {
        match postcard::from_bytes::<Response>(output) {
            Ok(Ok(Reply::Opened { session, .. })) => {
                self.phase = Phase::Open(session);
                self.lease_until = Some(first_sent + self.config.trusted());
                self.keepalive_at = Some(now + self.config.keepalive_interval);
                self.out.push(Effect::Opened(session));
                while let Some((id, call)) = self.queued.pop_front() {
                    self.handle_call(now, id, call);
                }
            }
            // Refused (bad TTL, too many sessions): nothing to retry.
            Ok(Err(e)) => {
                self.phase = Phase::Idle;
                for (id, _) in std::mem::take(&mut self.queued) {
                    self.done(id, Err(CallError::Lock(e.clone())));
                }
                self.out.push(Effect::SessionLost);
            }
            Ok(Ok(_)) | Err(_) => {}
        }
    }

    /// The keepalive in flight was answered.
    fn handle_renewed(&mut self, output: &[u8]) {
        let Some(k) = self.keepalive.take() else {
            return;
        };
        match postcard::from_bytes::<Response>(output) {
            Ok(Ok(Reply::Renewed)) => {
                let until = k.first_sent + self.config.trusted();
                self.lease_until = self.lease_until.max(Some(until));
            }
            Ok(Err(LockError::SessionNotFound(_))) => self.lose_session(),
            // Anything else renews nothing; the next tick sends another.
            _ => {}
        }
    }

    /// The node answered the wait for the queued acquire `seq`: granted,
    /// or not yet (wait again at once), or the session is gone.
    fn handle_poll(&mut self, now: Instant, seq: u64, answer: QueryAnswer) {
        match answer {
            QueryAnswer::Response(Some(Ok(Reply::Granted { token }))) => self.granted(seq, token),
            QueryAnswer::Response(Some(Err(LockError::SessionNotFound(_)))) => self.lose_session(),
            _ => {
                if let Some(w) = self.requests.get_mut(&seq).and_then(|p| p.wait.as_mut()) {
                    w.poll_at = Some(now);
                }
            }
        }
    }

    /// The user call a request serves, if any.
    fn call_of(&self, seq: u64) -> Option<CallId> {
        match self.requests.get(&seq)?.purpose {
            Purpose::Call(id) => Some(id),
            Purpose::Cancel(_) => None,
        }
    }

    fn handle_response(&mut self, now: Instant, seq: u64, response: Response) {
        if let Err(LockError::SessionNotFound(_)) = response {
            return self.lose_session();
        }
        let Some(p) = self.requests.get(&seq) else {
            return;
        };
        match (&p.purpose, &p.op, response) {
            (Purpose::Cancel(acquire), _, result) => {
                let acquire = *acquire;
                self.requests.remove(&seq);
                match result {
                    Ok(Reply::Granted { token }) => self.granted(acquire, token),
                    _ => {
                        if let Some(p) = self.requests.remove(&acquire) {
                            if let Purpose::Call(id) = p.purpose {
                                self.done(id, Err(CallError::Timeout));
                            }
                        }
                    }
                }
            }
            (_, _, Ok(Reply::Queued { .. })) => {
                let Some(p) = self.requests.get_mut(&seq) else {
                    return;
                };
                // Now only the grant (pushed or polled) or the deadline
                // ends it; no more resends of the acquire itself, and it no
                // longer holds the acknowledged point back.
                p.retry_at = Instant::from_micros(u64::MAX);
                let abandoned = p.wait.as_ref().is_some_and(|w| w.abandoned);
                if let Some(w) = p.wait.as_mut() {
                    // Wait for the grant at once (a long poll at the node).
                    w.poll_at = Some(now);
                }
                if abandoned {
                    if let Some(id) = self.call_of(seq) {
                        self.handle_abandon(now, id);
                    }
                }
            }
            (_, _, Ok(Reply::Granted { token })) => self.granted(seq, token),
            (Purpose::Call(id), op, result) => {
                let id = *id;
                if let (Op::Release { lock, .. }, Ok(Reply::Released)) = (op, &result) {
                    self.held.remove(lock);
                }
                let closed = matches!(result, Ok(Reply::Closed));
                self.requests.remove(&seq);
                let result = match result {
                    Ok(Reply::Released) => Ok(Done::Released),
                    Ok(Reply::Appended { offset }) => Ok(Done::Appended { offset }),
                    Ok(Reply::Closed) => Ok(Done::Closed),
                    Ok(Reply::Cancelled) => Err(CallError::Timeout),
                    Ok(other) => Err(CallError::Lock(LockError::Malformed(format!(
                        "unexpected reply {other:?}"
                    )))),
                    Err(e) => Err(CallError::Lock(e)),
                };
                self.done(id, result);
                if closed {
                    self.end(false);
                }
            }
        }
    }

    /// A node refused what `rpc` carried for good: its call fails.
    fn refused(&mut self, rpc: RpcId, why: String) {
        if let Some(read) = self.reads.remove(&rpc) {
            if let ReadPurpose::Call(id, _) = read.purpose {
                self.done(id, Err(CallError::Refused(why)));
            }
            return;
        }
        let Some((&seq, _)) = self.requests.iter().find(|(_, p)| p.rpc == rpc) else {
            return;
        };
        if let Some(Pending {
            purpose: Purpose::Call(id),
            ..
        }) = self.requests.remove(&seq)
        {
            self.done(id, Err(CallError::Refused(why)));
        }
    }

    /// The caller of `id` went away. A queued acquire is cancelled now, one
    /// not answered yet once it is queued; a grant that beats the cancel is
    /// still reported as `Done` (the driver releases what nobody took).
    fn handle_abandon(&mut self, now: Instant, id: CallId) {
        let Phase::Open(session) = self.phase else {
            return;
        };
        let found = self
            .requests
            .iter_mut()
            .find(|(_, p)| p.purpose == Purpose::Call(id));
        let Some((&seq, p)) = found else {
            return;
        };
        let Some(w) = p.wait.as_mut() else {
            return;
        };
        w.abandoned = true;
        if w.poll_at.is_some() && !w.cancelling {
            w.cancelling = true;
            if let Op::Acquire { lock, .. } = p.op.clone() {
                self.start_request(
                    now,
                    session,
                    Purpose::Cancel(seq),
                    Op::Cancel { lock },
                    None,
                );
            }
        }
    }

    fn handle_pushed(&mut self, grant: Grant) {
        if self.session_id() == Some(grant.session) {
            self.granted(grant.seq, grant.token);
        }
    }

    /// A queued or immediate acquire got its grant.
    fn granted(&mut self, seq: u64, token: Token) {
        let Some(p) = self.requests.remove(&seq) else {
            return;
        };
        if let Op::Acquire { lock, .. } = &p.op {
            self.held.insert(lock.clone(), token);
        }
        // Requests live only in an open session (losing it fails them all).
        debug_assert!(self.session_id().is_some());
        let session = self.session_id().unwrap_or(0);
        if let Purpose::Call(id) = p.purpose {
            self.done(id, Ok(Done::Granted { token, session }));
        }
    }

    // ---- timers ----

    fn handle_timers(&mut self, now: Instant) {
        match self.phase {
            Phase::Idle => return,
            Phase::Opening {
                nonce,
                first_sent,
                retry_at,
                ..
            } => {
                if now >= retry_at {
                    self.follow(None);
                    self.send_open(now, nonce, first_sent);
                }
                return;
            }
            Phase::Open(_) => {}
        }
        if self.lease_until.is_some_and(|until| now >= until) {
            return self.lose_session();
        }
        let Phase::Open(session) = self.phase else {
            return;
        };
        if self.keepalive_at.is_some_and(|at| now >= at) {
            self.keepalive_at = Some(now + self.config.keepalive_interval);
            if self.keepalive.is_none() {
                let rpc = self.send_keepalive(session);
                self.keepalive = Some(KeepAlive {
                    first_sent: now,
                    rpc,
                    retry_at: now + self.config.request_timeout,
                });
            }
        }
        if let Some(k) = self.keepalive.as_mut().filter(|k| now >= k.retry_at) {
            // Resent under a new rpc; the lease still counts from the first
            // send, which every apply of it follows.
            k.retry_at = now + self.config.request_timeout;
            self.follow(None);
            let rpc = self.send_keepalive(session);
            if let Some(k) = self.keepalive.as_mut() {
                k.rpc = rpc;
            }
        }
        let due: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, p)| now >= p.retry_at)
            .map(|(&s, _)| s)
            .collect();
        if !due.is_empty() {
            self.follow(None);
        }
        for seq in due {
            if let Some(p) = self.requests.get(&seq) {
                let op = p.op.clone();
                let rpc = self.send_request(session, seq, &op);
                if let Some(p) = self.requests.get_mut(&seq) {
                    p.rpc = rpc;
                    p.retry_at = now + self.config.request_timeout;
                }
            }
        }
        let waits: Vec<(u64, String, bool, bool)> = self
            .requests
            .iter()
            .filter_map(|(&seq, p)| {
                let w = p.wait.as_ref()?;
                let Op::Acquire { lock, .. } = &p.op else {
                    return None;
                };
                let queued = w.poll_at.is_some();
                let poll = w.poll_at.is_some_and(|at| now >= at);
                let cancel = queued && now >= w.deadline && !w.cancelling;
                Some((seq, lock.clone(), poll, cancel))
            })
            .collect();
        for (seq, lock, poll, cancel) in waits {
            if poll && self.reads.len() < READS_PENDING_MAX {
                // One wait at a time per acquire: the next goes when this
                // one is answered, or times out (held at most a poll
                // interval by the node, plus a request timeout on the way).
                let rpc = self.send_wait(session, seq, &lock);
                let patience = self.config.poll_interval + self.config.request_timeout;
                self.reads.insert(
                    rpc,
                    PendingRead {
                        purpose: ReadPurpose::Poll(seq),
                        retry_at: now + patience,
                    },
                );
                if let Some(w) = self.requests.get_mut(&seq).and_then(|p| p.wait.as_mut()) {
                    w.poll_at = Some(now + patience);
                }
            }
            if cancel {
                if let Some(w) = self.requests.get_mut(&seq).and_then(|p| p.wait.as_mut()) {
                    w.cancelling = true;
                }
                self.start_request(
                    now,
                    session,
                    Purpose::Cancel(seq),
                    Op::Cancel { lock },
                    None,
                );
            }
        }
        // Reads are idempotent: resend a timed-out one under a new rpc.
        let stale: Vec<RpcId> = self
            .reads
            .iter()
            .filter(|(_, r)| now >= r.retry_at)
            .map(|(&rpc, _)| rpc)
            .collect();
        for rpc in stale {
            if let Some(read) = self.reads.remove(&rpc) {
                if let ReadPurpose::Call(id, query) = read.purpose {
                    let rpc = self.send_read(&query);
                    self.reads.insert(
                        rpc,
                        PendingRead {
                            purpose: ReadPurpose::Call(id, query),
                            retry_at: now + self.config.request_timeout,
                        },
                    );
                }
                // A lost poll is simply made again at the next poll time.
            }
        }
    }

    fn poll_wake(&mut self, _now: Instant) {
        let mut at: Option<Instant> = None;
        let mut consider = |t: Instant| at = Some(at.map_or(t, |a: Instant| a.min(t)));
        match self.phase {
            Phase::Idle => {}
            Phase::Opening { retry_at, .. } => consider(retry_at),
            Phase::Open(_) => {
                self.lease_until.into_iter().for_each(&mut consider);
                self.keepalive_at.into_iter().for_each(&mut consider);
                if let Some(k) = &self.keepalive {
                    consider(k.retry_at);
                }
                for p in self.requests.values() {
                    consider(p.retry_at);
                    if let Some(w) = &p.wait {
                        if let Some(poll_at) = w.poll_at {
                            consider(poll_at);
                            if !w.cancelling {
                                consider(w.deadline);
                            }
                        }
                    }
                }
                for r in self.reads.values() {
                    consider(r.retry_at);
                }
            }
        }
        if let Some(at) = at.filter(|&t| t.as_micros() != u64::MAX) {
            self.out.push(Effect::WakeAt(at));
        }
    }

    // ---- helpers ----

    /// Every response up to here reached this client and may be forgotten:
    /// up to the first request still unanswered. A queued acquire was
    /// answered (`Queued`); its grant is pushed or polled by lock, so it
    /// does not hold the window back while it waits.
    fn acked(&self) -> u64 {
        self.requests
            .iter()
            .find(|(_, p)| !p.is_queued())
            .map_or(self.next_seq, |(&first, _)| first - 1)
    }

    fn send_wait(&mut self, session: SessionId, seq: u64, lock: &str) -> RpcId {
        self.send(ToNode::Wait(WaitFor {
            session,
            seq,
            lock: lock.to_string(),
            timeout_ms: self.config.poll_interval.as_millis() as u64,
        }))
    }

    fn send_keepalive(&mut self, session: SessionId) -> RpcId {
        self.send_propose(&Command::Unsequenced {
            session,
            op: Op::KeepAlive,
        })
    }

    fn send_request(&mut self, session: SessionId, seq: u64, op: &Op) -> RpcId {
        let command = Command::Request(Request {
            session,
            seq,
            acked: self.acked().min(seq - 1),
            op: op.clone(),
        });
        self.send_propose(&command)
    }

    fn send_propose(&mut self, command: &Command) -> RpcId {
        self.send(ToNode::Propose(encode(command)))
    }

    fn send_read(&mut self, query: &Query) -> RpcId {
        self.send(ToNode::Read(encode(query)))
    }

    fn send(&mut self, msg: ToNode) -> RpcId {
        self.next_rpc += 1;
        self.out.push(Effect::Send {
            to: self.target,
            rpc: self.next_rpc,
            msg,
        });
        self.next_rpc
    }

    /// Goes to the hinted leader, or to the next node in turn.
    fn follow(&mut self, hint: Option<NodeId>) {
        let nodes = &self.config.nodes;
        self.target = match hint.filter(|h| nodes.contains(h)) {
            Some(leader) => leader,
            None => {
                let at = nodes.iter().position(|&n| n == self.target).unwrap_or(0);
                nodes
                    .get((at + 1) % nodes.len().max(1))
                    .copied()
                    .unwrap_or(0)
            }
        };
    }

    /// Resends whatever `rpc` carried to the current target.
    fn resend(&mut self, now: Instant, rpc: RpcId) {
        if let Phase::Opening {
            rpc: opening,
            nonce,
            first_sent,
            ..
        } = self.phase
        {
            if opening == rpc {
                return self.send_open(now, nonce, first_sent);
            }
        }
        if let Some(read) = self.reads.remove(&rpc) {
            let rpc = match &read.purpose {
                ReadPurpose::Call(_, q) => self.send_read(&q.clone()),
                // A redirected wait: the next tick asks the new target.
                ReadPurpose::Poll(seq) => {
                    if let Some(w) = self.requests.get_mut(seq).and_then(|p| p.wait.as_mut()) {
                        w.poll_at = Some(now);
                    }
                    return;
                }
            };
            self.reads.insert(rpc, read);
            return;
        }
        if self.keepalive.as_ref().is_some_and(|k| k.rpc == rpc) {
            if let Phase::Open(session) = self.phase {
                let rpc = self.send_keepalive(session);
                if let Some(k) = self.keepalive.as_mut() {
                    k.rpc = rpc;
                    k.retry_at = now + self.config.request_timeout;
                }
            }
            return;
        }
        let Phase::Open(session) = self.phase else {
            return;
        };
        if let Some((&seq, p)) = self.requests.iter().find(|(_, p)| p.rpc == rpc) {
            if p.retry_at.as_micros() == u64::MAX {
                return; // queued: waiting, not resending
            }
            let op = p.op.clone();
            let rpc = self.send_request(session, seq, &op);
            if let Some(p) = self.requests.get_mut(&seq) {
                p.rpc = rpc;
                p.retry_at = now + self.config.request_timeout;
            }
        }
    }

    fn done(&mut self, id: CallId, result: Result<Done, CallError>) {
        self.out.push(Effect::Done { id, result });
    }

    /// The lease is over (or the cluster says the session is gone): every
    /// lock is lost and every call's outcome is unknown.
    fn lose_session(&mut self) {
        self.end(true);
    }

    fn end(&mut self, lost: bool) {
        for (lock, token) in std::mem::take(&mut self.held) {
            if lost {
                self.out.push(Effect::Lost { lock, token });
            }
        }
        let requests = std::mem::take(&mut self.requests);
        for p in requests.into_values() {
            if let Purpose::Call(id) = p.purpose {
                self.done(id, Err(CallError::SessionLost));
            }
        }
        for read in std::mem::take(&mut self.reads).into_values() {
            if let ReadPurpose::Call(id, _) = read.purpose {
                self.done(id, Err(CallError::SessionLost));
            }
        }
        for (id, _) in std::mem::take(&mut self.queued) {
            self.done(id, Err(CallError::SessionLost));
        }
        self.phase = Phase::Idle;
        self.lease_until = None;
        self.keepalive_at = None;
        self.keepalive = None;
        if lost {
            self.out.push(Effect::SessionLost);
        }
    }
}
