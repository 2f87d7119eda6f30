//! Linearizability checker for histories of lock operations, recorded
//! against a running lock service: used by the simulator, and by anyone
//! testing raftlock as a black box. (The simulator's own checkers live in
//! `sim/checker/`.)
//!
//! Wing & Gong's search with Lowe's memoization (as in Porcupine): each lock
//! is an independent object, so the history is split per lock name and each
//! part is checked on its own (P-compositionality), which keeps the search
//! small. A search node is (set of linearized ops, model state); nodes already
//! visited are cached so that permutations reaching the same node are not
//! explored twice.
//!
//! Ops whose client timed out (`Outcome::Unknown`) may take effect at any time
//! after their invocation, or never: they never bound the search window, and
//! the search succeeds once every op with a definite outcome is placed.
//! Because they stay placeable forever, they would make the search
//! exponential; two sound reductions keep that in check: a node whose placed
//! unknown ops are a superset of an already-visited node's (same definite
//! ops, same state) is pruned, as it has fewer options; and of identical
//! unknown ops only the earliest unplaced one is tried.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

pub type SessionId = u64;
pub type Token = u64;

/// Default bound on search steps per lock, so a pathological history ends as
/// `Inconclusive` instead of running for hours.
pub const LINEARIZABILITY_STEPS_MAX: u64 = 1_000_000;
/// Ops of one lock beyond which the check gives up (`Inconclusive`): the
/// search and its cache grow with this.
pub const HISTORY_OPS_PER_LOCK_MAX: usize = 4096;
/// Placed ops shown in a violation's detail, so reports of long histories
/// stay readable.
const DETAIL_PREFIX_OPS_MAX: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    Exclusive,
    Shared,
    /// Up to `n` holders.
    Semaphore(u32),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A try-lock, or a wait whose grant came within the call. The model
    /// has no queue: a wait's grant is placed where the lock was free for
    /// it, and a try-lock's `Busy` is only checked on locks nobody waits
    /// for (beside a queued writer a reader's try-lock is refused although
    /// the lock is shared; the model would grant it).
    Acquire {
        session: SessionId,
        mode: Mode,
    },
    Release {
        session: SessionId,
        token: Token,
    },
    /// A front end letting go, on its own, of what a call whose client
    /// left may have been granted (the client library's cancel of a dropped
    /// wait, the request layer's undo after a client hung up): whatever
    /// `session` holds of the lock is released. Its outcome is never seen.
    Undo {
        session: SessionId,
    },
    /// who holds the lock
    Query,
    /// client closed its session: its holdings vanish, no lock-delay
    Close {
        session: SessionId,
    },
    /// the cluster expired the session (recorded from the log; always
    /// certain): holdings vanish and, if the session held this lock, the lock
    /// enters lock-delay (no grants) until Undelay
    Expire {
        session: SessionId,
    },
    /// lock-delay over
    Undelay,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Acquire
    Granted(Token),
    /// Acquire
    Busy,
    /// Acquire
    LimitMismatch,
    /// Acquire by a session holding the lock in another mode
    ModeConflict,
    /// Release
    Released,
    /// Release
    NotHolder,
    /// Query, sorted by session
    Holders(Vec<(SessionId, Token)>),
    /// Close / Expire / Undelay
    Done,
    /// the client timed out: the op may or may not have taken effect, at any
    /// time after invocation
    Unknown,
}

/// One client-observed (or log-recorded) operation; times are nanoseconds of
/// real time.
#[derive(Clone, Debug)]
pub struct Event {
    pub lock: String,
    pub op: Op,
    pub invoked: u64,
    /// ignored if outcome is `Unknown`
    pub completed: u64,
    pub outcome: Outcome,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bound on search steps (model transitions tried) per lock.
    pub steps_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            steps_max: LINEARIZABILITY_STEPS_MAX,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    Violation {
        lock: String,
        detail: String,
    },
    /// The search bound or the op-count bound was hit before an answer.
    Inconclusive {
        lock: String,
    },
}

/// Checks every lock's sub-history; the first violation (in lock-name order)
/// wins, then the first inconclusive lock.
pub fn check(history: &[Event], limits: &Limits) -> Verdict {
    let mut per_lock: BTreeMap<&str, Vec<(usize, &Event)>> = BTreeMap::new();
    for (i, e) in history.iter().enumerate() {
        per_lock.entry(e.lock.as_str()).or_default().push((i, e));
    }
    let mut inconclusive: Option<String> = None;
    for (lock, events) in per_lock {
        let result = if events.len() > HISTORY_OPS_PER_LOCK_MAX {
            LockResult::Inconclusive
        } else {
            check_lock(&events, limits)
        };
        match result {
            LockResult::Ok => {}
            LockResult::Violation(detail) => {
                return Verdict::Violation {
                    lock: lock.to_string(),
                    detail,
                }
            }
            LockResult::Inconclusive => {
                if inconclusive.is_none() {
                    inconclusive = Some(lock.to_string());
                }
            }
        }
    }
    match inconclusive {
        Some(lock) => Verdict::Inconclusive { lock },
        None => Verdict::Linearizable,
    }
}

/// Sequential state of one lock. Holders are kept sorted by session so that
/// equal states hash equally.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct LockState {
    /// (session, mode, token); `None` token: granted by an op whose outcome
    /// was never seen, so any token is accepted for it.
    holders: Vec<(SessionId, Mode, Option<Token>)>,
    delayed: bool,
    last_token: Option<Token>,
}

/// What the model does for an Acquire by a session that does not hold.
enum AcquireResult {
    Grant,
    Busy,
    LimitMismatch,
}

impl LockState {
    fn find(&self, session: SessionId) -> Result<usize, usize> {
        self.holders.binary_search_by_key(&session, |h| h.0)
    }

    fn acquire_result(&self, mode: Mode) -> AcquireResult {
        if self.delayed {
            return AcquireResult::Busy;
        }
        if self.holders.is_empty() {
            return AcquireResult::Grant;
        }
        match mode {
            Mode::Exclusive => AcquireResult::Busy,
            Mode::Shared => {
                if self.holders.iter().all(|h| h.1 == Mode::Shared) {
                    AcquireResult::Grant
                } else {
                    AcquireResult::Busy
                }
            }
            Mode::Semaphore(n) => {
                let mut all_semaphore = true;
                for h in &self.holders {
                    match h.1 {
                        Mode::Semaphore(m) if m != n => return AcquireResult::LimitMismatch,
                        Mode::Semaphore(_) => {}
                        _ => all_semaphore = false,
                    }
                }
                if !all_semaphore {
                    AcquireResult::Busy
                } else if (self.holders.len() as u64) < u64::from(n) {
                    AcquireResult::Grant
                } else {
                    AcquireResult::Busy
                }
            }
        }
    }

    /// The state after `op` if the model can produce `outcome` for it, else
    /// `None`. For `Unknown` the op takes effect with whatever result the
    /// model gives. Tokens seen for a `None`-token holder are recorded: the
    /// real grant had exactly that token, so later checks get sharper.
    fn step(&self, op: &Op, outcome: &Outcome) -> Option<LockState> {
        match op {
            Op::Acquire { session, mode } => {
                let session = *session;
                match self.find(session) {
                    Ok(i) => {
                        // A re-acquire in the mode held returns the holder's
                        // token; in another mode it is refused.
                        let (_, held_mode, held) = self.holders[i];
                        if let Some(refusal) = reacquire_refusal(held_mode, *mode) {
                            return matches!(outcome, Outcome::Unknown)
                                .then(|| self.clone())
                                .or_else(|| (*outcome == refusal).then(|| self.clone()));
                        }
                        match (outcome, held) {
                            (Outcome::Unknown, _) => Some(self.clone()),
                            (Outcome::Granted(t), Some(h)) if *t == h => Some(self.clone()),
                            (Outcome::Granted(t), None) => {
                                let mut next = self.clone();
                                next.holders[i].2 = Some(*t);
                                Some(next)
                            }
                            _ => None,
                        }
                    }
                    Err(pos) => match (self.acquire_result(*mode), outcome) {
                        (AcquireResult::Grant, Outcome::Granted(t)) => {
                            if self.last_token.is_some_and(|last| *t <= last) {
                                return None;
                            }
                            let mut next = self.clone();
                            next.holders.insert(pos, (session, *mode, Some(*t)));
                            next.last_token = Some(*t);
                            Some(next)
                        }
                        (AcquireResult::Grant, Outcome::Unknown) => {
                            let mut next = self.clone();
                            next.holders.insert(pos, (session, *mode, None));
                            Some(next)
                        }
                        (AcquireResult::Busy, Outcome::Busy | Outcome::Unknown)
                        | (
                            AcquireResult::LimitMismatch,
                            Outcome::LimitMismatch | Outcome::Unknown,
                        ) => Some(self.clone()),
                        _ => None,
                    },
                }
            }
            Op::Release { session, token } => {
                let held = self.find(*session).ok().map(|i| (i, self.holders[i].2));
                match (held, outcome) {
                    (Some((i, h)), Outcome::Released | Outcome::Unknown)
                        if h.is_none_or(|h| h == *token) =>
                    {
                        let mut next = self.clone();
                        next.holders.remove(i);
                        Some(next)
                    }
                    // An unknown token may differ from `token`, so NotHolder
                    // is possible for it too.
                    (Some((_, h)), Outcome::NotHolder | Outcome::Unknown) if h != Some(*token) => {
                        Some(self.clone())
                    }
                    (None, Outcome::NotHolder | Outcome::Unknown) => Some(self.clone()),
                    _ => None,
                }
            }
            Op::Undo { session } => match outcome {
                Outcome::Unknown => {
                    let mut next = self.clone();
                    if let Ok(i) = next.find(*session) {
                        next.holders.remove(i);
                    }
                    Some(next)
                }
                _ => None,
            },
            Op::Query => match outcome {
                Outcome::Unknown => Some(self.clone()),
                Outcome::Holders(list) => {
                    if list.len() != self.holders.len() {
                        return None;
                    }
                    let mut refined = false;
                    for ((s, t), h) in list.iter().zip(&self.holders) {
                        if *s != h.0 {
                            return None;
                        }
                        match h.2 {
                            Some(ht) if ht != *t => return None,
                            Some(_) => {}
                            None => refined = true,
                        }
                    }
                    let mut next = self.clone();
                    if refined {
                        for ((_, t), h) in list.iter().zip(next.holders.iter_mut()) {
                            h.2 = Some(*t);
                        }
                    }
                    Some(next)
                }
                _ => None,
            },
            Op::Close { session } | Op::Expire { session } => match outcome {
                Outcome::Done | Outcome::Unknown => {
                    let mut next = self.clone();
                    if let Ok(i) = next.find(*session) {
                        next.holders.remove(i);
                        if matches!(op, Op::Expire { .. }) {
                            next.delayed = true;
                        }
                    }
                    Some(next)
                }
                _ => None,
            },
            Op::Undelay => match outcome {
                Outcome::Done | Outcome::Unknown => {
                    let mut next = self.clone();
                    next.delayed = false;
                    Some(next)
                }
                _ => None,
            },
        }
    }

    /// The model's own answer to `op`, for violation reports only.
    fn expected(&self, op: &Op) -> String {
        match op {
            Op::Acquire { session, mode } => match self.find(*session) {
                Ok(i) => match reacquire_refusal(self.holders[i].1, *mode) {
                    Some(refusal) => format!("{refusal:?} (re-acquire in another mode)"),
                    None => format!("Granted({:?}) (re-acquire)", self.holders[i].2),
                },
                Err(_) => match self.acquire_result(*mode) {
                    AcquireResult::Grant => match self.last_token {
                        Some(t) => format!("Granted(token > {t})"),
                        None => "Granted(any token)".to_string(),
                    },
                    AcquireResult::Busy => "Busy".to_string(),
                    AcquireResult::LimitMismatch => "LimitMismatch".to_string(),
                },
            },
            Op::Release { session, token } => match self.find(*session) {
                Ok(i) if self.holders[i].2.is_none_or(|h| h == *token) => "Released".to_string(),
                _ => "NotHolder".to_string(),
            },
            Op::Query => {
                let list: Vec<_> = self.holders.iter().map(|h| (h.0, h.2)).collect();
                format!("Holders({list:?})")
            }
            Op::Close { .. } | Op::Expire { .. } | Op::Undelay => "Done".to_string(),
            Op::Undo { .. } => "(never seen)".to_string(),
        }
    }
}

/// What a holder asking again in `asked` mode gets, if not its grant: a
/// semaphore with another limit is a mismatch, any other change of mode a
/// conflict (an upgrade is never granted beside other holders).
fn reacquire_refusal(held: Mode, asked: Mode) -> Option<Outcome> {
    match (held, asked) {
        _ if held == asked => None,
        (Mode::Semaphore(_), Mode::Semaphore(_)) => Some(Outcome::LimitMismatch),
        _ => Some(Outcome::ModeConflict),
    }
}

enum LockResult {
    Ok,
    Violation(String),
    Inconclusive,
}

/// One op of a lock's sub-history, prepared for the search.
struct Entry<'a> {
    /// Position in the caller's history, for reports.
    index: usize,
    event: &'a Event,
    /// Latest linearization time: `completed`, or `u64::MAX` for `Unknown`.
    deadline: u64,
    unknown: bool,
}

impl Entry<'_> {
    fn is_unknown(&self) -> bool {
        self.unknown
    }
}

/// A node on the depth-first search path.
struct Frame {
    state: LockState,
    /// Op (index into entries) whose linearization led here.
    applied: Option<usize>,
    /// Position in `by_deadline` of the first unplaced definite op.
    deadline_cursor: usize,
    /// First entry in invocation order not yet placed.
    first_unplaced: usize,
    /// Next entry to try as a successor.
    scan: usize,
    /// Whether `scan` is in the second pass, over unknown ops.
    unknown_phase: bool,
}

fn describe(entry: &Entry<'_>) -> String {
    let e = entry.event;
    if e.outcome == Outcome::Unknown {
        format!("#{} {:?} [{}..] -> Unknown", entry.index, e.op, e.invoked)
    } else {
        format!(
            "#{} {:?} [{}..{}] -> {:?}",
            entry.index, e.op, e.invoked, e.completed, e.outcome
        )
    }
}

fn bit(bits: &[u64], i: usize) -> bool {
    bits[i / 64] & (1 << (i % 64)) != 0
}

fn flip(bits: &mut [u64], i: usize) {
    bits[i / 64] ^= 1 << (i % 64);
}

fn check_lock(events: &[(usize, &Event)], limits: &Limits) -> LockResult {
    // Only a session that asks for the lock can hold it: the end of any
    // other session changes nothing here, in every order, so it is left
    // out. (A leader expires dozens of sessions at one instant after a
    // partition heals; as concurrent ops their orders were searched one
    // by one, 2^n of them.)
    let acquirers: std::collections::BTreeSet<SessionId> = events
        .iter()
        .filter_map(|(_, e)| match e.op {
            Op::Acquire { session, .. } => Some(session),
            _ => None,
        })
        .collect();
    let mut entries: Vec<Entry<'_>> = Vec::with_capacity(events.len());
    for &(index, event) in events {
        if let Op::Close { session } | Op::Expire { session } | Op::Undo { session } = event.op {
            let silent = matches!(event.outcome, Outcome::Done | Outcome::Unknown);
            if silent && !acquirers.contains(&session) {
                continue;
            }
        }
        let deadline = if event.outcome == Outcome::Unknown {
            // A read with unknown result says nothing and changes nothing.
            if event.op == Op::Query {
                continue;
            }
            u64::MAX
        } else if event.completed < event.invoked {
            return LockResult::Violation(format!(
                "malformed event #{index}: completed {} before invoked {}",
                event.completed, event.invoked
            ));
        } else {
            event.completed
        };
        entries.push(Entry {
            index,
            event,
            deadline,
            unknown: event.outcome == Outcome::Unknown,
        });
    }
    entries.sort_by_key(|e| (e.event.invoked, e.index));
    let n = entries.len();
    // Definite ops by deadline: the first unplaced one bounds the window.
    let mut by_deadline: Vec<usize> = (0..n).filter(|&i| !entries[i].is_unknown()).collect();
    by_deadline.sort_by_key(|&i| (entries[i].deadline, i));
    let definite = by_deadline.len();
    // Identical unknown ops are interchangeable once both are invoked (the
    // window only grows), so only the earliest unplaced one of them is tried.
    let mut twin_prev: Vec<Option<usize>> = vec![None; n];
    let mut last_of_op: Vec<(&Op, usize)> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        if !entry.is_unknown() {
            continue;
        }
        let op = &entry.event.op;
        match last_of_op.iter_mut().find(|(o, _)| *o == op) {
            Some(last) => {
                twin_prev[i] = Some(last.1);
                last.1 = i;
            }
            None => last_of_op.push((op, i)),
        }
    }

    // Placed definite and placed unknown ops, by entry index.
    let mut placed_definite = vec![0u64; n.div_ceil(64)];
    let mut placed_unknown = vec![0u64; n.div_ceil(64)];
    // Lowe's cache, extended for unknown ops: a node (definite set, state)
    // reached with placed-unknown set U is dominated by one already reached
    // with a subset of U, since unplaced unknown ops only add options.
    let mut seen: HashMap<(Vec<u64>, LockState), Vec<Vec<u64>>> = HashMap::new();
    let mut stack = vec![Frame {
        state: LockState::default(),
        applied: None,
        deadline_cursor: 0,
        first_unplaced: 0,
        scan: 0,
        unknown_phase: false,
    }];
    let mut steps: u64 = 0;
    // Deepest path found, for the report.
    let mut best: Vec<usize> = Vec::new();
    let mut best_state = LockState::default();
    let mut best_depth_definite = 0usize;

    loop {
        let Some(top) = stack.last_mut() else {
            return LockResult::Violation(violation_detail(
                &entries,
                &by_deadline,
                &best,
                &best_state,
                best_depth_definite,
                definite,
            ));
        };
        if top.deadline_cursor == definite {
            return LockResult::Ok;
        }
        let window_end = entries[by_deadline[top.deadline_cursor]].deadline;
        let mut pushed: Option<(usize, LockState, usize, usize)> = None;
        // Definite ops first, then unknown ones: paths that place fewer
        // unknown ops come first and dominate the others in the cache.
        loop {
            if top.scan >= n || entries[top.scan].event.invoked > window_end {
                if top.unknown_phase {
                    break;
                }
                top.unknown_phase = true;
                top.scan = top.first_unplaced;
                continue;
            }
            let i = top.scan;
            top.scan += 1;
            let entry = &entries[i];
            let unknown = entry.is_unknown();
            if unknown != top.unknown_phase {
                continue;
            }
            let placed = if unknown {
                &placed_unknown
            } else {
                &placed_definite
            };
            if bit(placed, i) || twin_prev[i].is_some_and(|j| !bit(&placed_unknown, j)) {
                continue;
            }
            steps += 1;
            if steps > limits.steps_max {
                return LockResult::Inconclusive;
            }
            let Some(next) = top.state.step(&entry.event.op, &entry.event.outcome) else {
                continue;
            };
            // Placing an unknown op that changes nothing now only narrows
            // later choices: leaving it unplaced covers that path.
            if unknown && next == top.state {
                continue;
            }
            let placed = if unknown {
                &mut placed_unknown
            } else {
                &mut placed_definite
            };
            flip(placed, i);
            let subsets = seen
                .entry((placed_definite.clone(), next.clone()))
                .or_default();
            let dominated = subsets
                .iter()
                .any(|u| u.iter().zip(&placed_unknown).all(|(a, b)| a & !b == 0));
            if !dominated {
                subsets.push(placed_unknown.clone());
                let mut cursor = top.deadline_cursor;
                while cursor < definite && bit(&placed_definite, by_deadline[cursor]) {
                    cursor += 1;
                }
                let mut first = top.first_unplaced;
                while first < n && (bit(&placed_definite, first) || bit(&placed_unknown, first)) {
                    first += 1;
                }
                pushed = Some((i, next, cursor, first));
                break;
            }
            let placed = if unknown {
                &mut placed_unknown
            } else {
                &mut placed_definite
            };
            flip(placed, i);
        }
        match pushed {
            Some((i, state, deadline_cursor, first_unplaced)) => {
                if deadline_cursor > best_depth_definite
                    || (deadline_cursor == best_depth_definite && best.is_empty())
                {
                    best_depth_definite = deadline_cursor;
                    best = stack.iter().filter_map(|f| f.applied).collect();
                    best.push(i);
                    best_state = state.clone();
                }
                stack.push(Frame {
                    state,
                    applied: Some(i),
                    deadline_cursor,
                    first_unplaced,
                    scan: first_unplaced,
                    unknown_phase: false,
                });
            }
            None => {
                if let Some(Frame {
                    applied: Some(i), ..
                }) = stack.pop()
                {
                    if entries[i].is_unknown() {
                        flip(&mut placed_unknown, i);
                    } else {
                        flip(&mut placed_definite, i);
                    }
                }
            }
        }
    }
}

/// Explains a failed search by its deepest point: the ops placed to get
/// there, the model state, and the definite ops that could be placed next by
/// time but not by result.
fn violation_detail(
    entries: &[Entry<'_>],
    by_deadline: &[usize],
    best: &[usize],
    state: &LockState,
    placed_definite: usize,
    definite: usize,
) -> String {
    let mut out = format!(
        "not linearizable: longest linearizable prefix places {placed_definite} of {definite} definite ops (prefix length {}, unknown ops included)",
        best.len()
    );
    let skip = best.len().saturating_sub(DETAIL_PREFIX_OPS_MAX);
    if skip > 0 {
        let _ = write!(out, "; last {} of the prefix:", best.len() - skip);
    } else {
        out.push_str("; prefix:");
    }
    for &i in &best[skip..] {
        let _ = write!(out, "\n  {}", describe(&entries[i]));
    }
    let _ = write!(out, "\nmodel state then: {state:?}\ncould not place:");
    let mut placed = vec![false; entries.len()];
    for &i in best {
        placed[i] = true;
    }
    let window_end = by_deadline
        .iter()
        .find(|&&i| !placed[i])
        .map_or(u64::MAX, |&i| entries[i].deadline);
    for (i, entry) in entries.iter().enumerate() {
        if entry.event.invoked > window_end {
            break;
        }
        if placed[i] || entry.is_unknown() {
            continue;
        }
        let _ = write!(
            out,
            "\n  {} (model says {})",
            describe(entry),
            state.expected(&entry.event.op)
        );
    }
    out
}
