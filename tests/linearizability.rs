//! Tests of the linearizability checker: histories generated from a
//! sequential run must pass, and histories with a known bug injected must
//! fail.

use proptest::prelude::*;
use raftlock::linearizability::*;
use std::collections::BTreeMap;

const A: SessionId = 100;
const B: SessionId = 101;
const C: SessionId = 102;

fn ev(lock: &str, op: Op, invoked: u64, completed: u64, outcome: Outcome) -> Event {
    Event {
        lock: lock.to_string(),
        op,
        invoked,
        completed,
        outcome,
    }
}

fn acq(session: SessionId, mode: Mode) -> Op {
    Op::Acquire { session, mode }
}

fn rel(session: SessionId, token: Token) -> Op {
    Op::Release { session, token }
}

fn run(history: &[Event]) -> Verdict {
    check(history, &Limits::default())
}

fn is_violation_on(v: &Verdict, lock: &str) -> bool {
    matches!(v, Verdict::Violation { lock: l, .. } if l == lock)
}

fn assert_violation(history: &[Event], lock: &str) -> String {
    match run(history) {
        Verdict::Violation { lock: l, detail } => {
            assert_eq!(l, lock, "{detail}");
            detail
        }
        other => panic!("expected a violation on {lock}, got {other:?}"),
    }
}

// ---- generator of valid histories -----------------------------------------

/// One generated op, before it is run on the reference model.
#[derive(Clone, Debug)]
struct Spec {
    kind: u8,
    lock: u8,
    session: u8,
    mode: u8,
    /// Release with a token the session does not hold.
    stale: bool,
    /// 0: unknown and took effect, 1: unknown and never took effect,
    /// otherwise definite.
    unknown: u8,
    before: u64,
    after: u64,
    gap: u64,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0u8..100,
        0u8..3,
        0u8..4,
        0u8..4,
        any::<bool>(),
        0u8..8,
        0u64..50,
        0u64..50,
        1u64..20,
    )
        .prop_map(
            |(kind, lock, session, mode, stale, unknown, before, after, gap)| Spec {
                kind,
                lock,
                session,
                mode,
                stale,
                unknown,
                before,
                after,
                gap,
            },
        )
}

/// Reference sequential model of one lock, written independently of the
/// checker's, with real tokens for every holder.
#[derive(Default)]
struct RefLock {
    holders: BTreeMap<SessionId, (Mode, Token)>,
    delayed: bool,
}

impl RefLock {
    fn apply(&mut self, op: &Op, next_token: &mut Token) -> Outcome {
        match op {
            Op::Acquire { session, mode } => {
                if let Some((held, t)) = self.holders.get(session) {
                    return match (held, mode) {
                        _ if held == mode => Outcome::Granted(*t),
                        (Mode::Semaphore(_), Mode::Semaphore(_)) => Outcome::LimitMismatch,
                        _ => Outcome::ModeConflict,
                    };
                }
                if self.delayed {
                    return Outcome::Busy;
                }
                let modes: Vec<Mode> = self.holders.values().map(|h| h.0).collect();
                let grant = match mode {
                    _ if modes.is_empty() => true,
                    Mode::Exclusive => false,
                    Mode::Shared => modes.iter().all(|m| *m == Mode::Shared),
                    Mode::Semaphore(n) => {
                        if modes
                            .iter()
                            .any(|m| matches!(m, Mode::Semaphore(k) if k != n))
                        {
                            return Outcome::LimitMismatch;
                        }
                        modes.iter().all(|m| matches!(m, Mode::Semaphore(_)))
                            && (modes.len() as u64) < u64::from(*n)
                    }
                };
                if grant {
                    *next_token += 1;
                    self.holders.insert(*session, (*mode, *next_token));
                    Outcome::Granted(*next_token)
                } else {
                    Outcome::Busy
                }
            }
            Op::Release { session, token } => match self.holders.get(session) {
                Some((_, t)) if t == token => {
                    self.holders.remove(session);
                    Outcome::Released
                }
                _ => Outcome::NotHolder,
            },
            Op::Query => Outcome::Holders(self.holders.iter().map(|(s, h)| (*s, h.1)).collect()),
            Op::Close { session } => {
                self.holders.remove(session);
                Outcome::Done
            }
            Op::Expire { session } => {
                if self.holders.remove(session).is_some() {
                    self.delayed = true;
                }
                Outcome::Done
            }
            Op::Undelay => {
                self.delayed = false;
                Outcome::Done
            }
            Op::Undo { session } => {
                self.holders.remove(session);
                Outcome::Unknown
            }
        }
    }
}

/// A valid history: a sequential run of the reference model, each op given an
/// interval around its linearization point, then shuffled. Returns it with
/// the largest token granted and the time after which nothing happens.
fn build(locks: u8, sessions: u8, specs: &[Spec], mut seed: u64) -> (Vec<Event>, Token, u64) {
    let mut models: Vec<RefLock> = (0..locks).map(|_| RefLock::default()).collect();
    let mut next_token: Token = 0;
    let mut point: u64 = 100;
    let mut history = Vec::new();
    for s in specs {
        let lock = usize::from(s.lock % locks);
        let session = A + u64::from(s.session % sessions);
        let mode = match s.mode {
            0 => Mode::Exclusive,
            1 => Mode::Shared,
            2 => Mode::Semaphore(2),
            _ => Mode::Semaphore(3),
        };
        let model = &mut models[lock];
        let op = match s.kind {
            0..40 => acq(session, mode),
            40..65 => {
                let held = model.holders.get(&session).map(|h| h.1);
                let token = match held {
                    Some(t) if !s.stale => t,
                    _ => next_token.saturating_sub(u64::from(s.mode)),
                };
                rel(session, token)
            }
            65..80 => Op::Query,
            80..86 => Op::Close { session },
            86..90 => Op::Undo { session },
            90..95 => Op::Expire { session },
            _ => Op::Undelay,
        };
        // Expire and Undelay come from the log: always certain.
        let from_log = matches!(op, Op::Expire { .. } | Op::Undelay);
        // An undo's outcome is never seen.
        let undo = matches!(op, Op::Undo { .. });
        let unknown = !from_log && (s.unknown < 2 || undo);
        let outcome = if unknown && s.unknown == 1 {
            Outcome::Unknown
        } else {
            let result = model.apply(&op, &mut next_token);
            if unknown {
                Outcome::Unknown
            } else {
                result
            }
        };
        point += s.gap;
        history.push(ev(
            &format!("L{lock}"),
            op,
            point.saturating_sub(s.before),
            point + s.after,
            outcome,
        ));
    }
    for i in (1..history.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let j = (seed % (i as u64 + 1)) as usize;
        history.swap(i, j);
    }
    (history, next_token, point + 1000)
}

fn history() -> impl Strategy<Value = (Vec<Event>, Token, u64)> {
    (
        1u8..=3,
        2u8..=4,
        prop::collection::vec(spec(), 0..48),
        1u64..u64::MAX,
    )
        .prop_map(|(locks, sessions, specs, seed)| build(locks, sessions, &specs, seed))
}

/// Frees lock `L0` at time `t` whatever its history left: every generated
/// session closes, then the lock-delay ends. Unknown ops may still be placed
/// later, but the checker is free not to.
fn settle(history: &mut Vec<Event>, t: u64) -> u64 {
    for s in A..A + 4 {
        history.push(ev("L0", Op::Close { session: s }, t, t + 1, Outcome::Done));
    }
    history.push(ev("L0", Op::Undelay, t + 2, t + 3, Outcome::Done));
    t + 10
}

/// Fresh sessions for injected ops, so nothing generated can free them.
const X: SessionId = 200;
const Y: SessionId = 201;

/// 128 cases keep the suite quick; PROPTEST_CASES overrides for soaking.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(128);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn generated_histories_are_linearizable((h, _, _) in history()) {
        prop_assert_eq!(run(&h), Verdict::Linearizable);
    }

    #[test]
    fn double_exclusive_grant_is_rejected((mut h, token, t) in history()) {
        let t = settle(&mut h, t);
        h.push(ev("L0", acq(X, Mode::Exclusive), t, t + 5, Outcome::Granted(token + 10)));
        prop_assert_eq!(run(&h), Verdict::Linearizable);
        h.push(ev("L0", acq(Y, Mode::Exclusive), t + 10, t + 15, Outcome::Granted(token + 11)));
        let v = run(&h);
        prop_assert!(is_violation_on(&v, "L0"), "{:?}", v);
    }

    #[test]
    fn stale_read_is_rejected((mut h, token, t) in history()) {
        let t = settle(&mut h, t);
        let tok = token + 10;
        h.push(ev("L0", acq(X, Mode::Exclusive), t, t + 5, Outcome::Granted(tok)));
        h.push(ev("L0", rel(X, tok), t + 10, t + 15, Outcome::Released));
        let mut fresh = h.clone();
        fresh.push(ev("L0", Op::Query, t + 20, t + 25, Outcome::Holders(vec![])));
        prop_assert_eq!(run(&fresh), Verdict::Linearizable);
        h.push(ev("L0", Op::Query, t + 20, t + 25, Outcome::Holders(vec![(X, tok)])));
        let v = run(&h);
        prop_assert!(is_violation_on(&v, "L0"), "{:?}", v);
    }

    #[test]
    fn token_going_backwards_is_rejected((mut h, token, t) in history()) {
        let t = settle(&mut h, t);
        let tok = token + 10;
        h.push(ev("L0", acq(X, Mode::Exclusive), t, t + 5, Outcome::Granted(tok)));
        h.push(ev("L0", rel(X, tok), t + 10, t + 15, Outcome::Released));
        let mut forward = h.clone();
        forward.push(ev("L0", acq(Y, Mode::Exclusive), t + 20, t + 25, Outcome::Granted(tok + 1)));
        prop_assert_eq!(run(&forward), Verdict::Linearizable);
        h.push(ev("L0", acq(Y, Mode::Exclusive), t + 20, t + 25, Outcome::Granted(tok - 1)));
        let v = run(&h);
        prop_assert!(is_violation_on(&v, "L0"), "{:?}", v);
    }
}

// ---- hand-written histories -----------------------------------------------

#[test]
fn empty_history_is_linearizable() {
    assert_eq!(run(&[]), Verdict::Linearizable);
}

#[test]
fn unknown_acquire_that_took_effect() {
    let h = vec![
        ev("l", acq(A, Mode::Exclusive), 0, 0, Outcome::Unknown),
        ev("l", acq(B, Mode::Exclusive), 10, 20, Outcome::Busy),
        ev("l", Op::Query, 30, 40, Outcome::Holders(vec![(A, 7)])),
        // The query revealed A's token: re-acquire must return it.
        ev("l", acq(A, Mode::Exclusive), 50, 60, Outcome::Granted(7)),
        ev("l", rel(A, 7), 70, 80, Outcome::Released),
        ev("l", acq(B, Mode::Exclusive), 90, 100, Outcome::Granted(8)),
    ];
    assert_eq!(run(&h), Verdict::Linearizable);
}

#[test]
fn unknown_acquire_token_is_learned() {
    let h = vec![
        ev("l", acq(A, Mode::Exclusive), 0, 0, Outcome::Unknown),
        ev("l", Op::Query, 30, 40, Outcome::Holders(vec![(A, 7)])),
        ev("l", acq(A, Mode::Exclusive), 50, 60, Outcome::Granted(8)),
    ];
    assert_violation(&h, "l");
}

#[test]
fn unknown_acquire_that_never_took_effect() {
    let h = vec![
        ev("l", acq(A, Mode::Exclusive), 0, 0, Outcome::Unknown),
        ev("l", acq(B, Mode::Exclusive), 10, 20, Outcome::Granted(1)),
        ev("l", Op::Query, 30, 40, Outcome::Holders(vec![(B, 1)])),
    ];
    assert_eq!(run(&h), Verdict::Linearizable);
}

#[test]
fn unknown_op_takes_effect_only_after_invocation() {
    let h = vec![
        ev("l", acq(B, Mode::Exclusive), 0, 10, Outcome::Busy),
        ev("l", acq(A, Mode::Exclusive), 20, 0, Outcome::Unknown),
    ];
    assert_violation(&h, "l");
}

#[test]
fn unknown_release_either_way() {
    let base = vec![
        ev("l", acq(A, Mode::Exclusive), 0, 10, Outcome::Granted(1)),
        ev("l", rel(A, 1), 20, 0, Outcome::Unknown),
    ];
    for (outcome, ok) in [
        (Outcome::Holders(vec![(A, 1)]), true),
        (Outcome::Holders(vec![]), true),
        (Outcome::Holders(vec![(A, 2)]), false),
    ] {
        let mut h = base.clone();
        h.push(ev("l", Op::Query, 30, 40, outcome));
        assert_eq!(run(&h) == Verdict::Linearizable, ok, "{h:?}");
    }
}

#[test]
fn unknown_grant_leaves_last_token() {
    // Token 5 of the unknown grant is never observed; a later grant of 3 is
    // allowed since only observed tokens are ordered.
    let h = vec![
        ev("l", acq(A, Mode::Exclusive), 0, 10, Outcome::Granted(2)),
        ev("l", rel(A, 2), 20, 30, Outcome::Released),
        ev("l", acq(B, Mode::Exclusive), 40, 0, Outcome::Unknown),
        ev("l", Op::Close { session: B }, 50, 60, Outcome::Done),
        ev("l", acq(C, Mode::Exclusive), 70, 80, Outcome::Granted(3)),
    ];
    assert_eq!(run(&h), Verdict::Linearizable);
}

#[test]
fn undo_releases_whatever_the_session_holds_or_nothing() {
    // A wait whose client left: it may have been granted (a query saw it),
    // and the front end's undo let it go before the next grant.
    let h = vec![
        ev("l", acq(A, Mode::Exclusive), 0, 0, Outcome::Unknown),
        ev("l", Op::Query, 10, 20, Outcome::Holders(vec![(A, 4)])),
        ev("l", Op::Undo { session: A }, 5, 0, Outcome::Unknown),
        ev("l", acq(B, Mode::Exclusive), 30, 40, Outcome::Granted(5)),
    ];
    assert_eq!(run(&h), Verdict::Linearizable);
    // Without the undo the grant to A would still stand.
    assert_violation(
        &h[..2].iter().chain(&h[3..]).cloned().collect::<Vec<_>>(),
        "l",
    );
    // An undo takes effect only after it was invoked.
    let mut late = h.clone();
    late[2].invoked = 50;
    assert_violation(&late, "l");
    // It never gives anything to anyone.
    let h = vec![
        ev("l", Op::Undo { session: A }, 0, 0, Outcome::Unknown),
        ev("l", Op::Query, 10, 20, Outcome::Holders(vec![(A, 1)])),
    ];
    assert_violation(&h, "l");
}

#[test]
fn release_of_unknown_grant_may_be_not_holder() {
    let h = vec![
        ev("l", acq(A, Mode::Exclusive), 0, 0, Outcome::Unknown),
        ev("l", acq(B, Mode::Exclusive), 10, 20, Outcome::Busy),
        ev("l", rel(A, 99), 30, 40, Outcome::NotHolder),
        ev("l", acq(B, Mode::Exclusive), 50, 60, Outcome::Busy),
    ];
    assert_eq!(run(&h), Verdict::Linearizable);
}

#[test]
fn lock_delay_after_expire() {
    let mut h = vec![
        ev("l", acq(A, Mode::Exclusive), 0, 10, Outcome::Granted(1)),
        ev("l", Op::Expire { session: A }, 20, 30, Outcome::Done),
        ev("l", acq(B, Mode::Exclusive), 40, 50, Outcome::Busy),
        ev("l", Op::Undelay, 60, 70, Outcome::Done),
        ev("l", acq(B, Mode::Exclusive), 80, 90, Outcome::Granted(2)),
    ];
    assert_eq!(run(&h), Verdict::Linearizable);
    // Granted during the delay.
    h[2].outcome = Outcome::Granted(2);
    h[4].outcome = Outcome::Granted(2);
    assert_violation(&h, "l");
}

#[test]
fn busy_after_undelay_is_rejected() {
    let h = vec![
        ev("l", acq(A, Mode::Exclusive), 0, 10, Outcome::Granted(1)),
        ev("l", Op::Expire { session: A }, 20, 30, Outcome::Done),
        ev("l", Op::Undelay, 60, 70, Outcome::Done),
        ev("l", acq(B, Mode::Exclusive), 80, 90, Outcome::Busy),
    ];
    assert_violation(&h, "l");
}

#[test]
fn expire_of_non_holder_does_not_delay() {
    let h = vec![
        ev("l", Op::Expire { session: A }, 0, 10, Outcome::Done),
        ev("l", acq(B, Mode::Exclusive), 20, 30, Outcome::Granted(1)),
    ];
    assert_eq!(run(&h), Verdict::Linearizable);
}

#[test]
fn close_frees_without_delay() {
    let h = vec![
        ev("l", acq(A, Mode::Exclusive), 0, 10, Outcome::Granted(1)),
        ev("l", Op::Close { session: A }, 20, 30, Outcome::Done),
        ev("l", acq(B, Mode::Exclusive), 40, 50, Outcome::Granted(2)),
    ];
    assert_eq!(run(&h), Verdict::Linearizable);
}

#[test]
fn semaphore_limits() {
    let mut h = vec![
        ev("l", acq(A, Mode::Semaphore(2)), 0, 10, Outcome::Granted(1)),
        ev(
            "l",
            acq(B, Mode::Semaphore(3)),
            20,
            30,
            Outcome::LimitMismatch,
        ),
        ev("l", acq(B, Mode::Semaphore(2)), 40, 50, Outcome::Granted(2)),
        ev("l", acq(C, Mode::Semaphore(2)), 60, 70, Outcome::Busy),
        ev("l", acq(C, Mode::Shared), 80, 90, Outcome::Busy),
        ev(
            "l",
            Op::Query,
            100,
            110,
            Outcome::Holders(vec![(A, 1), (B, 2)]),
        ),
    ];
    assert_eq!(run(&h), Verdict::Linearizable);
    h[1].outcome = Outcome::Busy;
    assert_violation(&h, "l");
    h[1].outcome = Outcome::LimitMismatch;
    h[3].outcome = Outcome::LimitMismatch;
    assert_violation(&h, "l");
}

#[test]
fn shared_holders_exclude_exclusive() {
    let h = vec![
        ev("l", acq(A, Mode::Shared), 0, 10, Outcome::Granted(1)),
        ev("l", acq(B, Mode::Shared), 20, 30, Outcome::Granted(2)),
        ev("l", acq(C, Mode::Exclusive), 40, 50, Outcome::Busy),
        ev("l", acq(C, Mode::Semaphore(2)), 40, 50, Outcome::Busy),
    ];
    assert_eq!(run(&h), Verdict::Linearizable);
    let mut bad = h.clone();
    bad[2].outcome = Outcome::Granted(3);
    assert_violation(&bad, "l");
}

#[test]
fn concurrent_acquires_in_either_order() {
    // Overlapping: the later-invoked one may win.
    let h = vec![
        ev("l", acq(A, Mode::Exclusive), 0, 100, Outcome::Busy),
        ev("l", acq(B, Mode::Exclusive), 10, 50, Outcome::Granted(1)),
    ];
    assert_eq!(run(&h), Verdict::Linearizable);
    let h2 = vec![
        ev("l", acq(A, Mode::Exclusive), 0, 100, Outcome::Granted(1)),
        ev("l", acq(B, Mode::Exclusive), 10, 50, Outcome::Busy),
    ];
    assert_eq!(run(&h2), Verdict::Linearizable);
    // Disjoint: A ran on a free lock, so Busy is wrong.
    let h3 = vec![
        ev("l", acq(A, Mode::Exclusive), 0, 5, Outcome::Busy),
        ev("l", acq(B, Mode::Exclusive), 10, 50, Outcome::Granted(1)),
    ];
    assert_violation(&h3, "l");
}

#[test]
fn concurrent_grants_tokens_follow_linearization_order() {
    // Shared grants overlapping: token order decides the order.
    let h = vec![
        ev("l", acq(A, Mode::Shared), 0, 100, Outcome::Granted(2)),
        ev("l", acq(B, Mode::Shared), 10, 50, Outcome::Granted(1)),
    ];
    assert_eq!(run(&h), Verdict::Linearizable);
    let h2 = vec![
        ev("l", acq(A, Mode::Shared), 0, 5, Outcome::Granted(2)),
        ev("l", acq(B, Mode::Shared), 10, 50, Outcome::Granted(1)),
    ];
    assert_violation(&h2, "l");
}

#[test]
fn reacquire_in_the_same_mode_is_idempotent() {
    let h = vec![
        ev("l", acq(A, Mode::Shared), 0, 10, Outcome::Granted(4)),
        ev("l", acq(A, Mode::Shared), 20, 30, Outcome::Granted(4)),
    ];
    assert_eq!(run(&h), Verdict::Linearizable);
    let mut bad = h.clone();
    bad[1].outcome = Outcome::Granted(5);
    assert_violation(&bad, "l");
}

/// Issue 11, hole 1: a shared holder asking for the lock exclusive while
/// another session shares it was told "exclusive". An upgrade (or any
/// change of mode) is refused, never granted.
#[test]
fn reacquire_in_another_mode_is_refused_never_granted() {
    let h = vec![
        ev("l", acq(A, Mode::Shared), 0, 10, Outcome::Granted(4)),
        ev("l", acq(B, Mode::Shared), 0, 10, Outcome::Granted(5)),
        ev("l", acq(A, Mode::Exclusive), 20, 30, Outcome::ModeConflict),
    ];
    assert_eq!(run(&h), Verdict::Linearizable);
    let mut bad = h.clone();
    bad[2].outcome = Outcome::Granted(4);
    let detail = assert_violation(&bad, "l");
    assert!(detail.contains("ModeConflict"), "{detail}");
    let sem = vec![
        ev("s", acq(A, Mode::Semaphore(2)), 0, 10, Outcome::Granted(1)),
        ev(
            "s",
            acq(A, Mode::Semaphore(3)),
            20,
            30,
            Outcome::LimitMismatch,
        ),
        ev("s", acq(A, Mode::Exclusive), 40, 50, Outcome::ModeConflict),
    ];
    assert_eq!(run(&sem), Verdict::Linearizable);
    let mut bad = sem.clone();
    bad[1].outcome = Outcome::Granted(1);
    assert_violation(&bad, "s");
}

#[test]
fn locks_are_checked_independently() {
    let h = vec![
        ev("a", acq(A, Mode::Exclusive), 0, 10, Outcome::Granted(1)),
        ev("b", acq(B, Mode::Exclusive), 0, 10, Outcome::Granted(1)),
        ev("b", acq(A, Mode::Exclusive), 20, 30, Outcome::Granted(2)),
    ];
    let detail = assert_violation(&h, "b");
    assert!(detail.contains("could not place"), "{detail}");
    assert!(detail.contains("#2"), "{detail}");
}

#[test]
fn malformed_interval_is_a_violation() {
    let h = vec![ev("l", Op::Query, 10, 5, Outcome::Holders(vec![]))];
    assert_violation(&h, "l");
}

#[test]
fn too_many_ops_is_inconclusive() {
    let h: Vec<Event> = (0..=HISTORY_OPS_PER_LOCK_MAX as u64)
        .map(|i| ev("l", Op::Query, i * 10, i * 10 + 5, Outcome::Holders(vec![])))
        .collect();
    assert_eq!(run(&h), Verdict::Inconclusive { lock: "l".into() });
    assert_eq!(run(&h[1..]), Verdict::Linearizable);
}

#[test]
fn step_bound_gives_inconclusive_but_violations_win() {
    // Many unknown shared grants and an impossible final read: the search
    // must try many subsets before giving up.
    let mut h: Vec<Event> = (0..12)
        .map(|s| ev("a", acq(s, Mode::Shared), 0, 0, Outcome::Unknown))
        .collect();
    h.push(ev("a", Op::Query, 10, 20, Outcome::Holders(vec![(99, 1)])));
    let limits = Limits { steps_max: 100 };
    assert_eq!(
        check(&h, &limits),
        Verdict::Inconclusive { lock: "a".into() }
    );
    h.push(ev("b", Op::Query, 10, 5, Outcome::Holders(vec![])));
    assert!(matches!(check(&h, &limits), Verdict::Violation { lock, .. } if lock == "b"));
}

#[test]
fn ends_of_sessions_that_never_ask_for_the_lock_cost_nothing() {
    // What a leader does after a partition heals: it expires dozens of
    // sessions at one instant, few of which ever asked for this lock.
    // Searched as concurrent ops these were 2^40 orders; they change
    // nothing here, so the check must decide at once.
    let mut h = vec![
        ev("l", acq(A, Mode::Shared), 0, 10, Outcome::Granted(2)),
        ev("l", rel(A, 2), 20, 0, Outcome::Unknown),
    ];
    for s in 1000..1040 {
        h.push(ev("l", Op::Expire { session: s }, 50, 50, Outcome::Done));
        h.push(ev(
            "l",
            Op::Close { session: s + 100 },
            50,
            50,
            Outcome::Done,
        ));
    }
    h.push(ev("l", Op::Query, 60, 70, Outcome::Holders(vec![])));
    let limits = Limits { steps_max: 10_000 };
    assert_eq!(check(&h, &limits), Verdict::Linearizable);
    // The end of a session that did ask still counts.
    h.push(ev(
        "l",
        acq(B, Mode::Exclusive),
        80,
        90,
        Outcome::Granted(3),
    ));
    h.push(ev("l", Op::Expire { session: B }, 100, 100, Outcome::Done));
    h.push(ev("l", Op::Query, 110, 120, Outcome::Holders(vec![(B, 3)])));
    assert!(matches!(check(&h, &limits), Verdict::Violation { .. }));
}
