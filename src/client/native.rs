//! The client library over the native protocol (docs/NATIVE.md): one
//! persistent connection per node, opened on first use, with every call
//! of the session in flight on it at once and answered in any order; a
//! queued acquire's grant and the session's end are pushed on it.
//!
//! A node that does not serve the native protocol (its `/API/v1/cluster`
//! names no `native_port`), or whose native port does not answer, is
//! reached over HTTP instead (`HttpTransport`), and its native port is
//! tried again after `CLIENT_NATIVE_RETRY_MS`.

use super::{HttpTransport, Reply, Transport};
use crate::actor::NodeId;
use crate::http::client::{open_stream, Access, EXCHANGE_TIMEOUT_MS};
use crate::lock::SessionId;
use crate::net::encode_frame_max;
use crate::net::native::FrameReader;
use crate::net::native::{
    ClientFrame, NativeCall, NativeReply, ServerFrame, NATIVE_ANSWER_FRAME_BYTES_MAX,
    NATIVE_CALL_FRAME_BYTES_MAX, NATIVE_VERSION,
};
use crate::session::{NodeReply, ToNode};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// How long opening a connection (TCP, TLS, Hello, Welcome) may take.
pub const CLIENT_NATIVE_CONNECT_TIMEOUT_MS: u64 = 2_000;
/// After a node's native port failed, calls to it go over HTTP this long
/// before the native port is tried again.
pub const CLIENT_NATIVE_RETRY_MS: u64 = 1_000;
/// Frames queued for one connection's socket. The session actor bounds
/// its own calls in flight well below this; a full queue makes a call
/// wait for room.
pub const CLIENT_NATIVE_OUTBOX_LEN_MAX: usize = 1024;
/// Sessions whose end the transport asks nodes to push (the library has
/// one session at a time; older ones are dropped first).
pub const CLIENT_WATCHES_MAX: usize = 4;
/// Pushed session ends queued for the driver; more are dropped (the lease
/// timer tells it anyway).
pub const CLIENT_ENDED_LEN_MAX: usize = 16;
/// One read from a connection's socket.
const READ_BYTES: usize = 64 << 10;
/// Bytes of queued frames written to the socket at once.
const WRITE_BATCH_BYTES_MAX: usize = 256 << 10;

/// Each node's native address, and HTTP for the rest.
pub struct NativeTransport {
    targets: BTreeMap<NodeId, Arc<Endpoint>>,
    http: Arc<HttpTransport>,
    access: Access,
    watches: Arc<Watches>,
}

impl NativeTransport {
    /// `targets`: each node's HTTP address and, if it serves one, its
    /// native address.
    pub fn new(targets: &[(NodeId, SocketAddr, Option<SocketAddr>)], access: Access) -> Self {
        let http: Vec<(NodeId, SocketAddr)> = targets.iter().map(|&(id, a, _)| (id, a)).collect();
        let (ended_tx, ended_rx) = mpsc::channel(CLIENT_ENDED_LEN_MAX);
        NativeTransport {
            targets: targets
                .iter()
                .filter_map(|&(id, _, native)| {
                    native.map(|addr| (id, Arc::new(Endpoint::new(addr))))
                })
                .collect(),
            http: Arc::new(HttpTransport::new(&http, access.clone())),
            access,
            watches: Arc::new(Watches {
                sessions: Mutex::new(Vec::new()),
                ended_tx,
                ended_rx: Mutex::new(Some(ended_rx)),
            }),
        }
    }
}

impl Transport for NativeTransport {
    fn call(&self, to: NodeId, msg: ToNode) -> Reply {
        let Some(endpoint) = self.targets.get(&to).cloned() else {
            return self.http.call(to, msg);
        };
        let (http, access, watches) =
            (self.http.clone(), self.access.clone(), self.watches.clone());
        Box::pin(async move {
            match endpoint.connection(&access, &watches).await {
                Some(conn) => conn.call(msg).await,
                None => http.call(to, msg).await,
            }
        })
    }

    fn watch(&self, session: SessionId) {
        {
            let mut sessions = lock(&self.watches.sessions);
            if sessions.contains(&session) {
                return;
            }
            if sessions.len() >= CLIENT_WATCHES_MAX {
                sessions.remove(0);
            }
            sessions.push(session);
        }
        for endpoint in self.targets.values() {
            if let Some(conn) = endpoint.open_conn() {
                conn.send_now(&ClientFrame::Watch { session });
            }
        }
    }

    fn take_ended(&self) -> Option<mpsc::Receiver<SessionId>> {
        lock(&self.watches.ended_rx).take()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The sessions to watch on every connection, and where pushes go.
struct Watches {
    sessions: Mutex<Vec<SessionId>>,
    ended_tx: mpsc::Sender<SessionId>,
    ended_rx: Mutex<Option<mpsc::Receiver<SessionId>>>,
}

/// One node's native address and its connection, if open.
struct Endpoint {
    addr: SocketAddr,
    conn: Mutex<Option<Conn>>,
    /// Held by the call that is opening the connection.
    opening: tokio::sync::Mutex<()>,
    /// When its native port last failed to open.
    failed_at: Mutex<Option<std::time::Instant>>,
}

impl Endpoint {
    fn new(addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr,
            conn: Mutex::new(None),
            opening: tokio::sync::Mutex::new(()),
            failed_at: Mutex::new(None),
        }
    }

    fn open_conn(&self) -> Option<Conn> {
        lock(&self.conn)
            .as_ref()
            .filter(|c| c.state.open.load(Ordering::Acquire))
            .cloned()
    }

    /// The open connection, opened now if there is none; None (go over
    /// HTTP) if it cannot be opened, failed to lately, or another call is
    /// opening it (this one does not wait up to the connect timeout).
    async fn connection(&self, access: &Access, watches: &Watches) -> Option<Conn> {
        if let Some(conn) = self.open_conn() {
            return Some(conn);
        }
        let _opening = self.opening.try_lock().ok()?;
        if let Some(conn) = self.open_conn() {
            return Some(conn);
        }
        let retry = Duration::from_millis(CLIENT_NATIVE_RETRY_MS);
        if lock(&self.failed_at).is_some_and(|at| at.elapsed() < retry) {
            return None;
        }
        let limit = Duration::from_millis(CLIENT_NATIVE_CONNECT_TIMEOUT_MS);
        let opened =
            match tokio::time::timeout(limit, Conn::open(self.addr, access, Some(watches))).await {
                Ok(Ok(conn)) => Some(conn),
                Ok(Err(e)) => {
                    tracing::debug!(addr = %self.addr, "native connection: {e}");
                    None
                }
                Err(_) => None,
            };
        *lock(&self.conn) = opened.clone();
        if opened.is_none() {
            *lock(&self.failed_at) = Some(std::time::Instant::now());
        }
        opened
    }
}

/// An open connection: where frames go, and the calls awaiting answers.
#[derive(Clone)]
struct Conn {
    /// Encoded frames.
    out: mpsc::Sender<Vec<u8>>,
    state: Arc<ConnState>,
}

struct ConnState {
    open: AtomicBool,
    next_call: AtomicU64,
    pending: Mutex<HashMap<u64, oneshot::Sender<NativeReply>>>,
}

impl Conn {
    /// Connects, says `Hello`, waits for `Welcome`, asks for the watched
    /// sessions' ends, and starts the connection's reader and writer.
    async fn open(
        addr: SocketAddr,
        access: &Access,
        watches: Option<&Watches>,
    ) -> Result<Conn, String> {
        let mut io = open_stream(addr, access).await.map_err(|e| e.to_string())?;
        let hello = ClientFrame::Hello {
            version: NATIVE_VERSION,
            credential: access.credential.clone(),
        };
        let bytes =
            encode_frame_max(&hello, NATIVE_CALL_FRAME_BYTES_MAX).map_err(|e| e.to_string())?;
        io.write_all(&bytes).await.map_err(|e| e.to_string())?;
        io.flush().await.map_err(|e| e.to_string())?;
        let mut reader = FrameReader::new(NATIVE_ANSWER_FRAME_BYTES_MAX, READ_BYTES);
        match reader.next(&mut io).await.map_err(|e| e.to_string())? {
            Some(ServerFrame::Welcome { .. }) => {}
            Some(ServerFrame::Goodbye { why }) => return Err(format!("{addr} refused: {why}")),
            other => return Err(format!("{addr} answered Hello with {other:?}")),
        }
        let (rd, wr) = tokio::io::split(io);
        let (out, out_rx) = mpsc::channel(CLIENT_NATIVE_OUTBOX_LEN_MAX);
        let state = Arc::new(ConnState {
            open: AtomicBool::new(true),
            next_call: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
        });
        let conn = Conn { out, state };
        for &session in watches
            .map(|w| lock(&w.sessions).clone())
            .unwrap_or_default()
            .iter()
        {
            conn.send_now(&ClientFrame::Watch { session });
        }
        tokio::spawn(write_frames(wr, out_rx, conn.state.clone()));
        tokio::spawn(read_frames(
            rd,
            reader,
            conn.state.clone(),
            watches.map(|w| w.ended_tx.clone()),
        ));
        Ok(conn)
    }

    /// Queues a small frame if there is room (a watch, a cancel: best
    /// effort).
    fn send_now(&self, frame: &ClientFrame) {
        if let Ok(bytes) = encode_frame_max(frame, NATIVE_CALL_FRAME_BYTES_MAX) {
            let _ = self.out.try_send(bytes);
        }
    }

    /// One call, answered on this connection. A call that is dropped
    /// before its answer (the session gave up on it) is cancelled at the
    /// node.
    async fn call(&self, msg: ToNode) -> NodeReply {
        let id = self.state.next_call.fetch_add(1, Ordering::Relaxed);
        let (limit_ms, call) = match msg {
            ToNode::Propose(b) => (EXCHANGE_TIMEOUT_MS, NativeCall::Propose(b)),
            ToNode::Read(b) => (EXCHANGE_TIMEOUT_MS, NativeCall::Read(b)),
            ToNode::Wait(w) => (EXCHANGE_TIMEOUT_MS + w.timeout_ms, NativeCall::Wait(w)),
        };
        let frame =
            match encode_frame_max(&ClientFrame::Call { id, call }, NATIVE_CALL_FRAME_BYTES_MAX) {
                Ok(bytes) => bytes,
                // What HTTP answers with 413: too large wherever it is sent.
                Err(e) => return NodeReply::Refused(format!("the call does not fit a frame: {e}")),
            };
        let (tx, rx) = oneshot::channel();
        lock(&self.state.pending).insert(id, tx);
        // The reader may have ended (and cleared `pending`) since this
        // connection was handed out: then nobody would ever answer.
        if !self.state.open.load(Ordering::Acquire) {
            lock(&self.state.pending).remove(&id);
            return NodeReply::Unavailable;
        }
        let mut pending = Pending {
            conn: self,
            id,
            armed: true,
        };
        if self.out.send(frame).await.is_err() {
            return NodeReply::Unavailable;
        }
        let answer = tokio::time::timeout(Duration::from_millis(limit_ms), rx).await;
        let reply = match answer {
            Ok(Ok(reply)) => reply,
            // The connection ended.
            Ok(Err(_)) => return NodeReply::Unavailable,
            // No answer long past the node's own bounds: the connection is
            // taken for dead (the next call opens another).
            Err(_) => {
                self.state.open.store(false, Ordering::Release);
                return NodeReply::Unavailable;
            }
        };
        pending.armed = false;
        match reply {
            NativeReply::Output(o) => NodeReply::Output(o),
            NativeReply::NotLeader(l) => NodeReply::NotLeader(l),
            NativeReply::Refused(why) => NodeReply::Refused(why),
            NativeReply::Unavailable(why) => {
                tracing::debug!("call {id}: unavailable: {why}");
                NodeReply::Unavailable
            }
        }
    }
}

/// One native connection to one node, for a program that numbers and
/// places its own calls (the benchmark's session workload): as many calls
/// in flight as it makes, answered in any order.
pub struct NativeConnection(Conn);

impl NativeConnection {
    /// Connects to the native port `addr` and says `Hello` with `access`.
    pub async fn open(addr: SocketAddr, access: &Access) -> Result<NativeConnection, String> {
        let limit = Duration::from_millis(CLIENT_NATIVE_CONNECT_TIMEOUT_MS);
        match tokio::time::timeout(limit, Conn::open(addr, access, None)).await {
            Ok(opened) => opened.map(NativeConnection),
            Err(_) => Err(format!(
                "{addr}: no Welcome within {CLIENT_NATIVE_CONNECT_TIMEOUT_MS} ms"
            )),
        }
    }

    pub async fn call(&self, msg: ToNode) -> NodeReply {
        self.0.call(msg).await
    }
}

/// A call awaiting its answer; dropped unanswered, it is forgotten here
/// and cancelled at the node.
struct Pending<'a> {
    conn: &'a Conn,
    id: u64,
    armed: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.armed && lock(&self.conn.state.pending).remove(&self.id).is_some() {
            self.conn.send_now(&ClientFrame::Cancel { id: self.id });
        }
    }
}

/// Hands answers to their calls and pushed ends to the driver, until the
/// connection ends; then fails the calls still waiting (`Unavailable`:
/// their outcome is unknown, and the session retries them by number).
async fn read_frames<R: AsyncRead + Unpin>(
    mut rd: R,
    mut reader: FrameReader,
    state: Arc<ConnState>,
    ended: Option<mpsc::Sender<SessionId>>,
) {
    loop {
        match reader.next(&mut rd).await {
            Ok(Some(ServerFrame::Answer { id, reply })) => {
                if let Some(tx) = lock(&state.pending).remove(&id) {
                    let _ = tx.send(reply);
                }
            }
            Ok(Some(ServerFrame::Ended { session, .. })) => {
                if let Some(ended) = &ended {
                    let _ = ended.try_send(session);
                }
            }
            Ok(Some(ServerFrame::Goodbye { why })) => {
                tracing::debug!("native connection closed by the node: {why}");
                break;
            }
            Ok(Some(ServerFrame::Welcome { .. })) => {}
            Ok(None) => break,
            Err(e) => {
                tracing::debug!("native connection: {e}");
                break;
            }
        }
    }
    state.open.store(false, Ordering::Release);
    lock(&state.pending).clear();
}

/// Writes queued frames, several per write, until the connection is
/// dropped (then closes its sending side) or the socket fails.
async fn write_frames<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut frames: mpsc::Receiver<Vec<u8>>,
    state: Arc<ConnState>,
) {
    while let Some(mut batch) = frames.recv().await {
        while batch.len() < WRITE_BATCH_BYTES_MAX {
            match frames.try_recv() {
                Ok(frame) => batch.extend(frame),
                Err(_) => break,
            }
        }
        if wr.write_all(&batch).await.is_err() || wr.flush().await.is_err() {
            state.open.store(false, Ordering::Release);
            lock(&state.pending).clear();
            return;
        }
    }
    let _ = wr.shutdown().await;
}
