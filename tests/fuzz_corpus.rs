#![cfg(not(madsim))]
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

#[test]
fn lock_machine_corpus_replays_cleanly() {
    let n = replay("lock_machine", |d| {
        raftlock::fuzz::check_lock_machine(d);
    });
    assert!(n >= 4, "the lock_machine corpus has only {n} inputs");
}

#[test]
fn raft_inputs_corpus_replays_cleanly() {
    let n = replay("raft_inputs", |d| {
        raftlock::fuzz::check_raft_inputs(d);
    });
    assert!(n >= 4, "the raft_inputs corpus has only {n} inputs");
}

#[test]
fn client_frame_corpus_replays_cleanly() {
    let n = replay("client_frame", raftlock::fuzz::check_client_frame);
    assert!(n >= 4, "the client_frame corpus has only {n} inputs");
}

#[test]
fn native_frame_corpus_replays_cleanly() {
    let n = replay("native_frame", raftlock::net::native::check_native_frames);
    assert!(n >= 4, "the native_frame corpus has only {n} inputs");
}

/// Streams of valid native frames, either way, written as seeds when asked
/// (`RAFTLOCK_WRITE_SEED_CORPUS=1`); always checked.
#[test]
fn seed_native_frames_are_valid() {
    use raftlock::net::encode_frame_max;
    use raftlock::net::native::*;
    use raftlock::session::WaitFor;
    let client = vec![
        ClientFrame::Hello {
            version: NATIVE_VERSION,
            credential: Some("rlk_00000000000000010000000000000000000000000000000000000000000000000000000000000000".into()),
        },
        ClientFrame::Call {
            id: 1,
            call: NativeCall::Propose(raftlock::lock::encode(&raftlock::lock::Command::Open {
                nonce: 7,
                ttl_ms: 10_000,
            })),
        },
        ClientFrame::Call {
            id: 2,
            call: NativeCall::Wait(WaitFor {
                session: 3,
                seq: 2,
                lock: "orders".into(),
                timeout_ms: 30_000,
            }),
        },
        ClientFrame::Call {
            id: 3,
            call: NativeCall::Read(vec![0, 6, b'o', b'r', b'd', b'e', b'r', b's']),
        },
        ClientFrame::Cancel { id: 2 },
        ClientFrame::Watch { session: 3 },
    ];
    let server = vec![
        ServerFrame::Welcome {
            version: NATIVE_VERSION,
            node: 2,
        },
        ServerFrame::Answer {
            id: 1,
            reply: NativeReply::Output(vec![0, 0, 3, 144, 78]),
        },
        ServerFrame::Answer {
            id: 2,
            reply: NativeReply::NotLeader(Some(1)),
        },
        ServerFrame::Answer {
            id: 3,
            reply: NativeReply::Unavailable("no leader".into()),
        },
        ServerFrame::Ended {
            session: 3,
            index: 42,
            expired: true,
        },
        ServerFrame::Goodbye {
            why: "a second Hello".into(),
        },
    ];
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    let mut stream = Vec::new();
    for f in &client {
        let bytes = encode_frame_max(f, NATIVE_CALL_FRAME_BYTES_MAX).unwrap();
        stream.extend(&bytes);
        seeds.push(bytes);
    }
    seeds.push(stream);
    let mut stream = Vec::new();
    for f in &server {
        let bytes = encode_frame_max(f, NATIVE_ANSWER_FRAME_BYTES_MAX).unwrap();
        stream.extend(&bytes);
        seeds.push(bytes);
    }
    seeds.push(stream);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/native_frame");
    let write = std::env::var_os("RAFTLOCK_WRITE_SEED_CORPUS").is_some();
    for (i, seed) in seeds.iter().enumerate() {
        raftlock::net::native::check_native_frames(seed);
        if write {
            std::fs::create_dir_all(&root).unwrap();
            std::fs::write(root.join(format!("seed-{i}")), seed).unwrap();
        }
    }
}

#[test]
fn http_body_corpus_replays_cleanly() {
    let n = replay("http_body", raftlock::http::check_request_body);
    assert!(n >= 4, "the http_body corpus has only {n} inputs");
}

/// Valid native-protocol messages and request bodies, written as seeds
/// when asked (`RAFTLOCK_WRITE_SEED_CORPUS=1`); always checked.
#[test]
fn seed_client_frames_and_bodies_are_valid() {
    use raftlock::lock::{encode, Command, Mode, Op, Query, Request};
    let frames = [
        encode(&Command::Open {
            nonce: 7,
            ttl_ms: 10_000,
        }),
        encode(&Command::Request(Request {
            session: 3,
            seq: 2,
            acked: 1,
            op: Op::Acquire {
                lock: "orders".into(),
                mode: Mode::Semaphore(2),
                wait: true,
            },
        })),
        encode(&Command::Unsequenced {
            session: 3,
            op: Op::Append {
                file: "orders".into(),
                token: 9,
                data: b"row".to_vec(),
            },
        }),
        encode(&Query::Response { session: 3, seq: 2 }),
        encode(&raftlock::http::NativeReply::NotLeader(Some(2))),
    ];
    let bodies: Vec<Vec<u8>> = [
        r#"{"ttl_ms": 30000, "wait_ms": 5000, "mode": "shared"}"#,
        r#"{"mode": "semaphore", "limit": 3, "session": 4}"#,
        r#"{"session": 4, "token": 12, "data": "hello"}"#,
        r#"{"id": 4, "peer_addr": "127.0.0.1:7104"}"#,
        r#"{"to": 2}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let write = std::env::var_os("RAFTLOCK_WRITE_SEED_CORPUS").is_some();
    for (i, frame) in frames.iter().enumerate() {
        raftlock::fuzz::check_client_frame(frame);
        if write {
            std::fs::write(root.join("client_frame").join(format!("seed-{i}")), frame).unwrap();
        }
    }
    for (i, body) in bodies.iter().enumerate() {
        raftlock::http::check_request_body(body);
        if write {
            std::fs::write(root.join("http_body").join(format!("seed-{i}")), body).unwrap();
        }
    }
    if write {
        // The stateful targets start from pseudo-random bytes.
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for target in ["lock_machine", "raft_inputs"] {
            for i in 0..4 {
                let bytes: Vec<u8> = (0..256)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                std::fs::write(root.join(target).join(format!("seed-{i}")), bytes).unwrap();
            }
        }
    }
}

#[test]
fn peer_cert_corpus_replays_cleanly() {
    let n = replay("peer_cert", raftlock::tls::check_peer_cert);
    assert!(n >= 4, "the peer_cert corpus has only {n} inputs");
}

/// The corpus's real certificate of node 2 names node 2 and no other:
/// the check the fuzz target runs is not vacuous.
#[test]
fn peer_cert_seed_names_its_node_only() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/peer_cert");
    let pem = std::fs::read(dir.join("pem-node2-as-2")).unwrap();
    let cert = CertificateDer::from_pem_slice(&pem[1..]).unwrap();
    assert!(raftlock::tls::PeerTls::sent_by(&cert, 2));
    assert!(!raftlock::tls::PeerTls::sent_by(&cert, 3));
    assert!(!raftlock::tls::PeerTls::sent_by(&cert, 22));
}

/// The corpus's client certificate names its credential and no node.
#[test]
fn peer_cert_seed_client_names_its_credential_only() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/peer_cert");
    let pem = std::fs::read(dir.join("pem-client-c1")).unwrap();
    let cert = CertificateDer::from_pem_slice(&pem[1..]).unwrap();
    assert_eq!(raftlock::tls::credential_of(&cert), Some(0xc1));
    assert!(!raftlock::tls::PeerTls::sent_by(&cert, 2));
    let node = std::fs::read(dir.join("pem-node2-as-2")).unwrap();
    let node = CertificateDer::from_pem_slice(&node[1..]).unwrap();
    assert_eq!(raftlock::tls::credential_of(&node), None);
}
