//! The history the linearizability check reads, kept the way Jepsen and
//! Porcupine keep theirs: every checked call is entered when it is
//! invoked, and completed when its answer arrives. A call still open when
//! the run ends is ambiguous: it may or may not have taken effect, at any
//! time after its invocation (`Outcome::Unknown`). Leaving it out would
//! claim it never happened, which a later read may contradict (soak seeds
//! 82422167 and 82422357: a release applied, or an acquire granted, whose
//! answer was still on its way when the run stopped).

use raftlock::linearizability as lin;
use std::collections::{BTreeMap, BTreeSet};

/// Operations recorded for the linearizability check; more are not
/// recorded (the check's cost grows fast with history length).
pub const HISTORY_OPS_MAX: usize = 20_000;

/// (client id, call id): one call of one simulated client.
pub type CallKey = (u64, u64);

#[derive(Default)]
pub struct LockHistory {
    events: Vec<lin::Event>,
    /// Checked calls invoked and not yet answered.
    open: BTreeMap<CallKey, lin::Event>,
    /// Log indexes (and locks) of expiries and undelays already recorded.
    recorded: BTreeSet<(u64, String)>,
    /// Negative control: completed releases are left out of the history,
    /// so the check must fail (it cannot be made blind by ambiguity).
    pub drop_completed_releases: bool,
    /// Calls that were still open when the run ended, recorded ambiguous.
    pub open_at_end: u64,
    /// Calls answered with a definite outcome, by front end: session
    /// clients, library users, HTTP users (`FrontEnd`).
    pub definite_by_front_end: [u64; 3],
}

/// Which front end a simulated client uses, by its id.
pub fn front_end(client: u64) -> usize {
    use crate::{http_client::HTTP_ID_BASE, library_client::LIBRARY_ID_BASE};
    match client {
        c if c >= HTTP_ID_BASE => 2,
        c if c >= LIBRARY_ID_BASE => 1,
        _ => 0,
    }
}

/// The front ends' names, in `definite_by_front_end` order.
pub const FRONT_ENDS: [&str; 3] = ["session clients", "library users", "HTTP users"];

impl LockHistory {
    /// A checked call was sent.
    pub fn invoked(&mut self, key: CallKey, event: lin::Event) {
        self.open.insert(key, event);
    }

    /// A checked call was answered; `event` carries completion and outcome.
    pub fn completed(&mut self, key: CallKey, event: lin::Event, lin_locks: &[String]) {
        self.open.remove(&key);
        if event.outcome != lin::Outcome::Unknown {
            self.definite_by_front_end[front_end(key.0)] += 1;
        }
        let dropped = self.drop_completed_releases && event.outcome == lin::Outcome::Released;
        if !dropped {
            self.record_call(event, lin_locks);
        }
    }

    /// An expiry or undelay, certain at the moment the first replica
    /// applies it; `lock` is empty for an expiry (it touches every lock).
    /// Returns false if that entry was recorded already.
    pub fn first_apply(&mut self, index: u64, lock: &str) -> bool {
        self.recorded.insert((index, lock.to_string()))
    }

    /// An operation recorded from the log, certain at `at` (its first
    /// apply): an expiry, an undelay, a close.
    pub fn record_certain(&mut self, lock: &str, op: lin::Op, at: std::time::Duration) {
        let at = at.as_nanos() as u64;
        self.record(lin::Event {
            lock: lock.to_string(),
            op,
            invoked: at,
            completed: at,
            outcome: lin::Outcome::Done,
        });
    }

    pub fn record(&mut self, event: lin::Event) {
        if self.events.len() < HISTORY_OPS_MAX {
            self.events.push(event);
        }
    }

    /// A close lets go of every lock: each lock's history gets it.
    fn record_call(&mut self, event: lin::Event, lin_locks: &[String]) {
        if let lin::Op::Close { .. } = event.op {
            for lock in lin_locks {
                self.record(lin::Event {
                    lock: lock.clone(),
                    ..event.clone()
                });
            }
        } else {
            self.record(event);
        }
    }

    /// The end of the run: every call still open becomes ambiguous.
    /// Returns the whole history.
    pub fn finish(&mut self, lin_locks: &[String]) -> &[lin::Event] {
        for (_, mut event) in std::mem::take(&mut self.open) {
            event.outcome = lin::Outcome::Unknown;
            self.open_at_end += 1;
            self.record_call(event, lin_locks);
        }
        &self.events
    }
}

/// The two soak findings in miniature, run by the `lock_history` test:
/// with the open call recorded ambiguous the history is linearizable;
/// left out, or with a completed release dropped, it is not.
pub fn self_check() -> Result<String, String> {
    let locks = vec!["lin-1".to_string()];
    let ev = |op, invoked, completed, outcome| lin::Event {
        lock: "lin-1".into(),
        op,
        invoked,
        completed,
        outcome,
    };
    let check = |h: &mut LockHistory| lin::check(h.finish(&locks), &lin::Limits::default());
    let granted = || {
        ev(
            lin::Op::Acquire {
                session: 216,
                mode: lin::Mode::Exclusive,
            },
            10,
            20,
            lin::Outcome::Granted(65),
        )
    };
    let release = || {
        ev(
            lin::Op::Release {
                session: 216,
                token: 65,
            },
            30,
            0,
            lin::Outcome::Unknown,
        )
    };
    let nobody = || ev(lin::Op::Query, 40, 50, lin::Outcome::Holders(vec![]));

    // 82422167: a release applied but unanswered when the run ended.
    let mut h = LockHistory::default();
    h.completed((1, 1), granted(), &locks);
    h.invoked((1, 2), release());
    h.completed((2, 1), nobody(), &locks);
    let v = check(&mut h);
    if v != lin::Verdict::Linearizable || h.open_at_end != 1 {
        return Err(format!("open release not ambiguous: {v:?}"));
    }
    // The same history without the open call fails: what the soak saw.
    let mut h = LockHistory::default();
    h.completed((1, 1), granted(), &locks);
    h.completed((2, 1), nobody(), &locks);
    if !matches!(check(&mut h), lin::Verdict::Violation { .. }) {
        return Err("a query seeing no holder after a grant passed".into());
    }
    // 82422357: a shared acquire seen by a query before its answer came.
    let mut h = LockHistory::default();
    h.invoked(
        (1, 1),
        ev(
            lin::Op::Acquire {
                session: 305,
                mode: lin::Mode::Shared,
            },
            10,
            0,
            lin::Outcome::Unknown,
        ),
    );
    h.completed(
        (2, 1),
        ev(
            lin::Op::Query,
            20,
            30,
            lin::Outcome::Holders(vec![(305, 101)]),
        ),
        &locks,
    );
    let v = check(&mut h);
    if v != lin::Verdict::Linearizable {
        return Err(format!("open acquire not ambiguous: {v:?}"));
    }
    // The negative control's rule: a completed release left out fails.
    let mut h = LockHistory {
        drop_completed_releases: true,
        ..LockHistory::default()
    };
    h.completed((1, 1), granted(), &locks);
    let mut done = release();
    done.completed = 35;
    done.outcome = lin::Outcome::Released;
    h.completed((1, 2), done, &locks);
    h.completed((2, 1), nobody(), &locks);
    if !matches!(check(&mut h), lin::Verdict::Violation { .. }) {
        return Err("a dropped completed release was not caught".into());
    }
    Ok("open calls are ambiguous; a dropped completed release is caught".into())
}
