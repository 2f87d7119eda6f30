//! TCP between peers: one outbound connection per peer, fed by a bounded
//! queue, and an accept loop that decodes inbound frames for the node host.
//!
//! Every connection opens with a preamble: `PREAMBLE_MAGIC` (which also
//! names the protocol version) and the sender's cluster id. The acceptor
//! closes a connection whose preamble is wrong, so a node of another
//! cluster, or something that is not a raftlock peer, is never heard.
//!
//! With TLS (`crate::tls::PeerTls`, the default) the preamble and frames go
//! inside mutual TLS: a connection without a certificate from the
//! cluster's CA is refused in the handshake, and a frame whose sender is
//! not the node the connection's certificate names closes it.

use crate::actor::NodeId;
use crate::net::{encode_frame, FrameDecoder};
use crate::raft::Envelope;
use crate::tls::PeerTls;
use rustls::pki_types::CertificateDer;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

/// Frames queued per peer. A slow or dead peer makes the queue fill up and
/// further frames are dropped, so the leader's memory stays bounded; Raft
/// retransmits what matters.
pub const PEER_SEND_QUEUE_LEN_MAX: usize = 1024;
// A follower's forwards and the leader's answers to them, with a full
// window of appends, fit the queue each way.
const _: () = assert!(
    2 * crate::raft::config::FORWARDS_IN_FLIGHT_MAX
        + crate::raft::config::INFLIGHT_APPENDS_MAX_DEFAULT
        < PEER_SEND_QUEUE_LEN_MAX
);
/// Bytes queued per peer, whatever the frame count: a few frames of large
/// entries must not hold gigabytes (the count bound alone allows 1024
/// frames of 16 MiB).
pub const PEER_SEND_QUEUE_BYTES_MAX: usize = 64 * 1024 * 1024;
// Likewise in bytes: forwarded commands, a follower's window of appends,
// and the leader's answers carrying outputs of the same order.
const _: () = assert!(
    2 * crate::raft::config::FORWARDS_IN_FLIGHT_BYTES_MAX
        + crate::raft::config::INFLIGHT_BYTES_MAX_DEFAULT
        < PEER_SEND_QUEUE_BYTES_MAX
);
/// Frames of liveness messages (`Message::keeps_liveness`: votes, bare
/// heartbeats, append answers) queued per peer apart from the rest, and
/// sent ahead of it: under overload the bulk queue fills and drops, and
/// these must still get through. Each is under a hundred bytes; a leader
/// sends one heartbeat per peer per 50 ms, so 64 is seconds of them.
pub const PEER_LIVENESS_QUEUE_LEN_MAX: usize = 64;
pub const RECONNECT_BACKOFF_MS_MIN: u64 = 10;
pub const RECONNECT_BACKOFF_MS_MAX: u64 = 1000;
/// Bytes read from a socket per call.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// First bytes on every peer connection: "RLK" and protocol version 1.
pub const PREAMBLE_MAGIC: [u8; 4] = *b"RLK\x01";
const PREAMBLE_BYTES: usize = 12;
/// How long an acceptor waits for a preamble before closing.
pub const PREAMBLE_TIMEOUT_MS: u64 = 5_000;
/// How long a TLS handshake may take, either side, and a dial with it.
pub const PEER_HANDSHAKE_TIMEOUT_MS: u64 = 2_000;
/// Inbound peer connections at once (a cluster needs a few per member);
/// more are closed at once, so a flood of connections cannot use up the
/// node's file descriptors, which its storage needs too.
pub const PEER_CONNECTIONS_MAX: usize = 256;
/// Inbound TLS handshakes at once: each costs a signature on the node's
/// own thread before the peer has shown a certificate.
pub const PEER_HANDSHAKES_MAX: usize = 16;

/// What every peer connection of a node carries: its cluster's id, and
/// its TLS (none only with `--insecure`).
#[derive(Clone, Debug)]
pub struct PeerLink {
    pub cluster_id: u64,
    pub tls: Option<Arc<PeerTls>>,
}

fn preamble(cluster_id: u64) -> [u8; PREAMBLE_BYTES] {
    let mut p = [0u8; PREAMBLE_BYTES];
    p[..4].copy_from_slice(&PREAMBLE_MAGIC);
    p[4..].copy_from_slice(&cluster_id.to_le_bytes());
    p
}

/// The sending half of one peer's connection.
pub struct PeerSender {
    tx: mpsc::Sender<Vec<u8>>,
    /// The liveness lane (`PEER_LIVENESS_QUEUE_LEN_MAX`).
    liveness_tx: mpsc::Sender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
    /// Bytes queued and not yet taken by the connection task.
    queued_bytes: Arc<AtomicUsize>,
}

impl PeerSender {
    /// Spawns the connection task for `addr` on the current tokio runtime.
    /// `peer` 0: whichever member answers at `addr` (a join request).
    pub fn spawn(peer: NodeId, addr: SocketAddr, link: PeerLink) -> (PeerSender, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(PEER_SEND_QUEUE_LEN_MAX);
        let (liveness_tx, liveness) = mpsc::channel(PEER_LIVENESS_QUEUE_LEN_MAX);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let queue = Queue {
            rx,
            liveness,
            bytes: queued_bytes.clone(),
        };
        let task = tokio::task::spawn_local(peer_loop(peer, addr, link, queue));
        (
            PeerSender {
                tx,
                liveness_tx,
                dropped: Arc::new(AtomicU64::new(0)),
                queued_bytes,
            },
            task,
        )
    }

    /// Frames waiting to be written, both lanes.
    pub fn queued(&self) -> usize {
        let lane = |tx: &mpsc::Sender<Vec<u8>>| tx.max_capacity() - tx.capacity();
        lane(&self.tx) + lane(&self.liveness_tx)
    }

    /// Frames dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Queues a message; drops it if the queue is full.
    pub fn send(&self, envelope: &Envelope) {
        let Ok(frame) = encode_frame(envelope) else {
            tracing::error!(to = envelope.to, "cannot encode a peer frame");
            return;
        };
        if envelope.msg.keeps_liveness() {
            if self.liveness_tx.try_send(frame).is_err() {
                self.count_dropped(envelope.to);
            }
            return;
        }
        let len = frame.len();
        let fits = self.queued_bytes.load(Ordering::Relaxed) + len <= PEER_SEND_QUEUE_BYTES_MAX;
        if fits {
            self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        }
        if !fits || self.tx.try_send(frame).is_err() {
            if fits {
                self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            }
            self.count_dropped(envelope.to);
        }
    }

    fn count_dropped(&self, to: NodeId) {
        let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(to, dropped = n, "peer send queue full; dropping");
        }
    }
}

/// The receiving half of a peer's send queue, counting the bytes it takes
/// from the bulk lane; the liveness lane goes first.
struct Queue {
    rx: mpsc::Receiver<Vec<u8>>,
    liveness: mpsc::Receiver<Vec<u8>>,
    bytes: Arc<AtomicUsize>,
}

impl Queue {
    fn taken(&self, frame: Option<Vec<u8>>) -> Option<Vec<u8>> {
        if let Some(f) = &frame {
            self.bytes.fetch_sub(f.len(), Ordering::Relaxed);
        }
        frame
    }

    /// The next frame, a liveness one first; `None` once both lanes are
    /// closed and empty (their senders are dropped together).
    async fn recv(&mut self) -> Option<Vec<u8>> {
        tokio::select! {
            biased;
            Some(frame) = self.liveness.recv() => Some(frame),
            frame = self.rx.recv() => self.taken(frame),
        }
    }

    fn try_recv(&mut self) -> Option<Vec<u8>> {
        if let Ok(frame) = self.liveness.try_recv() {
            return Some(frame);
        }
        let frame = self.rx.try_recv().ok();
        self.taken(frame)
    }

    fn is_closed(&self) -> bool {
        self.rx.is_closed()
    }
}

async fn peer_loop(peer: NodeId, addr: SocketAddr, link: PeerLink, mut rx: Queue) {
    let mut backoff = Duration::from_millis(RECONNECT_BACKOFF_MS_MIN);
    loop {
        let dial_within = Duration::from_millis(PEER_HANDSHAKE_TIMEOUT_MS);
        let tcp = match tokio::time::timeout(dial_within, TcpStream::connect(addr)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::other("connect timed out")),
        };
        let connected = match tcp {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                match &link.tls {
                    None => Ok(send_frames(stream, &mut rx, link.cluster_id).await),
                    Some(tls) => match dial(tls, peer, stream).await {
                        Ok(stream) => Ok(send_frames(stream, &mut rx, link.cluster_id).await),
                        Err(e) => Err(e),
                    },
                }
            }
            Err(e) => Err(e.to_string()),
        };
        match connected {
            Ok(Ended::QueueClosed) => return,
            Ok(Ended::ConnectionLost) => {
                backoff = Duration::from_millis(RECONNECT_BACKOFF_MS_MIN);
                tracing::debug!(peer, %addr, "connection lost; reconnecting");
            }
            Err(e) => {
                if rx.is_closed() {
                    return;
                }
                tracing::debug!(peer, %addr, error = %e, ?backoff, "connect failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(RECONNECT_BACKOFF_MS_MAX));
            }
        }
    }
}

/// The TLS handshake with `peer`, which must present that node's
/// certificate (any member's, for `peer` 0), within
/// `PEER_HANDSHAKE_TIMEOUT_MS`. A failure is worth a warning: a wrong
/// address, or a certificate the peer refuses, looks otherwise like a
/// silent loss of quorum.
async fn dial(
    tls: &PeerTls,
    peer: NodeId,
    stream: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let name = PeerTls::server_name(peer).map_err(|e| e.to_string())?;
    let within = Duration::from_millis(PEER_HANDSHAKE_TIMEOUT_MS);
    let result = match tokio::time::timeout(within, tls.connector().connect(name, stream)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("TLS handshake: {e}")),
        Err(_) => Err("TLS handshake timed out".to_string()),
    };
    if let Err(e) = &result {
        tracing::warn!(peer, error = %e, "cannot reach peer over TLS");
    }
    result
}

enum Ended {
    QueueClosed,
    ConnectionLost,
}

/// Writes the preamble and then the queued frames until the connection
/// fails or the queue closes.
async fn send_frames<W: AsyncWrite + Unpin>(stream: W, rx: &mut Queue, cluster_id: u64) -> Ended {
    let mut w = BufWriter::new(stream);
    let mut opening = Some(preamble(cluster_id));
    loop {
        let Some(frame) = rx.recv().await else {
            return Ended::QueueClosed;
        };
        // Buffered with the first frame, so it costs no extra write.
        let mut result = match opening.take() {
            Some(p) => w.write_all(&p).await,
            None => Ok(()),
        };
        if result.is_ok() {
            result = w.write_all(&frame).await;
        }
        // Coalesce whatever else is queued into one write.
        while result.is_ok() {
            match rx.try_recv() {
                Some(more) => result = w.write_all(&more).await,
                None => break,
            }
        }
        if result.is_err() || w.flush().await.is_err() {
            return Ended::ConnectionLost;
        }
    }
}

/// Accepts peer connections and hands each decoded envelope to `deliver`.
/// Connection tasks live in a `JoinSet` owned by this task, so aborting it
/// closes every inbound connection too.
pub async fn accept_loop<F>(listener: TcpListener, link: PeerLink, deliver: F)
where
    F: Fn(Envelope) + Clone + 'static,
{
    let mut conns = JoinSet::new();
    let handshakes = Arc::new(tokio::sync::Semaphore::new(PEER_HANDSHAKES_MAX));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, from)) => {
                    if conns.len() >= PEER_CONNECTIONS_MAX {
                        // Dropped unread; counted in the log at powers of two.
                        refused(from, "too many peer connections");
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let serve = serve_peer(stream, from, link.clone(), handshakes.clone(), deliver.clone());
                    conns.spawn_local(serve);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(RECONNECT_BACKOFF_MS_MIN)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Refusals of peer connections so far; logged at powers of two, so a
/// flood cannot fill the log.
static REFUSED: AtomicU64 = AtomicU64::new(0);

fn refused(from: SocketAddr, why: &str) {
    let n = REFUSED.fetch_add(1, Ordering::Relaxed) + 1;
    if n.is_power_of_two() {
        tracing::warn!(%from, refused = n, "refused a peer connection: {why}");
    }
}

/// One inbound connection: its TLS handshake (if any, at most
/// `PEER_HANDSHAKES_MAX` at once), then its frames.
async fn serve_peer<F: Fn(Envelope)>(
    stream: TcpStream,
    from: SocketAddr,
    link: PeerLink,
    handshakes: Arc<tokio::sync::Semaphore>,
    deliver: F,
) {
    let Some(tls) = &link.tls else {
        return read_loop(stream, from, link.cluster_id, None, deliver).await;
    };
    let Ok(turn) = handshakes.try_acquire() else {
        return refused(from, "too many TLS handshakes at once");
    };
    let handshake = tokio::time::timeout(
        Duration::from_millis(PEER_HANDSHAKE_TIMEOUT_MS),
        tls.acceptor().accept(stream),
    )
    .await;
    drop(turn);
    let stream = match handshake {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let why = format!(
                "TLS handshake failed (no certificate, or one not from this cluster's CA?): {e}"
            );
            return refused(from, &why);
        }
        Err(_) => return refused(from, "no TLS handshake in time"),
    };
    let cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned());
    let Some(cert) = cert else {
        tracing::warn!(%from, "refused a peer connection: no client certificate");
        return;
    };
    read_loop(stream, from, link.cluster_id, Some(cert), deliver).await
}

/// Whether the frame may come from a connection whose certificate is
/// `cert`: its sender must be the node named there. (A `Join` names the
/// node to admit, which is not its sender when a follower passes it on to
/// its leader.) `verified` remembers the id already checked, so the check
/// runs once.
fn from_named_peer(
    envelope: &Envelope,
    cert: &CertificateDer<'_>,
    verified: &mut Option<NodeId>,
) -> bool {
    let claimed = envelope.from;
    if claimed == 0 {
        return false;
    }
    if *verified == Some(claimed) {
        return true;
    }
    if PeerTls::sent_by(cert, claimed) {
        *verified = Some(claimed);
        return true;
    }
    false
}

async fn read_loop<S: AsyncRead + Unpin, F: Fn(Envelope)>(
    mut stream: S,
    from: SocketAddr,
    cluster_id: u64,
    cert: Option<CertificateDer<'static>>,
    deliver: F,
) {
    let mut opening = [0u8; PREAMBLE_BYTES];
    let read = tokio::time::timeout(
        Duration::from_millis(PREAMBLE_TIMEOUT_MS),
        stream.read_exact(&mut opening),
    )
    .await;
    if !matches!(read, Ok(Ok(_))) {
        return;
    }
    if opening[..4] != PREAMBLE_MAGIC {
        tracing::warn!(%from, "a connection that is not a raftlock peer (protocol 1); closing it");
        return;
    }
    let theirs = u64::from_le_bytes(opening[4..].try_into().unwrap_or_default());
    if theirs != cluster_id {
        tracing::warn!(
            %from,
            theirs = format_args!("{theirs:016x}"),
            ours = format_args!("{cluster_id:016x}"),
            "a peer of another cluster (check --cluster-name); closing its connection"
        );
        return;
    }
    let mut verified = None;
    let mut decoder = FrameDecoder::new();
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        decoder.extend(&buf[..n]);
        loop {
            match decoder.next_frame::<Envelope>() {
                Ok(Some(envelope)) => {
                    if let Some(cert) = &cert {
                        if !from_named_peer(&envelope, cert, &mut verified) {
                            tracing::warn!(
                                %from,
                                claimed = envelope.from,
                                "a peer sent a frame as a node its certificate does not name; closing its connection"
                            );
                            return;
                        }
                    }
                    deliver(envelope)
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(%from, error = %e, "bad frame from peer; closing connection");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::Message;
    use std::cell::RefCell;
    use std::rc::Rc;

    fn envelope(from: NodeId) -> Envelope {
        Envelope {
            from,
            to: 1,
            msg: Message::TimeoutNow { term: 7 },
        }
    }

    /// Feeds `bytes` to an acceptor of cluster 42 over a raw connection and
    /// returns once the acceptor has closed it or delivered a frame.
    async fn offer(addr: SocketAddr, bytes: &[u8], got: &Rc<RefCell<Vec<Envelope>>>) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let mut sink = [0u8; 16];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while got.borrow().is_empty() && tokio::time::Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_millis(20), s.read(&mut sink)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return, // closed by the acceptor
                _ => {}
            }
        }
    }

    #[test]
    fn peers_of_another_cluster_or_protocol_are_not_heard() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&rt, async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let got = Rc::new(RefCell::new(Vec::new()));
            let sink = got.clone();
            let link = PeerLink {
                cluster_id: 42,
                tls: None,
            };
            tokio::task::spawn_local(accept_loop(listener, link.clone(), move |e| {
                sink.borrow_mut().push(e)
            }));
            let frame = encode_frame(&envelope(9)).unwrap();

            let mut foreign = preamble(43).to_vec();
            foreign.extend_from_slice(&frame);
            offer(addr, &foreign, &got).await;
            let mut garbage = b"GET / HTTP/1.1\r\n\r\n".to_vec();
            garbage.extend_from_slice(&frame);
            offer(addr, &garbage, &got).await;
            assert!(got.borrow().is_empty(), "{:?}", got.borrow());

            let mut ours = preamble(42).to_vec();
            ours.extend_from_slice(&frame);
            offer(addr, &ours, &got).await;
            assert_eq!(*got.borrow(), vec![envelope(9)]);

            // And the real sender opens with the preamble.
            let (sender, _task) = PeerSender::spawn(1, addr, link);
            sender.send(&envelope(5));
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while got.borrow().len() < 2 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(*got.borrow(), vec![envelope(9), envelope(5)]);
        });
    }

    /// Under overload the bulk lane fills and drops, while heartbeats and
    /// votes still queue, and go out first once the peer is reachable.
    #[test]
    fn liveness_messages_pass_a_full_queue_and_go_first() {
        use crate::raft::message::{AppendRequest, VoteRequest};
        use crate::raft::{Entry, Payload};
        let append = |entries: Vec<Entry>| Envelope {
            from: 2,
            to: 1,
            msg: Message::Append(AppendRequest {
                term: 3,
                prev_index: 0,
                prev_term: 0,
                entries,
                leader_commit: 0,
                read_round: 0,
            }),
        };
        let bulk = append(vec![Entry {
            index: 1,
            term: 3,
            payload: Payload::Command(vec![1; 100]),
        }]);
        let heartbeat = append(vec![]);
        let vote = Envelope {
            from: 2,
            to: 1,
            msg: Message::Vote(VoteRequest {
                term: 4,
                last_log_index: 1,
                last_log_term: 3,
                transfer: false,
            }),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&rt, async {
            // Nobody listens yet: everything stays queued.
            let addr = TcpListener::bind("127.0.0.1:0")
                .await
                .unwrap()
                .local_addr()
                .unwrap();
            let link = PeerLink {
                cluster_id: 42,
                tls: None,
            };
            let (sender, _task) = PeerSender::spawn(1, addr, link.clone());
            for _ in 0..PEER_SEND_QUEUE_LEN_MAX + 10 {
                sender.send(&bulk);
            }
            assert_eq!(sender.dropped(), 10, "the bulk lane is full");
            sender.send(&heartbeat);
            sender.send(&vote);
            assert_eq!(sender.dropped(), 10, "liveness messages are not dropped");
            assert_eq!(sender.queued(), PEER_SEND_QUEUE_LEN_MAX + 2);
            for _ in 0..PEER_LIVENESS_QUEUE_LEN_MAX {
                sender.send(&heartbeat);
            }
            assert_eq!(sender.dropped(), 12, "the liveness lane has its own bound");

            let listener = TcpListener::bind(addr).await.unwrap();
            let got = Rc::new(RefCell::new(Vec::new()));
            let sink = got.clone();
            tokio::task::spawn_local(accept_loop(listener, link, move |e| {
                sink.borrow_mut().push(e)
            }));
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while got.borrow().len() < 3 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let got = got.borrow();
            assert_eq!(
                got.first(),
                Some(&heartbeat),
                "the liveness lane goes first"
            );
            assert_eq!(got.get(1), Some(&vote));
            assert!(
                got.iter()
                    .take(PEER_LIVENESS_QUEUE_LEN_MAX)
                    .all(|e| e.msg.keeps_liveness()),
                "before any bulk frame"
            );
        });
    }

    #[test]
    fn a_frame_is_heard_only_from_the_node_its_certificate_names() {
        use rustls::pki_types::pem::PemObject;
        let dir = tempfile::tempdir().unwrap();
        crate::tls::create_ca(dir.path()).unwrap();
        crate::tls::create_node(dir.path(), 2, &[]).unwrap();
        let pem = std::fs::read(crate::tls::node_cert_path(dir.path(), 2)).unwrap();
        let cert = CertificateDer::from_pem_slice(&pem).unwrap();
        let from = |id| Envelope {
            from: id,
            to: 1,
            msg: Message::TimeoutNow { term: 7 },
        };
        let mut verified = None;
        assert!(!from_named_peer(&from(3), &cert, &mut verified));
        assert!(!from_named_peer(&from(0), &cert, &mut verified));
        assert!(!from_named_peer(&from(22), &cert, &mut verified));
        assert!(from_named_peer(&from(2), &cert, &mut verified));
        assert_eq!(verified, Some(2));
        // Once verified as 2, the connection cannot switch to another id.
        assert!(!from_named_peer(&from(3), &cert, &mut verified));
        // A follower passing on a join for node 5 speaks as itself.
        let join = Envelope {
            from: 2,
            to: 1,
            msg: Message::Join {
                id: 5,
                addr: "127.0.0.1:1".into(),
            },
        };
        assert!(from_named_peer(&join, &cert, &mut verified));
    }
}
