//! The lock machine against the linearizability checker's sequential model:
//! random operations applied one at a time (so the history is sequential)
//! must form a linearizable history, and the machine's own invariants must
//! hold after every step. Two independent descriptions of the same rules
//! (src/lock/machine.rs and src/linearizability.rs) checked against
//! each other.

use proptest::prelude::*;
use raftlock::actor::Instant;
use raftlock::linearizability::{self as lin, Verdict};
use raftlock::lock::{
    encode, Command, LockConfig, LockError, LockMachine, Mode, Op, Query, QueryAnswer, Reply,
    Request, Response,
};
use raftlock::raft::StateMachine;
use std::collections::BTreeMap;
use std::time::Duration;

const LOCKS: &[&str] = &["a", "b"];
const SESSIONS: u64 = 3;

#[derive(Clone, Debug)]
enum Step {
    Acquire {
        who: usize,
        lock: usize,
        exclusive: bool,
    },
    Release {
        who: usize,
        lock: usize,
        right_token: bool,
    },
    Query {
        lock: usize,
    },
    Close {
        who: usize,
    },
    /// Time passes and the leader proposes what it decides.
    Tick {
        ms: u64,
    },
    KeepAlive {
        who: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let who = 0..SESSIONS as usize;
    let lock = 0..LOCKS.len();
    prop_oneof![
        4 => (who.clone(), lock.clone(), any::<bool>())
            .prop_map(|(who, lock, exclusive)| Step::Acquire { who, lock, exclusive }),
        3 => (who.clone(), lock.clone(), any::<bool>())
            .prop_map(|(who, lock, right_token)| Step::Release { who, lock, right_token }),
        2 => lock.prop_map(|lock| Step::Query { lock }),
        1 => who.clone().prop_map(|who| Step::Close { who }),
        2 => (100u64..2_000).prop_map(|ms| Step::Tick { ms }),
        2 => who.prop_map(|who| Step::KeepAlive { who }),
    ]
}

struct Run {
    m: LockMachine,
    index: u64,
    now_ms: u64,
    /// Session slot -> (session id, next seq); reopened after a close or expiry.
    sessions: Vec<(u64, u64)>,
    nonce: u64,
    /// What the client believes it holds: (slot, lock) -> token.
    held: BTreeMap<(usize, usize), u64>,
    history: Vec<lin::Event>,
    t: u64,
}

impl Run {
    fn apply(&mut self, c: &Command) -> Response {
        self.index += 1;
        let now = Instant::from_micros(self.now_ms * 1000);
        let out = self.m.apply(self.index, now, &encode(c));
        let r = postcard::from_bytes(&out).expect("decodable response");
        assert_eq!(self.m.check_invariants(), Ok(()));
        r
    }

    fn open(&mut self) -> u64 {
        self.nonce += 1;
        let ttl_ms = 3_000;
        match self.apply(&Command::Open {
            nonce: self.nonce,
            ttl_ms,
        }) {
            Ok(Reply::Opened { session, .. }) => session,
            other => panic!("open: {other:?}"),
        }
    }

    fn request(&mut self, slot: usize, op: Op) -> Response {
        let (session, seq) = self.sessions[slot];
        self.sessions[slot].1 += 1;
        let r = self.apply(&Command::Request(Request {
            session,
            seq,
            acked: seq - 1,
            op,
        }));
        if let Err(LockError::SessionNotFound(_)) = r {
            self.reopen(slot);
        }
        r
    }

    fn reopen(&mut self, slot: usize) {
        let id = self.open();
        self.sessions[slot] = (id, 1);
        self.held.retain(|&(s, _), _| s != slot);
    }

    /// Records one operation that ran alone in its own time slot.
    fn record(&mut self, lock: usize, op: lin::Op, outcome: lin::Outcome) {
        self.t += 10;
        self.history.push(lin::Event {
            lock: LOCKS[lock].to_string(),
            op,
            invoked: self.t,
            completed: self.t + 5,
            outcome,
        });
    }

    fn run(&mut self, s: Step) {
        match s {
            Step::Acquire {
                who,
                lock,
                exclusive,
            } => {
                let session = self.sessions[who].0;
                let mode = if exclusive {
                    Mode::Exclusive
                } else {
                    Mode::Shared
                };
                let op = Op::Acquire {
                    lock: LOCKS[lock].into(),
                    mode,
                    wait: false,
                };
                let outcome = match self.request(who, op) {
                    Ok(Reply::Granted { token }) => {
                        self.held.insert((who, lock), token);
                        lin::Outcome::Granted(token)
                    }
                    Err(LockError::Busy) => lin::Outcome::Busy,
                    Err(LockError::ModeConflict { .. }) => lin::Outcome::ModeConflict,
                    Err(LockError::SessionNotFound(_)) => return,
                    other => panic!("acquire: {other:?}"),
                };
                let lin_mode = if exclusive {
                    lin::Mode::Exclusive
                } else {
                    lin::Mode::Shared
                };
                self.record(
                    lock,
                    lin::Op::Acquire {
                        session,
                        mode: lin_mode,
                    },
                    outcome,
                );
            }
            Step::Release {
                who,
                lock,
                right_token,
            } => {
                let session = self.sessions[who].0;
                let held = self.held.get(&(who, lock)).copied();
                let token = match (held, right_token) {
                    (Some(t), true) => t,
                    (Some(t), false) => t + 1000,
                    (None, _) => 1,
                };
                let op = Op::Release {
                    lock: LOCKS[lock].into(),
                    token,
                };
                let outcome = match self.request(who, op) {
                    Ok(Reply::Released) => {
                        self.held.remove(&(who, lock));
                        lin::Outcome::Released
                    }
                    // The model does not tell "nobody holds it" apart.
                    Err(LockError::NotHolder) | Err(LockError::UnknownLock) => {
                        lin::Outcome::NotHolder
                    }
                    Err(LockError::SessionNotFound(_)) => return,
                    other => panic!("release: {other:?}"),
                };
                self.record(lock, lin::Op::Release { session, token }, outcome);
            }
            Step::Query { lock } => {
                let q = Query::Lock {
                    name: LOCKS[lock].into(),
                };
                let now = Instant::from_micros(self.now_ms * 1000);
                let answer = self.m.query(now, &encode(&q));
                let Ok(QueryAnswer::Lock(info)) = postcard::from_bytes(&answer) else {
                    panic!("query")
                };
                let mut holders: Vec<(u64, u64)> =
                    info.holders.iter().map(|h| (h.session, h.token)).collect();
                holders.sort();
                self.record(lock, lin::Op::Query, lin::Outcome::Holders(holders));
            }
            Step::Close { who } => {
                let session = self.sessions[who].0;
                if self.request(who, Op::Close) == Ok(Reply::Closed) {
                    for lock in 0..LOCKS.len() {
                        self.record(lock, lin::Op::Close { session }, lin::Outcome::Done);
                    }
                    self.reopen(who);
                }
            }
            Step::KeepAlive { who } => {
                let _ = self.request(who, Op::KeepAlive);
            }
            Step::Tick { ms } => {
                self.now_ms += ms;
                let now = Instant::from_micros(self.now_ms * 1000);
                for c in self.m.leader_commands(now, 1) {
                    let r = self.apply(&c);
                    let effective = r == Ok(Reply::Internal { effective: true });
                    match (&c, effective) {
                        (Command::Expire { session, .. }, true) => {
                            for lock in 0..LOCKS.len() {
                                let op = lin::Op::Expire { session: *session };
                                self.record(lock, op, lin::Outcome::Done);
                            }
                            if let Some(slot) =
                                self.sessions.iter().position(|&(id, _)| id == *session)
                            {
                                self.reopen(slot);
                            }
                        }
                        (Command::Undelay { lock, .. }, true) => {
                            if let Some(l) = LOCKS.iter().position(|n| n == lock) {
                                self.record(l, lin::Op::Undelay, lin::Outcome::Done);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_lock_machine_agrees_with_the_sequential_model(steps in prop::collection::vec(step(), 1..120)) {
        let config = LockConfig {
            drift_ppm: 10_000,
            lock_delay: Duration::from_millis(1_000),
            ..LockConfig::default()
        };
        let mut run = Run {
            m: LockMachine::new(config),
            index: 0,
            now_ms: 0,
            sessions: Vec::new(),
            nonce: 0,
            held: BTreeMap::new(),
            history: Vec::new(),
            t: 0,
        };
        for _ in 0..SESSIONS {
            let id = run.open();
            run.sessions.push((id, 1));
        }
        for s in steps {
            run.run(s);
        }
        let verdict = lin::check(&run.history, &lin::Limits { steps_max: lin::LINEARIZABILITY_STEPS_MAX });
        prop_assert!(matches!(verdict, Verdict::Linearizable), "{verdict:?}");
    }
}
