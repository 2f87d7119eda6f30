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

use crate::actor::{Instant, NodeId};
use crate::http::client::HttpClient;
use crate::http::NativeReply;
use crate::lock::{LockError, Mode, Query, QueryAnswer, SessionId, Token};
use crate::session::{
    Call, CallError, CallId, Done, Effect, Input, NodeReply, Session, SessionConfig, ToNode,
};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};

/// Commands queued for the session task.
pub const CLIENT_COMMANDS_LEN_MAX: usize = 1024;
/// How long a node may hold a queued acquire's wait for its grant before
/// answering "not yet" (then the client asks again at once).
pub const CLIENT_WAIT_POLL_MS: u64 = 5_000;
/// Idle kept-alive connections kept per endpoint.
pub const CLIENT_IDLE_CONNECTIONS_MAX: usize = 8;
/// How long `connect` waits for the session to open.
pub const CLIENT_CONNECT_TIMEOUT_MS: u64 = 10_000;
/// How long `connect` waits for an endpoint to say which node it is.
pub const CLIENT_DISCOVER_TIMEOUT_MS: u64 = 2_000;
/// Lock names with a local gate at once (one per lock this client holds or
/// waits for; gates nobody uses are dropped).
pub const CLIENT_LOCAL_GATES_MAX: usize = 4096;

/// Idle connections to one endpoint, reused across requests.
type Pool = Arc<Mutex<Vec<HttpClient>>>;

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
enum Reply {
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
    lost: watch::Receiver<bool>,
}

enum Command {
    Call(CallId, Call, Reply),
    /// The caller of this call went away.
    Abandon(CallId),
}

/// A connection to a cluster, with one session. Cheap to clone; every
/// clone is the same session.
#[derive(Clone)]
pub struct Client {
    tx: mpsc::Sender<Command>,
    session: watch::Receiver<Option<SessionId>>,
    next_call: Arc<AtomicU64>,
    gates: Arc<Gates>,
}

impl Client {
    /// Opens a session with `ttl` against the cluster behind `endpoints`
    /// (HTTP API addresses, any order, any subset). Returns once the
    /// session is open. The session task runs on the current tokio runtime.
    pub async fn connect(endpoints: Vec<SocketAddr>, ttl: Duration) -> Result<Client, ClientError> {
        Client::open(endpoints, ttl, true).await
    }

    /// `connect`, but starting at the first endpoint given (and moving on
    /// in the order given): for a benchmark or a test that places its
    /// clients itself.
    pub async fn connect_at(
        endpoints: Vec<SocketAddr>,
        ttl: Duration,
    ) -> Result<Client, ClientError> {
        Client::open(endpoints, ttl, false).await
    }

    async fn open(
        endpoints: Vec<SocketAddr>,
        ttl: Duration,
        random_start: bool,
    ) -> Result<Client, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let targets = discover(&endpoints).await?;
        let seed = crate::entropy::random_u64().map_err(|e| ClientError::Entropy(e.to_string()))?;
        let targets = if random_start {
            spread(targets, seed)
        } else {
            targets
        };
        let (nodes, endpoints): (Vec<NodeId>, Vec<SocketAddr>) = targets.into_iter().unzip();
        let mut config = SessionConfig::new(nodes.clone(), ttl);
        config.poll_interval = Duration::from_millis(CLIENT_WAIT_POLL_MS);
        let (tx, rx) = mpsc::channel(CLIENT_COMMANDS_LEN_MAX);
        let (session_tx, mut session) = watch::channel(None);
        let driver = Driver::new(Session::new(config, seed), nodes, endpoints, session_tx);
        tokio::spawn(driver.run(rx));
        let opened = tokio::time::timeout(
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
            next_call: Arc::new(AtomicU64::new(0)),
            gates: Arc::new(Gates::default()),
        })
    }

    /// The session's id while it is open (a lost session is replaced by a
    /// new one for later calls).
    pub fn session_id(&self) -> Option<SessionId> {
        *self.session.borrow()
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
            .send(Command::Call(id, call, Reply::Plain(tx)))
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

/// Asks every endpoint, at once, which node it is (`GET /API/v1/cluster`);
/// one that does not answer now keeps a placeholder id of its own, so it
/// is still tried in turn. Fails only if none answers.
async fn discover(endpoints: &[SocketAddr]) -> Result<Vec<(NodeId, SocketAddr)>, ClientError> {
    let mut asks = tokio::task::JoinSet::new();
    for (i, &addr) in endpoints.iter().enumerate() {
        asks.spawn(async move {
            let mut http = HttpClient::new(addr);
            let ask = http.json("GET", "/API/v1/cluster", &serde_json::Value::Null);
            let limit = Duration::from_millis(CLIENT_DISCOVER_TIMEOUT_MS);
            let answer = tokio::time::timeout(limit, ask).await;
            let id = match answer {
                Ok(Ok((200, v))) => Ok(v["id"].as_u64()),
                Ok(Ok((status, v))) => Err(format!("{addr}: {status} {v}")),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!(
                    "{addr}: no answer in {CLIENT_DISCOVER_TIMEOUT_MS} ms"
                )),
            };
            (i, addr, id)
        });
    }
    let mut found = vec![None; endpoints.len()];
    let mut last_error = String::new();
    while let Some(Ok((i, addr, id))) = asks.join_next().await {
        let id = id.unwrap_or_else(|e| {
            last_error = e;
            None
        });
        found[i] = Some((id, addr));
    }
    if found.iter().flatten().all(|(id, _)| id.is_none()) {
        return Err(ClientError::Unreachable(last_error));
    }
    // Placeholders sit far above any real node id.
    Ok(found
        .into_iter()
        .enumerate()
        .filter_map(|(i, f)| f.map(|(id, addr)| (id.unwrap_or(u64::MAX - i as u64), addr)))
        .collect())
}

/// The targets in a random rotation: the session starts at the first and
/// moves on in order, so clients spread over the cluster.
fn spread(mut targets: Vec<(NodeId, SocketAddr)>, seed: u64) -> Vec<(NodeId, SocketAddr)> {
    let n = targets.len().max(1);
    targets.rotate_left((seed % n as u64) as usize);
    targets
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
            Some(d) => tokio::time::timeout(d, gate.acquire_owned())
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
        let reply = Reply::Acquire {
            lock: self.name.clone(),
            tx,
        };
        self.client
            .tx
            .send(Command::Call(id, call, reply))
            .await
            .map_err(|_| ClientError::Stopped)?;
        let mut abandon = Abandon {
            tx: self.client.tx.clone(),
            id,
            armed: true,
        };
        let granted = rx.await.map_err(|_| ClientError::Stopped)??;
        abandon.armed = false;
        Ok(Guard {
            client: self.client,
            name: self.name,
            token: granted.token,
            lost: granted.lost,
            permit: Some(permit),
            released: false,
        })
    }
}

/// Tells the driver that an acquire's caller went away (its future was
/// dropped before it resolved).
struct Abandon {
    tx: mpsc::Sender<Command>,
    id: CallId,
    armed: bool,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.tx.try_send(Command::Abandon(self.id));
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
            .try_send(Command::Call(id, call, Reply::Plain(tx)));
        // The client's next guard of this lock waits for the release.
        let permit = self.permit.take();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = rx.await;
                drop(permit);
            });
        }
    }
}

/// Runs the session actor: feeds it time, user calls and node replies;
/// carries out its sends (each on its own connection, concurrently).
struct Driver {
    session: Session,
    targets: BTreeMap<NodeId, (SocketAddr, Pool)>,
    origin: std::time::Instant,
    calls: BTreeMap<CallId, Reply>,
    watches: BTreeMap<(String, Token), watch::Sender<bool>>,
    session_tx: watch::Sender<Option<SessionId>>,
    wake: Option<Instant>,
    /// Releases the driver makes on its own (a grant nobody took).
    next_own_call: CallId,
}

/// Call ids the driver uses for its own calls, far from the client's.
const OWN_CALL_ID_BASE: CallId = 1 << 62;

impl Driver {
    fn new(
        session: Session,
        nodes: Vec<NodeId>,
        endpoints: Vec<SocketAddr>,
        session_tx: watch::Sender<Option<SessionId>>,
    ) -> Self {
        let targets = nodes
            .into_iter()
            .zip(endpoints)
            .map(|(id, addr)| (id, (addr, Pool::default())))
            .collect();
        Driver {
            session,
            targets,
            origin: std::time::Instant::now(),
            calls: BTreeMap::new(),
            watches: BTreeMap::new(),
            session_tx,
            wake: None,
            next_own_call: OWN_CALL_ID_BASE,
        }
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.origin.elapsed().as_micros() as u64)
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let (reply_tx, mut replies) = mpsc::channel::<Input>(CLIENT_COMMANDS_LEN_MAX);
        self.step(Input::Start, &reply_tx);
        loop {
            let sleep = self
                .wake
                .map(|at| at.saturating_since(self.now()))
                .unwrap_or(Duration::from_secs(1));
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Call(id, call, reply)) => {
                        if let Call::Release { lock, token } = &call {
                            self.watches.remove(&(lock.clone(), *token));
                        }
                        self.calls.insert(id, reply);
                        self.step(Input::Call { id, call }, &reply_tx);
                    }
                    Some(Command::Abandon(id)) => self.step(Input::Abandon { id }, &reply_tx),
                    // Every handle dropped: end the session politely.
                    None => {
                        self.step(Input::Call { id: 0, call: Call::Close }, &reply_tx);
                        return;
                    }
                },
                Some(input) = replies.recv() => self.step(input, &reply_tx),
                _ = tokio::time::sleep(sleep) => {
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
    }

    /// Carries out one step's effects, in order.
    fn carry_out(&mut self, now: Instant, effects: Vec<Effect>, replies: &mpsc::Sender<Input>) {
        let mut own_releases = Vec::new();
        for effect in effects {
            match effect {
                Effect::Send { to, rpc, msg } => self.send(to, rpc, msg, replies),
                Effect::WakeAt(at) => self.wake = Some(at),
                Effect::Done { id, result } => {
                    if let Some(release) = self.done(now, id, result) {
                        own_releases.push(release);
                    }
                }
                Effect::Opened(session) => {
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
        for (lock, token) in own_releases {
            self.next_own_call += 1;
            let id = self.next_own_call;
            let call = Call::Release { lock, token };
            let effects = self.session.handle(now, Input::Call { id, call });
            self.carry_out(now, effects, replies);
        }
    }

    /// Hands a call's result to its caller. A grant whose caller went away
    /// is returned, to be released.
    fn done(
        &mut self,
        now: Instant,
        id: CallId,
        result: Result<Done, CallError>,
    ) -> Option<(String, Token)> {
        match self.calls.remove(&id)? {
            Reply::Plain(tx) => {
                let _ = tx.send(result);
                None
            }
            Reply::Acquire { lock, tx } => {
                let token = match result {
                    Ok(Done::Granted { token }) => token,
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
                if held {
                    self.watches.insert((lock.clone(), token), lost_tx);
                }
                let granted = Granted {
                    token,
                    lost: lost_rx,
                };
                match tx.send(Ok(granted)) {
                    Ok(()) => None,
                    Err(_) => {
                        // Nobody took it (the acquire future was dropped).
                        self.watches.remove(&(lock.clone(), token));
                        held.then_some((lock, token))
                    }
                }
            }
        }
    }

    fn send(
        &self,
        to: NodeId,
        rpc: crate::session::RpcId,
        msg: ToNode,
        replies: &mpsc::Sender<Input>,
    ) {
        let Some((addr, pool)) = self.targets.get(&to) else {
            // A node this client has no endpoint for: answer at once, so
            // the session moves on to the next target.
            let _ = replies.try_send(Input::Reply {
                rpc,
                reply: NodeReply::Unavailable,
            });
            return;
        };
        let (addr, pool, replies) = (*addr, pool.clone(), replies.clone());
        tokio::spawn(async move {
            let (path, body) = match msg {
                ToNode::Propose(b) => ("/API/v1/native/propose", b),
                ToNode::Read(b) => ("/API/v1/native/read", b),
                ToNode::Wait(w) => ("/API/v1/native/wait", crate::lock::encode(&w)),
            };
            let idle = pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let mut http = idle.unwrap_or_else(|| HttpClient::new(addr));
            let result = http.call("POST", path, &body).await;
            if result.is_ok() {
                let mut idle = pool.lock().unwrap_or_else(|e| e.into_inner());
                if idle.len() < CLIENT_IDLE_CONNECTIONS_MAX {
                    idle.push(http);
                }
            }
            let reply = match result {
                Ok((200, raw)) => match postcard::from_bytes::<NativeReply>(&raw) {
                    Ok(NativeReply::Output(o)) => NodeReply::Output(o),
                    Ok(NativeReply::NotLeader(l)) => NodeReply::NotLeader(l),
                    Ok(NativeReply::Refused(why)) => NodeReply::Refused(why),
                    _ => NodeReply::Unavailable,
                },
                // A 4xx is the node's final word on this request.
                Ok((status @ 400..=499, raw)) if status != 429 => {
                    NodeReply::Refused(format!("{status}: {}", String::from_utf8_lossy(&raw)))
                }
                _ => NodeReply::Unavailable,
            };
            let _ = replies.send(Input::Reply { rpc, reply }).await;
        });
    }
}

#[cfg(test)]
mod tests;
