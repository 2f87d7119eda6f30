//! The ordering contract, checked on a real replica's effects.

use super::*;
use crate::raft::message::{VoteRequest, VoteResponse};
use crate::raft::{Config, Membership, Message, Payload, Recorder, Recovered};
use std::time::Duration;

fn ms(t: u64) -> Instant {
    Instant::from_micros(t * 1000)
}

fn config() -> Config {
    Config {
        election_timeout_min: Duration::from_millis(100),
        election_timeout_max: Duration::from_millis(200),
        heartbeat_interval: Duration::from_millis(10),
        ..Config::default()
    }
}

fn replica(id: u64, voters: &[u64]) -> Raft<Recorder> {
    let members = Membership::voters_at(voters.iter().map(|&v| (v, format!("n{v}"))));
    let mut r = Raft::new(
        id,
        members,
        config(),
        Recovered::default(),
        Recorder::new(),
        7,
    )
    .unwrap();
    r.handle(ms(0), Input::Start);
    r
}

/// A vote is durable before the response that grants it can leave: the
/// response comes out of `synced`, not out of the flush.
#[test]
fn a_vote_leaves_only_once_its_batch_is_durable() {
    let mut r = replica(2, &[1, 2, 3]);
    let mut core = DriverCore::new();
    let vote = Message::Vote(VoteRequest {
        term: 1,
        last_log_index: 0,
        last_log_term: 0,
        transfer: false,
    });
    core.step(&mut r, ms(1), Input::Message { from: 1, msg: vote });
    let ready = core.flush(&mut r, ms(1), |_| {});
    assert!(ready.messages.is_empty(), "{:?}", ready.messages);
    let batch = ready.batch.expect("the vote is written");
    assert!(batch.sync);
    assert_eq!(core.held(), 1);
    assert!(
        core.next_deadline().is_some(),
        "the election timer is armed"
    );
    let (released, persisted) = core.synced(batch.id);
    assert_eq!(
        released,
        vec![(
            1,
            Message::VoteResponse(VoteResponse {
                term: 1,
                granted: true
            })
        )]
    );
    assert_eq!(persisted, None, "a vote moves no log end");
    assert!(!core.writing());
}

/// Proposals that arrive between two flushes go in as one batch; the
/// leader's AppendEntries leave before its own fsync (thesis 10.2.1) and
/// the durable end comes back as `Persisted` once the batch is synced.
#[test]
fn proposals_are_batched_and_appends_leave_before_the_fsync() {
    let mut r = replica(1, &[1, 2]);
    let mut core = DriverCore::new();
    core.step(&mut r, ms(200), Input::Timer(Timer::Election));
    // PreVote to node 2; granted, then the vote.
    let ready = core.flush(&mut r, ms(200), |_| {});
    assert!(ready.batch.is_none(), "a pre-vote writes nothing");
    core.step(
        &mut r,
        ms(201),
        Input::Message {
            from: 2,
            msg: Message::PreVoteResponse(VoteResponse {
                term: 1,
                granted: true,
            }),
        },
    );
    let ready = core.flush(&mut r, ms(201), |_| {});
    let term_batch = ready.batch.expect("the new term is written");
    assert!(ready.messages.is_empty(), "the vote request waits for it");
    let (released, _) = core.synced(term_batch.id);
    assert!(matches!(released[..], [(2, Message::Vote(_))]));
    core.step(
        &mut r,
        ms(202),
        Input::Message {
            from: 2,
            msg: Message::VoteResponse(VoteResponse {
                term: 1,
                granted: true,
            }),
        },
    );
    let ready = core.flush(&mut r, ms(202), |_| {});
    let noop_batch = ready.batch.expect("the no-op");
    assert!(matches!(ready.messages[..], [(2, Message::Append(_))]));
    let (_, persisted) = core.synced(noop_batch.id);
    core.step(&mut r, ms(202), persisted.expect("the no-op's end"));
    let ack = crate::raft::message::AppendResponse {
        term: 1,
        result: crate::raft::message::AppendResult::Success { match_index: 1 },
        read_round: 0,
    };
    core.step(
        &mut r,
        ms(202),
        Input::Message {
            from: 2,
            msg: Message::AppendResponse(ack),
        },
    );
    core.flush(&mut r, ms(202), |_| {});

    assert!(core.propose(10, b"a".to_vec()));
    assert!(core.propose(11, b"b".to_vec()));
    let mut observed = Vec::new();
    let ready = core.flush(&mut r, ms(203), |e| observed.extend_from_slice(e));
    let appends: Vec<usize> = ready
        .messages
        .iter()
        .filter_map(|(_, m)| match m {
            Message::Append(a) => Some(a.entries.len()),
            _ => None,
        })
        .collect();
    assert_eq!(appends, vec![2], "one AppendEntries for both proposals");
    assert!(!observed.is_empty(), "observers see the batch's effects");
    let batch = ready.batch.expect("both entries written");
    assert_eq!(batch.ops.len(), 2, "both entries, in one batch (one fsync)");
    assert!(core.writing());
    let (_, persisted) = core.synced(batch.id);
    assert_eq!(persisted, Some(Input::Persisted { index: 3, term: 1 }));
}

/// A truncation resets the durable end: nothing stale is reported.
#[test]
fn a_truncation_resets_the_durable_end() {
    let entry = |index, term| crate::raft::Entry {
        index,
        term,
        payload: Payload::Noop,
    };
    let ends = [
        PersistOp::Append(vec![entry(1, 1), entry(2, 1)]),
        PersistOp::TruncateFrom(2),
    ];
    let mut end = LogEnd::Unchanged;
    for op in &ends {
        end = end_after(end, op);
    }
    assert_eq!(end, LogEnd::Truncated);
    let end = end_after(end, &PersistOp::Append(vec![entry(2, 3)]));
    assert_eq!(end, LogEnd::At(2, 3));
}

/// Held messages are bounded; past the bound they are dropped (Raft
/// retransmits), and counted.
#[test]
fn held_messages_are_bounded() {
    let mut core = DriverCore::new();
    core.batches_submitted = 1;
    let big = Message::Forward {
        term: 1,
        id: 1,
        command: vec![0; HELD_MESSAGES_BYTES_MAX / 2],
    };
    core.hold(1, big.clone());
    core.hold(1, big.clone());
    core.hold(1, big);
    assert_eq!((core.held(), core.held_dropped), (1, 2));
    let (released, _) = core.synced(1);
    assert_eq!(released.len(), 1);
    assert_eq!(core.held_bytes, 0);
}
