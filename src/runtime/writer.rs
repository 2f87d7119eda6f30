//! The log writer: a thread that owns the node's `RaftStore`, writes the
//! persist operations the node host hands it, and fsyncs.
//!
//! Why a thread: an fsync blocks for a fraction of a millisecond, and the
//! node host used to do it itself. While it waited, nothing else on its
//! thread ran: the AppendEntries it had just queued did not reach the socket
//! until the fsync was over (so the leader's and the followers' fsyncs ran
//! one after the other), and no new request was read. Now the host queues
//! a batch and carries on; the writer takes every batch queued while it was
//! busy, writes them in order, fsyncs once (group commit across batches),
//! and reports the last batch number it made durable. The host holds back
//! what must not leave before that (see `node.rs`).

use super::metrics::Metrics;
use crate::raft::PersistOp;
use crate::storage::{FsDir, RaftStore};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Batches queued for the writer; a full queue makes the host wait, which
/// is the back-pressure a disk slower than the network needs.
pub const WRITE_QUEUE_BATCHES_MAX: usize = 64;
/// Batches the writer takes for one fsync.
pub const WRITE_BATCHES_PER_SYNC_MAX: usize = 256;

/// What the writer tells the host.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub enum Report {
    /// Every batch numbered up to `batch` is durable.
    Synced { batch: u64 },
    /// Writing or syncing failed; nothing from `batch` on is known durable
    /// and the writer has stopped.
    Failed { batch: u64, error: String },
}

pub struct LogWriter {
    /// `None` once closed.
    tx: Option<mpsc::SyncSender<(u64, Vec<PersistOp>)>>,
    thread: Option<JoinHandle<()>>,
}

impl LogWriter {
    /// Starts the writer thread; `report` is called on it after each fsync.
    pub fn start(
        node: u64,
        mut store: RaftStore<FsDir>,
        metrics: Arc<Metrics>,
        report: impl Fn(Report) + Send + 'static,
    ) -> std::io::Result<LogWriter> {
        let (tx, rx) = mpsc::sync_channel::<(u64, Vec<PersistOp>)>(WRITE_QUEUE_BATCHES_MAX);
        let thread = std::thread::Builder::new()
            .name(format!("raftlock-log-{node}"))
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut last = first.0;
                    let mut result = write_all(&mut store, &first.1);
                    for _ in 1..WRITE_BATCHES_PER_SYNC_MAX {
                        if result.is_err() {
                            break;
                        }
                        let Ok((batch, ops)) = rx.try_recv() else {
                            break;
                        };
                        last = batch;
                        result = write_all(&mut store, &ops);
                    }
                    let started = std::time::Instant::now();
                    let result = result.and_then(|()| store.sync().map_err(|e| e.to_string()));
                    match result {
                        Ok(()) => {
                            metrics.fsync.observe(started.elapsed());
                            report(Report::Synced { batch: last });
                        }
                        Err(error) => {
                            report(Report::Failed {
                                batch: first.0,
                                error,
                            });
                            return;
                        }
                    }
                }
            })?;
        Ok(LogWriter {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues batch number `batch` (numbers increase by one per call).
    /// Blocks while the queue is full; fails once the writer has stopped.
    pub fn submit(&self, batch: u64, ops: Vec<PersistOp>) -> Result<(), String> {
        match &self.tx {
            Some(tx) => tx
                .send((batch, ops))
                .map_err(|_| "the log writer has stopped".to_string()),
            None => Err("the log writer is closed".into()),
        }
    }

    /// Lets the writer finish what is queued, and waits for it: after this
    /// nothing writes to the data dir, so it can be opened again.
    pub fn close(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.close();
    }
}

fn write_all(store: &mut RaftStore<FsDir>, ops: &[PersistOp]) -> Result<(), String> {
    for op in ops {
        store.write(op).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{Entry, Payload};
    use std::time::Duration;

    fn entry(index: u64) -> Entry {
        Entry {
            term: 1,
            index,
            payload: Payload::Command(vec![index as u8]),
        }
    }

    #[test]
    fn batches_are_written_in_order_and_reported_durable() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, _) = RaftStore::open(FsDir::open(dir.path()).unwrap()).unwrap();
        let (tx, rx) = mpsc::channel();
        let metrics = Arc::new(Metrics::default());
        let mut writer = LogWriter::start(1, store, metrics.clone(), move |r| {
            let _ = tx.send(r);
        })
        .unwrap();
        for batch in 1..=3u64 {
            let ops = vec![PersistOp::Append(vec![entry(batch)])];
            writer.submit(batch, ops).unwrap();
        }
        // Reports name increasing batches and end with the last.
        let mut seen = Vec::new();
        while seen.last() != Some(&3) {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(Report::Synced { batch }) => seen.push(batch),
                other => panic!("{other:?} after {seen:?}"),
            }
        }
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        assert!(metrics.fsync.count() >= 1);
        writer.close();
        assert!(writer.submit(4, vec![]).is_err(), "closed");
        let (_, recovered, _) = RaftStore::open(FsDir::open(dir.path()).unwrap()).unwrap();
        assert_eq!(recovered.entries, vec![entry(1), entry(2), entry(3)]);
    }
}
