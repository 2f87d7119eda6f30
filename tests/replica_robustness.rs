//! A replica fed arbitrary sequences of peer messages, timers and client
//! requests, well-formed or not, from members and strangers, must never
//! panic and must keep its own invariants (checked by its debug assertions
//! after every step, and here). A broken or hostile peer may confuse the
//! cluster's view, but cannot crash a node.

use proptest::prelude::*;
use raftlock::actor::Instant;
use raftlock::raft::message::{
    AppendRequest, AppendResponse, AppendResult, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use raftlock::raft::{
    ConfChange, Config, Effect, Entry, Input, Membership, Message, Payload, Raft, Recorder,
    Recovered, Timer,
};
use std::time::Duration;

fn members() -> Membership {
    Membership::voters_at((1..=3).map(|id| (id, format!("n{id}"))))
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        1u64..8,
        0u64..6,
        prop::option::of(prop::collection::vec(any::<u8>(), 0..3)),
    )
        .prop_map(|(index, term, cmd)| Entry {
            index,
            term,
            payload: cmd.map_or(Payload::Noop, Payload::Command),
        })
}

fn append_message(
    term: u64,
    prev_index: u64,
    prev_term: u64,
    entries: Vec<Entry>,
    leader_commit: u64,
) -> Message {
    Message::Append(AppendRequest {
        term,
        prev_index,
        prev_term,
        entries,
        leader_commit,
        read_round: 1,
    })
}

/// Mostly well-formed AppendEntries: contiguous after `prev_index`, terms
/// rising from `prev_term` to the request's term (malformed ones come from
/// `entry()` in the generic arm below).
fn append() -> impl Strategy<Value = Message> {
    (1u64..6).prop_flat_map(|term| {
        (
            0..=term,
            0u64..6,
            prop::collection::vec((0..=term, any::<bool>()), 0..4),
            0u64..8,
        )
            .prop_map(move |(prev_term, prev_index, raw, leader_commit)| {
                let mut terms: Vec<u64> = raw.iter().map(|(t, _)| (*t).max(prev_term)).collect();
                terms.sort_unstable();
                let entries = terms
                    .iter()
                    .zip(&raw)
                    .enumerate()
                    .map(|(i, (&t, (_, cmd)))| Entry {
                        index: prev_index + 1 + i as u64,
                        term: t,
                        payload: if *cmd {
                            Payload::Command(vec![i as u8])
                        } else {
                            Payload::Noop
                        },
                    })
                    .collect();
                append_message(term, prev_index, prev_term, entries, leader_commit)
            })
    })
}

fn message() -> impl Strategy<Value = Message> {
    let t = 0u64..6;
    let i = 0u64..8;
    prop_oneof![
        (t.clone(), i.clone(), t.clone(), any::<bool>()).prop_map(|(term, li, lt, transfer)| {
            Message::Vote(VoteRequest {
                term,
                last_log_index: li,
                last_log_term: lt,
                transfer,
            })
        }),
        (t.clone(), i.clone(), t.clone()).prop_map(|(term, li, lt)| Message::PreVote(
            VoteRequest {
                term,
                last_log_index: li,
                last_log_term: lt,
                transfer: false
            }
        )),
        (t.clone(), any::<bool>())
            .prop_map(|(term, granted)| Message::VoteResponse(VoteResponse { term, granted })),
        (t.clone(), any::<bool>())
            .prop_map(|(term, granted)| Message::PreVoteResponse(VoteResponse { term, granted })),
        (
            t.clone(),
            i.clone(),
            t.clone(),
            prop::collection::vec(entry(), 0..4),
            i.clone()
        )
            .prop_map(|(term, prev_index, prev_term, entries, leader_commit)| {
                append_message(term, prev_index, prev_term, entries, leader_commit)
            }),
        (
            t.clone(),
            i.clone(),
            0u8..3,
            prop::option::of(t.clone()),
            i.clone()
        )
            .prop_map(|(term, m, kind, ct, fi)| {
                let result = match kind {
                    0 => AppendResult::Success { match_index: m },
                    1 => AppendResult::Conflict {
                        prev_index: m,
                        conflict_term: ct,
                        first_index: fi,
                    },
                    _ => AppendResult::StaleTerm,
                };
                Message::AppendResponse(AppendResponse {
                    term,
                    result,
                    read_round: m,
                })
            }),
        (
            t.clone(),
            i.clone(),
            t.clone(),
            0u64..20,
            prop::collection::vec(any::<u8>(), 0..12),
            any::<bool>()
        )
            .prop_map(|(term, last_index, last_term, offset, data, done)| {
                Message::InstallSnapshot(InstallSnapshotRequest {
                    term,
                    last_index,
                    last_term,
                    membership: members(),
                    offset,
                    data,
                    done,
                })
            }),
        (t.clone(), i.clone(), 0u64..20, any::<bool>()).prop_map(
            |(term, last_index, next_offset, done)| {
                Message::InstallSnapshotResponse(InstallSnapshotResponse {
                    term,
                    last_index,
                    next_offset,
                    done,
                })
            }
        ),
        t.clone().prop_map(|term| Message::TimeoutNow { term }),
        (t.clone(), 0u64..4).prop_map(|(term, id)| Message::ReadIndex { term, id }),
        (t.clone(), 0u64..4, prop::option::of(i.clone()))
            .prop_map(|(term, id, index)| Message::ReadIndexResponse { term, id, index }),
        (4u64..6).prop_map(|id| Message::Join {
            id,
            addr: format!("n{id}")
        }),
    ]
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
                4 => (1u64..5, message()).prop_map(|(from, msg)| Input::Message { from, msg }),
        6 => (1u64..4, append()).prop_map(|(from, msg)| Input::Message { from, msg }),
        1 => Just(Input::Timer(Timer::Election)),
        1 => Just(Input::Timer(Timer::Heartbeat)),
        1 => (0u64..100).prop_map(|id| Input::Propose { id, command: vec![1] }),
        1 => (0u64..100).prop_map(|id| Input::Read { id, query: vec![] }),
        1 => (0u64..100, 1u64..5).prop_map(|(id, to)| Input::TransferLeadership { id, to }),
        1 => (0u64..100, 1u64..6).prop_map(|(id, n)| Input::ChangeMembership { id, change: ConfChange::Remove { id: n } }),
        1 => (0u64..8, 0u64..6).prop_map(|(index, term)| Input::Persisted { index, term }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_inputs_never_panic_and_keep_the_invariants(inputs in prop::collection::vec((input(), 0u64..200), 1..60)) {
        let config = Config {
            election_timeout_min: Duration::from_millis(100),
            election_timeout_max: Duration::from_millis(200),
            heartbeat_interval: Duration::from_millis(20),
            snapshot_threshold_entries: 3,
            ..Config::default()
        };
        let mut r = Raft::new(1, members(), config, Recovered::default(), Recorder::new(), 7).unwrap();
        let mut now = 0u64;
        r.handle(Instant::from_micros(0), Input::Start);
        let mut term = 0;
        for (input, advance_ms) in inputs {
            now += advance_ms * 1000;
            let mut effects = r.handle(Instant::from_micros(now), input);
            // A driver that serializes snapshots at once.
            while let Some(job) = effects.iter().find_map(|e| match e {
                Effect::BuildSnapshot(job) => Some(job.clone()),
                _ => None,
            }) {
                effects = r.handle(Instant::from_micros(now), job.run());
            }
            prop_assert!(r.term() >= term, "term went back");
            term = r.term();
            prop_assert!(r.applied_index() <= r.commit_index());
            prop_assert!(r.commit_index() <= r.log().last_index());
        }
    }
}

/// Node 1 of 3, fresh and started at time zero.
fn started() -> Raft<Recorder> {
    let mut r = Raft::new(
        1,
        members(),
        Config::default(),
        Recovered::default(),
        Recorder::new(),
        7,
    )
    .unwrap();
    r.handle(Instant::from_micros(0), Input::Start);
    r
}

#[test]
fn a_peer_contradicting_a_committed_entry_is_ignored_not_fatal() {
    // Only a broken or hostile peer can send this: two leaders disagreeing
    // about an entry this node already knows is committed. The node must
    // keep its committed entry, and keep running.
    let mut r = started();
    let first = Entry {
        index: 1,
        term: 2,
        payload: Payload::Command(vec![1]),
    };
    let ae = |term, e: Entry| {
        Message::Append(AppendRequest {
            term,
            prev_index: 0,
            prev_term: 0,
            entries: vec![e],
            leader_commit: 1,
            read_round: 0,
        })
    };
    r.handle(
        Instant::from_micros(1),
        Input::Message {
            from: 2,
            msg: ae(2, first.clone()),
        },
    );
    assert_eq!(r.commit_index(), 1);
    let liar = Entry {
        index: 1,
        term: 3,
        payload: Payload::Command(vec![2]),
    };
    r.handle(
        Instant::from_micros(2),
        Input::Message {
            from: 3,
            msg: ae(3, liar),
        },
    );
    assert_eq!(r.log().get(1), Some(&first), "the committed entry stays");
}

#[test]
fn an_acknowledgement_beyond_the_leaders_log_is_ignored() {
    // Found by fuzz/raft_inputs: a peer claiming to match entries its
    // leader never had made the leader's next-index arithmetic panic, and
    // two such claims could commit past the end of the log.
    let mut r = started();
    let t = |ms: u64| Instant::from_micros(ms * 1000);
    r.handle(t(1000), Input::Timer(Timer::Election));
    let vote = VoteResponse {
        term: 1,
        granted: true,
    };
    let from2 = |msg| Input::Message { from: 2, msg };
    r.handle(t(1001), from2(Message::PreVoteResponse(vote.clone())));
    r.handle(t(1002), from2(Message::VoteResponse(vote)));
    assert_eq!(r.role(), raftlock::raft::Role::Leader);
    let last = r.log().last_index();
    for from in [2, 3] {
        let msg = Message::AppendResponse(AppendResponse {
            term: 1,
            result: AppendResult::Success { match_index: 7 },
            read_round: 0,
        });
        r.handle(t(1003), Input::Message { from, msg });
    }
    assert!(r.commit_index() <= last, "committed past the log");
    let msg = Message::AppendResponse(AppendResponse {
        term: 1,
        result: AppendResult::Conflict {
            prev_index: 8,
            conflict_term: None,
            first_index: 2,
        },
        read_round: 0,
    });
    r.handle(t(1004), Input::Message { from: 2, msg });
    assert_eq!(r.role(), raftlock::raft::Role::Leader);
    assert_eq!(r.log().last_index(), last);
}
