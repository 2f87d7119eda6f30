//! The checks the fuzz targets in `fuzz/` run, kept in the library so that
//! `tests/fuzz_corpus.rs` replays every corpus with a plain `cargo test`.
//! Each turns fuzzer bytes into inputs with a small byte reader (values
//! drawn from small ranges, so that sessions, locks, terms and indexes
//! collide and reach deep states), feeds them, and panics on a violation.

use crate::actor::Instant;
use crate::lock::{Command, LockConfig, LockMachine, Mode, Op, Query, Request};
use crate::raft::message::{
    AppendRequest, AppendResponse, AppendResult, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use crate::raft::{
    ConfChange, Config, Effect, Entry, Input, Membership, Message, Payload, Raft, Recorder,
    Recovered, SnapshotError, SnapshotJob, StateMachine, Timer,
};
use std::collections::VecDeque;
use std::time::Duration;

/// Steps one fuzz input may take; the rest of the bytes are ignored.
pub const FUZZ_STEPS_MAX: usize = 512;

/// Reads fuzzer bytes as small numbers; zeros once they run out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    /// A number in `0..n` (n >= 1).
    fn below(&mut self, n: u64) -> u64 {
        u64::from(self.byte()) % n.max(1)
    }

    fn flag(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

const LOCK_NAMES: [&str; 3] = ["a", "b", "c"];

fn lock_op(b: &mut Bytes) -> Op {
    let lock = LOCK_NAMES[b.below(3) as usize].to_string();
    match b.below(7) {
        0 => Op::KeepAlive,
        1 => Op::Close,
        2 | 3 => Op::Acquire {
            lock,
            mode: match b.below(3) {
                0 => Mode::Exclusive,
                1 => Mode::Shared,
                _ => Mode::Semaphore(b.below(3) as u32),
            },
            wait: b.flag(),
        },
        4 => Op::Cancel { lock },
        5 => Op::Release {
            lock,
            token: b.below(12),
        },
        _ => Op::Append {
            file: lock,
            token: b.below(12),
            data: vec![b.byte(); b.below(4) as usize],
        },
    }
}

/// A command; `sessions` are the ids of sessions opened so far (a session
/// id is the index of its `Open`), the last few of which it mostly uses.
fn lock_command(b: &mut Bytes, sessions: &[u64]) -> Vec<u8> {
    let recent = &sessions[sessions.len().saturating_sub(4)..];
    let session = match recent.len() {
        0 => b.below(4),
        n => recent[b.below(n as u64 + 1).min(n as u64 - 1) as usize] + b.below(2) * b.below(3),
    };
    let command = match b.below(8) {
        0 => Command::Open {
            nonce: b.below(4),
            ttl_ms: [0, 1_000, 10_000, u64::MAX][b.below(4) as usize],
        },
        1 | 2 => Command::Unsequenced {
            session,
            op: lock_op(b),
        },
        3 => Command::Expire {
            session,
            renewal: b.below(40),
        },
        4 => Command::Undelay {
            lock: LOCK_NAMES[b.below(3) as usize].into(),
            freed: b.below(40),
        },
        // Raw bytes: whatever they decode to, or a malformed command.
        5 => return (0..b.below(8)).map(|_| b.byte()).collect(),
        _ => Command::Request(Request {
            session,
            seq: b.below(6),
            acked: b.below(6),
            op: lock_op(b),
        }),
    };
    crate::lock::encode(&command)
}

/// The lock state machine fed arbitrary commands, expiries, leader ticks,
/// queries and snapshot round trips: never a panic, and its invariants
/// (`LockMachine::check_invariants`) hold after every step. Returns the
/// grants it saw (for tests of the generator's reach).
pub fn check_lock_machine(data: &[u8]) -> usize {
    let mut grants = 0;
    let config = LockConfig {
        lock_delay: Duration::from_millis(500),
        ..LockConfig::default()
    };
    let mut m = LockMachine::new(config.clone());
    let mut b = Bytes(data);
    let mut now = Instant::ZERO;
    let mut index = 0;
    let mut sessions = Vec::new();
    for _ in 0..FUZZ_STEPS_MAX {
        if b.done() {
            break;
        }
        now = now + Duration::from_millis(b.below(4) * 400);
        match b.below(10) {
            0 => {
                // What a leader would propose now, applied in order.
                for command in m.leader_tick(now, 1) {
                    index += 1;
                    m.apply(index, now, &command);
                }
            }
            1 => {
                let query = match b.below(4) {
                    0 => Query::Lock {
                        name: LOCK_NAMES[b.below(3) as usize].into(),
                    },
                    1 => Query::Session {
                        session: b.below(5),
                    },
                    2 => Query::File {
                        name: LOCK_NAMES[b.below(3) as usize].into(),
                    },
                    _ => Query::Sessions {
                        after: b.below(3),
                        limit: b.below(4) as u32,
                    },
                };
                m.query(now, &crate::lock::encode(&query));
            }
            2 => {
                // A check: failing to snapshot or restore is the finding.
                let snapshot = m
                    .snapshot()
                    .unwrap_or_else(|e| panic!("snapshot failed: {e}"));
                let mut copy = LockMachine::new(config.clone());
                if let Err(e) = copy.restore(&snapshot) {
                    panic!("its own snapshot does not restore: {e}");
                }
                let again = copy
                    .snapshot()
                    .unwrap_or_else(|e| panic!("a restored machine does not snapshot: {e}"));
                assert_eq!(again, snapshot, "a snapshot round trip changed the state");
                copy.check_invariants()
                    .unwrap_or_else(|e| panic!("restored: {e}"));
            }
            _ => {
                index += 1;
                let command = lock_command(&mut b, &sessions);
                let output = m.apply(index, now, &command);
                if let Ok(Ok(crate::lock::Reply::Opened { session, .. })) =
                    postcard::from_bytes::<crate::lock::Response>(&output)
                {
                    sessions.push(session);
                }
            }
        }
        m.check_invariants()
            .unwrap_or_else(|e| panic!("after index {index}: {e}"));
        grants += m
            .take_events()
            .iter()
            .filter(|e| matches!(e, crate::lock::Event::Granted(_)))
            .count();
    }
    grants
}

fn entry(b: &mut Bytes) -> Entry {
    Entry {
        index: 1 + b.below(8),
        term: b.below(6),
        payload: if b.flag() {
            Payload::Noop
        } else {
            Payload::Command(vec![b.byte()])
        },
    }
}

/// Snapshot bytes: mostly a real snapshot of a recorder that applied a few
/// commands (so installs can complete), sometimes garbage.
fn snapshot_bytes(b: &mut Bytes) -> Vec<u8> {
    if b.flag() {
        return (0..b.below(6)).map(|_| b.byte()).collect();
    }
    let mut recorder = Recorder::new();
    for index in 1..=b.below(6) {
        recorder.apply(index, Instant::ZERO, &[index as u8]);
    }
    recorder.snapshot().unwrap_or_default()
}

/// A membership of some of nodes 1..=4 (voters or learners).
fn membership(b: &mut Bytes) -> Membership {
    let mut m = Membership::voters_at((1..=1 + b.below(4)).map(|id| (id, format!("n{id}"))));
    if b.flag() {
        m = m
            .apply(&ConfChange::AddLearner {
                id: 4,
                addr: "n4".into(),
            })
            .unwrap_or_else(|_| m.clone());
    }
    m
}

/// Every kind of peer message (`Message`), with fields drawn from small
/// ranges so they collide with the replica's own state.
fn raft_message(b: &mut Bytes) -> Message {
    let term = b.below(6);
    match b.below(15) {
        9 => {
            let data = snapshot_bytes(b);
            let offset = if b.flag() { 0 } else { b.below(8) };
            let cut = (b.below(data.len() as u64 + 1) as usize).min(data.len());
            let done = b.flag();
            Message::InstallSnapshot(InstallSnapshotRequest {
                term,
                last_index: b.below(9),
                last_term: b.below(6),
                membership: membership(b),
                offset,
                data: if done { data } else { data[..cut].to_vec() },
                done,
            })
        }
        10 => Message::InstallSnapshotResponse(InstallSnapshotResponse {
            term,
            last_index: b.below(9),
            next_offset: b.below(16),
            done: b.flag(),
        }),
        11 => Message::Join {
            id: 1 + b.below(5),
            addr: format!("n{}", b.below(6)),
        },
        12 => Message::ReadIndex {
            term,
            id: b.below(4),
        },
        13 => Message::Forward {
            term,
            id: b.below(4),
            command: vec![b.byte(); b.below(3) as usize],
        },
        14 => Message::ForwardResponse {
            term,
            id: b.below(4),
            at: b.flag().then(|| b.below(9)),
        },
        _ => classic_message(b, term),
    }
}

/// The messages of the Raft paper (votes, appends) and transfer, read index.
fn classic_message(b: &mut Bytes, term: u64) -> Message {
    match b.below(9) {
        0 | 1 => {
            let request = VoteRequest {
                term,
                last_log_index: b.below(8),
                last_log_term: b.below(6),
                transfer: b.flag(),
            };
            if b.flag() {
                Message::Vote(request)
            } else {
                Message::PreVote(request)
            }
        }
        2 => {
            let response = VoteResponse {
                term,
                granted: b.flag(),
            };
            if b.flag() {
                Message::VoteResponse(response)
            } else {
                Message::PreVoteResponse(response)
            }
        }
        3..=5 => {
            // Mostly contiguous entries after `prev_index`; sometimes not.
            let prev_index = b.below(6);
            let prev_term = b.below(term + 1);
            let n = b.below(4);
            let entries = if b.flag() {
                (0..n).map(|_| entry(b)).collect()
            } else {
                (1..=n)
                    .map(|k| Entry {
                        index: prev_index + k,
                        term,
                        payload: Payload::Command(vec![k as u8]),
                    })
                    .collect()
            };
            Message::Append(AppendRequest {
                term,
                prev_index,
                prev_term,
                entries,
                leader_commit: b.below(9),
                read_round: b.below(3),
            })
        }
        6 => {
            let result = match b.below(3) {
                0 => AppendResult::Success {
                    match_index: b.below(9),
                },
                1 => AppendResult::Conflict {
                    prev_index: b.below(9),
                    conflict_term: b.flag().then(|| b.below(6)),
                    first_index: b.below(9),
                },
                _ => AppendResult::StaleTerm,
            };
            Message::AppendResponse(AppendResponse {
                term,
                result,
                read_round: b.below(3),
            })
        }
        7 => Message::TimeoutNow { term },
        _ => Message::ReadIndexResponse {
            term,
            id: b.below(4),
            index: b.flag().then(|| b.below(9)),
        },
    }
}

/// A Raft replica (node 1 of 3) fed arbitrary peer messages, timers,
/// proposals, reads and durability reports: never a panic, and the
/// replica's postconditions (its debug assertions after every step, which
/// fuzz builds keep) hold. Returns the highest index it saw committed
/// (for tests of the generator's reach).
pub fn check_raft_inputs(data: &[u8]) -> u64 {
    let mut committed = 0;
    let members = Membership::voters_at((1..=3).map(|id| (id, format!("n{id}"))));
    let Ok(mut raft) = Raft::new(
        1,
        members,
        Config::default(),
        Recovered::default(),
        Recorder::new(),
        7,
    ) else {
        panic!("the default config is valid");
    };
    let mut b = Bytes(data);
    let mut now = Instant::ZERO;
    raft.handle(now, Input::Start);
    // Snapshots the replica asked for, serialized whenever the input says.
    let mut jobs: VecDeque<SnapshotJob> = VecDeque::new();
    for id in 0..FUZZ_STEPS_MAX as u64 {
        if b.done() {
            break;
        }
        now = now + Duration::from_millis(b.below(8) * 50);
        let input = match b.below(16) {
            14 => match jobs.pop_front() {
                Some(job) => job.run(),
                None => continue,
            },
            // A driver's late or mistaken report.
            15 => Input::SnapshotBuilt {
                index: b.below(9),
                result: Err(SnapshotError("fuzzed".into())),
            },
            0 => Input::Timer(Timer::Election),
            1 => Input::Timer(Timer::Heartbeat),
            12 => Input::TransferLeadership {
                id,
                to: 1 + b.below(4),
            },
            13 => Input::ChangeMembership {
                id,
                change: match b.below(3) {
                    0 => ConfChange::AddLearner {
                        id: 4,
                        addr: "n4".into(),
                    },
                    1 => ConfChange::Promote { id: 1 + b.below(4) },
                    _ => ConfChange::Remove { id: 1 + b.below(4) },
                },
            },
            2 => Input::Propose {
                id,
                command: vec![b.byte()],
            },
            3 => Input::ProposeBatch(vec![(id, vec![1]), (id + FUZZ_STEPS_MAX as u64, vec![2])]),
            4 => Input::Read { id, query: vec![] },
            5 => Input::Persisted {
                index: b.below(9),
                term: b.below(6),
            },
            _ => Input::Message {
                from: 1 + b.below(4),
                msg: raft_message(&mut b),
            },
        };
        for effect in raft.handle(now, input) {
            if let Effect::BuildSnapshot(job) = effect {
                jobs.push_back(job);
            }
        }
        assert!(raft.commit_index() <= raft.log().last_index());
        assert!(raft.applied_index() <= raft.commit_index());
        committed = committed.max(raft.commit_index());
    }
    committed
}

/// Client frames of the native protocol (`/API/v1/native/*`): arbitrary
/// bytes as each message a node or a client decodes: never a panic, and
/// whatever decodes survives a round trip unchanged.
pub fn check_client_frame(data: &[u8]) {
    use crate::lock::{QueryAnswer, Response};
    fn round_trip<T>(data: &[u8])
    where
        T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        if let Ok(value) = postcard::from_bytes::<T>(data) {
            let again = crate::lock::encode(&value);
            let back: T = postcard::from_bytes(&again)
                .unwrap_or_else(|e| panic!("{value:?} re-encodes to something undecodable: {e}"));
            assert_eq!(back, value, "round trip changed the value");
        }
    }
    round_trip::<Command>(data);
    round_trip::<Query>(data);
    round_trip::<Response>(data);
    round_trip::<QueryAnswer>(data);
    #[cfg(not(madsim))]
    round_trip::<crate::http::NativeReply>(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random inputs, so the checks run (and reach
    /// grants, expiries and elections) even where no corpus is replayed.
    fn inputs(n: usize, len: usize) -> Vec<Vec<u8>> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..n)
            .map(|_| {
                (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn the_lock_machine_check_passes_and_its_inputs_reach_grants() {
        let grants: usize = inputs(200, 600).iter().map(|d| check_lock_machine(d)).sum();
        assert!(
            grants > 100,
            "only {grants} grants: the generator is too weak"
        );
    }

    #[test]
    fn the_raft_generator_makes_every_kind_of_message() {
        use std::collections::BTreeSet;
        let mut kinds = BTreeSet::new();
        for data in inputs(400, 64) {
            let mut b = Bytes(&data);
            while !b.done() {
                let text = format!("{:?}", raft_message(&mut b));
                kinds.insert(text.split(['(', ' ', '{']).next().unwrap_or("").to_string());
            }
        }
        let all = [
            "PreVote",
            "PreVoteResponse",
            "Vote",
            "VoteResponse",
            "Append",
            "AppendResponse",
            "InstallSnapshot",
            "InstallSnapshotResponse",
            "Join",
            "TimeoutNow",
            "ReadIndex",
            "ReadIndexResponse",
            "Forward",
            "ForwardResponse",
        ];
        let missing: Vec<&str> = all
            .iter()
            .copied()
            .filter(|k| !kinds.contains(*k))
            .collect();
        assert!(missing.is_empty(), "never generated: {missing:?}");
    }

    #[test]
    fn the_raft_check_passes_and_its_inputs_reach_commits() {
        let best = inputs(300, 600).iter().map(|d| check_raft_inputs(d)).max();
        assert!(best >= Some(1), "nothing ever committed: {best:?}");
    }
}
