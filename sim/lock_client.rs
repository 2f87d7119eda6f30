//! A simulated lock-service client: the production client-session actor
//! (`raftlock::session`) driven by a madsim task, with a workload that
//! takes locks, does fenced work on a protected resource, and records a
//! history of try-lock / release / query operations for the
//! linearizability check.

use crate::checker::Checker;
use crate::cluster::SimFrame;
use crate::shared::{lock, lock_view, write_resource, Shared, TightLimits};
use futures::channel::mpsc;
use futures::StreamExt;
use madsim::net::Endpoint;
use madsim::time::timeout;
use raftlock::actor::NodeId;
use raftlock::linearizability as lin;
use raftlock::lock::{LockError, Mode, Query, QueryAnswer, Token};
use raftlock::net::{decode_frame, encode_frame};
use raftlock::session::{Call, CallError, CallId, Done, Effect, Input, Session, SessionConfig};
use rand::Rng;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const TAG: u64 = 1;
/// Clients' clock ids start here (node ids are small).
pub const CLIENT_ID_BASE: u64 = 100;
/// Frames queued for a client's loop.
const CLIENT_INBOX_LEN_MAX: usize = 1024;
/// How long an idle client loop sleeps at most.
const CLIENT_POLL_MS: u64 = 50;
/// The session TTL simulated clients ask for.
pub const SIM_TTL_MS: u64 = 2_000;
/// Locks with fenced work on the protected resource.
pub const FENCED_LOCKS: &[&str] = &["res-0", "res-1"];

pub fn client_addr(k: u64) -> SocketAddr {
    SocketAddr::from(([10, 0, 2, k as u8], 9000))
}

#[derive(Clone, Debug)]
enum What {
    /// Exclusive lock on a fenced resource, then work, write, append.
    Fenced {
        lock: String,
    },
    /// Any mode, held a while then released.
    Hold {
        lock: String,
    },
    /// A try-lock, release or query on a checked lock.
    Lin {
        event: lin::Event,
    },
    Append {
        lock: String,
        token: Token,
        bytes: usize,
    },
    Release,
}

#[derive(Clone, Debug)]
enum Step {
    Idle {
        at: Duration,
    },
    Calling {
        id: CallId,
        what: What,
        invoked: Duration,
    },
    /// Holds `lock`; at `until` it acts (write, or release).
    Holding {
        lock: String,
        token: Token,
        until: Duration,
        fenced: bool,
    },
}

pub struct Client {
    k: u64,
    id: u64,
    shared: Arc<Shared>,
    ep: Arc<Endpoint>,
    /// Its own credential's `Authorization` value, sent with every call.
    credential: String,
    session: Session,
    wake: Option<raftlock::actor::Instant>,
    step: Step,
    next_call: CallId,
    /// Locks from the checked set this client believes it holds.
    lin_held: BTreeMap<String, Token>,
    /// The lock and mode of the acquire in flight.
    acquiring: Option<(String, Mode)>,
    trusted_until: Option<raftlock::actor::Instant>,
    restart_at: Option<Duration>,
    inputs: VecDeque<Input>,
    data_seq: u64,
}

pub async fn run_lock_client(k: u64, shared: Arc<Shared>) {
    let ep = Arc::new(
        Endpoint::bind(client_addr(k))
            .await
            .expect("bind client endpoint"),
    );
    let name = format!("client{k}");
    let Some(bearer) = crate::credentials::enroll(&shared, client_addr(k).ip(), &name).await else {
        return;
    };
    let (tx, mut rx) = mpsc::channel(CLIENT_INBOX_LEN_MAX);
    madsim::task::spawn(recv_loop(ep.clone(), tx));
    let nodes: Vec<NodeId> = shared.addrs.keys().copied().collect();
    let mut config = SessionConfig::new(nodes, Duration::from_millis(SIM_TTL_MS));
    config.drift_ppm = shared.lock_config.drift_ppm;
    config.request_timeout = Duration::from_millis(300);
    config.poll_interval = Duration::from_millis(300);
    let mut c = Client {
        k,
        id: CLIENT_ID_BASE + k,
        shared: shared.clone(),
        ep,
        credential: crate::shared::authorization(&bearer),
        session: Session::new(config, madsim::rand::random()),
        wake: None,
        step: Step::Idle { at: Duration::ZERO },
        next_call: 0,
        lin_held: BTreeMap::new(),
        acquiring: None,
        trusted_until: None,
        restart_at: None,
        inputs: VecDeque::from([Input::Start]),
        data_seq: 0,
    };
    c.run_inputs().await;
    loop {
        let g = shared.elapsed();
        c.user_step(g).await;
        let g = shared.elapsed();
        let clock = c.clock();
        if c.wake.is_some_and(|w| clock.local(g) >= w) {
            c.wake = None;
            c.inputs.push_back(Input::Tick);
            c.run_inputs().await;
        }
        if c.restart_at.is_some_and(|t| g >= t) {
            c.restart_at = None;
            c.inputs.push_back(Input::Start);
            c.run_inputs().await;
        }
        let g = shared.elapsed();
        let mut wait = Duration::from_millis(CLIENT_POLL_MS);
        if let Some(w) = c.wake {
            wait = wait.min(clock.global_until(g, w));
        }
        if let Step::Idle { at } | Step::Holding { until: at, .. } = c.step {
            wait = wait.min(at.saturating_sub(g));
        }
        match timeout(wait, rx.next()).await {
            Ok(Some(frame)) => {
                let input = match frame {
                    // Told what production's native endpoint tells it.
                    SimFrame::Answer { id, result } => Input::Reply {
                        rpc: id,
                        reply: raftlock::gateway::node_reply(result),
                    },
                    SimFrame::Pushed(g) => Input::Pushed(g),
                    _ => continue,
                };
                c.inputs.push_back(input);
                c.run_inputs().await;
            }
            Ok(None) => return,
            Err(_) => {}
        }
    }
}

async fn recv_loop(ep: Arc<Endpoint>, mut tx: mpsc::Sender<SimFrame>) {
    while let Ok((payload, _)) = ep.recv_from_raw(TAG).await {
        let Ok(bytes) = payload.downcast::<Vec<u8>>() else {
            continue;
        };
        if let Ok(Some((frame, _))) = decode_frame::<SimFrame>(&bytes) {
            let _ = tx.try_send(frame);
        }
    }
}

fn ns(d: Duration) -> u64 {
    d.as_nanos() as u64
}

impl Client {
    fn clock(&self) -> crate::clock::Clock {
        lock(&self.shared.clocks)[&self.id].clone()
    }

    fn checker(&self) -> std::sync::MutexGuard<'_, Checker> {
        lock(&self.shared.checker)
    }

    /// Feeds queued inputs to the session actor and carries out effects.
    async fn run_inputs(&mut self) {
        while let Some(input) = self.inputs.pop_front() {
            let g = self.shared.elapsed();
            let clock = self.clock();
            let now = clock.local(g);
            let effects = self.session.handle(now, input);
            for effect in effects {
                match effect {
                    Effect::Send { to, rpc, msg } => {
                        let frame = SimFrame::Call {
                            id: rpc,
                            credential: Some(self.credential.clone()),
                            request: msg.into(),
                        };
                        if let (Some(&addr), Ok(bytes)) =
                            (self.shared.addrs.get(&to), encode_frame(&frame))
                        {
                            let _ = self.ep.send_to_raw(addr, TAG, Box::new(bytes)).await;
                        }
                    }
                    Effect::WakeAt(at) => self.wake = Some(at),
                    Effect::Done { id, result } => self.on_done(id, result),
                    Effect::Opened(session) => {
                        if crate::trace::on() {
                            let now = self.shared.elapsed();
                            let mut checker = self.checker();
                            checker.now = now;
                            checker.trace_event(
                                self.id,
                                "session_open",
                                &[("session", crate::trace::V::N(session))],
                            );
                        }
                    }
                    Effect::Lost { lock, token } => {
                        self.lin_held.remove(&lock);
                        self.checker().locks.beliefs.on_unbelieve(self.id, token);
                        // The application learns in time: it drops the work.
                        if matches!(&self.step, Step::Holding { lock: l, .. } if *l == lock) {
                            self.set_idle(g);
                        }
                    }
                    Effect::SessionLost => {
                        self.lin_held.clear();
                        self.checker().locks.beliefs.on_client_reset(self.id);
                        self.restart_at = Some(g + Duration::from_millis(50));
                    }
                }
            }
            // Tell the lease checker how long this client trusts its lease,
            // in real time, through its own drifting clock.
            let until = self.session.lease_until();
            if until != self.trusted_until {
                self.trusted_until = until;
                if let (Some(until), Some(session)) = (until, self.session.session_id()) {
                    let real = g + clock.global_until(g, until);
                    self.checker().on_lease_trusted(self.id, session, real);
                }
            }
        }
    }

    fn call(&mut self, g: Duration, call: Call, what: What) {
        self.next_call += 1;
        let id = self.next_call;
        // What the client stops believing when it asks to let go, and
        // what it will believe if an acquire is granted.
        self.acquiring = match &call {
            Call::Acquire { lock, mode, .. } => Some((lock.clone(), *mode)),
            _ => None,
        };
        {
            let mut checker = self.checker();
            checker.now = g;
            match &call {
                Call::Release { token, .. } => checker.locks.beliefs.on_unbelieve(self.id, *token),
                Call::Close => checker.locks.beliefs.on_client_reset(self.id),
                _ => {}
            }
            checker.locks.waiters.on_call(self.id, g);
            if let What::Lin { event } = &what {
                checker.locks.history.invoked((self.id, id), event.clone());
            }
            if crate::trace::on() {
                // Calls are drawn from invocation to completion.
                let text = format!("{call:?}");
                checker.trace_event(
                    self.id,
                    "call",
                    &[
                        ("call_id", crate::trace::V::N(id)),
                        (
                            "call",
                            crate::trace::V::S(&text.chars().take(200).collect::<String>()),
                        ),
                    ],
                );
            }
        }
        self.step = Step::Calling {
            id,
            what,
            invoked: g,
        };
        self.inputs.push_back(Input::Call { id, call });
    }

    fn set_idle(&mut self, g: Duration) {
        let pause = madsim::rand::thread_rng().gen_range(1..30);
        self.step = Step::Idle {
            at: g + Duration::from_millis(pause),
        };
        lock_view(&self.shared, self.k).working = false;
    }

    /// The workload's next move, when one is due.
    async fn user_step(&mut self, g: Duration) {
        match self.step.clone() {
            Step::Idle { at } if g >= at => {
                if self.session.session_id().is_none() {
                    return;
                }
                self.start_operation(g);
            }
            Step::Holding {
                lock,
                token,
                until,
                fenced,
            } if g >= until => {
                if fenced {
                    // No check of the lease here: this is the moment a GC
                    // pause makes stale. The resource's token check is what
                    // protects it.
                    write_resource(&self.shared, &lock, token, self.id);
                    lock_view(&self.shared, self.k).working = false;
                    self.data_seq += 1;
                    let mut data = format!("c{}-{}-t{token};", self.k, self.data_seq).into_bytes();
                    if self.shared.tight_limits {
                        // From half the largest entry to a little over it.
                        let max = TightLimits::ENTRY_BYTES_MAX;
                        let len = madsim::rand::thread_rng().gen_range(max / 2..max + 1024);
                        data.resize(len, b'.');
                    }
                    let bytes = data.len();
                    let file = lock.clone();
                    self.call(
                        g,
                        Call::Append { file, token, data },
                        What::Append { lock, token, bytes },
                    );
                } else {
                    self.call(
                        g,
                        Call::Release {
                            lock: lock.clone(),
                            token,
                        },
                        What::Release,
                    );
                }
            }
            _ => return,
        }
        self.run_inputs().await;
    }

    fn start_operation(&mut self, g: Duration) {
        let mut rng = madsim::rand::thread_rng();
        let wait = Some(Duration::from_millis(rng.gen_range(300..3000)));
        let roll = rng.gen_range(0..100);
        if roll < 35 {
            let lock = FENCED_LOCKS[rng.gen_range(0..FENCED_LOCKS.len())].to_string();
            let call = Call::Acquire {
                lock: lock.clone(),
                mode: Mode::Exclusive,
                wait,
            };
            self.call(g, call, What::Fenced { lock });
        } else if roll < 55 {
            let (lock, mode) = match rng.gen_range(0..3) {
                0 => ("rw", Mode::Exclusive),
                1 => ("rw", Mode::Shared),
                _ => ("sem", Mode::Semaphore(2)),
            };
            let call = Call::Acquire {
                lock: lock.into(),
                mode,
                wait,
            };
            self.call(g, call, What::Hold { lock: lock.into() });
        } else {
            self.lin_operation(g, &mut rng);
        }
    }

    fn lin_operation(&mut self, g: Duration, rng: &mut impl Rng) {
        let Some(session) = self.session.session_id() else {
            return;
        };
        let locks = crate::shared::LIN_TRY_LOCKS;
        let lock = locks[rng.gen_range(0..locks.len())].to_string();
        let (call, op) = match (rng.gen_range(0..10), self.lin_held.get(&lock)) {
            (0..=3, Some(&token)) => (
                Call::Release {
                    lock: lock.clone(),
                    token,
                },
                lin::Op::Release { session, token },
            ),
            (0..=5, _) => {
                let mode = if rng.gen_bool(0.5) {
                    Mode::Exclusive
                } else {
                    Mode::Shared
                };
                let lin_mode = match mode {
                    Mode::Exclusive => lin::Mode::Exclusive,
                    _ => lin::Mode::Shared,
                };
                (
                    Call::Acquire {
                        lock: lock.clone(),
                        mode,
                        wait: None,
                    },
                    lin::Op::Acquire {
                        session,
                        mode: lin_mode,
                    },
                )
            }
            (6, _) if rng.gen_bool(0.2) => (Call::Close, lin::Op::Close { session }),
            _ => (
                Call::Query(Query::Lock { name: lock.clone() }),
                lin::Op::Query,
            ),
        };
        let event = lin::Event {
            lock,
            op,
            invoked: ns(g),
            completed: 0,
            outcome: lin::Outcome::Unknown,
        };
        self.call(g, call, What::Lin { event });
    }

    fn on_done(&mut self, id: CallId, result: Result<Done, CallError>) {
        let g = self.shared.elapsed();
        let Step::Calling {
            id: expected,
            what,
            invoked,
        } = self.step.clone()
        else {
            return;
        };
        if id != expected {
            return;
        }
        if crate::trace::on() {
            // Every call's outcome: grants, releases, appends, queries.
            let call = format!("{what:?}");
            let outcome = format!("{result:?}");
            let mut checker = self.checker();
            checker.now = g;
            checker.trace_event(
                self.id,
                "client_call",
                &[
                    ("call_id", crate::trace::V::N(id)),
                    ("invoked_us", crate::trace::V::N(invoked.as_micros() as u64)),
                    (
                        "call",
                        crate::trace::V::S(&call.chars().take(200).collect::<String>()),
                    ),
                    (
                        "result",
                        crate::trace::V::S(&outcome.chars().take(200).collect::<String>()),
                    ),
                ],
            );
        }
        let granted = matches!(result, Ok(Done::Granted { .. }));
        if let (Ok(Done::Granted { token, .. }), Some((lock, mode)), Some(session)) =
            (&result, self.acquiring.take(), self.session.session_id())
        {
            let believed = match mode {
                Mode::Exclusive => crate::checker::Believed::Exclusive,
                Mode::Shared => crate::checker::Believed::Shared,
                Mode::Semaphore(n) => crate::checker::Believed::Semaphore(n),
            };
            let mut checker = self.checker();
            checker.now = g;
            checker.on_belief(self.id, *token, session, &lock, believed, *token);
        }
        self.checker()
            .locks
            .waiters
            .on_done(self.id, invoked, granted);
        let mut rng = madsim::rand::thread_rng();
        match (what, result) {
            (What::Fenced { lock }, Ok(Done::Granted { token, .. })) => {
                // Check the lease, then work a while and write.
                let now = self.clock().local(g);
                if self.session.holds(&lock, now) == Some(token) {
                    lock_view(&self.shared, self.k).working = true;
                    self.step = Step::Holding {
                        lock,
                        token,
                        until: g + Duration::from_millis(rng.gen_range(5..150)),
                        fenced: true,
                    };
                } else {
                    self.set_idle(g);
                }
            }
            (What::Hold { lock }, Ok(Done::Granted { token, .. })) => {
                self.step = Step::Holding {
                    lock,
                    token,
                    until: g + Duration::from_millis(rng.gen_range(5..100)),
                    fenced: false,
                };
            }
            (What::Append { lock, token, bytes }, result) => {
                if result.is_ok() && bytes >= TightLimits::ENTRY_BYTES_MAX / 2 {
                    self.checker().stats.limits.large_appends += 1;
                }
                self.step = Step::Holding {
                    lock,
                    token,
                    until: g,
                    fenced: false,
                };
            }
            (What::Lin { mut event }, result) => {
                event.completed = ns(g);
                event.outcome = self.lin_outcome(&event, result);
                // A finished close needs a new session.
                if matches!(event.op, lin::Op::Close { .. }) && event.outcome == lin::Outcome::Done
                {
                    self.restart_at = Some(g + Duration::from_millis(50));
                }
                let lin_locks = &self.shared.lin_locks;
                lock(&self.shared.checker)
                    .locks
                    .history
                    .completed((self.id, id), event, lin_locks);
                self.set_idle(g);
            }
            _ => self.set_idle(g),
        }
    }

    fn lin_outcome(&mut self, event: &lin::Event, result: Result<Done, CallError>) -> lin::Outcome {
        use lin::Outcome as O;
        match (&event.op, result) {
            (lin::Op::Acquire { .. }, Ok(Done::Granted { token, .. })) => {
                self.lin_held.insert(event.lock.clone(), token);
                O::Granted(token)
            }
            (lin::Op::Acquire { .. }, Err(CallError::Lock(LockError::Busy))) => O::Busy,
            (lin::Op::Acquire { .. }, Err(CallError::Lock(LockError::LimitMismatch { .. }))) => {
                O::LimitMismatch
            }
            (lin::Op::Acquire { .. }, Err(CallError::Lock(LockError::ModeConflict { .. }))) => {
                O::ModeConflict
            }
            (lin::Op::Release { .. }, Ok(Done::Released)) => {
                self.lin_held.remove(&event.lock);
                O::Released
            }
            (lin::Op::Release { .. }, Err(CallError::Lock(LockError::NotHolder))) => O::NotHolder,
            (lin::Op::Query, Ok(Done::Answer(QueryAnswer::Lock(info)))) => {
                crate::shared::holders_seen(&info)
            }
            (lin::Op::Close { .. }, Ok(Done::Closed)) => {
                self.lin_held.clear();
                O::Done
            }
            // Lost with the session, or any other failure: the operation
            // may or may not have happened.
            _ => O::Unknown,
        }
    }
}
