//! The native protocol on a persistent connection (`--listen-native`,
//! docs/NATIVE.md): postcard frames inside the API's TLS, many calls in
//! flight per connection, answers in any order, grants and session ends
//! pushed. What a call does is the request layer's (`crate::gateway`),
//! exactly as for the HTTP doors; only the framing differs.
//!
//! The door is the same too: the `Hello`'s credential (or the client
//! certificate) is checked once, when the connection opens, and the lock
//! machine checks every command and query again when it applies or answers
//! it (`Command::As`), so a credential revoked while a connection is open
//! is refused from the entry that revokes it. The per-credential rate
//! limit counts every call.

use super::auth::{
    authenticate_bearer, authenticate_cert, door_error, Caller, RateLimiter, BEARER_PREFIX,
};
use super::client::Io;
use super::error::ApiError;
use super::gateway_task::GatewayHandle;
use super::native::native_reply;
use crate::credential::Bearer;
use crate::gateway::Request;
use crate::lock::auth::CredentialId;
use crate::lock::{Event, LockMachine, SessionId};
use crate::net::encode_frame_max;
use crate::net::native::{
    ClientFrame, NativeCall, NativeReply, ServerFrame, NATIVE_ANSWER_FRAME_BYTES_MAX,
    NATIVE_CALL_FRAME_BYTES_MAX, NATIVE_VERSION,
};
use crate::net::native::{FrameReadError, FrameReader};
use crate::runtime::Node;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, Semaphore};
use tokio::task::{AbortHandle, JoinSet};

/// Native connections one node serves at once; more are closed as they
/// arrive.
pub const NATIVE_CONNECTIONS_MAX: usize = 4096;
/// Calls in flight on one connection; past it, the node reads no more of
/// that connection's frames until one is answered.
pub const NATIVE_CALLS_PER_CONNECTION_MAX: usize = 1024;
/// Sessions one connection may watch.
pub const NATIVE_WATCHES_PER_CONNECTION_MAX: usize = 64;
/// How long a new connection has, from its accept, for its TLS handshake
/// and its `Hello`.
pub const NATIVE_HELLO_TIMEOUT_MS: u64 = 5_000;
/// Largest first frame (the `Hello`, before the caller is known): a
/// credential is under 128 bytes.
pub const NATIVE_HELLO_FRAME_BYTES_MAX: usize = 4096;
/// TCP keepalive on an open connection: probes after this long idle, then
/// every `NATIVE_KEEPALIVE_INTERVAL_S`, `NATIVE_KEEPALIVE_PROBES` times,
/// so a client whose host vanished frees its place within about a minute.
pub const NATIVE_KEEPALIVE_IDLE_S: u64 = 30;
pub const NATIVE_KEEPALIVE_INTERVAL_S: u64 = 10;
pub const NATIVE_KEEPALIVE_PROBES: u32 = 3;
/// How long a closing connection may take to write its last frames.
pub const NATIVE_CLOSE_TIMEOUT_MS: u64 = 1_000;
/// One read from a connection's socket.
pub const NATIVE_READ_BYTES: usize = 64 << 10;
/// Frames queued for one connection's socket: every call in flight and
/// every watch may have one there, and the `Goodbye`.
pub const NATIVE_OUTBOX_LEN_MAX: usize =
    NATIVE_CALLS_PER_CONNECTION_MAX + NATIVE_WATCHES_PER_CONNECTION_MAX + 1;
/// Bytes of queued frames written to the socket at once.
pub const NATIVE_WRITE_BATCH_BYTES_MAX: usize = 256 << 10;

#[derive(Debug, Error)]
pub enum StreamError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("no TLS handshake and Hello within {NATIVE_HELLO_TIMEOUT_MS} ms")]
    HelloTimeout,
    #[error(transparent)]
    Read(#[from] FrameReadError),
}

/// What every native connection of one node shares.
pub(super) struct Door {
    pub gateway: Arc<GatewayHandle>,
    pub node: Arc<Node<LockMachine>>,
    pub limiter: Arc<RateLimiter>,
    pub auth_required: bool,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    watches: Watches,
    next_connection: AtomicU64,
    connections: Arc<Semaphore>,
}

impl Door {
    pub fn new(
        gateway: Arc<GatewayHandle>,
        node: Arc<Node<LockMachine>>,
        limiter: Arc<RateLimiter>,
        auth_required: bool,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Door {
        Door {
            gateway,
            node,
            limiter,
            auth_required,
            tls: tls.map(tokio_rustls::TlsAcceptor::from),
            watches: Watches::default(),
            next_connection: AtomicU64::new(1),
            connections: Arc::new(Semaphore::new(NATIVE_CONNECTIONS_MAX)),
        }
    }
}

/// Serves the native protocol on `listener` (on the current actix
/// runtime, beside the gateway task), until the runtime stops.
pub(super) fn start(listener: std::net::TcpListener, door: Arc<Door>) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    actix_rt::spawn(route_ended(door.node.subscribe(), door.clone()));
    actix_rt::spawn(accept(listener, door));
    Ok(())
}

async fn accept(listener: tokio::net::TcpListener, door: Arc<Door>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, say: back off rather than spin.
                tracing::warn!("native: cannot accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = door.connections.clone().try_acquire_owned() else {
            tracing::warn!("native: {NATIVE_CONNECTIONS_MAX} connections open; closing a new one");
            continue;
        };
        let door = door.clone();
        actix_rt::spawn(async move {
            let _permit = permit;
            if let Err(e) = serve(stream, &door).await {
                tracing::debug!("native connection: {e}");
            }
        });
    }
}

/// One connection, from its handshake to its end.
async fn serve(stream: tokio::net::TcpStream, door: &Door) -> Result<(), StreamError> {
    let hello_by = tokio::time::Instant::now() + Duration::from_millis(NATIVE_HELLO_TIMEOUT_MS);
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(NATIVE_KEEPALIVE_IDLE_S))
        .with_interval(Duration::from_secs(NATIVE_KEEPALIVE_INTERVAL_S))
        .with_retries(NATIVE_KEEPALIVE_PROBES);
    let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
    let (io, cert): (Box<dyn Io>, Option<CredentialId>) = match &door.tls {
        None => (Box::new(stream), None),
        Some(acceptor) => {
            let tls = tokio::time::timeout_at(hello_by, acceptor.accept(stream))
                .await
                .map_err(|_| StreamError::HelloTimeout)??;
            let cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(crate::tls::credential_of);
            (Box::new(tls), cert)
        }
    };
    let (mut rd, wr) = tokio::io::split(io);
    let (out, out_rx) = mpsc::channel(NATIVE_OUTBOX_LEN_MAX);
    let mut writer = actix_rt::spawn(write_frames(wr, out_rx));
    // Small until the caller is known.
    let mut reader = FrameReader::new(NATIVE_HELLO_FRAME_BYTES_MAX, NATIVE_HELLO_FRAME_BYTES_MAX);
    let hello = tokio::time::timeout_at(hello_by, reader.next(&mut rd))
        .await
        .map_err(|_| StreamError::HelloTimeout)?;
    reader.resize(NATIVE_CALL_FRAME_BYTES_MAX, NATIVE_READ_BYTES);
    let caller = match hello {
        Ok(Some(ClientFrame::Hello {
            version,
            credential,
        })) => welcome(door, version, credential, cert).await,
        Ok(Some(other)) => Err(format!(
            "the first frame must be a Hello, not {}",
            kind(&other)
        )),
        Ok(None) => return Ok(()),
        Err(e) => Err(format!("broken frame: {e}")),
    };
    let end = match caller {
        Ok(caller) => {
            let node = door.node.id();
            let _ = out
                .send(ServerFrame::Welcome {
                    version: NATIVE_VERSION,
                    node,
                })
                .await;
            let id = door.next_connection.fetch_add(1, Ordering::Relaxed);
            let mut conn = Connection {
                door,
                id,
                caller,
                out: out.clone(),
                calls: JoinSet::new(),
                in_flight: HashMap::new(),
                watched: Vec::new(),
            };
            let end = conn.run(&mut rd, &mut reader).await;
            door.watches.forget(id, &conn.watched);
            end
        }
        Err(why) => Some(why),
    };
    if let Some(why) = end {
        // Room is likely (the calls are gone); if not, the peer is not
        // reading and gets no reason.
        let _ = out.try_send(ServerFrame::Goodbye { why });
    }
    drop(out);
    let close = Duration::from_millis(NATIVE_CLOSE_TIMEOUT_MS);
    if tokio::time::timeout(close, &mut writer).await.is_err() {
        writer.abort();
    }
    Ok(())
}

/// Checks a `Hello`: the version, then the credential (or the client
/// certificate); the caller, or why not.
async fn welcome(
    door: &Door,
    version: u16,
    credential: Option<String>,
    cert: Option<CredentialId>,
) -> Result<Caller, String> {
    if version != NATIVE_VERSION {
        return Err(format!(
            "this node speaks native protocol version {NATIVE_VERSION}, not {version}"
        ));
    }
    let caller = match (credential, cert) {
        (Some(text), _) => match Bearer::parse(&text) {
            Ok(bearer) => authenticate_bearer(&door.node, &bearer).await,
            Err(e) => Err(door_error(e.into())),
        },
        (None, Some(id)) => authenticate_cert(&door.node, id).await,
        (None, None) if !door.auth_required => Ok(Caller {
            credential: None,
            admin: false,
        }),
        (None, None) => Err(ApiError::Unauthorized(format!(
            "this node requires a credential: Hello {{ credential: \"{BEARER_PREFIX}...\" }}"
        ))),
    };
    caller.map_err(|e| e.to_string())
}

/// A connection after its `Welcome`.
struct Connection<'a> {
    door: &'a Door,
    id: u64,
    caller: Caller,
    out: mpsc::Sender<ServerFrame>,
    /// The calls being answered, each a task that yields its call's id.
    calls: JoinSet<u64>,
    in_flight: HashMap<u64, AbortHandle>,
    watched: Vec<SessionId>,
}

impl Connection<'_> {
    /// Serves calls until the client closes (None) or breaks the protocol
    /// (why, for the `Goodbye`). Dropping the connection aborts the calls
    /// still in flight, and the gateway undoes what they started.
    async fn run<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
        reader: &mut FrameReader,
    ) -> Option<String> {
        loop {
            let room = self.in_flight.len() < NATIVE_CALLS_PER_CONNECTION_MAX;
            tokio::select! {
                Some(done) = self.calls.join_next_with_id(), if !self.calls.is_empty() => {
                    // A call's place is freed however its task ended
                    // (answered, cancelled, or panicked).
                    let task = match &done {
                        Ok((task, _)) => *task,
                        Err(e) => e.id(),
                    };
                    self.in_flight.retain(|_, h| h.id() != task);
                }
                frame = reader.next(rd), if room => match frame {
                    Ok(Some(frame)) => {
                        if let Err(why) = self.handle(frame).await {
                            return Some(why);
                        }
                    }
                    Ok(None) => return None,
                    Err(e) => return Some(format!("broken frame: {e}")),
                },
            }
        }
    }

    async fn handle(&mut self, frame: ClientFrame) -> Result<(), String> {
        match frame {
            ClientFrame::Call { id, call } => self.handle_call(id, call).await,
            ClientFrame::Cancel { id } => {
                if let Some(handle) = self.in_flight.remove(&id) {
                    handle.abort();
                }
                Ok(())
            }
            ClientFrame::Watch { session } => {
                self.handle_watch(session).await;
                Ok(())
            }
            ClientFrame::Hello { .. } => Err("a second Hello".into()),
        }
    }

    /// Registers a watch of a session the caller may watch (its own, or
    /// any for an admin); others are ignored, so a watch tells nobody of
    /// another credential's sessions. Past the bound the oldest watch of
    /// this connection is dropped (a client that opened many sessions in
    /// turn watches the latest).
    async fn handle_watch(&mut self, session: SessionId) {
        if self.watched.contains(&session) {
            return;
        }
        let credential = self.caller.credential;
        let allowed = self.caller.admin
            || self
                .door
                .node
                .inspect(move |m| m.may_watch(credential, session))
                .await
                .unwrap_or(false);
        if !allowed {
            return;
        }
        if self.watched.len() >= NATIVE_WATCHES_PER_CONNECTION_MAX {
            let oldest = self.watched.remove(0);
            self.door.watches.forget(self.id, &[oldest]);
        }
        self.watched.push(session);
        self.door.watches.add(session, self.id, self.out.clone());
    }

    async fn handle_call(&mut self, id: u64, call: NativeCall) -> Result<(), String> {
        if self.in_flight.contains_key(&id) {
            return Err(format!("call {id} is already in flight"));
        }
        if let Err(e) = self.door.limiter.admit_caller(&self.caller) {
            let reply = NativeReply::Unavailable(e.to_string());
            let _ = self.out.send(ServerFrame::Answer { id, reply }).await;
            return Ok(());
        }
        let request = match call {
            NativeCall::Propose(command) => Request::Propose(command),
            NativeCall::Read(query) => Request::Read(query),
            NativeCall::Wait(wait) => Request::Wait(wait),
        };
        let (gateway, out, credential) = (
            self.door.gateway.clone(),
            self.out.clone(),
            self.caller.credential,
        );
        let handle = self.calls.spawn_local(async move {
            let reply = match gateway.ask(credential, request, None).await {
                Some(result) => native_reply(result)
                    .unwrap_or_else(|e| NativeReply::Refused(ApiError::from(e).to_string())),
                None => NativeReply::Unavailable("the node is stopping".into()),
            };
            let _ = out.send(ServerFrame::Answer { id, reply }).await;
            id
        });
        self.in_flight.insert(id, handle);
        Ok(())
    }
}

fn kind(frame: &ClientFrame) -> &'static str {
    match frame {
        ClientFrame::Hello { .. } => "Hello",
        ClientFrame::Call { .. } => "Call",
        ClientFrame::Cancel { .. } => "Cancel",
        ClientFrame::Watch { .. } => "Watch",
    }
}

/// Writes a connection's frames, as many as are queued per write, until
/// every sender is gone or the socket fails.
async fn write_frames<W: AsyncWrite + Unpin>(mut wr: W, mut frames: mpsc::Receiver<ServerFrame>) {
    let mut batch = Vec::new();
    while let Some(frame) = frames.recv().await {
        push_frame(&mut batch, frame);
        while batch.len() < NATIVE_WRITE_BATCH_BYTES_MAX {
            match frames.try_recv() {
                Ok(frame) => push_frame(&mut batch, frame),
                Err(_) => break,
            }
        }
        if wr.write_all(&batch).await.is_err() || wr.flush().await.is_err() {
            return;
        }
        batch.clear();
    }
    let _ = wr.shutdown().await;
}

/// Appends `frame`; an answer too large for a frame becomes a refusal.
fn push_frame(batch: &mut Vec<u8>, frame: ServerFrame) {
    match encode_frame_max(&frame, NATIVE_ANSWER_FRAME_BYTES_MAX) {
        Ok(bytes) => batch.extend(bytes),
        Err(e) => {
            let id = match frame {
                ServerFrame::Answer { id, .. } => id,
                _ => return,
            };
            let reply = NativeReply::Refused(format!("the answer does not fit a frame: {e}"));
            if let Ok(bytes) = encode_frame_max(
                &ServerFrame::Answer { id, reply },
                NATIVE_ANSWER_FRAME_BYTES_MAX,
            ) {
                batch.extend(bytes);
            }
        }
    }
}

/// A connection that watches a session: its number, and its outbox.
type Watcher = (u64, mpsc::Sender<ServerFrame>);

/// Which connections watch which sessions.
#[derive(Default)]
struct Watches {
    by_session: Mutex<HashMap<SessionId, Vec<Watcher>>>,
}

impl Watches {
    fn add(&self, session: SessionId, connection: u64, out: mpsc::Sender<ServerFrame>) {
        let mut map = self.by_session.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(session).or_default().push((connection, out));
    }

    fn forget(&self, connection: u64, sessions: &[SessionId]) {
        let mut map = self.by_session.lock().unwrap_or_else(|e| e.into_inner());
        for session in sessions {
            if let Some(list) = map.get_mut(session) {
                list.retain(|(c, _)| *c != connection);
                if list.is_empty() {
                    map.remove(session);
                }
            }
        }
    }

    fn take(&self, session: SessionId) -> Vec<Watcher> {
        let mut map = self.by_session.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&session).unwrap_or_default()
    }
}

/// Pushes `Ended` to the connections watching a session that ended. Best
/// effort (a lagging subscriber or a full outbox skips a push): the
/// client's own lease timer, and its renewals' answers, stay the
/// authority; a push only tells it sooner.
async fn route_ended(mut events: broadcast::Receiver<Event>, door: Arc<Door>) {
    loop {
        match events.recv().await {
            Ok(Event::Ended {
                index,
                session,
                expired,
                ..
            }) => {
                for (_, out) in door.watches.take(session) {
                    let _ = out.try_send(ServerFrame::Ended {
                        session,
                        index,
                        expired,
                    });
                }
            }
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
