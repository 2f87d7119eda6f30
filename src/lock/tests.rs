//! The lock machine's transitions, one behaviour per test, asserting the
//! exact responses, tokens and notifications.

use super::*;
use crate::actor::Instant;
use crate::raft::{Index, StateMachine};
use std::time::Duration;

const TTL_MS: u64 = 10_000;

/// The grants among the machine's events.
pub(crate) fn grants(m: &mut LockMachine) -> Vec<Grant> {
    m.take_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Granted(g) => Some(g),
            _ => None,
        })
        .collect()
}

fn config(lock_delay_ms: u64) -> LockConfig {
    LockConfig {
        drift_ppm: 10_000,
        lock_delay: Duration::from_millis(lock_delay_ms),
        ..LockConfig::default()
    }
}

fn ms(t: u64) -> Instant {
    Instant::from_micros(t * 1000)
}

/// Drives a machine with consecutive log indexes.
struct Harness {
    m: LockMachine,
    index: Index,
    now: Instant,
    seqs: std::collections::BTreeMap<SessionId, u64>,
}

impl Harness {
    fn new(lock_delay_ms: u64) -> Self {
        Harness {
            m: LockMachine::new(config(lock_delay_ms)),
            index: 0,
            now: ms(1),
            seqs: Default::default(),
        }
    }

    fn apply(&mut self, c: Command) -> Response {
        self.index += 1;
        let bytes = encode(&c);
        let out = self.m.apply(self.index, self.now, &bytes);
        postcard::from_bytes(&out).unwrap()
    }

    fn open(&mut self, nonce: u64) -> SessionId {
        match self.apply(Command::Open {
            nonce,
            ttl_ms: TTL_MS,
        }) {
            Ok(Reply::Opened { session, .. }) => session,
            other => panic!("open: {other:?}"),
        }
    }

    /// Sends the session's next request, acknowledging everything before.
    fn req(&mut self, session: SessionId, op: Op) -> Response {
        let seq = self.seqs.entry(session).or_insert(0);
        *seq += 1;
        let seq = *seq;
        self.retry(session, seq, op)
    }

    fn retry(&mut self, session: SessionId, seq: u64, op: Op) -> Response {
        self.apply(Command::Request(Request {
            session,
            seq,
            acked: 0,
            op,
        }))
    }

    fn acquire(&mut self, s: SessionId, lock: &str, mode: Mode, wait: bool) -> Response {
        self.req(
            s,
            Op::Acquire {
                lock: lock.into(),
                mode,
                wait,
            },
        )
    }

    fn release(&mut self, s: SessionId, lock: &str, token: Token) -> Response {
        self.req(
            s,
            Op::Release {
                lock: lock.into(),
                token,
            },
        )
    }

    fn info(&self, lock: &str) -> LockInfo {
        // What the machine holds, whoever may ask (the tests of who may
        // ask look through `answer`).
        match self
            .m
            .answer_unchecked(self.now, Query::Lock { name: lock.into() })
        {
            QueryAnswer::Lock(i) => i,
            other => panic!("{other:?}"),
        }
    }

    fn holders(&self, lock: &str) -> Vec<(SessionId, Token)> {
        self.info(lock)
            .holders
            .iter()
            .map(|h| (h.session, h.token))
            .collect()
    }
}

fn granted(token: Token) -> Response {
    Ok(Reply::Granted { token })
}

fn queued(position: u32) -> Response {
    Ok(Reply::Queued { position })
}

#[test]
fn exclusive_lock_queues_fifo_and_wakes_only_the_next_waiter() {
    let mut h = Harness::new(0);
    let (a, b, c) = (h.open(1), h.open(2), h.open(3));
    assert_eq!(h.acquire(a, "x", Mode::Exclusive, true), granted(1));
    assert_eq!(
        h.acquire(b, "x", Mode::Exclusive, false),
        Err(LockError::Busy)
    );
    assert_eq!(h.acquire(b, "x", Mode::Exclusive, true), queued(0));
    assert_eq!(h.acquire(c, "x", Mode::Exclusive, true), queued(1));
    // The immediate grant is reported too, not flagged as queued.
    let immediate = grants(&mut h.m);
    assert_eq!(immediate.len(), 1);
    assert!(!immediate[0].queued && immediate[0].token == 1 && immediate[0].session == a);
    assert_eq!(h.release(a, "x", 1), Ok(Reply::Released));
    // Only b is woken, with a fresh, larger token.
    assert_eq!(
        grants(&mut h.m),
        vec![Grant {
            index: h.index,
            acquire: 6,
            session: b,
            seq: 2,
            lock: "x".into(),
            mode: Mode::Exclusive,
            token: 2,
            queued: true,
        }]
    );
    assert_eq!(h.holders("x"), vec![(b, 2)]);
    assert_eq!(h.info("x").waiters, vec![(c, Mode::Exclusive)]);
    // b's waiting acquire now answers with its grant (what a poller sees).
    assert_eq!(
        h.m.answer(h.now, Query::Response { session: b, seq: 2 }),
        QueryAnswer::Response(Some(granted(2)))
    );
}

#[test]
fn readers_share_and_a_waiting_writer_blocks_later_readers() {
    let mut h = Harness::new(0);
    let (r1, r2, w, r3) = (h.open(1), h.open(2), h.open(3), h.open(4));
    assert_eq!(h.acquire(r1, "x", Mode::Shared, true), granted(1));
    assert_eq!(h.acquire(r2, "x", Mode::Shared, true), granted(2));
    assert_eq!(h.acquire(w, "x", Mode::Exclusive, true), queued(0));
    // No barging past the writer, neither waiting nor trying.
    assert_eq!(
        h.acquire(r3, "x", Mode::Shared, false),
        Err(LockError::Busy)
    );
    assert_eq!(h.acquire(r3, "x", Mode::Shared, true), queued(1));
    grants(&mut h.m);
    assert_eq!(h.release(r1, "x", 1), Ok(Reply::Released));
    assert!(grants(&mut h.m).is_empty());
    assert_eq!(h.release(r2, "x", 2), Ok(Reply::Released));
    assert_eq!(h.holders("x"), vec![(w, 3)]);
    assert_eq!(h.release(w, "x", 3), Ok(Reply::Released));
    assert_eq!(h.holders("x"), vec![(r3, 4)]);
    let woken: Vec<SessionId> = grants(&mut h.m).iter().map(|g| g.session).collect();
    assert_eq!(woken, vec![w, r3]);
}

#[test]
fn semaphore_grants_each_holder_its_own_token_up_to_its_limit() {
    let mut h = Harness::new(0);
    let (a, b, c) = (h.open(1), h.open(2), h.open(3));
    assert_eq!(h.acquire(a, "s", Mode::Semaphore(2), false), granted(1));
    assert_eq!(h.acquire(b, "s", Mode::Semaphore(2), false), granted(2));
    assert_eq!(
        h.acquire(c, "s", Mode::Semaphore(2), false),
        Err(LockError::Busy)
    );
    assert_eq!(
        h.acquire(c, "s", Mode::Semaphore(3), false),
        Err(LockError::LimitMismatch { held: 2, asked: 3 })
    );
    assert_eq!(h.acquire(c, "s", Mode::Shared, false), Err(LockError::Busy));
    assert_eq!(
        h.acquire(c, "s", Mode::Semaphore(0), false),
        Err(LockError::ZeroLimit)
    );
    assert_eq!(h.acquire(c, "s", Mode::Semaphore(2), true), queued(0));
    assert_eq!(h.release(a, "s", 1), Ok(Reply::Released));
    assert_eq!(h.holders("s"), vec![(b, 2), (c, 3)]);
}

#[test]
fn a_retried_request_gets_its_first_answer_and_runs_once() {
    let mut h = Harness::new(0);
    let (a, b) = (h.open(1), h.open(2));
    let acquire = Op::Acquire {
        lock: "x".into(),
        mode: Mode::Exclusive,
        wait: false,
    };
    assert_eq!(h.req(a, acquire.clone()), granted(1));
    // The same (session, seq) again, as after a leader crash: same token,
    // no new grant.
    assert_eq!(h.retry(a, 1, acquire.clone()), granted(1));
    assert_eq!(h.m.last_token(), 1);
    // One execution, one grant, though two entries carried the request.
    let executed: Vec<Event> =
        h.m.take_events()
            .into_iter()
            .filter(|e| !matches!(e, Event::Granted(_)))
            .collect();
    assert_eq!(
        executed,
        vec![Event::Executed {
            index: h.index - 1,
            session: a,
            seq: 1
        }]
    );
    // A retried release after someone else took the lock does not release
    // theirs.
    assert_eq!(h.release(a, "x", 1), Ok(Reply::Released));
    assert_eq!(h.acquire(b, "x", Mode::Exclusive, false), granted(2));
    assert_eq!(
        h.retry(
            a,
            2,
            Op::Release {
                lock: "x".into(),
                token: 1
            }
        ),
        Ok(Reply::Released)
    );
    assert_eq!(h.holders("x"), vec![(b, 2)]);
    // An acknowledged response is forgotten; its seq is refused, not rerun.
    let r = h.apply(Command::Request(Request {
        session: a,
        seq: 3,
        acked: 2,
        op: Op::KeepAlive,
    }));
    assert_eq!(r, Ok(Reply::Renewed));
    assert_eq!(
        h.retry(a, 1, acquire),
        Err(LockError::SequenceTooOld { seq: 1, acked: 2 })
    );
    assert_eq!(h.holders("x"), vec![(b, 2)]);
}

#[test]
fn requests_far_ahead_of_the_acknowledged_are_refused_to_bound_kept_responses() {
    let mut h = Harness::new(0);
    let a = h.open(1);
    let max = Limits::default().requests_inflight_max;
    assert_eq!(
        h.retry(a, max + 1, Op::KeepAlive),
        Err(LockError::TooManyInflight {
            seq: max + 1,
            acked: 0,
            inflight_max: max
        })
    );
    assert_eq!(h.retry(a, max, Op::KeepAlive), Ok(Reply::Renewed));
}

#[test]
fn release_needs_the_holders_session_and_token() {
    let mut h = Harness::new(0);
    let (a, b) = (h.open(1), h.open(2));
    assert_eq!(h.acquire(a, "x", Mode::Exclusive, false), granted(1));
    assert_eq!(h.release(b, "x", 1), Err(LockError::NotHolder));
    assert_eq!(h.release(a, "x", 7), Err(LockError::NotHolder));
    assert_eq!(h.release(a, "y", 1), Err(LockError::UnknownLock));
    assert_eq!(h.holders("x"), vec![(a, 1)]);
    assert_eq!(h.acquire(a, "x", Mode::Exclusive, false), granted(1));
}

#[test]
fn expiry_frees_locks_after_a_lock_delay_but_a_clean_close_does_not_delay() {
    let mut h = Harness::new(5_000);
    let (a, b, c) = (h.open(1), h.open(2), h.open(3));
    let a_open = 1;
    assert_eq!(h.acquire(a, "x", Mode::Exclusive, true), granted(1));
    assert_eq!(h.acquire(b, "x", Mode::Exclusive, true), queued(0));
    assert_eq!(h.acquire(c, "y", Mode::Exclusive, true), granted(2));
    let expire_at = h.index + 1;
    assert_eq!(
        h.apply(Command::Expire {
            session: a,
            renewal: a_open
        }),
        Ok(Reply::Internal { effective: true })
    );
    assert_eq!(
        h.m.answer(h.now, Query::Session { session: a }),
        QueryAnswer::Session(None)
    );
    assert!(h.m.take_events().contains(&Event::Ended {
        index: expire_at,
        session: a,
        expired: true,
        held: vec![("x".into(), 1)]
    }));
    grants(&mut h.m);
    let info = h.info("x");
    assert!(info.delayed && info.holders.is_empty());
    assert!(grants(&mut h.m).is_empty());
    // An undelay naming another expiry does nothing.
    assert_eq!(
        h.apply(Command::Undelay {
            lock: "x".into(),
            freed: expire_at + 100
        }),
        Ok(Reply::Internal { effective: false })
    );
    assert_eq!(
        h.apply(Command::Undelay {
            lock: "x".into(),
            freed: expire_at
        }),
        Ok(Reply::Internal { effective: true })
    );
    assert_eq!(h.holders("x"), vec![(b, 3)]);
    // c closes cleanly: y is free at once, no delay.
    assert_eq!(h.req(c, Op::Close), Ok(Reply::Closed));
    assert_eq!(h.info("y"), LockInfo::default());
    assert_eq!(h.acquire(b, "y", Mode::Exclusive, false), granted(4));
    // A closed or expired session's requests are refused.
    assert_eq!(h.req(a, Op::KeepAlive), Err(LockError::SessionNotFound(a)));
}

#[test]
fn an_expiry_decided_on_an_older_renewal_does_nothing() {
    let mut h = Harness::new(0);
    let a = h.open(1);
    assert_eq!(h.acquire(a, "x", Mode::Exclusive, false), granted(1));
    assert_eq!(h.req(a, Op::KeepAlive), Ok(Reply::Renewed));
    assert_eq!(
        h.apply(Command::Expire {
            session: a,
            renewal: 1
        }),
        Ok(Reply::Internal { effective: false })
    );
    assert_eq!(h.holders("x"), vec![(a, 1)]);
}

#[test]
fn the_leader_expires_a_session_ttl_times_one_plus_drift_after_it_applied_the_renewal() {
    let mut h = Harness::new(0);
    h.now = ms(1_000);
    let a = h.open(1);
    // 10 s TTL, 1% drift: expiry is due at 1 000 + 10 100 ms, not before.
    assert_eq!(h.m.leader_commands(ms(11_099), 1), vec![]);
    let due = vec![Command::Expire {
        session: a,
        renewal: 1,
    }];
    assert_eq!(h.m.leader_commands(ms(11_100), 1), due);
    // Proposed once per term...
    assert_eq!(h.m.leader_commands(ms(12_000), 1), vec![]);
    // ...and again by the same node in a later term (the entry may be lost).
    assert_eq!(h.m.leader_commands(ms(12_000), 2), due);
    // A renewal applied here later moves the deadline from its apply time.
    h.now = ms(11_500);
    assert_eq!(h.req(a, Op::KeepAlive), Ok(Reply::Renewed));
    assert_eq!(h.m.leader_commands(ms(21_599), 2), vec![]);
    assert_eq!(
        h.m.leader_commands(ms(21_600), 2),
        vec![Command::Expire {
            session: a,
            renewal: 2
        }]
    );
}

#[test]
fn a_new_leader_counts_from_when_it_applied_the_renewal_not_from_its_election() {
    // This replica applied the open as a follower at 1 s; it becomes
    // leader (term 5) much later, at 11.1 s: the session is due at once,
    // it does not get a fresh TTL from the election (etcd #9395, #9888).
    let mut h = Harness::new(0);
    h.now = ms(1_000);
    let a = h.open(1);
    assert_eq!(
        h.m.leader_commands(ms(11_100), 5),
        vec![Command::Expire {
            session: a,
            renewal: 1
        }]
    );
}

#[test]
fn a_restored_replica_measures_leases_from_when_it_first_looks_never_earlier() {
    let mut h = Harness::new(5_000);
    h.now = ms(1_000);
    let a = h.open(1);
    let snap = h.m.snapshot().unwrap();
    let mut m = LockMachine::new(config(5_000));
    m.restore(&snap).unwrap();
    // The new leader has no record of when the renewal applied: it counts
    // from its first look (50 s here), not from the old leader's clock.
    assert_eq!(m.leader_commands(ms(50_000), 3), vec![]);
    assert_eq!(m.leader_commands(ms(60_099), 3), vec![]);
    assert_eq!(
        m.leader_commands(ms(60_100), 3),
        vec![Command::Expire {
            session: a,
            renewal: 1
        }]
    );
}

/// The leader's scan reads the leases in the order they run out here and
/// stops at the first that has not: a session renewed later is left out,
/// whatever its id.
#[test]
fn the_leader_proposes_expiries_in_the_order_leases_run_out() {
    let mut h = Harness::new(0);
    h.now = ms(1_000);
    let a = h.open(1);
    h.now = ms(3_000);
    let b = h.open(2);
    h.now = ms(2_000);
    let c = h.open(3);
    h.now = ms(5_000);
    assert_eq!(h.req(a, Op::KeepAlive), Ok(Reply::Renewed));
    // Leases (10.1 s) run out at c 12.1 s, b 13.1 s, a 15.1 s.
    let expire = |session, renewal| Command::Expire { session, renewal };
    assert_eq!(h.m.leader_commands(ms(12_099), 1), vec![]);
    assert_eq!(
        h.m.leader_commands(ms(13_100), 1),
        vec![expire(c, 3), expire(b, 2)]
    );
    assert_eq!(h.m.leader_commands(ms(15_100), 1), vec![expire(a, 4)]);
}

/// A restored replica has no record of when a lock's delay began: it
/// counts from its first look, never earlier (as for leases).
#[test]
fn a_restored_replica_measures_a_lock_delay_from_when_it_first_looks() {
    let mut h = Harness::new(5_000);
    let a = h.open(1);
    assert_eq!(h.acquire(a, "x", Mode::Exclusive, false), granted(1));
    let expired = h.apply(Command::Expire {
        session: a,
        renewal: 1,
    });
    assert_eq!(expired, Ok(Reply::Internal { effective: true }));
    let freed = h.index;
    let mut m = LockMachine::new(config(5_000));
    m.restore(&h.m.snapshot().unwrap()).unwrap();
    assert_eq!(m.leader_commands(ms(50_000), 3), vec![]);
    assert_eq!(m.leader_commands(ms(54_999), 3), vec![]);
    assert_eq!(
        m.leader_commands(ms(55_000), 3),
        vec![Command::Undelay {
            lock: "x".into(),
            freed
        }]
    );
}

#[test]
fn the_leader_ends_a_lock_delay_after_it_has_run_on_its_clock() {
    let mut h = Harness::new(5_000);
    let (a, b) = (h.open(1), h.open(2));
    assert_eq!(h.acquire(a, "x", Mode::Exclusive, false), granted(1));
    assert_eq!(h.req(b, Op::KeepAlive), Ok(Reply::Renewed));
    h.now = ms(20_000);
    assert_eq!(
        h.apply(Command::Expire {
            session: a,
            renewal: 1
        }),
        Ok(Reply::Internal { effective: true })
    );
    let freed = h.index;
    // b renewed at 1 ms, so it is due as well; x's delay is not over yet.
    assert_eq!(
        h.m.leader_commands(ms(24_999), 1),
        vec![Command::Expire {
            session: b,
            renewal: 4
        }]
    );
    assert_eq!(
        h.m.leader_commands(ms(25_000), 1),
        vec![Command::Undelay {
            lock: "x".into(),
            freed
        }]
    );
}

#[test]
fn cancel_leaves_the_queue_and_may_unblock_those_behind() {
    let mut h = Harness::new(0);
    let (r1, w, r2) = (h.open(1), h.open(2), h.open(3));
    assert_eq!(h.acquire(r1, "x", Mode::Shared, false), granted(1));
    assert_eq!(h.acquire(w, "x", Mode::Exclusive, true), queued(0));
    assert_eq!(h.acquire(r2, "x", Mode::Shared, true), queued(1));
    assert_eq!(
        h.req(w, Op::Cancel { lock: "x".into() }),
        Ok(Reply::Cancelled)
    );
    assert_eq!(h.holders("x"), vec![(r1, 1), (r2, 2)]);
    // The cancelled acquire's kept response says so.
    assert_eq!(
        h.m.answer(h.now, Query::Response { session: w, seq: 1 }),
        QueryAnswer::Response(Some(Ok(Reply::Cancelled)))
    );
    assert_eq!(
        h.req(w, Op::Cancel { lock: "x".into() }),
        Err(LockError::NotWaiting)
    );
    // Cancelling after the grant landed tells the client it holds the lock.
    assert_eq!(h.req(r2, Op::Cancel { lock: "x".into() }), granted(2));
}

#[test]
fn the_fenced_file_accepts_only_the_current_exclusive_holders_token_once() {
    let mut h = Harness::new(0);
    let (a, b) = (h.open(1), h.open(2));
    let append = |token, data: &[u8]| Op::Append {
        file: "f".into(),
        token,
        data: data.to_vec(),
    };
    assert_eq!(
        h.req(a, append(1, b"early")),
        Err(LockError::StaleToken { token: 1 })
    );
    assert_eq!(h.acquire(a, "f", Mode::Exclusive, false), granted(1));
    assert_eq!(
        h.req(a, append(1, b"a1")),
        Ok(Reply::Appended { offset: 0 })
    );
    let seq = h.seqs[&a];
    // A retried append does not append twice.
    assert_eq!(
        h.retry(a, seq, append(1, b"a1")),
        Ok(Reply::Appended { offset: 0 })
    );
    assert_eq!(h.release(a, "f", 1), Ok(Reply::Released));
    assert_eq!(h.acquire(b, "f", Mode::Exclusive, false), granted(2));
    // a's stale token is refused even from a's own session.
    assert_eq!(
        h.req(a, append(1, b"stale")),
        Err(LockError::StaleToken { token: 1 })
    );
    assert_eq!(
        h.req(b, append(2, b"b2")),
        Ok(Reply::Appended { offset: 2 })
    );
    assert_eq!(
        h.m.answer(h.now, Query::File { name: "f".into() }),
        QueryAnswer::File(Some(FileInfo {
            token: 2,
            data: b"a1b2".to_vec()
        }))
    );
    // Readers cannot append.
    assert_eq!(h.release(b, "f", 2), Ok(Reply::Released));
    assert_eq!(h.acquire(b, "f", Mode::Shared, false), granted(3));
    assert_eq!(
        h.req(b, append(3, b"r")),
        Err(LockError::StaleToken { token: 3 })
    );
}

#[test]
fn bounds_are_enforced_with_clear_errors() {
    let mut h = Harness::new(0);
    h.m = LockMachine::new(LockConfig {
        limits: Limits {
            sessions_max: 2,
            locks_per_session_max: 1,
            waiters_per_lock_max: 1,
            file_bytes_max: 4,
            ..Limits::default()
        },
        ..config(0)
    });
    assert_eq!(
        h.apply(Command::Open {
            nonce: 9,
            ttl_ms: 10
        }),
        Err(LockError::TtlOutOfRange {
            ttl_ms: 10,
            min_ms: 1_000,
            max_ms: 3_600_000
        })
    );
    let (a, b) = (h.open(1), h.open(2));
    assert_eq!(
        h.apply(Command::Open {
            nonce: 3,
            ttl_ms: TTL_MS
        }),
        Err(LockError::TooManySessions(2))
    );
    // A retried open returns the session it created, even at the bound.
    assert_eq!(
        h.apply(Command::Open {
            nonce: 2,
            ttl_ms: TTL_MS
        }),
        Ok(Reply::Opened {
            session: b,
            ttl_ms: TTL_MS
        })
    );
    let long = "n".repeat(257);
    assert_eq!(
        h.acquire(a, &long, Mode::Exclusive, false),
        Err(LockError::BadName { len: 257, max: 256 })
    );
    assert_eq!(
        h.acquire(a, "", Mode::Exclusive, false),
        Err(LockError::BadName { len: 0, max: 256 })
    );
    assert_eq!(h.acquire(a, "x", Mode::Exclusive, false), granted(1));
    assert_eq!(
        h.acquire(a, "y", Mode::Exclusive, false),
        Err(LockError::TooManyLocks(1))
    );
    assert_eq!(h.acquire(b, "x", Mode::Exclusive, true), queued(0));
    let c = {
        assert_eq!(h.req(a, Op::Close), Ok(Reply::Closed));
        h.open(3)
    };
    assert_eq!(h.holders("x"), vec![(b, 2)]);
    assert_eq!(h.acquire(c, "x", Mode::Exclusive, true), queued(0));
    assert_eq!(
        h.req(
            b,
            Op::Append {
                file: "x".into(),
                token: 2,
                data: b"12345".to_vec()
            }
        ),
        Err(LockError::FileTooLarge(4))
    );
    // Rejected commands changed nothing.
    assert_eq!(h.m.check_invariants(), Ok(()));
    assert_eq!(h.m.sessions(), 2);
}

#[test]
fn undecodable_commands_and_queries_are_errors_not_panics() {
    let mut m = LockMachine::new(config(0));
    let out = m.apply(1, ms(0), &[0xff, 0xff, 0xff]);
    let r: Response = postcard::from_bytes(&out).unwrap();
    assert!(matches!(r, Err(LockError::Malformed(_))), "{r:?}");
    let out = m.query(ms(0), &[0xff]);
    let q: QueryAnswer = postcard::from_bytes(&out).unwrap();
    assert!(matches!(q, QueryAnswer::Malformed(_)), "{q:?}");
}

#[test]
fn a_snapshot_restores_the_same_state_and_tokens_keep_increasing() {
    let mut h = Harness::new(0);
    let (a, b) = (h.open(1), h.open(2));
    assert_eq!(h.acquire(a, "x", Mode::Exclusive, false), granted(1));
    assert_eq!(h.acquire(b, "x", Mode::Exclusive, true), queued(0));
    let snap = h.m.snapshot().unwrap();
    let mut m = LockMachine::new(config(0));
    m.restore(&snap).unwrap();
    assert_eq!(m.snapshot().unwrap(), snap);
    h.m = m;
    assert_eq!(h.release(a, "x", 1), Ok(Reply::Released));
    assert_eq!(h.holders("x"), vec![(b, 2)]);
    assert!(LockMachine::new(config(0)).restore(&[1, 2, 3]).is_err());
}

#[test]
fn holders_report_how_long_this_node_would_wait_before_expiring_them() {
    let mut h = Harness::new(0);
    h.now = ms(1_000);
    let a = h.open(1);
    assert_eq!(h.acquire(a, "x", Mode::Exclusive, false), granted(1));
    h.now = ms(3_000);
    assert_eq!(h.info("x").holders[0].expires_in_ms, Some(8_100));
}

#[test]
fn unsequenced_requests_run_each_time_and_keep_no_response() {
    let mut h = Harness::new(0);
    let a = h.open(1);
    let acquire = Op::Acquire {
        lock: "x".into(),
        mode: Mode::Shared,
        wait: false,
    };
    let un = |op: Op| Command::Unsequenced { session: a, op };
    assert_eq!(h.apply(un(acquire.clone())), granted(1));
    let release = Op::Release {
        lock: "x".into(),
        token: 1,
    };
    assert_eq!(h.apply(un(release)), Ok(Reply::Released));
    // The same command again is a new acquire, with a new token.
    assert_eq!(h.apply(un(acquire)), granted(2));
    assert_eq!(
        h.m.answer(h.now, Query::Response { session: a, seq: 0 }),
        QueryAnswer::Response(None)
    );
    let stray = Command::Unsequenced {
        session: 99,
        op: Op::KeepAlive,
    };
    assert_eq!(h.apply(stray), Err(LockError::SessionNotFound(99)));
}

#[test]
fn sessions_are_listed_in_id_order_in_pages() {
    let mut h = Harness::new(0);
    let (a, b, c) = (h.open(1), h.open(2), h.open(3));
    let page = |after, limit| match h.m.answer(h.now, Query::Sessions { after, limit }) {
        QueryAnswer::Sessions(list) => list.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(page(0, 2), vec![a, b]);
    assert_eq!(page(b, 2), vec![c]);
}

#[test]
fn a_release_and_a_cancel_are_events_that_end_a_hold_and_a_wait() {
    let mut h = Harness::new(0);
    let (a, b) = (h.open(1), h.open(2));
    assert_eq!(h.acquire(a, "x", Mode::Exclusive, false), granted(1));
    assert_eq!(h.acquire(b, "x", Mode::Exclusive, true), queued(0));
    h.m.take_events();
    assert_eq!(
        h.req(b, Op::Cancel { lock: "x".into() }),
        Ok(Reply::Cancelled)
    );
    assert_eq!(h.release(a, "x", 1), Ok(Reply::Released));
    let ended: Vec<Event> =
        h.m.take_events()
            .into_iter()
            .filter(|e| !matches!(e, Event::Executed { .. }))
            .collect();
    assert_eq!(
        ended,
        vec![
            Event::Cancelled {
                index: h.index - 1,
                session: b,
                lock: "x".into()
            },
            Event::Released {
                index: h.index,
                session: a,
                lock: "x".into(),
                token: 1
            },
        ]
    );
    // A refused release is no event.
    assert_eq!(h.release(a, "x", 1), Err(LockError::UnknownLock));
    assert!(h
        .m
        .take_events()
        .iter()
        .all(|e| matches!(e, Event::Executed { .. })));
}

/// Issue 11, hole 1: two sessions share `L`; the first asking for it
/// exclusive was told "granted" (its shared token) while the other still
/// held it. A re-acquire in the same mode returns the same grant; in any
/// other mode it is refused, and nothing changes.
#[test]
fn a_reacquire_in_another_mode_is_refused_and_in_the_same_mode_returns_the_grant() {
    let mut h = Harness::new(0);
    let (a, b) = (h.open(1), h.open(2));
    assert_eq!(h.acquire(a, "L", Mode::Shared, false), granted(1));
    assert_eq!(h.acquire(b, "L", Mode::Shared, false), granted(2));
    let upgrade = Err(LockError::ModeConflict {
        held: Mode::Shared,
        asked: Mode::Exclusive,
    });
    assert_eq!(h.acquire(a, "L", Mode::Exclusive, false), upgrade);
    assert_eq!(h.acquire(a, "L", Mode::Exclusive, true), upgrade);
    assert_eq!(h.acquire(a, "L", Mode::Shared, false), granted(1));
    assert_eq!(h.holders("L"), vec![(a, 1), (b, 2)]);
    assert!(h.info("L").holders.iter().all(|x| x.mode == Mode::Shared));

    // A semaphore holder asking with another limit, or for a lock.
    assert_eq!(h.acquire(a, "S", Mode::Semaphore(2), false), granted(3));
    assert_eq!(
        h.acquire(a, "S", Mode::Semaphore(3), false),
        Err(LockError::LimitMismatch { held: 2, asked: 3 })
    );
    assert_eq!(
        h.acquire(a, "S", Mode::Exclusive, false),
        Err(LockError::ModeConflict {
            held: Mode::Semaphore(2),
            asked: Mode::Exclusive
        })
    );
    // An exclusive holder asking shared (a downgrade) is refused too.
    assert_eq!(h.acquire(b, "X", Mode::Exclusive, false), granted(4));
    assert_eq!(
        h.acquire(b, "X", Mode::Shared, false),
        Err(LockError::ModeConflict {
            held: Mode::Exclusive,
            asked: Mode::Shared
        })
    );
    // A waiter asking again in another mode is refused; in its own mode it
    // learns its place.
    assert_eq!(h.acquire(a, "X", Mode::Exclusive, true), queued(0));
    assert_eq!(
        h.acquire(a, "X", Mode::Shared, true),
        Err(LockError::ModeConflict {
            held: Mode::Exclusive,
            asked: Mode::Shared
        })
    );
    assert_eq!(h.acquire(a, "X", Mode::Exclusive, true), queued(0));
    assert_eq!(h.m.last_token(), 4, "no refusal issued a token");
    assert_eq!(h.m.check_invariants(), Ok(()));
}

/// Issue 11, hole 2: an expiry or undelay proposed by a client would end
/// anyone's session; Raft asks the machine, which refuses them.
#[test]
fn expiries_and_undelays_are_refused_from_clients() {
    let m = LockMachine::new(config(0));
    for c in [
        Command::Expire {
            session: 2,
            renewal: 2,
        },
        Command::Undelay {
            lock: "x".into(),
            freed: 3,
        },
    ] {
        let refused = m.admits_from_client(&encode(&c));
        assert!(refused.is_err_and(|why| why.contains(c.label())), "{c:?}");
    }
    for c in [
        Command::Open {
            nonce: 1,
            ttl_ms: TTL_MS,
        },
        Command::Unsequenced {
            session: 2,
            op: Op::KeepAlive,
        },
    ] {
        assert_eq!(m.admits_from_client(&encode(&c)), Ok(()), "{c:?}");
    }
    assert_eq!(m.admits_from_client(b"\xff\xff garbage"), Ok(()));
}

/// Issue 11, item 11: events beyond the bound are dropped, but never
/// silently: the next drain starts with `Missed`, which tells the HTTP
/// layer's waiters to look their grants up.
#[test]
fn events_dropped_past_the_bound_are_reported_as_missed() {
    let mut cfg = config(0);
    cfg.limits.events_pending_max = 2;
    let mut h = Harness {
        m: LockMachine::new(cfg),
        ..Harness::new(0)
    };
    let a = h.open(1);
    for lock in ["x", "y", "z"] {
        assert!(h.acquire(a, lock, Mode::Exclusive, false).is_ok());
    }
    let events = h.m.take_events();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[0], Event::Missed { count: 4 });
    assert!(matches!(&events[2], Event::Granted(g) if g.lock == "z"));
    assert_eq!(h.m.take_events(), vec![]);
}

/// Issue 11, item 10: the totals that bound the state's size are enforced
/// (and kept exactly: `check_invariants` recounts them after every apply).
#[test]
fn the_lock_tables_and_the_files_have_total_bounds() {
    let mut cfg = config(0);
    cfg.limits.lock_entries_max = 2;
    cfg.limits.files_bytes_max = 10;
    cfg.limits.file_bytes_max = 8;
    let mut h = Harness {
        m: LockMachine::new(cfg),
        ..Harness::new(0)
    };
    let (a, b) = (h.open(1), h.open(2));
    assert_eq!(h.acquire(a, "x", Mode::Exclusive, false), granted(1));
    assert_eq!(h.acquire(b, "x", Mode::Exclusive, true), queued(0));
    assert_eq!(
        h.acquire(b, "y", Mode::Exclusive, false),
        Err(LockError::LockTablesFull(2))
    );
    assert_eq!(h.release(a, "x", 1), Ok(Reply::Released));
    // The waiter took the holder's place: one entry left, room for one.
    assert_eq!(h.acquire(a, "y", Mode::Exclusive, false), granted(3));
    let append = |file: &str, token, data: &[u8]| Op::Append {
        file: file.into(),
        token,
        data: data.to_vec(),
    };
    assert_eq!(
        h.req(b, append("x", 2, b"12345678")),
        Ok(Reply::Appended { offset: 0 })
    );
    assert_eq!(
        h.req(a, append("y", 3, b"123")),
        Err(LockError::FilesFull(10))
    );
    assert_eq!(h.m.check_invariants(), Ok(()));
}

// ---- credentials (issue 13) ----

mod credentials {
    use super::*;
    use crate::lock::auth::{Allow, CredentialId, Policy, Rule};

    const ADMIN: CredentialId = 0xad;
    const ALICE: CredentialId = 0xa1;
    const BOB: CredentialId = 0xb0;

    fn as_(credential: CredentialId, command: Command) -> Command {
        Command::As {
            credential,
            command: encode(&command),
        }
    }

    fn qas(credential: CredentialId, query: Query) -> Query {
        Query::As {
            credential,
            query: encode(&query),
        }
    }

    fn may_lock(prefix: &str) -> Policy {
        Policy {
            admin: false,
            rules: vec![Rule {
                prefix: prefix.into(),
                allow: Allow {
                    acquire: true,
                    status: true,
                    ..Allow::default()
                },
            }],
        }
    }

    /// A machine with an admin, and alice and bob allowed `orders/`.
    fn cluster() -> Harness {
        let mut h = Harness::new(0);
        let boot = h.apply(Command::Bootstrap {
            id: ADMIN,
            hash: [1; 32],
        });
        assert_eq!(boot, Ok(Reply::Internal { effective: true }));
        for (id, hash) in [(ALICE, [2; 32]), (BOB, [3; 32])] {
            let create = Command::CreateCredential {
                id,
                name: format!("{id:x}"),
                hash,
                policy: may_lock("orders/"),
            };
            assert_eq!(
                h.apply(as_(ADMIN, create)),
                Ok(Reply::CredentialCreated { id })
            );
        }
        h
    }

    #[test]
    fn a_credential_is_held_to_its_share_of_sessions_and_locks_and_an_admin_is_not() {
        let mut h = Harness::new(0);
        let mut config = config(0);
        config.limits.sessions_per_credential_max = 2;
        config.limits.locks_per_credential_max = 3;
        h.m = LockMachine::new(config);
        let boot = h.apply(Command::Bootstrap {
            id: ADMIN,
            hash: [1; 32],
        });
        assert!(boot.is_ok());
        let create = Command::CreateCredential {
            id: ALICE,
            name: "alice".into(),
            hash: [2; 32],
            policy: may_lock(""),
        };
        assert!(h.apply(as_(ADMIN, create)).is_ok());
        let (a, b) = (open_as(&mut h, ALICE, 1), open_as(&mut h, ALICE, 2));
        let third = h.apply(as_(
            ALICE,
            Command::Open {
                nonce: 3,
                ttl_ms: TTL_MS,
            },
        ));
        assert_eq!(third, Err(LockError::CredentialSessionsFull(2)));
        // A retried open of a session she has is still answered.
        let again = h.apply(as_(
            ALICE,
            Command::Open {
                nonce: 1,
                ttl_ms: TTL_MS,
            },
        ));
        assert!(matches!(again, Ok(Reply::Opened { session, .. }) if session == a));
        for (s, lock) in [(a, "x"), (a, "y"), (b, "z")] {
            assert!(op_as(&mut h, ALICE, s, acquire(lock)).is_ok());
        }
        assert_eq!(
            op_as(&mut h, ALICE, b, acquire("w")),
            Err(LockError::CredentialLocksFull(3))
        );
        // A re-acquire adds nothing and is answered.
        assert!(matches!(
            op_as(&mut h, ALICE, b, acquire("z")),
            Ok(Reply::Granted { .. })
        ));
        // Closing a session gives its share back.
        assert_eq!(op_as(&mut h, ALICE, a, Op::Close), Ok(Reply::Closed));
        assert!(op_as(&mut h, ALICE, b, acquire("w")).is_ok());
        assert!(matches!(
            h.apply(as_(
                ALICE,
                Command::Open {
                    nonce: 4,
                    ttl_ms: TTL_MS
                }
            )),
            Ok(Reply::Opened { .. })
        ));
        // The admin is not held to them.
        for nonce in 10..14 {
            open_as(&mut h, ADMIN, nonce);
        }
        assert_eq!(h.m.check_invariants(), Ok(()));
    }

    fn open_as(h: &mut Harness, who: CredentialId, nonce: u64) -> SessionId {
        match h.apply(as_(
            who,
            Command::Open {
                nonce,
                ttl_ms: TTL_MS,
            },
        )) {
            Ok(Reply::Opened { session, .. }) => session,
            other => panic!("open: {other:?}"),
        }
    }

    fn op_as(h: &mut Harness, who: CredentialId, session: SessionId, op: Op) -> Response {
        h.apply(as_(who, Command::Unsequenced { session, op }))
    }

    /// One entry renews every keepalive in it as its own entry would have:
    /// each checked for its credential, each answered; an expiry decided
    /// on a renewal before the batch does nothing; nothing but keepalives
    /// rides in a batch.
    #[test]
    fn a_keepalive_batch_renews_each_session_as_its_own_keepalive_would_and_nothing_else() {
        let mut h = cluster();
        let (a, b) = (open_as(&mut h, ALICE, 1), open_as(&mut h, BOB, 2));
        let (a_open, b_open) = (h.index - 1, h.index);
        let keepalive = |session| Command::Unsequenced {
            session,
            op: Op::KeepAlive,
        };
        let item = |c: Command| serde_bytes::ByteBuf::from(encode(&c));
        let close_a = Command::Unsequenced {
            session: a,
            op: Op::Close,
        };
        let batch = Command::KeepAlives(vec![
            item(as_(ALICE, keepalive(a))),
            item(as_(ALICE, keepalive(b))),
            item(keepalive(a)),
            item(as_(ALICE, close_a)),
            serde_bytes::ByteBuf::from(vec![0xff; 3]),
            item(as_(0xdead, keepalive(a))),
        ]);
        let answers = match h.apply(batch) {
            Ok(Reply::KeepAlives(answers)) => answers,
            other => panic!("{other:?}"),
        };
        assert_eq!(answers.len(), 6);
        assert_eq!(answers[0], Ok(Reply::Renewed));
        assert!(
            matches!(answers[1], Err(LockError::Forbidden(_))),
            "{answers:?}"
        );
        assert_eq!(answers[2], Err(LockError::Unauthenticated));
        assert!(
            matches!(answers[3], Err(LockError::Malformed(_))),
            "{answers:?}"
        );
        assert!(
            matches!(answers[4], Err(LockError::Malformed(_))),
            "{answers:?}"
        );
        assert_eq!(answers[5], Err(LockError::Unauthenticated));
        // Alice's session was renewed by the batch: an expiry decided on
        // its open does nothing. Bob's was not: one decided on his does.
        let stale = Command::Expire {
            session: a,
            renewal: a_open,
        };
        assert_eq!(h.apply(stale), Ok(Reply::Internal { effective: false }));
        let due = Command::Expire {
            session: b,
            renewal: b_open,
        };
        assert_eq!(h.apply(due), Ok(Reply::Internal { effective: true }));
        // The close in the batch was not applied.
        assert!(matches!(
            h.m.answer(h.now, qas(ALICE, Query::Session { session: a })),
            QueryAnswer::Session(Some(_))
        ));
    }

    #[test]
    fn a_full_keepalive_batch_fits_the_smallest_entry_bound() {
        let widest = Command::As {
            credential: u64::MAX,
            command: encode(&Command::Unsequenced {
                session: u64::MAX,
                op: Op::KeepAlive,
            }),
        };
        assert!(encode(&widest).len() <= crate::lock::KEEPALIVE_ITEM_BYTES_MAX);
        let full = Command::KeepAlives(
            (0..crate::lock::KEEPALIVES_PER_ENTRY_MAX)
                .map(|_| serde_bytes::ByteBuf::from(encode(&widest)))
                .collect(),
        );
        assert!(encode(&full).len() <= 16 * 1024, "{}", encode(&full).len());
    }

    fn acquire(lock: &str) -> Op {
        Op::Acquire {
            lock: lock.into(),
            mode: Mode::Exclusive,
            wait: false,
        }
    }

    fn forbidden(r: &Response) -> bool {
        matches!(r, Err(LockError::Forbidden(_)))
    }

    #[test]
    fn the_first_admin_is_created_once_and_credentials_only_by_an_admin() {
        let mut h = cluster();
        // A second bootstrap does nothing: the first admin stays the only one.
        let again = h.apply(Command::Bootstrap {
            id: 0xee,
            hash: [9; 32],
        });
        assert_eq!(again, Ok(Reply::Internal { effective: false }));
        assert_eq!(h.m.credential(0xee), None);
        assert_eq!(h.m.credential(ADMIN), Some(([1; 32], true)));
        let create = Command::CreateCredential {
            id: 0xcc,
            name: "c".into(),
            hash: [4; 32],
            policy: Policy::admin(),
        };
        // Not by alice, not anonymously, not twice.
        assert!(forbidden(&h.apply(as_(ALICE, create.clone()))));
        assert!(forbidden(&h.apply(create.clone())));
        assert!(h.apply(as_(ADMIN, create.clone())).is_ok());
        assert_eq!(
            h.apply(as_(ADMIN, create)),
            Err(LockError::CredentialExists)
        );
        let bad = Command::CreateCredential {
            id: 0xdd,
            name: "d".into(),
            hash: [5; 32],
            policy: Policy::default(),
        };
        assert!(matches!(
            h.apply(as_(ADMIN, bad)),
            Err(LockError::BadPolicy(_))
        ));
        // Only client commands go inside As.
        let nested = as_(
            ADMIN,
            as_(
                ALICE,
                Command::Open {
                    nonce: 1,
                    ttl_ms: TTL_MS,
                },
            ),
        );
        assert!(forbidden(&h.apply(nested)));
        let expire = as_(
            ADMIN,
            Command::Expire {
                session: 1,
                renewal: 1,
            },
        );
        assert!(forbidden(&h.apply(expire)));
    }

    #[test]
    fn a_session_is_its_owners_whatever_ids_another_credential_guesses() {
        let mut h = cluster();
        let s = open_as(&mut h, ALICE, 7);
        let token = match op_as(&mut h, ALICE, s, acquire("orders/1")) {
            Ok(Reply::Granted { token }) => token,
            other => panic!("{other:?}"),
        };
        let release = Op::Release {
            lock: "orders/1".into(),
            token,
        };
        // Bob (and an anonymous caller) can neither release nor renew,
        // close, acquire in or append with alice's session.
        for op in [
            release.clone(),
            Op::KeepAlive,
            Op::Close,
            acquire("orders/2"),
            Op::Append {
                file: "orders/1".into(),
                token,
                data: b"x".to_vec(),
            },
        ] {
            assert!(forbidden(&op_as(&mut h, BOB, s, op.clone())), "{op:?}");
            let anonymous = h.apply(Command::Unsequenced { session: s, op });
            assert_eq!(anonymous, Err(LockError::Unauthenticated));
            let sequenced = h.apply(as_(
                BOB,
                Command::Request(Request {
                    session: s,
                    seq: 1,
                    acked: 0,
                    op: Op::KeepAlive,
                }),
            ));
            assert!(forbidden(&sequenced));
        }
        // Once credentials exist, nothing anonymous is answered either.
        assert_eq!(
            h.m.answer(h.now, Query::Session { session: s }),
            QueryAnswer::Refused(LockError::Unauthenticated)
        );
        assert_eq!(
            h.apply(Command::Open {
                nonce: 99,
                ttl_ms: TTL_MS
            }),
            Err(LockError::Unauthenticated)
        );
        // Reusing alice's open nonce does not hand bob her session.
        let reopen = h.apply(as_(
            BOB,
            Command::Open {
                nonce: 7,
                ttl_ms: TTL_MS,
            },
        ));
        assert!(forbidden(&reopen));
        assert_eq!(h.holders("orders/1"), vec![(s, token)]);
        // Nor can bob read her session or its kept responses.
        for q in [
            Query::Session { session: s },
            Query::Response { session: s, seq: 1 },
        ] {
            let q = qas(BOB, q);
            assert!(matches!(
                h.m.answer(h.now, q),
                QueryAnswer::Refused(LockError::Forbidden(_))
            ));
        }
        // Bob lists his own sessions only; the admin lists all.
        let mine = |h: &Harness, who| match h.m.answer(
            h.now,
            qas(
                who,
                Query::Sessions {
                    after: 0,
                    limit: 10,
                },
            ),
        ) {
            QueryAnswer::Sessions(l) => l.len(),
            other => panic!("{other:?}"),
        };
        assert_eq!(mine(&h, BOB), 0);
        assert_eq!(mine(&h, ALICE), 1);
        assert_eq!(mine(&h, ADMIN), 1);
        // Alice releases; an admin may act on any session.
        assert_eq!(op_as(&mut h, ALICE, s, release), Ok(Reply::Released));
        assert_eq!(op_as(&mut h, ADMIN, s, Op::Close), Ok(Reply::Closed));
    }

    #[test]
    fn a_policy_allows_only_its_prefixes_and_actions() {
        let mut h = cluster();
        let s = open_as(&mut h, ALICE, 1);
        assert!(forbidden(&op_as(&mut h, ALICE, s, acquire("payroll"))));
        assert!(matches!(
            op_as(&mut h, ALICE, s, acquire("orders/x")),
            Ok(Reply::Granted { .. })
        ));
        // Status yes, file read no (her rule allows acquire and status).
        let ask = |h: &Harness, q: Query| h.m.answer(h.now, qas(ALICE, q));
        assert!(matches!(
            ask(
                &h,
                Query::Lock {
                    name: "orders/x".into()
                }
            ),
            QueryAnswer::Lock(_)
        ));
        assert!(matches!(
            ask(
                &h,
                Query::Lock {
                    name: "payroll".into()
                }
            ),
            QueryAnswer::Refused(LockError::Forbidden(_))
        ));
        assert!(matches!(
            ask(
                &h,
                Query::File {
                    name: "orders/x".into()
                }
            ),
            QueryAnswer::Refused(LockError::Forbidden(_))
        ));
        assert!(matches!(
            ask(&h, Query::Credentials),
            QueryAnswer::Refused(LockError::Forbidden(_))
        ));
        let append = Op::Append {
            file: "orders/x".into(),
            token: 1,
            data: b"x".to_vec(),
        };
        assert!(forbidden(&op_as(&mut h, ALICE, s, append)));
        // A read-only credential may not even open a session.
        let ro = Policy {
            admin: false,
            rules: vec![Rule {
                prefix: String::new(),
                allow: Allow {
                    status: true,
                    ..Allow::default()
                },
            }],
        };
        let create = Command::CreateCredential {
            id: 0x50,
            name: "ro".into(),
            hash: [6; 32],
            policy: ro,
        };
        assert!(h.apply(as_(ADMIN, create)).is_ok());
        assert!(forbidden(&h.apply(as_(
            0x50,
            Command::Open {
                nonce: 2,
                ttl_ms: TTL_MS
            }
        ))));
    }

    #[test]
    fn a_revoked_credential_stops_at_the_next_entry_and_its_sessions_expire() {
        let mut h = cluster();
        let s = open_as(&mut h, ALICE, 1);
        assert!(op_as(&mut h, ALICE, s, acquire("orders/a")).is_ok());
        assert!(forbidden(
            &h.apply(as_(ALICE, Command::RevokeCredential { id: BOB }))
        ));
        assert_eq!(
            h.apply(as_(ADMIN, Command::RevokeCredential { id: ALICE })),
            Ok(Reply::CredentialRevoked)
        );
        assert_eq!(
            h.apply(as_(ADMIN, Command::RevokeCredential { id: ALICE })),
            Err(LockError::UnknownCredential)
        );
        assert_eq!(h.m.credential(ALICE), None);
        assert_eq!(
            op_as(&mut h, ALICE, s, Op::KeepAlive),
            Err(LockError::Unauthenticated)
        );
        assert!(matches!(
            h.m.answer(
                h.now,
                qas(
                    ALICE,
                    Query::Lock {
                        name: "orders/a".into()
                    }
                )
            ),
            QueryAnswer::Refused(LockError::Unauthenticated)
        ));
        // Nothing renews her session now: the leader expires it.
        h.now = ms(1 + TTL_MS * 2);
        let expiries = h.m.leader_commands(h.now, 1);
        assert!(expiries
            .iter()
            .any(|c| matches!(c, Command::Expire { session, .. } if *session == s)));
    }

    /// A revoked credential's queued acquire leaves the queue: the release
    /// before it hands the lock to the next waiter, never a new token to
    /// the revoked one; what it holds stays until its session expires.
    #[test]
    fn a_revoked_credential_gets_no_new_grant_from_its_queued_waits() {
        let mut h = cluster();
        let holder = open_as(&mut h, BOB, 1);
        let revoked = open_as(&mut h, ALICE, 2);
        let next = open_as(&mut h, ADMIN, 3);
        assert!(op_as(&mut h, BOB, holder, acquire("orders/q")).is_ok());
        assert!(op_as(&mut h, ALICE, revoked, acquire("orders/held")).is_ok());
        let wait = |lock: &str| Op::Acquire {
            lock: lock.into(),
            mode: Mode::Exclusive,
            wait: true,
        };
        assert_eq!(op_as(&mut h, ALICE, revoked, wait("orders/q")), queued(0));
        assert_eq!(op_as(&mut h, ADMIN, next, wait("orders/q")), queued(1));
        h.m.take_events();
        let revoke = h.apply(as_(ADMIN, Command::RevokeCredential { id: ALICE }));
        assert_eq!(revoke, Ok(Reply::CredentialRevoked));
        assert!(h.m.take_events().iter().any(|e| matches!(
            e,
            Event::Cancelled { session, .. } if *session == revoked
        )));
        let token = h.holders("orders/q")[0].1;
        let release = Op::Release {
            lock: "orders/q".into(),
            token,
        };
        assert_eq!(op_as(&mut h, BOB, holder, release), Ok(Reply::Released));
        let granted: Vec<SessionId> = grants(&mut h.m).iter().map(|g| g.session).collect();
        assert_eq!(granted, vec![next], "the next waiter, not the revoked one");
        assert_eq!(h.holders("orders/held").len(), 1, "held until it expires");
        assert_eq!(h.m.check_invariants(), Ok(()));
    }

    #[test]
    fn credentials_and_owners_survive_a_snapshot() {
        let mut h = cluster();
        let s = open_as(&mut h, ALICE, 1);
        let snap = h.m.snapshot().unwrap();
        let mut restored = LockMachine::new(config(0));
        restored.restore(&snap).unwrap();
        assert_eq!(restored.credential(BOB), Some(([3; 32], false)));
        let steal = encode(&as_(
            BOB,
            Command::Unsequenced {
                session: s,
                op: Op::Close,
            },
        ));
        let out: Response = postcard::from_bytes(&restored.apply(100, h.now, &steal)).unwrap();
        assert!(forbidden(&out));
    }
}
