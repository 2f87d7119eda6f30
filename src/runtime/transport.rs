//! TCP between peers: one outbound connection per peer, fed by a bounded
//! queue, and an accept loop that decodes inbound frames for the actor.

use crate::actor::NodeId;
use crate::net::{encode_frame, FrameDecoder};
use crate::raft::Envelope;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

/// Frames queued per peer. A slow or dead peer makes the queue fill up and
/// further frames are dropped, so the leader's memory stays bounded; Raft
/// retransmits what matters.
pub const PEER_SEND_QUEUE_LEN_MAX: usize = 1024;
pub const RECONNECT_BACKOFF_MS_MIN: u64 = 10;
pub const RECONNECT_BACKOFF_MS_MAX: u64 = 1000;
/// Bytes read from a socket per call.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// The sending half of one peer's connection.
pub struct PeerSender {
    tx: mpsc::Sender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
}

impl PeerSender {
    /// Spawns the connection task for `addr` on the current tokio runtime.
    pub fn spawn(peer: NodeId, addr: SocketAddr) -> (PeerSender, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(PEER_SEND_QUEUE_LEN_MAX);
        let task = tokio::task::spawn_local(peer_loop(peer, addr, rx));
        (
            PeerSender {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            task,
        )
    }

    /// Queues a message; drops it if the queue is full.
    pub fn send(&self, envelope: &Envelope) {
        let Ok(frame) = encode_frame(envelope) else {
            tracing::error!(to = envelope.to, "cannot encode a peer frame");
            return;
        };
        if self.tx.try_send(frame).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    to = envelope.to,
                    dropped = n,
                    "peer send queue full; dropping"
                );
            }
        }
    }
}

async fn peer_loop(peer: NodeId, addr: SocketAddr, mut rx: mpsc::Receiver<Vec<u8>>) {
    let mut backoff = Duration::from_millis(RECONNECT_BACKOFF_MS_MIN);
    loop {
        let stream = match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) => {
                if rx.is_closed() {
                    return;
                }
                tracing::debug!(peer, %addr, error = %e, ?backoff, "connect failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(RECONNECT_BACKOFF_MS_MAX));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        backoff = Duration::from_millis(RECONNECT_BACKOFF_MS_MIN);
        tracing::debug!(peer, %addr, "connected");
        let mut w = BufWriter::new(stream);
        loop {
            let Some(frame) = rx.recv().await else { return };
            let mut result = w.write_all(&frame).await;
            // Coalesce whatever else is queued into one write.
            while result.is_ok() {
                match rx.try_recv() {
                    Ok(more) => result = w.write_all(&more).await,
                    Err(_) => break,
                }
            }
            if result.is_err() || w.flush().await.is_err() {
                tracing::debug!(peer, %addr, "connection lost; reconnecting");
                break;
            }
        }
    }
}

/// Accepts peer connections and hands each decoded envelope to `deliver`.
/// Connection tasks live in a `JoinSet` owned by this task, so aborting it
/// closes every inbound connection too.
pub async fn accept_loop<F>(listener: TcpListener, deliver: F)
where
    F: Fn(Envelope) + Clone + 'static,
{
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, from)) => {
                    let _ = stream.set_nodelay(true);
                    conns.spawn_local(read_loop(stream, from, deliver.clone()));
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

async fn read_loop<F: Fn(Envelope)>(mut stream: TcpStream, from: SocketAddr, deliver: F) {
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
                Ok(Some(envelope)) => deliver(envelope),
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(%from, error = %e, "bad frame from peer; closing connection");
                    return;
                }
            }
        }
    }
}
