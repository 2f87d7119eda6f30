//! Event traces: one JSON object per line, in simulated-time order, of
//! what a seed did that a reader of a failure needs (role and term
//! changes, faults injected and healed, lock grants and session ends with
//! their tokens, fenced-resource rejections, checker verdicts).
//!
//! Off by default, and then free: the checker holds `None`. The runner
//! re-runs a failing seed with recording on (a seed replays bit for bit)
//! and writes the trace next to the build, printing where; `SIM_TRACE_JSON=1`
//! records every run.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

/// Lines one trace keeps; later events are counted, not kept.
pub const TRACE_LINES_MAX: usize = 1_000_000;

/// A field value.
pub enum V<'a> {
    N(u64),
    S(&'a str),
    B(bool),
}

#[derive(Debug, Default)]
pub struct Trace {
    lines: Vec<String>,
    dropped: u64,
}

impl Trace {
    /// Records one event at simulated time `t`, of `node` (0: the harness).
    pub fn event(&mut self, t: Duration, node: u64, kind: &str, fields: &[(&str, V)]) {
        if self.lines.len() >= TRACE_LINES_MAX {
            self.dropped += 1;
            return;
        }
        let mut line = format!(
            "{{\"t_us\":{},\"node\":{node},\"kind\":{}",
            t.as_micros(),
            quote(kind)
        );
        for (name, value) in fields {
            let _ = match value {
                V::N(n) => write!(line, ",{}:{n}", quote(name)),
                V::S(s) => write!(line, ",{}:{}", quote(name), quote(s)),
                V::B(b) => write!(line, ",{}:{b}", quote(name)),
            };
        }
        line.push('}');
        self.lines.push(line);
    }

    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// Writes the trace to `target/sim-traces/NAME-SEED.jsonl` (under
    /// `CARGO_TARGET_DIR` if set) and returns the path.
    pub fn write(&self, name: &str, seed: u64) -> std::io::Result<PathBuf> {
        let base = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
        let dir = base.join("sim-traces");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}-{seed}.jsonl"));
        let mut text = self.lines.join("\n");
        text.push('\n');
        if self.dropped > 0 {
            text.push_str(&format!(
                "{{\"t_us\":0,\"node\":0,\"kind\":\"truncated\",\"dropped\":{}}}\n",
                self.dropped
            ));
        }
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

/// A JSON string literal.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

static REPLAYING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turns recording on for the runs that follow (the runner's replay of a
/// failing seed), or off again.
pub fn set_replaying(on: bool) {
    REPLAYING.store(on, std::sync::atomic::Ordering::SeqCst);
}

/// Whether runs record now: while replaying, or always with
/// `SIM_TRACE_JSON=1`. Cheap: hot paths ask before formatting anything.
pub fn on() -> bool {
    static ALWAYS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    REPLAYING.load(std::sync::atomic::Ordering::Relaxed)
        || *ALWAYS.get_or_init(|| std::env::var_os("SIM_TRACE_JSON").is_some())
}
