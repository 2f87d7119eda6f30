//! A simulated user of the Rust client library: `raftlock::client::Client`,
//! `Guard`, `lost()` and cancel-on-drop, the same code production runs,
//! over the simulator's network (`SimTransport`) and on the client's own
//! skewed, drifting clock. It takes locks in every mode, shares one
//! `Client` between two tasks, drops waits, does fenced writes, and tells
//! the client-side checker (`checker/beliefs.rs`) what it believes.

use crate::checker::Believed;
use crate::cluster::SimFrame;
use crate::shared::{
    holders_seen, lock, write_resource, LibraryView, Shared, LIN_TRY_LOCKS, LIN_WAIT_LOCK,
};
use futures::channel::oneshot;
use madsim::net::Endpoint;
use raftlock::actor::NodeId;
use raftlock::client::{Client, ClientError, Clock, Guard, Reply, Transport};
use raftlock::linearizability as lin;
use raftlock::lock::{LockError, Mode, Query, QueryAnswer};
use raftlock::net::{decode_frame, encode_frame};
use raftlock::session::CallError;
use raftlock::session::{NodeReply, SessionConfig, ToNode};
use rand::Rng;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TAG: u64 = 1;
/// Library clients' clock ids start here (session clients' at 100).
pub const LIBRARY_ID_BASE: u64 = 200;
/// How long a transport call waits for its reply before it is presumed
/// lost (the session actor has retried by then).
const REPLY_TIMEOUT_MS: u64 = 2_000;
/// How often a holder looks at its guard and its lease.
const HOLD_CHECK_MS: u64 = 10;
/// How long (on the client's clock) a guard may go unnoticed as lost after
/// its client could see its lease had ended: a few driver steps.
pub const LOST_NOTICE_MS: u64 = 50;
/// Locks library clients use.
const LIB_EXCLUSIVE: &str = "lib-x";
const LIB_RW: &str = "lib-rw";
const LIB_SEM: &str = "lib-sem";
const LIB_FENCED: &str = "res-lib";

pub fn library_addr(k: u64) -> SocketAddr {
    SocketAddr::from(([10, 0, 3, k as u8], 9000))
}

type Waiting = Arc<Mutex<BTreeMap<u64, oneshot::Sender<NodeReply>>>>;

/// Requests to simulated nodes, replies matched by frame id.
#[derive(Clone)]
struct SimTransport {
    ep: Arc<Endpoint>,
    /// The user's own credential (`Authorization` value), sent with every
    /// call as production's transport sends it.
    credential: String,
    addrs: BTreeMap<NodeId, SocketAddr>,
    next: Arc<AtomicU64>,
    waiting: Waiting,
}

impl SimTransport {
    fn waiting(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, oneshot::Sender<NodeReply>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Routes replies to the calls waiting for them.
    async fn recv_loop(self) {
        while let Ok((payload, _)) = self.ep.recv_from_raw(TAG).await {
            let Ok(bytes) = payload.downcast::<Vec<u8>>() else {
                continue;
            };
            let Ok(Some((SimFrame::Answer { id, result }, _))) = decode_frame::<SimFrame>(&bytes)
            else {
                continue;
            };
            // What production's native endpoint tells it.
            let reply = raftlock::gateway::node_reply(result);
            if let Some(tx) = self.waiting().remove(&id) {
                let _ = tx.send(reply);
            }
        }
    }
}

impl Transport for SimTransport {
    fn call(&self, to: NodeId, msg: ToNode) -> Reply {
        let Some(&addr) = self.addrs.get(&to) else {
            return Box::pin(async { NodeReply::Unavailable });
        };
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let frame = SimFrame::Call {
            id,
            credential: Some(self.credential.clone()),
            request: msg.into(),
        };
        let (tx, rx) = oneshot::channel();
        self.waiting().insert(id, tx);
        let this = self.clone();
        Box::pin(async move {
            if let Ok(bytes) = encode_frame(&frame) {
                let _ = this.ep.send_to_raw(addr, TAG, Box::new(bytes)).await;
            }
            let limit = Duration::from_millis(REPLY_TIMEOUT_MS);
            match madsim::time::timeout(limit, rx).await {
                Ok(Ok(reply)) => reply,
                _ => {
                    // Given up: production's transport drops the
                    // connection, which ends the call on the node.
                    this.waiting().remove(&id);
                    if let Ok(bytes) = encode_frame(&SimFrame::Gone { id }) {
                        let _ = this.ep.send_to_raw(addr, TAG, Box::new(bytes)).await;
                    }
                    NodeReply::Unavailable
                }
            }
        })
    }
}

/// One library user: connects, then runs its workload forever.
pub async fn run_library_client(k: u64, shared: Arc<Shared>) {
    let id = LIBRARY_ID_BASE + k;
    let ep = Arc::new(
        Endpoint::bind(library_addr(k))
            .await
            .expect("bind library client endpoint"),
    );
    let name = format!("library{k}");
    let Some(bearer) = crate::credentials::enroll(&shared, library_addr(k).ip(), &name).await
    else {
        return;
    };
    let transport = SimTransport {
        ep,
        credential: crate::shared::authorization(&bearer),
        addrs: shared.addrs.clone(),
        next: Arc::new(AtomicU64::new(0)),
        waiting: Arc::new(Mutex::new(BTreeMap::new())),
    };
    madsim::task::spawn(transport.clone().recv_loop());
    let nodes: Vec<NodeId> = shared.addrs.keys().copied().collect();
    loop {
        let clock: Clock = {
            let shared = shared.clone();
            Box::new(move || lock(&shared.clocks)[&id].local(shared.elapsed()))
        };
        let mut config = SessionConfig::new(
            nodes.clone(),
            Duration::from_millis(crate::lock_client::SIM_TTL_MS),
        );
        config.drift_ppm = shared.lock_config.drift_ppm;
        config.request_timeout = Duration::from_millis(300);
        config.poll_interval = Duration::from_millis(300);
        let started = Client::start_buggy(
            Arc::new(transport.clone()),
            config,
            clock,
            madsim::rand::random(),
            shared.client_bugs,
        )
        .await;
        let Ok(client) = started else {
            madsim::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let user = User {
            id,
            k,
            shared: shared.clone(),
            client,
        };
        madsim::task::spawn(report_leases(user.clone()));
        user.work().await;
    }
}

#[derive(Clone)]
struct User {
    id: u64,
    k: u64,
    shared: Arc<Shared>,
    client: Client,
}

/// Tells the checker until when (in real time) the client trusts each of
/// its leases.
async fn report_leases(user: User) {
    let mut leases = user.client.lease_watch();
    loop {
        if let Some(lease) = *leases.borrow_and_update() {
            let g = user.shared.elapsed();
            let clock = lock(&user.shared.clocks)[&user.id].clone();
            let real = g + clock.global_until(g, lease.until);
            lock(&user.shared.checker)
                .locks
                .beliefs
                .on_trusted_until(user.id, lease.session, real);
        }
        if leases.changed().await.is_err() {
            return;
        }
    }
}

impl User {
    fn local_now(&self) -> raftlock::actor::Instant {
        lock(&self.shared.clocks)[&self.id].local(self.shared.elapsed())
    }

    fn view(&self) -> std::sync::MutexGuard<'_, LibraryView> {
        lock(&self.shared.library_views[self.k as usize])
    }

    async fn work(&self) {
        let mut next_belief = 0u64;
        loop {
            let (roll, pause) = {
                let mut rng = madsim::rand::thread_rng();
                (rng.gen_range(0..100), rng.gen_range(1..30))
            };
            madsim::time::sleep(Duration::from_millis(pause)).await;
            next_belief += 1;
            match roll {
                0..=29 => self.hold(LIB_EXCLUSIVE, Mode::Exclusive, next_belief).await,
                30..=39 => {
                    // Two tasks of one client on one lock: they take turns.
                    next_belief += 1;
                    let sibling = self.clone();
                    let b = next_belief;
                    let task = madsim::task::spawn(async move {
                        sibling.hold(LIB_EXCLUSIVE, Mode::Exclusive, b).await
                    });
                    self.hold(LIB_EXCLUSIVE, Mode::Exclusive, next_belief - 1)
                        .await;
                    let _ = task.await;
                }
                40..=54 => {
                    let mode = if madsim::rand::thread_rng().gen_bool(0.5) {
                        Mode::Shared
                    } else {
                        Mode::Exclusive
                    };
                    self.hold(LIB_RW, mode, next_belief).await;
                }
                55..=69 => self.hold(LIB_SEM, Mode::Semaphore(2), next_belief).await,
                70..=79 => self.abandon().await,
                80..=89 => self.hold(LIB_FENCED, Mode::Exclusive, next_belief).await,
                _ => self.lin_round(next_belief).await,
            }
        }
    }

    /// Waits for `name`, believes it while held, and lets go (a release or
    /// a drop); a fenced lock's holder writes to the resource with its
    /// token, without checking its lease again first.
    async fn hold(&self, name: &str, mode: Mode, belief: u64) {
        let (wait_ms, hold_ms, drop_it) = {
            let mut rng = madsim::rand::thread_rng();
            (
                rng.gen_range(300..3000),
                rng.gen_range(5..120),
                rng.gen_bool(0.3),
            )
        };
        let builder = self.client.lock(name).wait(Duration::from_millis(wait_ms));
        let builder = match mode {
            Mode::Shared => builder.shared(),
            Mode::Semaphore(n) => builder.semaphore(n),
            Mode::Exclusive => builder,
        };
        self.view().waiting = true;
        let acquired = builder.acquire().await;
        self.view().waiting = false;
        let Ok(guard) = acquired else {
            return;
        };
        if guard.is_lost() {
            // A grant that came after the lease ended: born lost, never
            // believed.
            lock(&self.shared.checker).locks.beliefs.guards_told_lost += 1;
            return;
        }
        let believed = match mode {
            Mode::Exclusive => Believed::Exclusive,
            Mode::Shared => Believed::Shared,
            Mode::Semaphore(n) => Believed::Semaphore(n),
        };
        {
            let mut checker = lock(&self.shared.checker);
            checker.now = self.shared.elapsed();
            checker.on_belief(
                self.id,
                belief,
                guard.session(),
                name,
                believed,
                guard.token(),
            );
        }
        let until = self.shared.elapsed() + Duration::from_millis(hold_ms);
        while self.shared.elapsed() < until {
            madsim::time::sleep(Duration::from_millis(HOLD_CHECK_MS)).await;
            if guard.is_lost() {
                // The application learns in time: it drops the work.
                let mut checker = lock(&self.shared.checker);
                checker.locks.beliefs.guards_told_lost += 1;
                checker.locks.beliefs.on_unbelieve(self.id, belief);
                return;
            }
            if self.lease_ended(&guard) {
                self.check_lost_noticed(&guard).await;
                lock(&self.shared.checker)
                    .locks
                    .beliefs
                    .on_unbelieve(self.id, belief);
                return;
            }
        }
        if self.lease_ended(&guard) {
            self.check_lost_noticed(&guard).await;
        }
        if name == LIB_FENCED {
            write_resource(&self.shared, name, guard.token(), self.id);
        }
        lock(&self.shared.checker)
            .locks
            .beliefs
            .on_unbelieve(self.id, belief);
        if drop_it {
            drop(guard);
        } else {
            let _ = guard.release().await;
        }
    }

    /// Whether the lease behind `guard` is over, as the client can see it:
    /// its session is no longer the open one, or its end has passed on the
    /// client's clock.
    fn lease_ended(&self, guard: &Guard) -> bool {
        match self.client.lease() {
            Some(l) if l.session == guard.session() => self.local_now() >= l.until,
            _ => true,
        }
    }

    /// A guard whose lease has ended must be told so soon: `lost()` must
    /// fire within `LOST_NOTICE_MS` of the moment its client could see the
    /// lease was over (a few steps of the client's driver).
    async fn check_lost_noticed(&self, guard: &Guard) {
        if guard.is_lost() {
            return;
        }
        let _ = madsim::time::timeout(Duration::from_millis(LOST_NOTICE_MS), guard.lost()).await;
        if guard.is_lost() {
            lock(&self.shared.checker).locks.beliefs.guards_told_lost += 1;
            return;
        }
        let mut checker = lock(&self.shared.checker);
        checker.now = self.shared.elapsed();
        checker.fail_beliefs(format!(
            "client {}: the lease of session {} behind its guard of {} (token {}) ended, and lost() has not fired {} ms later",
            self.id,
            guard.session(),
            guard.name(),
            guard.token(),
            LOST_NOTICE_MS
        ));
    }

    /// A round on the locks whose history is checked for linearizability:
    /// a try-lock on a lock the session clients and HTTP users also
    /// try-lock, or a wait on the lock only waits take; maybe a query; a
    /// release, or on the waited lock a drop (its release is never seen).
    async fn lin_round(&self, round: u64) {
        let (wait, lock_name, mode, hold_ms, query, drop_it) = {
            let mut rng = madsim::rand::thread_rng();
            let wait = rng.gen_bool(0.4);
            let lock_name = match wait {
                true => LIN_WAIT_LOCK,
                false => LIN_TRY_LOCKS[rng.gen_range(0..LIN_TRY_LOCKS.len())],
            };
            let mode = match rng.gen_range(0..3) {
                0 => Mode::Exclusive,
                1 => Mode::Shared,
                _ => Mode::Semaphore(2),
            };
            let wait = wait.then(|| Duration::from_millis(rng.gen_range(100..1500)));
            (
                wait,
                lock_name,
                mode,
                rng.gen_range(1..60),
                rng.gen_bool(0.3),
                wait.is_some() && rng.gen_bool(0.3),
            )
        };
        let Some(session) = self.client.session_id() else {
            return;
        };
        // Call keys of this round: (client, round * 4 + call).
        let key = |call: u64| (self.id, round * 4 + call);
        let op = lin::Op::Acquire {
            session,
            mode: lin_mode(mode),
        };
        let event = self.shared.lin_invoke(key(0), lock_name, op);
        let builder = self.client.lock(lock_name);
        let builder = match wait {
            Some(d) => builder.wait(d),
            None => builder,
        };
        let builder = match mode {
            Mode::Shared => builder.shared(),
            Mode::Semaphore(n) => builder.semaphore(n),
            Mode::Exclusive => builder,
        };
        let guard = match builder.acquire().await {
            Ok(guard) => {
                // Granted in the session it was asked in, or in the one
                // the client opened after that one ended.
                let mut event = event;
                event.op = lin::Op::Acquire {
                    session: guard.session(),
                    mode: lin_mode(mode),
                };
                let outcome = lin::Outcome::Granted(guard.token());
                self.shared.lin_complete(key(0), event, outcome);
                guard
            }
            Err(e) => {
                let definite = match e {
                    ClientError::Call(CallError::Lock(LockError::Busy)) if wait.is_none() => {
                        Some(lin::Outcome::Busy)
                    }
                    ClientError::Call(CallError::Lock(LockError::LimitMismatch { .. })) => {
                        Some(lin::Outcome::LimitMismatch)
                    }
                    ClientError::Call(CallError::Lock(LockError::ModeConflict { .. })) => {
                        Some(lin::Outcome::ModeConflict)
                    }
                    _ => None,
                };
                // A refusal is this session's only if the client was in it
                // throughout (a client whose lease ran out asks in a new
                // one).
                let definite = definite.filter(|_| self.client.session_id() == Some(session));
                match definite {
                    Some(outcome) => self.shared.lin_complete(key(0), event, outcome),
                    None => {
                        // Any failure: it may have been granted, in this
                        // session or in the next one. (A timed-out wait was
                        // cancelled in the cluster, but a grant racing the
                        // cancel wins, so nothing is more certain.)
                        let later = self.client.session_id().filter(|&s| s != session);
                        let mut again = event.clone();
                        self.shared
                            .lin_complete(key(0), event, lin::Outcome::Unknown);
                        if let Some(later) = later {
                            again.op = lin::Op::Acquire {
                                session: later,
                                mode: lin_mode(mode),
                            };
                            self.shared
                                .lin_complete(key(3), again, lin::Outcome::Unknown);
                        }
                    }
                }
                return;
            }
        };
        if query {
            let event = self.shared.lin_invoke(key(1), lock_name, lin::Op::Query);
            let asked = Query::Lock {
                name: lock_name.to_string(),
            };
            let outcome = match self.client.query(asked).await {
                Ok(QueryAnswer::Lock(info)) => holders_seen(&info),
                _ => lin::Outcome::Unknown,
            };
            self.shared.lin_complete(key(1), event, outcome);
        }
        madsim::time::sleep(Duration::from_millis(hold_ms)).await;
        let op = lin::Op::Release {
            session: guard.session(),
            token: guard.token(),
        };
        let event = self.shared.lin_invoke(key(2), lock_name, op);
        if drop_it {
            // Released in the background: the answer is never seen.
            drop(guard);
            return;
        }
        // The client releases in the session it is in: a refusal is the
        // guard's session's only if that was it throughout.
        let held_in = guard.session();
        let before = self.client.session_id();
        let outcome = match guard.release().await {
            Ok(()) => lin::Outcome::Released,
            Err(ClientError::Call(CallError::Lock(LockError::NotHolder)))
                if before == Some(held_in) && self.client.session_id() == Some(held_in) =>
            {
                lin::Outcome::NotHolder
            }
            Err(_) => lin::Outcome::Unknown,
        };
        self.shared.lin_complete(key(2), event, outcome);
    }

    /// An acquire whose caller goes away: its future is dropped while it
    /// waits, which must cancel the wait in the cluster.
    async fn abandon(&self) {
        let after = madsim::rand::thread_rng().gen_range(10..300);
        let wait = self
            .client
            .lock(LIB_EXCLUSIVE)
            .wait(Duration::from_secs(10))
            .acquire();
        if let Ok(Ok(guard)) = madsim::time::timeout(Duration::from_millis(after), wait).await {
            // Granted in time after all: let it go at once.
            drop(guard);
        }
    }
}

pub fn lin_mode(mode: Mode) -> lin::Mode {
    match mode {
        Mode::Exclusive => lin::Mode::Exclusive,
        Mode::Shared => lin::Mode::Shared,
        Mode::Semaphore(n) => lin::Mode::Semaphore(n),
    }
}
