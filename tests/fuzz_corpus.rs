//! Replays the fuzz corpus (`fuzz/corpus/<target>/`) through the same check
//! the fuzz target runs, so CI catches a regression on any input the fuzzer
//! ever kept, without needing cargo-fuzz or a nightly toolchain.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let caught = std::panic::catch_unwind(|| check(&data));
        assert!(
            caught.is_ok(),
            "corpus input {} fails the check",
            path.display()
        );
        n += 1;
    }
    n
}

#[test]
fn peer_frame_corpus_replays_cleanly() {
    let n = replay("peer_frame", raftlock::net::codec::check_peer_frame_bytes);
    assert!(
        n >= 4,
        "the peer_frame corpus has only {n} inputs; seed it (see docs/FUZZING.md)"
    );
}

/// Writes valid frames as seeds when asked: `RAFTLOCK_WRITE_SEED_CORPUS=1`.
#[test]
fn seed_corpus_frames_are_valid() {
    use raftlock::raft::message::*;
    use raftlock::raft::{Entry, Envelope, Payload};
    let samples = vec![
        Message::PreVote(VoteRequest {
            term: 3,
            last_log_index: 10,
            last_log_term: 2,
            transfer: false,
        }),
        Message::VoteResponse(VoteResponse {
            term: 3,
            granted: true,
        }),
        Message::Append(AppendRequest {
            term: 4,
            prev_index: 7,
            prev_term: 3,
            entries: vec![
                Entry {
                    term: 4,
                    index: 8,
                    payload: Payload::Noop,
                },
                Entry {
                    term: 4,
                    index: 9,
                    payload: Payload::Command(b"lock a".to_vec()),
                },
            ],
            leader_commit: 7,
            read_round: 3,
        }),
        Message::AppendResponse(AppendResponse {
            term: 4,
            result: AppendResult::Conflict {
                prev_index: 7,
                conflict_term: Some(2),
                first_index: 5,
            },
            read_round: 3,
        }),
        Message::TimeoutNow { term: 5 },
        Message::ReadIndexResponse {
            term: 5,
            id: 9,
            index: Some(12),
        },
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/peer_frame");
    for (i, msg) in samples.into_iter().enumerate() {
        let frame = raftlock::net::encode_frame(&Envelope {
            from: 1,
            to: 2,
            msg,
        })
        .unwrap();
        raftlock::net::codec::check_peer_frame_bytes(&frame);
        if std::env::var_os("RAFTLOCK_WRITE_SEED_CORPUS").is_some() {
            std::fs::write(dir.join(format!("seed-{i}")), &frame).unwrap();
        }
    }
}
