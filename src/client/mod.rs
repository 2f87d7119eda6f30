//! The Rust client library: a session with a cluster, driven by the same
//! client-session actor the simulator runs (`crate::session`), over the
//! native protocol of the HTTP API (`/API/v1/native/*`, postcard bodies).
//!
//! ```no_run
//! # async fn demo() -> Result<(), raftlock::client::ClientError> {
//! use std::time::Duration;
//! let endpoints = vec!["127.0.0.1:7201".parse().unwrap()];
//! let client = raftlock::client::Client::connect(endpoints, Duration::from_secs(10)).await?;
//! let guard = client.lock("orders").wait(Duration::from_secs(5)).acquire().await?;
//! println!("holding orders with fencing token {}", guard.token());
//! // ... pass guard.token() to the protected resource with every write ...
//! guard.release().await?;
//! # Ok(()) }
//! ```
//!
//! Requests are numbered per session and retried with the same number, so
//! a retry after a timeout or a leader change runs at most once. The
//! session is kept alive in the background. A `Guard` releases its lock
//! when dropped; `Guard::lost` resolves when the lease ran out (stop using
//! the lock: its token may already be fenced off).

use crate::actor::{Instant, NodeId};
use crate::http::client::HttpClient;
use crate::http::NativeReply;
use crate::lock::{Mode, Query, QueryAnswer, Token};
use crate::session::{
    Call, CallError, CallId, Done, Effect, Input, NodeReply, Session, SessionConfig, ToNode,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};

/// Commands queued for the session task.
pub const CLIENT_COMMANDS_LEN_MAX: usize = 1024;
/// How often a queued acquire polls for its grant.
pub const CLIENT_POLL_MS: u64 = 50;
/// Idle kept-alive connections kept per endpoint.
pub const CLIENT_IDLE_CONNECTIONS_MAX: usize = 8;

/// Idle connections to one endpoint, reused across requests.
type Pool = std::sync::Arc<std::sync::Mutex<Vec<HttpClient>>>;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("the client has stopped")]
    Stopped,
    #[error("no endpoints given")]
    NoEndpoints,
}

enum Command {
    Call(Call, oneshot::Sender<Result<Done, CallError>>),
    Watch(String, Token, watch::Sender<bool>),
}

/// A connection to a cluster, with one session. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    tx: mpsc::Sender<Command>,
}

impl Client {
    /// Opens a session with `ttl` against any of `endpoints` (HTTP API
    /// addresses). The session task runs on the current tokio runtime.
    pub async fn connect(endpoints: Vec<SocketAddr>, ttl: Duration) -> Result<Client, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let (tx, rx) = mpsc::channel(CLIENT_COMMANDS_LEN_MAX);
        let nodes: Vec<NodeId> = (1..=endpoints.len() as u64).collect();
        let mut config = SessionConfig::new(nodes, ttl);
        config.poll_interval = Duration::from_millis(CLIENT_POLL_MS);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
        let driver = Driver::new(Session::new(config, seed), endpoints);
        tokio::spawn(driver.run(rx));
        Ok(Client { tx })
    }

    pub fn lock(&self, name: &str) -> LockBuilder {
        LockBuilder {
            client: self.clone(),
            name: name.to_string(),
            mode: Mode::Exclusive,
            wait: None,
        }
    }

    async fn call(&self, call: Call) -> Result<Done, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Call(call, tx))
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
    ClientError::Call(CallError::Lock(crate::lock::LockError::Malformed(format!(
        "unexpected answer {done:?}"
    ))))
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

    pub async fn acquire(self) -> Result<Guard, ClientError> {
        let call = Call::Acquire {
            lock: self.name.clone(),
            mode: self.mode,
            wait: self.wait,
        };
        let token = match self.client.call(call).await? {
            Done::Granted { token } => token,
            other => return Err(unexpected(other)),
        };
        let (lost_tx, lost_rx) = watch::channel(false);
        self.client
            .tx
            .send(Command::Watch(self.name.clone(), token, lost_tx))
            .await
            .map_err(|_| ClientError::Stopped)?;
        Ok(Guard {
            client: self.client,
            name: self.name,
            token,
            lost: lost_rx,
            released: false,
        })
    }
}

/// A held lock. Dropping it releases the lock (in the background).
pub struct Guard {
    client: Client,
    name: String,
    token: Token,
    lost: watch::Receiver<bool>,
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
        self.client.call(call).await.map(|_| ())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (tx, _rx) = oneshot::channel();
        let call = Call::Release {
            lock: self.name.clone(),
            token: self.token,
        };
        let _ = self.client.tx.try_send(Command::Call(call, tx));
    }
}

/// Runs the session actor: feeds it time, user calls and node replies;
/// carries out its sends (each on its own connection, concurrently).
struct Driver {
    session: Session,
    endpoints: Vec<SocketAddr>,
    pools: Vec<Pool>,
    origin: std::time::Instant,
    next_call: CallId,
    calls: BTreeMap<CallId, oneshot::Sender<Result<Done, CallError>>>,
    watches: BTreeMap<(String, Token), watch::Sender<bool>>,
    wake: Option<Instant>,
}

impl Driver {
    fn new(session: Session, endpoints: Vec<SocketAddr>) -> Self {
        let pools = endpoints.iter().map(|_| Pool::default()).collect();
        Driver {
            session,
            endpoints,
            pools,
            origin: std::time::Instant::now(),
            next_call: 0,
            calls: BTreeMap::new(),
            watches: BTreeMap::new(),
            wake: None,
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
                    Some(Command::Call(call, done)) => {
                        if let Call::Release { lock, token } = &call {
                            self.watches.remove(&(lock.clone(), *token));
                        }
                        self.next_call += 1;
                        self.calls.insert(self.next_call, done);
                        let id = self.next_call;
                        self.step(Input::Call { id, call }, &reply_tx);
                    }
                    Some(Command::Watch(lock, token, tx)) => {
                        if self.watches.len() < crate::lock::Limits::default().locks_per_session_max {
                            self.watches.insert((lock, token), tx);
                        }
                    }
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
        for effect in self.session.handle(now, input) {
            match effect {
                Effect::Send { to, rpc, msg } => {
                    let at = to.saturating_sub(1) as usize;
                    let (Some(&addr), Some(pool)) = (self.endpoints.get(at), self.pools.get(at))
                    else {
                        continue;
                    };
                    let pool = pool.clone();
                    let replies = replies.clone();
                    tokio::spawn(async move {
                        let (path, body) = match msg {
                            ToNode::Propose(b) => ("/API/v1/native/propose", b),
                            ToNode::Read(b) => ("/API/v1/native/read", b),
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
                                _ => NodeReply::Unavailable,
                            },
                            _ => NodeReply::Unavailable,
                        };
                        let _ = replies.send(Input::Reply { rpc, reply }).await;
                    });
                }
                Effect::WakeAt(at) => self.wake = Some(at),
                Effect::Done { id, result } => {
                    if let Some(tx) = self.calls.remove(&id) {
                        let _ = tx.send(result);
                    }
                }
                Effect::Opened(_) => {}
                Effect::Lost { lock, token } => {
                    if let Some(tx) = self.watches.remove(&(lock, token)) {
                        let _ = tx.send(true);
                    }
                }
                Effect::SessionLost => {
                    for (_, tx) in std::mem::take(&mut self.watches) {
                        let _ = tx.send(true);
                    }
                    // Open a new session for the calls to come.
                    let _ = replies.try_send(Input::Start);
                }
            }
        }
    }
}
