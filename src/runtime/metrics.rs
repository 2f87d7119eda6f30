//! Prometheus metrics of one node: counters and fixed-bucket histograms on
//! atomics, rendered in the text exposition format by `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Histogram bucket upper bounds, in seconds (Prometheus `le`).
pub const LATENCY_BUCKETS_S: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];
/// Distinct (operation, result) label pairs counted; more are dropped.
pub const OPERATION_LABELS_MAX: usize = 256;

#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_S.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, le) in LATENCY_BUCKETS_S.iter().enumerate() {
            if s <= *le {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, le) in LATENCY_BUCKETS_S.iter().enumerate() {
            let n = self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// A labelled metric family, read at render time.
pub struct Family<'a> {
    pub name: &'a str,
    pub help: &'a str,
    /// `gauge` or `counter`.
    pub kind: &'a str,
    /// Label text (`peer="2"`) and value.
    pub samples: Vec<(String, f64)>,
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub leader_changes: AtomicU64,
    pub fsync: Histogram,
    /// From a proposal reaching the node to its reply (commit and apply).
    pub commit: Histogram,
    /// Serializing a snapshot of the state machine, off the host's thread.
    pub snapshot_build: Histogram,
    /// Peer messages waiting in the node host's mailbox.
    pub inbound_queued: AtomicU64,
    /// Peer messages dropped because that mailbox was full.
    pub inbound_dropped: AtomicU64,
    operations: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl Metrics {
    /// Counts one API operation and how it ended.
    pub fn operation(&self, op: &'static str, result: &'static str) {
        let mut ops = self.operations.lock().unwrap_or_else(|e| e.into_inner());
        let full = ops.len() >= OPERATION_LABELS_MAX;
        match ops.get_mut(&(op, result)) {
            Some(n) => *n += 1,
            None if !full => {
                ops.insert((op, result), 1);
            }
            None => {}
        }
    }

    /// The exposition text; `gauges` are point-in-time values the caller
    /// read, `families` labelled ones.
    pub fn render(&self, gauges: &[(&str, &str, f64)], families: &[Family]) -> String {
        let mut out = String::new();
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        for f in families {
            let (name, help, kind) = (f.name, f.help, f.kind);
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in &f.samples {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
        let inbound = self.inbound_queued.load(Ordering::Relaxed);
        let dropped = self.inbound_dropped.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP raftlock_inbound_queue Peer messages waiting for the node host.\n# TYPE raftlock_inbound_queue gauge\nraftlock_inbound_queue {inbound}"
        );
        let _ = writeln!(
            out,
            "# HELP raftlock_inbound_dropped_total Peer messages dropped at a full node mailbox.\n# TYPE raftlock_inbound_dropped_total counter\nraftlock_inbound_dropped_total {dropped}"
        );
        let changes = self.leader_changes.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP raftlock_leader_changes_total Leaders this node has seen come and go.\n# TYPE raftlock_leader_changes_total counter\nraftlock_leader_changes_total {changes}"
        );
        self.fsync.render(
            &mut out,
            "raftlock_fsync_seconds",
            "Duration of each fsync of the Raft log.",
        );
        self.commit.render(
            &mut out,
            "raftlock_commit_seconds",
            "From a request reaching this node to its reply.",
        );
        self.snapshot_build.render(
            &mut out,
            "raftlock_snapshot_build_seconds",
            "Serializing a snapshot of the lock state, off the node's thread.",
        );
        let _ = writeln!(
            out,
            "# HELP raftlock_operations_total API operations by result.\n# TYPE raftlock_operations_total counter"
        );
        let ops = self.operations.lock().unwrap_or_else(|e| e.into_inner());
        for ((op, result), n) in ops.iter() {
            let _ = writeln!(
                out,
                "raftlock_operations_total{{op=\"{op}\",result=\"{result}\"}} {n}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_the_text_is_well_formed() {
        let m = Metrics::default();
        m.fsync.observe(Duration::from_micros(200));
        m.fsync.observe(Duration::from_millis(20));
        m.operation("acquire", "granted");
        m.operation("acquire", "granted");
        let peers = Family {
            name: "raftlock_peer_send_queue",
            help: "Frames queued.",
            kind: "gauge",
            samples: vec![("peer=\"2\"".into(), 5.0), ("peer=\"3\"".into(), 0.0)],
        };
        m.inbound_queued.fetch_add(2, Ordering::Relaxed);
        let text = m.render(&[("raftlock_term", "Current term.", 3.0)], &[peers]);
        assert!(text.contains("raftlock_term 3"), "{text}");
        assert!(text.contains("# TYPE raftlock_peer_send_queue gauge\nraftlock_peer_send_queue{peer=\"2\"} 5\nraftlock_peer_send_queue{peer=\"3\"} 0\n"), "{text}");
        assert!(text.contains("raftlock_inbound_queue 2\n"), "{text}");
        assert!(text.contains("raftlock_fsync_seconds_bucket{le=\"0.00025\"} 1"));
        assert!(text.contains("raftlock_fsync_seconds_bucket{le=\"0.025\"} 2"));
        assert!(text.contains("raftlock_fsync_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("raftlock_operations_total{op=\"acquire\",result=\"granted\"} 2"));
        // Every sample line is "name{labels} value" or "name value".
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
