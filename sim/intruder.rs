//! A hostile client with a valid credential of its own that may only take
//! and read locks under `intruder/`. It aims at what other clients hold,
//! with their real session ids and tokens (it reads the latest grants: a
//! perfect guesser), through every kind of call the doors take: releases,
//! renewals, closes and acquires in their sessions, waits for their
//! grants, reads of their sessions, responses and locks, calls with no, a
//! malformed or a forged credential. It also revokes credentials while
//! they are in use and checks they stop working. Whatever it gets that it
//! should not is an `access-control` violation.

use crate::checker::Checker;
use crate::cluster::{answer_to, send, SimFrame};
use crate::credentials::AdminLine;
use crate::shared::{authorization, lock, random_bearer, Shared};
use madsim::net::Endpoint;
use madsim::time::{sleep, timeout};
use raftlock::credential::Bearer;
use raftlock::gateway::{AcquireArgs, Answer, GatewayError, Request, SessionChoice};
use raftlock::lock::auth::{Allow, Policy, Rule};
use raftlock::lock::{encode, Command, Grant, Mode, Op, Query, QueryAnswer, Response};
use raftlock::session::WaitFor;
use rand::Rng;
use std::net::SocketAddr;
use std::time::Duration;

/// What the intruder's credentials allow: locks under this prefix only.
pub const INTRUDER_PREFIX: &str = "intruder/";
/// How long it waits for an answer before it leaves.
const ANSWER_MS: u64 = 1_500;
/// Pause between two attacks, ms.
const PAUSE_MS: std::ops::Range<u64> = 20..150;
/// One attack in this many is a revocation while in use.
const REVOKE_ONE_IN: u32 = 20;

pub fn intruder_addr() -> SocketAddr {
    SocketAddr::from(([10, 0, 5, 1], 9000))
}

pub fn is_intruder(addr: SocketAddr) -> bool {
    addr.ip() == intruder_addr().ip()
}

fn own_prefix() -> Policy {
    Policy {
        admin: false,
        rules: vec![Rule {
            prefix: INTRUDER_PREFIX.to_string(),
            allow: Allow {
                acquire: true,
                status: true,
                append: true,
                read: true,
            },
        }],
    }
}

struct Intruder {
    shared: std::sync::Arc<Shared>,
    ep: Endpoint,
    admin: AdminLine,
    own: Bearer,
    next_call: u64,
}

pub async fn run_intruder(shared: std::sync::Arc<Shared>) {
    let ep = Endpoint::bind(intruder_addr())
        .await
        .expect("bind intruder endpoint");
    let mut admin = AdminLine::bind(intruder_addr().ip()).await;
    let Some(own) = admin.create(&shared, "intruder", own_prefix()).await else {
        return;
    };
    let mut me = Intruder {
        shared,
        ep,
        admin,
        own,
        next_call: 0,
    };
    loop {
        let pause = madsim::rand::thread_rng().gen_range(PAUSE_MS);
        sleep(Duration::from_millis(pause)).await;
        if madsim::rand::thread_rng().gen_ratio(1, REVOKE_ONE_IN) {
            me.revoke_in_use().await;
        } else {
            me.attack().await;
        }
    }
}

impl Intruder {
    /// A grant another client holds (or held a moment ago).
    fn victim(&self) -> Option<Grant> {
        let recent = lock(&self.shared.recent_grants);
        let n = recent.len();
        (n > 0)
            .then(|| recent[madsim::rand::thread_rng().gen_range(0..n)].clone())
            .filter(|g| !g.lock.starts_with(INTRUDER_PREFIX))
    }

    /// One call against a victim's session or lock, with its own credential
    /// (or none, or a forged one).
    async fn attack(&mut self) {
        let Some(v) = self.victim() else { return };
        let mut rng = madsim::rand::thread_rng();
        let mine = format!("{INTRUDER_PREFIX}x");
        let (what, request) = match rng.gen_range(0..10) {
            0 => (
                "release another's lock with its token",
                propose(Command::Unsequenced {
                    session: v.session,
                    op: Op::Release {
                        lock: v.lock.clone(),
                        token: v.token,
                    },
                }),
            ),
            1 => (
                "renew another's session",
                propose(Command::Unsequenced {
                    session: v.session,
                    op: Op::KeepAlive,
                }),
            ),
            2 => (
                "close another's session",
                propose(Command::Request(raftlock::lock::Request {
                    session: v.session,
                    seq: rng.gen_range(1..4),
                    acked: 0,
                    op: Op::Close,
                })),
            ),
            3 => (
                "acquire its own lock in another's session",
                Request::Acquire(AcquireArgs {
                    lock: mine,
                    mode: Mode::Exclusive,
                    wait_ms: 0,
                    session: SessionChoice::Existing(v.session),
                }),
            ),
            4 => (
                "take a lock outside its prefix",
                Request::Acquire(AcquireArgs {
                    lock: v.lock.clone(),
                    mode: v.mode,
                    wait_ms: 0,
                    session: SessionChoice::OneLock {
                        ttl_ms: crate::lock_client::SIM_TTL_MS,
                        nonce: rng.gen(),
                    },
                }),
            ),
            5 => (
                "read a lock outside its prefix",
                read(Query::Lock {
                    name: v.lock.clone(),
                }),
            ),
            6 => (
                "read another's session",
                read(Query::Session { session: v.session }),
            ),
            7 => (
                "read another's kept response",
                read(Query::Response {
                    session: v.session,
                    seq: v.seq,
                }),
            ),
            8 => (
                "wait for another's grant",
                Request::Wait(WaitFor {
                    session: v.session,
                    seq: v.seq,
                    lock: v.lock.clone(),
                    timeout_ms: 0,
                }),
            ),
            _ => return self.without_own_credential(&v).await,
        };
        let credential = Some(authorization(&self.own));
        let reads = matches!(request, Request::Read(_));
        let answer = self.call(credential, request).await;
        self.judge(what, reads, answer);
    }

    /// The victim's lock through a forged, malformed or absent credential.
    async fn without_own_credential(&mut self, v: &Grant) {
        let forged = Bearer::from_parts(self.shared.admin.id, [7; 32]);
        let credential = match madsim::rand::thread_rng().gen_range(0..4) {
            0 => None,
            1 => Some("Bearer rlk_not-a-credential".to_string()),
            2 => Some(authorization(&forged)),
            _ => Some(authorization(&random_bearer())),
        };
        let request = propose(Command::Unsequenced {
            session: v.session,
            op: Op::Release {
                lock: v.lock.clone(),
                token: v.token,
            },
        });
        let answer = self.call(credential, request).await;
        self.judge(
            "release another's lock without a valid credential",
            false,
            answer,
        );
    }

    /// Takes a lock with a fresh credential, has the admin revoke it, then
    /// uses it again: from the revocation's answer on, every call with it
    /// must be refused, on every node.
    async fn revoke_in_use(&mut self) {
        let shared = self.shared.clone();
        let Some(doomed) = self.admin.create(&shared, "doomed", own_prefix()).await else {
            return;
        };
        let credential = Some(authorization(&doomed));
        let mut rng = madsim::rand::thread_rng();
        let ttl_ms = crate::lock_client::SIM_TTL_MS;
        let acquire = |lock: &str, nonce| {
            Request::Acquire(AcquireArgs {
                lock: format!("{INTRUDER_PREFIX}{lock}"),
                mode: Mode::Exclusive,
                wait_ms: 0,
                session: SessionChoice::OneLock { ttl_ms, nonce },
            })
        };
        let before = self.call(credential.clone(), acquire("r", rng.gen())).await;
        let held = match before {
            Some(Ok(Answer::Acquired(a))) => Some(a.session),
            _ => None,
        };
        if !self.admin.revoke(&shared, doomed.id).await {
            return;
        }
        lock(&shared.checker).access.revocations += 1;
        let after = self
            .call(credential.clone(), acquire("r2", rng.gen()))
            .await;
        self.judge("acquire with a revoked credential", false, after);
        let status = read(Query::Lock {
            name: format!("{INTRUDER_PREFIX}r"),
        });
        let after = self.call(credential.clone(), status).await;
        self.judge("read with a revoked credential", true, after);
        if let Some(session) = held {
            let renew = propose(Command::Unsequenced {
                session,
                op: Op::KeepAlive,
            });
            let after = self.call(credential, renew).await;
            self.judge("renew with a revoked credential", false, after);
        }
    }

    /// Records whether `answer` (to a read, if `reads`) gave what `what`
    /// must never get.
    fn judge(&self, what: &str, reads: bool, answer: Option<Result<Answer, GatewayError>>) {
        let got = answer.as_ref().and_then(|a| leak(reads, a));
        let mut checker: std::sync::MutexGuard<'_, Checker> = lock(&self.shared.checker);
        checker.now = self.shared.elapsed();
        if crate::trace::on() {
            use crate::trace::V;
            let result = format!("{answer:?}");
            let fields = [
                ("call", V::S(what)),
                (
                    "result",
                    V::S(&result.chars().take(200).collect::<String>()),
                ),
            ];
            checker.trace_event(0, "intrusion", &fields);
        }
        checker.on_intrusion(what, got);
    }

    /// Sends a call to a random node; its answer, or None if none came in
    /// `ANSWER_MS` (then it leaves, as a client closing its connection).
    async fn call(
        &mut self,
        credential: Option<String>,
        request: Request,
    ) -> Option<Result<Answer, GatewayError>> {
        self.next_call += 1;
        let id = self.next_call;
        let nodes: Vec<SocketAddr> = self.shared.addrs.values().copied().collect();
        let to = nodes[madsim::rand::thread_rng().gen_range(0..nodes.len())];
        let frame = SimFrame::Call {
            id,
            credential,
            request,
        };
        send(&self.ep, to, &frame).await;
        let answer = answer_to(&self.ep, id);
        match timeout(Duration::from_millis(ANSWER_MS), answer).await {
            Ok(answer) => answer,
            Err(_) => {
                send(&self.ep, to, &SimFrame::Gone { id }).await;
                None
            }
        }
    }
}

fn propose(command: Command) -> Request {
    Request::Propose(encode(&command))
}

fn read(query: Query) -> Request {
    Request::Read(encode(&query))
}

/// What an answer (to a read, if `reads`) gave that the intruder must
/// never get: a grant, a successful command in another's session, or
/// another's data.
fn leak(reads: bool, answer: &Result<Answer, GatewayError>) -> Option<String> {
    match answer.as_ref().ok()? {
        Answer::Acquired(a) => Some(format!("granted {a:?}")),
        Answer::Waited(Some(Ok(reply))) => Some(format!("told {reply:?}")),
        Answer::Waited(_) => None,
        Answer::Output(applied) if !reads => {
            match postcard::from_bytes::<Response>(&applied.output).ok()? {
                Ok(reply) => Some(format!("command answered {reply:?}")),
                Err(_) => None,
            }
        }
        Answer::Output(applied) => {
            match postcard::from_bytes::<QueryAnswer>(&applied.output).ok()? {
                QueryAnswer::Lock(info) => Some(format!("lock status {info:?}")),
                QueryAnswer::Session(Some(s)) => Some(format!("session {s:?}")),
                QueryAnswer::Response(Some(Ok(r))) => Some(format!("response {r:?}")),
                _ => None,
            }
        }
    }
}
