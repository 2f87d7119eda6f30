//! The Rust client library: a session with a cluster, driven by the same
//! client-session actor the simulator runs (`crate::session`), over the
//! native protocol of the HTTP API (`/API/v1/native/*`, postcard bodies).
//!
//! ```no_run
//! # async fn demo() -> Result<(), raftlock::client::ClientError> {
//! use std::time::Duration;
//! let endpoints = vec!["127.0.0.1:7201".parse().unwrap()];
//! let client = raftlock::client::Client::connect(endpoints, Duration::from_secs(10)).await?;
//! println!("session {:?}", client.session_id());
//! let guard = client.lock("orders").wait(Duration::from_secs(5)).acquire().await?;
//! println!("holding orders with fencing token {}", guard.token());
//! // ... pass guard.token() to the protected resource with every write ...
//! guard.release().await?;
//! # Ok(()) }
//! ```
//!
//! - `connect` learns each endpoint's node id from the endpoint itself,
//!   starts at a random one (so many clients spread over the cluster), and
//!   returns once the session is open.
//! - Requests are numbered per session and retried with the same number,
//!   so a retry after a timeout or a leader change runs at most once. The
//!   session is kept alive in the background.
//! - A queued acquire waits for its grant with a long poll at the node
//!   (`/API/v1/native/wait`): the grant arrives as it happens.
//! - A `Client` is one session, so one holder: while one of its guards
//!   holds a lock (in any mode), another acquire of that lock through the
//!   same client waits for it locally (a try-lock fails at once with
//!   `Busy`). Two tasks never believe they hold one exclusive lock.
//! - A `Guard` releases its lock when dropped; `Guard::lost` resolves when
//!   the lease ran out (stop using the lock: its token may already be
//!   fenced off), including when the grant itself arrived too late.
//! - Dropping an `acquire()` future before it resolves cancels its wait in
//!   the cluster, and releases a grant that arrived for nobody.
//!
//! The library is one core over a `Transport` (one request, one reply) and
//! a clock: in production the HTTP transport (`http.rs`) and the process's
//! monotonic clock; in the simulator, simulated nodes over madsim's
//! network and each client's own skewed, drifting clock. Both run this
//! same code.

use crate::actor::{Instant, NodeId};
use crate::lock::{LockError, Mode, Query, QueryAnswer, SessionId, Token};
use crate::session::{
    Call, CallError, CallId, Done, Effect, Input, NodeReply, RpcId, Session, SessionConfig, ToNode,
};
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};

#[cfg(not(madsim))]
mod http;
#[cfg(not(madsim))]
mod native;
#[cfg(not(madsim))]
pub use http::{
    ConnectOptions, Door, HttpTransport, CLIENT_DISCOVER_TIMEOUT_MS, CLIENT_IDLE_CONNECTIONS_MAX,
};
#[cfg(not(madsim))]
pub use native::{
    NativeConnection, NativeTransport, CLIENT_ENDED_LEN_MAX, CLIENT_NATIVE_CONNECT_TIMEOUT_MS,
    CLIENT_NATIVE_OUTBOX_LEN_MAX, CLIENT_NATIVE_RETRY_MS, CLIENT_WATCHES_MAX,
};

/// Spawning and timers: tokio in production, madsim's in the simulator.
mod rt {
    #[cfg(madsim)]
    pub use madsim::task::spawn;
    #[cfg(madsim)]
    pub use madsim::time::{sleep, timeout};
    #[cfg(not(madsim))]
    pub use tokio::spawn;
    #[cfg(not(madsim))]
    pub use tokio::time::{sleep, timeout};

    /// Spawns `f` if a runtime is there to run it (a guard dropped after
    /// its runtime has no release to send).
    pub fn spawn_detached(f: impl std::future::Future<Output = ()> + Send + 'static) {
        #[cfg(not(madsim))]
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(f);
        }
        #[cfg(madsim)]
        {
            madsim::task::spawn(f);
        }
    }
}

/// A node's answer, on its way.
pub type Reply = Pin<Box<dyn Future<Output = NodeReply> + Send>>;

/// How the driver reaches a node: one message, one reply. A node the
/// transport does not know answers `Unavailable` at once (the session then
/// tries the next).
pub trait Transport: Send + Sync + 'static {
    fn call(&self, to: NodeId, msg: ToNode) -> Reply;

    /// Asks the nodes this transport talks to, now and later, to push
    /// `session`'s end. A transport that cannot push does nothing (the
    /// lease timer and the renewals' answers tell the session anyway).
    fn watch(&self, _session: SessionId) {}

    /// The sessions whose end a node pushed: taken once, by the driver.
    fn take_ended(&self) -> Option<mpsc::Receiver<SessionId>> {
        None
    }
}

/// The client's clock: local time, monotonic (each simulated client has its
/// own, skewed and drifting).
pub type Clock = Box<dyn Fn() -> Instant + Send>;

/// Commands queued for the session task.
pub const CLIENT_COMMANDS_LEN_MAX: usize = 1024;
/// How long a node may hold a queued acquire's wait for its grant before
/// answering "not yet" (then the client asks again at once).
pub const CLIENT_WAIT_POLL_MS: u64 = 5_000;
/// How long `connect` waits for the session to open.
pub const CLIENT_CONNECT_TIMEOUT_MS: u64 = 10_000;
/// Lock names with a local gate at once (one per lock this client holds or
/// waits for; gates nobody uses are dropped).
pub const CLIENT_LOCAL_GATES_MAX: usize = 4096;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("the client has stopped")]
    Stopped,
    #[error("no endpoints given")]
    NoEndpoints,
    #[error("no endpoint answered: {0}")]
    Unreachable(String),
    #[error("the session did not open within {CLIENT_CONNECT_TIMEOUT_MS} ms")]
    OpenTimedOut,
    #[error("no randomness for the session: {0}")]
    Entropy(String),
}

/// What the caller of a call waits for.
enum Caller {
    Plain(oneshot::Sender<Result<Done, CallError>>),
    /// An acquire: the driver hands back the token with the guard's
    /// lost-watch, made in the same step as the grant, so a lease that
    /// ended before the grant was seen is reported lost at once.
    Acquire {
        lock: String,
        tx: oneshot::Sender<Result<Granted, CallError>>,
    },
}

struct Granted {
    token: Token,
    session: SessionId,
    lost: watch::Receiver<bool>,
}

/// What the handles tell the driver task.
enum ToDriver {
    Call(CallId, Call, Caller),
    /// The caller of this call went away; the lock's gate stays shut
    /// (its permit held) until the call is over.
    Abandon(CallId, OwnedSemaphorePermit),
    /// A grant reached an acquire whose caller went away before taking it:
    /// release it, the gate shut until that is done.
    ReleaseUntaken(String, Token, OwnedSemaphorePermit),
}

/// A connection to a cluster, with one session. Cheap to clone; every
/// clone is the same session.
#[derive(Clone)]
pub struct Client {
    tx: mpsc::Sender<ToDriver>,
    session: watch::Receiver<Option<SessionId>>,
    lease: watch::Receiver<Option<Lease>>,
    next_call: Arc<AtomicU64>,
    gates: Arc<Gates>,
}

impl Client {
    /// Opens a session with `ttl` over `transport`, to the cluster of
    /// `nodes` (tried in this order), on the client's `clock`, with the
    /// session actor seeded by `seed`. Returns once the session is open.
    /// The session task runs on the current runtime.
    pub async fn start(
        transport: Arc<dyn Transport>,
        nodes: Vec<NodeId>,
        ttl: Duration,
        clock: Clock,
        seed: u64,
    ) -> Result<Client, ClientError> {
        if nodes.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let mut config = SessionConfig::new(nodes, ttl);
        config.poll_interval = Duration::from_millis(CLIENT_WAIT_POLL_MS);
        Client::start_with(transport, config, clock, seed).await
    }

    /// `start` with every session setting chosen by the caller.
    pub async fn start_with(
        transport: Arc<dyn Transport>,
        config: SessionConfig,
        clock: Clock,
        seed: u64,
    ) -> Result<Client, ClientError> {
        let driver = Driver::new(Session::new(config, seed), transport, clock);
        Client::run(driver).await
    }

    /// `start_with` for the simulator, with deliberate bugs.
    #[cfg(feature = "sim")]
    pub async fn start_buggy(
        transport: Arc<dyn Transport>,
        config: SessionConfig,
        clock: Clock,
        seed: u64,
        bugs: ClientBugs,
    ) -> Result<Client, ClientError> {
        let mut driver = Driver::new(Session::new(config, seed), transport, clock);
        driver.bugs = bugs;
        Client::run(driver).await
    }

    async fn run(mut driver: Driver) -> Result<Client, ClientError> {
        let (tx, rx) = mpsc::channel(CLIENT_COMMANDS_LEN_MAX);
        let (session_tx, mut session) = watch::channel(None);
        let (lease_tx, lease) = watch::channel(None);
        driver.session_tx = session_tx;
        driver.lease_tx = Some(lease_tx);
        rt::spawn(driver.run(rx));
        let opened = rt::timeout(
            Duration::from_millis(CLIENT_CONNECT_TIMEOUT_MS),
            session.wait_for(Option::is_some),
        )
        .await
        .map(|r| r.map(|_| ()));
        match opened {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(ClientError::Stopped),
            Err(_) => return Err(ClientError::OpenTimedOut),
        }
        Ok(Client {
            tx,
            session,
            lease,
            next_call: Arc::new(AtomicU64::new(0)),
            gates: Arc::new(Gates::default()),
        })
    }

    /// The session's id while it is open (a lost session is replaced by a
    /// new one for later calls).
    pub fn session_id(&self) -> Option<SessionId> {
        *self.session.borrow()
    }

    /// The session's lease as this client trusts it: until when (on the
    /// client's clock) its locks may be used. `None` while no session is
    /// open.
    pub fn lease(&self) -> Option<Lease> {
        *self.lease.borrow()
    }

    /// The lease, watched: changes when a renewal is acknowledged, when the
    /// session is lost, and when a new one opens.
    pub fn lease_watch(&self) -> watch::Receiver<Option<Lease>> {
        self.lease.clone()
    }

    pub fn lock(&self, name: &str) -> LockBuilder {
        LockBuilder {
            client: self.clone(),
            name: name.to_string(),
            mode: Mode::Exclusive,
            wait: None,
        }
    }

    fn call_id(&self) -> CallId {
        self.next_call.fetch_add(1, Ordering::Relaxed) + 1
    }

    async fn call(&self, call: Call) -> Result<Done, ClientError> {
        let (tx, rx) = oneshot::channel();
        let id = self.call_id();
        self.tx
            .send(ToDriver::Call(id, call, Caller::Plain(tx)))
            .await
            .map_err(|_| ClientError::Stopped)?;
        Ok(rx.await.map_err(|_| ClientError::Stopped)??)
    }

    /// A linearizable read.
    pub async fn query(&self, query: Query) -> Result<QueryAnswer, ClientError> {
        match self.call(Call::Query(query)).await? {
            Done::Answer(a) => Ok(a),
            other => Err(unexpected(other)),
        }
    }

    /// Appends to the fenced file guarded by the lock of the same name.
    pub async fn append(
        &self,
        file: &str,
        token: Token,
        data: Vec<u8>,
    ) -> Result<u64, ClientError> {
        let call = Call::Append {
            file: file.to_string(),
            token,
            data,
        };
        match self.call(call).await? {
            Done::Appended { offset } => Ok(offset),
            other => Err(unexpected(other)),
        }
    }

    /// Ends the session: every lock it holds is released.
    pub async fn close(&self) -> Result<(), ClientError> {
        self.call(Call::Close).await.map(|_| ())
    }
}

fn unexpected(done: Done) -> ClientError {
    ClientError::Call(CallError::Lock(LockError::Malformed(format!(
        "unexpected answer {done:?}"
    ))))
}

/// One gate per lock name: a client's guards of one lock take turns.
#[derive(Default)]
struct Gates {
    by_name: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Gates {
    fn gate(&self, name: &str) -> Result<Arc<Semaphore>, ClientError> {
        let mut map = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(name) && map.len() >= CLIENT_LOCAL_GATES_MAX {
            // Drop the gates nobody holds or waits at.
            map.retain(|_, g| Arc::strong_count(g) > 1 || g.available_permits() == 0);
            if map.len() >= CLIENT_LOCAL_GATES_MAX {
                return Err(ClientError::Call(CallError::TooManyCalls));
            }
        }
        Ok(map
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(1)))
            .clone())
    }
}

pub struct LockBuilder {
    client: Client,
    name: String,
    mode: Mode,
    wait: Option<Duration>,
}

impl LockBuilder {
    pub fn shared(mut self) -> Self {
        self.mode = Mode::Shared;
        self
    }

    pub fn semaphore(mut self, limit: u32) -> Self {
        self.mode = Mode::Semaphore(limit);
        self
    }

    /// Waits in the queue up to `d` (default: try once, do not wait).
    pub fn wait(mut self, d: Duration) -> Self {
        self.wait = Some(d);
        self
    }

    /// Takes the lock. Dropping this future before it resolves cancels the
    /// wait (and releases a grant nobody will see).
    pub async fn acquire(self) -> Result<Guard, ClientError> {
        let started = std::time::Instant::now();
        // Take this client's turn at the lock first: one guard at a time.
        let gate = self.client.gates.gate(&self.name)?;
        let permit = match self.wait {
            None => gate
                .try_acquire_owned()
                .map_err(|_| ClientError::Call(CallError::Lock(LockError::Busy)))?,
            Some(d) => rt::timeout(d, gate.acquire_owned())
                .await
                .map_err(|_| ClientError::Call(CallError::Timeout))?
                .map_err(|_| ClientError::Stopped)?,
        };
        let wait = self.wait.map(|d| d.saturating_sub(started.elapsed()));
        let call = Call::Acquire {
            lock: self.name.clone(),
            mode: self.mode,
            wait,
        };
        let id = self.client.call_id();
        let (tx, rx) = oneshot::channel();
        let reply = Caller::Acquire {
            lock: self.name.clone(),
            tx,
        };
        // From here, a dropped future hands the lock's gate to the driver,
        // which keeps it shut until the call is over in the cluster (and a
        // grant nobody took is released): the next guard's acquire must
        // not meet this one's grant, or its release.
        let mut abandon = Abandon {
            tx: self.client.tx.clone(),
            id,
            lock: self.name.clone(),
            permit: Some(permit),
            rx,
        };
        self.client
            .tx
            .send(ToDriver::Call(id, call, reply))
            .await
            .map_err(|_| ClientError::Stopped)?;
        let answer = (&mut abandon.rx).await;
        let permit = abandon.permit.take();
        let granted = answer.map_err(|_| ClientError::Stopped)??;
        Ok(Guard {
            client: self.client,
            name: self.name,
            token: granted.token,
            session: granted.session,
            lost: granted.lost,
            permit,
            released: false,
        })
    }
}

/// Tells the driver that an acquire's caller went away (its future was
/// dropped before it resolved).
struct Abandon {
    tx: mpsc::Sender<ToDriver>,
    id: CallId,
    lock: String,
    /// The lock's gate, while the call is this future's.
    permit: Option<OwnedSemaphorePermit>,
    rx: oneshot::Receiver<Result<Granted, CallError>>,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let command = match self.rx.try_recv() {
            // Still in the cluster: cancel it there.
            Err(oneshot::error::TryRecvError::Empty) => ToDriver::Abandon(self.id, permit),
            // Granted, but the future went away before it took the grant:
            // release it.
            Ok(Ok(granted)) => ToDriver::ReleaseUntaken(self.lock.clone(), granted.token, permit),
            // Over without a grant: nothing to undo.
            _ => return,
        };
        if let Err(mpsc::error::TrySendError::Full(command)) = self.tx.try_send(command) {
            let tx = self.tx.clone();
            rt::spawn_detached(async move {
                let _ = tx.send(command).await;
            });
        }
    }
}

/// A held lock. Dropping it releases the lock (in the background); the
/// next guard of the same lock in this client waits until that release is
/// done, so the two never overlap.
pub struct Guard {
    client: Client,
    name: String,
    token: Token,
    session: SessionId,
    lost: watch::Receiver<bool>,
    permit: Option<OwnedSemaphorePermit>,
    released: bool,
}

impl Guard {
    pub fn token(&self) -> Token {
        self.token
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The session the lock was granted in (its lease is the guard's).
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// Resolves when the lock is lost (the session's lease ran out).
    pub async fn lost(&self) {
        let mut rx = self.lost.clone();
        let _ = rx.wait_for(|&lost| lost).await;
    }

    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    pub async fn release(mut self) -> Result<(), ClientError> {
        self.released = true;
        let call = Call::Release {
            lock: self.name.clone(),
            token: self.token,
        };
        let result = self.client.call(call).await.map(|_| ());
        self.permit.take();
        result
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (tx, rx) = oneshot::channel();
        let call = Call::Release {
            lock: self.name.clone(),
            token: self.token,
        };
        let id = self.client.call_id();
        let _ = self
            .client
            .tx
            .try_send(ToDriver::Call(id, call, Caller::Plain(tx)));
        // The client's next guard of this lock waits for the release.
        let permit = self.permit.take();
        rt::spawn_detached(async move {
            let _ = rx.await;
            drop(permit);
        });
    }
}

/// The next pushed session end; never, without a channel (or once it
/// closed).
async fn next_ended(ended: &mut Option<mpsc::Receiver<SessionId>>) -> Option<SessionId> {
    match ended {
        Some(rx) => match rx.recv().await {
            Some(session) => Some(session),
            None => {
                *ended = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

/// A call to a node in flight, with the rpc it answers.
type InFlight = Pin<Box<dyn Future<Output = (RpcId, NodeReply)> + Send>>;

/// Runs the session actor: feeds it time, user calls and node replies;
/// carries out its sends, concurrently, polling the calls in flight itself
/// (a reply that has arrived is seen before a timer due at the same time).
struct Driver {
    session: Session,
    transport: Arc<dyn Transport>,
    in_flight: FuturesUnordered<InFlight>,
    clock: Clock,
    calls: BTreeMap<CallId, Caller>,
    watches: BTreeMap<(String, Token), watch::Sender<bool>>,
    session_tx: watch::Sender<Option<SessionId>>,
    lease_tx: Option<watch::Sender<Option<Lease>>>,
    /// Locks' gates the driver holds for calls whose caller went away.
    gates: BTreeMap<CallId, OwnedSemaphorePermit>,
    wake: Option<Instant>,
    /// Releases the driver makes on its own (a grant nobody took).
    next_own_call: CallId,
    #[cfg(feature = "sim")]
    bugs: ClientBugs,
    /// Watches made late (the `late_grant_never_lost` control).
    #[cfg(feature = "sim")]
    deferred: Vec<((String, Token), watch::Sender<bool>)>,
}

/// Rules a negative control may break to prove the simulator's client-side
/// checker can fail; only built with the `sim` feature.
#[cfg(feature = "sim")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientBugs {
    /// Make a guard's lost-watch after the step that granted it, so a grant
    /// that arrives after the lease ended is never reported lost.
    pub late_grant_never_lost: bool,
}

/// A session's lease as its client trusts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub session: SessionId,
    /// On the client's clock.
    pub until: Instant,
}

/// Call ids the driver uses for its own calls, far from the client's.
const OWN_CALL_ID_BASE: CallId = 1 << 62;

impl Driver {
    fn new(session: Session, transport: Arc<dyn Transport>, clock: Clock) -> Self {
        Driver {
            session,
            transport,
            in_flight: FuturesUnordered::new(),
            clock,
            calls: BTreeMap::new(),
            watches: BTreeMap::new(),
            session_tx: watch::channel(None).0,
            lease_tx: None,
            gates: BTreeMap::new(),
            wake: None,
            next_own_call: OWN_CALL_ID_BASE,
            #[cfg(feature = "sim")]
            bugs: ClientBugs::default(),
            #[cfg(feature = "sim")]
            deferred: Vec::new(),
        }
    }

    fn now(&self) -> Instant {
        (self.clock)()
    }

    async fn run(mut self, mut commands: mpsc::Receiver<ToDriver>) {
        let (reply_tx, mut replies) = mpsc::channel::<Input>(CLIENT_COMMANDS_LEN_MAX);
        let mut ended = self.transport.take_ended();
        self.step(Input::Start, &reply_tx);
        loop {
            let sleep = self
                .wake
                .map(|at| at.saturating_since(self.now()))
                .unwrap_or(Duration::from_secs(1));
            tokio::select! {
                // In order, not at random: tokio's randomness is not the
                // simulator's seed, and a seed must replay bit for bit.
                biased;
                command = commands.recv() => match command {
                    Some(ToDriver::Call(id, call, reply)) => {
                        if let Call::Release { lock, token } = &call {
                            self.watches.remove(&(lock.clone(), *token));
                        }
                        self.calls.insert(id, reply);
                        self.step(Input::Call { id, call }, &reply_tx);
                    }
                    Some(ToDriver::Abandon(id, permit)) => {
                        if self.calls.contains_key(&id) {
                            self.gates.insert(id, permit);
                            self.step(Input::Abandon { id }, &reply_tx);
                        }
                    }
                    Some(ToDriver::ReleaseUntaken(lock, token, permit)) => {
                        self.watches.remove(&(lock.clone(), token));
                        let now = self.now();
                        self.release_own(now, lock, token, Some(permit), &reply_tx);
                    }
                    // Every handle dropped: end the session politely.
                    None => {
                        self.step(Input::Call { id: 0, call: Call::Close }, &reply_tx);
                        return;
                    }
                },
                Some((rpc, reply)) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.step(Input::Reply { rpc, reply }, &reply_tx);
                }
                Some(input) = replies.recv() => self.step(input, &reply_tx),
                Some(session) = next_ended(&mut ended) => {
                    self.step(Input::Ended { session }, &reply_tx);
                }
                _ = rt::sleep(sleep) => {
                    self.wake = None;
                    self.step(Input::Tick, &reply_tx);
                }
            }
        }
    }

    fn step(&mut self, input: Input, replies: &mpsc::Sender<Input>) {
        let now = self.now();
        let effects = self.session.handle(now, input);
        self.carry_out(now, effects, replies);
        if let Some(tx) = &self.lease_tx {
            let lease = match (self.session.session_id(), self.session.lease_until()) {
                (Some(session), Some(until)) => Some(Lease { session, until }),
                _ => None,
            };
            tx.send_if_modified(|l| {
                let changed = *l != lease;
                *l = lease;
                changed
            });
        }
    }

    /// Carries out one step's effects, in order.
    fn carry_out(&mut self, now: Instant, effects: Vec<Effect>, replies: &mpsc::Sender<Input>) {
        let mut own_releases = Vec::new();
        for effect in effects {
            match effect {
                Effect::Send { to, rpc, msg } => self.send(to, rpc, msg),
                Effect::WakeAt(at) => self.wake = Some(at),
                Effect::Done { id, result } => {
                    if let Some(release) = self.done(now, id, result) {
                        own_releases.push(release);
                    }
                }
                Effect::Opened(session) => {
                    self.transport.watch(session);
                    let _ = self.session_tx.send(Some(session));
                }
                Effect::Lost { lock, token } => {
                    if let Some(tx) = self.watches.remove(&(lock, token)) {
                        let _ = tx.send(true);
                    }
                }
                Effect::SessionLost => {
                    for (_, tx) in std::mem::take(&mut self.watches) {
                        let _ = tx.send(true);
                    }
                    let _ = self.session_tx.send(None);
                    // Open a new session for the calls to come.
                    let _ = replies.try_send(Input::Start);
                }
            }
        }
        #[cfg(feature = "sim")]
        for (key, tx) in std::mem::take(&mut self.deferred) {
            self.watches.insert(key, tx);
        }
        for (lock, token, gate) in own_releases {
            self.release_own(now, lock, token, gate, replies);
        }
    }

    /// Releases a grant nobody took; the lock's gate (if held) opens when
    /// the release is over.
    fn release_own(
        &mut self,
        now: Instant,
        lock: String,
        token: Token,
        gate: Option<OwnedSemaphorePermit>,
        replies: &mpsc::Sender<Input>,
    ) {
        self.next_own_call += 1;
        let id = self.next_own_call;
        if let Some(permit) = gate {
            self.gates.insert(id, permit);
        }
        let call = Call::Release { lock, token };
        let effects = self.session.handle(now, Input::Call { id, call });
        self.carry_out(now, effects, replies);
    }

    /// Hands a call's result to its caller. A grant whose caller went away
    /// is returned, to be released, with the lock's gate if the driver
    /// holds it (it is let go once the release is over).
    fn done(
        &mut self,
        now: Instant,
        id: CallId,
        result: Result<Done, CallError>,
    ) -> Option<(String, Token, Option<OwnedSemaphorePermit>)> {
        let gate = self.gates.remove(&id);
        match self.calls.remove(&id)? {
            Caller::Plain(tx) => {
                let _ = tx.send(result);
                None
            }
            Caller::Acquire { lock, tx } => {
                let (token, session) = match result {
                    Ok(Done::Granted { token, session }) => (token, session),
                    Ok(other) => {
                        let _ = tx.send(Err(CallError::Lock(LockError::Malformed(format!(
                            "unexpected answer {other:?}"
                        )))));
                        return None;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return None;
                    }
                };
                // The watch exists before anything later in this step (or
                // after it) can report the lock lost; a lease already over
                // means the guard is born lost.
                let held = self.session.holds(&lock, now) == Some(token);
                let (lost_tx, lost_rx) = watch::channel(!held);
                #[cfg(feature = "sim")]
                if self.bugs.late_grant_never_lost {
                    // The old order (a negative control): a watch made after
                    // the step, which a loss in the same step never reaches.
                    let (lost_tx, lost_rx) = watch::channel(false);
                    self.deferred.push(((lock.clone(), token), lost_tx));
                    let granted = Granted {
                        token,
                        session,
                        lost: lost_rx,
                    };
                    let _ = tx.send(Ok(granted));
                    return None;
                }
                if held {
                    self.watches.insert((lock.clone(), token), lost_tx);
                }
                // The grant's session, not the one the client is in now: a
                // lease that ran out in this very step leaves none (a guard
                // once said session 0), and a new one is not the grant's.
                let granted = Granted {
                    token,
                    session,
                    lost: lost_rx,
                };
                match tx.send(Ok(granted)) {
                    Ok(()) => None,
                    Err(_) => {
                        // Nobody took it (the acquire future was dropped).
                        self.watches.remove(&(lock.clone(), token));
                        held.then_some((lock, token, gate))
                    }
                }
            }
        }
    }

    fn send(&mut self, to: NodeId, rpc: RpcId, msg: ToNode) {
        let answer = self.transport.call(to, msg);
        self.in_flight
            .push(Box::pin(async move { (rpc, answer.await) }));
    }
}

#[cfg(test)]
mod tests;
