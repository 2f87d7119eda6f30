#![cfg(not(madsim))]
//! The native protocol (`--listen-native`, docs/NATIVE.md) against real
//! `raftlock serve` processes with TLS and credentials on: many calls in
//! flight on one connection answered in any order, a session's end
//! pushed, and what a buggy or hostile client sends (no Hello, a wrong
//! version, a wrong credential, a frame over the limit, an id reused, a
//! forged command, a revoked credential) refused with a reason, leaving
//! the node serving everyone else.

mod procs;

use procs::*;
use raftlock::lock::{encode, Command, Op, Query, QueryAnswer, Reply, Response};
use raftlock::net::native::{
    ClientFrame, NativeCall, NativeReply, ServerFrame, NATIVE_ANSWER_FRAME_BYTES_MAX,
    NATIVE_CALL_FRAME_BYTES_MAX, NATIVE_VERSION,
};
use raftlock::net::{encode_frame_max, FrameDecoder};
use raftlock::session::WaitFor;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest any one frame may take to arrive in these tests.
const FRAME_WAIT_MS: u64 = 10_000;

/// A raw connection to a native port: frames in, frames out.
struct Raw {
    io: Box<dyn raftlock::http::client::Io>,
    decoder: FrameDecoder,
}

impl Raw {
    async fn open(addr: std::net::SocketAddr) -> Raw {
        let io = raftlock::http::client::open_stream(addr, &access())
            .await
            .unwrap();
        Raw {
            io,
            decoder: FrameDecoder::with_limit(NATIVE_ANSWER_FRAME_BYTES_MAX),
        }
    }

    /// Opens and says Hello with `credential`; the node's first frame.
    async fn hello(addr: std::net::SocketAddr, credential: Option<String>) -> (Raw, ServerFrame) {
        let mut raw = Raw::open(addr).await;
        raw.send(&ClientFrame::Hello {
            version: NATIVE_VERSION,
            credential,
        })
        .await;
        let first = raw.next().await.expect("an answer to Hello");
        (raw, first)
    }

    async fn send(&mut self, frame: &ClientFrame) {
        let bytes = encode_frame_max(frame, NATIVE_CALL_FRAME_BYTES_MAX).unwrap();
        self.send_bytes(&bytes).await;
    }

    async fn send_bytes(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
        self.io.flush().await.unwrap();
    }

    /// The next frame; None once the node closed the connection.
    async fn next(&mut self) -> Option<ServerFrame> {
        let deadline = Duration::from_millis(FRAME_WAIT_MS);
        tokio::time::timeout(deadline, async {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                if let Some(f) = self.decoder.next_frame::<ServerFrame>().unwrap() {
                    return Some(f);
                }
                match self.io.read(&mut buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => self.decoder.extend(&buf[..n]),
                }
            }
        })
        .await
        .expect("a frame or the end within FRAME_WAIT_MS")
    }

    /// The answer to call `id`, skipping other frames.
    async fn answer(&mut self, id: u64) -> NativeReply {
        loop {
            match self.next().await {
                Some(ServerFrame::Answer { id: got, reply }) if got == id => return reply,
                Some(_) => {}
                None => panic!("the connection ended before call {id} was answered"),
            }
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn response(reply: NativeReply) -> Response {
    match reply {
        NativeReply::Output(o) => postcard::from_bytes(&o).unwrap(),
        other => panic!("not an output: {other:?}"),
    }
}

fn goodbye(frame: Option<ServerFrame>) -> String {
    match frame {
        Some(ServerFrame::Goodbye { why }) => why,
        other => panic!("expected a Goodbye, got {other:?}"),
    }
}

/// A keepalive of `session`, as a proposal's bytes.
fn keepalive(session: u64) -> Vec<u8> {
    encode(&Command::Unsequenced {
        session,
        op: Op::KeepAlive,
    })
}

async fn open_session(raw: &mut Raw, id: u64, ttl_ms: u64) -> u64 {
    let command = encode(&Command::Open { nonce: id, ttl_ms });
    raw.send(&ClientFrame::Call {
        id,
        call: NativeCall::Propose(command),
    })
    .await;
    match response(raw.answer(id).await) {
        Ok(Reply::Opened { session, .. }) => session,
        other => panic!("open: {other:?}"),
    }
}

/// Every node says where its native port is, and answers there: a wait
/// held open does not hold up the calls after it on the same connection
/// (answers come in any order), and its grant is pushed when the holder
/// lets go.
#[test]
fn calls_on_one_connection_are_answered_in_any_order_and_grants_are_pushed() {
    let c = Cluster::start();
    wait_for("a leader", || c.leader(&[0, 1, 2]));
    for p in &c.procs {
        let (status, v) = call(p.http, "GET", "/API/v1/cluster", "").unwrap();
        assert_eq!(status, 200);
        assert_eq!(v["native_port"], json!(p.native.port()), "{v}");
    }
    // Through a follower, to walk the forwarding path too.
    let leader = c.leader(&[0, 1, 2]).unwrap();
    let follower = c.procs.iter().find(|p| p.id != leader).unwrap().native;
    runtime().block_on(async {
        let (mut raw, welcome) = Raw::hello(follower, Some(admin())).await;
        assert!(
            matches!(
                welcome,
                ServerFrame::Welcome {
                    version: NATIVE_VERSION,
                    ..
                }
            ),
            "{welcome:?}"
        );
        let holder = open_session(&mut raw, 1, 30_000).await;
        let waiter = open_session(&mut raw, 2, 30_000).await;
        let acquire = |session, seq| {
            encode(&Command::Request(raftlock::lock::Request {
                session,
                seq,
                acked: seq - 1,
                op: Op::Acquire {
                    lock: "pushed".into(),
                    mode: raftlock::lock::Mode::Exclusive,
                    wait: true,
                },
            }))
        };
        raw.send(&ClientFrame::Call {
            id: 3,
            call: NativeCall::Propose(acquire(holder, 1)),
        })
        .await;
        let token = match response(raw.answer(3).await) {
            Ok(Reply::Granted { token, .. }) => token,
            other => panic!("holder's acquire: {other:?}"),
        };
        raw.send(&ClientFrame::Call {
            id: 4,
            call: NativeCall::Propose(acquire(waiter, 1)),
        })
        .await;
        assert!(matches!(
            response(raw.answer(4).await),
            Ok(Reply::Queued { .. })
        ));
        // The wait goes first, the read after it; the read is answered
        // while the wait still waits.
        let wait = WaitFor {
            session: waiter,
            seq: 1,
            lock: "pushed".into(),
            timeout_ms: 20_000,
        };
        raw.send(&ClientFrame::Call {
            id: 5,
            call: NativeCall::Wait(wait),
        })
        .await;
        let query = encode(&Query::Lock {
            name: "pushed".into(),
        });
        raw.send(&ClientFrame::Call {
            id: 6,
            call: NativeCall::Read(query),
        })
        .await;
        match raw.next().await {
            Some(ServerFrame::Answer {
                id: 6,
                reply: NativeReply::Output(o),
            }) => {
                let answer: QueryAnswer = postcard::from_bytes(&o).unwrap();
                assert!(
                    format!("{answer:?}").contains(&format!("{holder}")),
                    "{answer:?}"
                );
            }
            other => panic!("the read should be answered before the wait: {other:?}"),
        }
        // The holder lets go: the waiter's grant is pushed as the wait's answer.
        let release = encode(&Command::Request(raftlock::lock::Request {
            session: holder,
            seq: 2,
            acked: 1,
            op: Op::Release {
                lock: "pushed".into(),
                token,
            },
        }));
        let started = Instant::now();
        raw.send(&ClientFrame::Call {
            id: 7,
            call: NativeCall::Propose(release),
        })
        .await;
        let mut pushed = None;
        while pushed.is_none() {
            match raw.next().await {
                Some(ServerFrame::Answer { id: 5, reply }) => pushed = Some(reply),
                Some(ServerFrame::Answer { id: 7, .. }) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        let granted = match pushed.unwrap() {
            NativeReply::Output(o) => postcard::from_bytes::<QueryAnswer>(&o).unwrap(),
            other => panic!("the wait: {other:?}"),
        };
        assert!(
            matches!(
                granted,
                QueryAnswer::Response(Some(Ok(Reply::Granted { .. })))
            ),
            "the wait's answer is the grant: {granted:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "pushed at the release's commit, not at the wait's deadline"
        );
    });
}

/// A watched session's end is pushed on the connection when it commits;
/// the client library loses its locks at once, not at its next renewal.
#[test]
fn a_session_closed_elsewhere_is_pushed_and_the_library_loses_its_lock_at_once() {
    let c = Cluster::start();
    wait_for("a leader", || c.leader(&[0, 1, 2]));
    let endpoints: Vec<_> = c.procs.iter().map(|p| p.http).collect();
    runtime().block_on(async {
        // A 60 s TTL: the library renews every 20 s, so only a push tells
        // it within the few seconds this test allows.
        let client =
            raftlock::client::Client::connect_as(endpoints, Duration::from_secs(60), access())
                .await
                .unwrap();
        let guard = client.lock("watched").acquire().await.unwrap();
        let session = client.session_id().unwrap();
        // The session ends without its client: an admin closes it.
        close_session(&c, 2, session);
        tokio::time::timeout(Duration::from_secs(5), guard.lost())
            .await
            .expect("the lock is reported lost as soon as the close commits");
    });
}

/// What a buggy or hostile client sends, each on its own connection: the
/// node says why in a Goodbye and closes that connection only.
#[test]
fn hostile_frames_get_a_goodbye_and_the_node_serves_on() {
    let c = Cluster::start();
    wait_for("a leader", || c.leader(&[0, 1, 2]));
    let addr = c.procs[0].native;
    runtime().block_on(async {
        // A first frame longer than a Hello can be, before the caller is
        // known: refused from its header.
        let mut raw = Raw::open(addr).await;
        raw.send_bytes(&5_000u32.to_be_bytes()).await;
        assert!(goodbye(raw.next().await).contains("exceeds the limit"));
        // A call before any Hello.
        let mut raw = Raw::open(addr).await;
        raw.send(&ClientFrame::Cancel { id: 1 }).await;
        assert!(goodbye(raw.next().await).contains("must be a Hello"));
        assert!(raw.next().await.is_none(), "closed after the Goodbye");
        // A version this node does not speak.
        let mut raw = Raw::open(addr).await;
        raw.send(&ClientFrame::Hello {
            version: NATIVE_VERSION + 1,
            credential: Some(admin()),
        })
        .await;
        assert!(goodbye(raw.next().await).contains("version"));
        // No credential, a malformed one, a wrong secret.
        for credential in [None, Some("rlk_nope".to_string()), Some(wrong_secret())] {
            let (mut raw, first) = Raw::hello(addr, credential.clone()).await;
            let why = goodbye(Some(first));
            assert!(
                why.contains("credential") || why.contains("rlk_"),
                "{credential:?}: {why}"
            );
            assert!(raw.next().await.is_none());
        }
        // A frame longer than the limit: refused from its header.
        let (mut raw, _) = Raw::hello(addr, Some(admin())).await;
        let len = (NATIVE_CALL_FRAME_BYTES_MAX as u32 + 1).to_be_bytes();
        raw.send_bytes(&len).await;
        assert!(goodbye(raw.next().await).contains("exceeds the limit"));
        // Bytes that are no frame.
        let (mut raw, _) = Raw::hello(addr, Some(admin())).await;
        raw.send_bytes(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await;
        assert!(goodbye(raw.next().await).contains("broken frame"));
        // A second Hello; then an id reused while its call is in flight.
        let (mut raw, _) = Raw::hello(addr, Some(admin())).await;
        raw.send(&ClientFrame::Hello {
            version: NATIVE_VERSION,
            credential: None,
        })
        .await;
        assert!(goodbye(raw.next().await).contains("second Hello"));
        let (mut raw, _) = Raw::hello(addr, Some(admin())).await;
        let session = open_session(&mut raw, 1, 30_000).await;
        let wait = WaitFor {
            session,
            seq: 9,
            lock: "never".into(),
            timeout_ms: 20_000,
        };
        for _ in 0..2 {
            raw.send(&ClientFrame::Call {
                id: 2,
                call: NativeCall::Wait(wait.clone()),
            })
            .await;
        }
        assert!(goodbye(raw.next().await).contains("already in flight"));
        // A command only the leader's clock may decide: refused, and the
        // connection stays open for the next call.
        let (mut raw, _) = Raw::hello(addr, Some(admin())).await;
        let session = open_session(&mut raw, 1, 30_000).await;
        let expire = encode(&Command::Expire {
            session,
            renewal: 1,
        });
        raw.send(&ClientFrame::Call {
            id: 2,
            call: NativeCall::Propose(expire),
        })
        .await;
        match raw.answer(2).await {
            NativeReply::Refused(why) => assert!(why.contains("leader's own clock"), "{why}"),
            other => panic!("a forged expiry: {other:?}"),
        }
        let (status, v) = call(
            c.procs[1].http,
            "GET",
            &format!("/API/v1/sessions/{session}"),
            "",
        )
        .unwrap();
        assert_eq!(status, 200, "the session is still there: {v}");
        let keepalive = keepalive(session);
        raw.send(&ClientFrame::Call {
            id: 3,
            call: NativeCall::Propose(keepalive),
        })
        .await;
        assert_eq!(response(raw.answer(3).await), Ok(Reply::Renewed));
    });
}

/// A bearer with the admin's id and another secret.
fn wrong_secret() -> String {
    let admin = raftlock::credential::Bearer::parse(&admin()).unwrap();
    raftlock::credential::Bearer::from_parts(admin.id, [7; raftlock::credential::SECRET_BYTES])
        .encode()
}

/// Closes `session` as the admin, through node `i`'s HTTP API.
fn close_session(c: &Cluster, i: usize, session: u64) {
    let path = format!("/API/v1/sessions/{session}");
    let (status, v) = call(c.procs[i].http, "DELETE", &path, "").unwrap();
    assert_eq!(status, 200, "{v}");
}

/// A new credential that may acquire and read any lock, made by the
/// admin: (its secret, its id).
fn user_credential(c: &Cluster, name: &str) -> (String, String) {
    let body = format!(
        r#"{{"name": "{name}", "rules": [{{"prefix": "", "allow": ["acquire", "status"]}}]}}"#
    );
    let (status, v) = call(c.procs[0].http, "POST", "/API/v1/credentials", &body).unwrap();
    assert_eq!(status, 200, "{v}");
    let secret = v["credential"].as_str().unwrap().to_string();
    (secret, v["id"].as_str().unwrap().to_string())
}

/// A credential revoked while its connection is open: the connection was
/// let in, but every command after the revocation commits is refused by
/// the lock machine itself.
#[test]
fn a_credential_revoked_while_its_connection_is_open_is_refused_from_then_on() {
    let c = Cluster::start();
    wait_for("a leader", || c.leader(&[0, 1, 2]));
    let (bearer, id) = user_credential(&c, "soon-gone");
    runtime().block_on(async {
        let (mut raw, welcome) = Raw::hello(c.procs[1].native, Some(bearer)).await;
        assert!(
            matches!(welcome, ServerFrame::Welcome { .. }),
            "{welcome:?}"
        );
        let session = open_session(&mut raw, 1, 30_000).await;
        let (status, v) = call(
            c.procs[0].http,
            "DELETE",
            &format!("/API/v1/credentials/{id}"),
            "",
        )
        .unwrap();
        assert_eq!(status, 200, "{v}");
        let keepalive = keepalive(session);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut n = 10;
        loop {
            n += 1;
            raw.send(&ClientFrame::Call {
                id: n,
                call: NativeCall::Propose(keepalive.clone()),
            })
            .await;
            match raw.answer(n).await {
                // Until node 2 has applied the revocation.
                NativeReply::Output(o)
                    if postcard::from_bytes::<Response>(&o) == Ok(Ok(Reply::Renewed)) => {}
                NativeReply::Refused(_) => break,
                NativeReply::Output(o) => {
                    let r: Response = postcard::from_bytes(&o).unwrap();
                    assert!(format!("{r:?}").contains("Unauthenticated"), "{r:?}");
                    break;
                }
                other => panic!("{other:?}"),
            }
            assert!(
                Instant::now() < deadline,
                "still renewed after the revocation"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

/// Watches are bounded per connection by dropping the oldest, not by
/// closing the connection (a client that lost and reopened its session 64
/// times keeps its connection), and a watch of another credential's
/// session is ignored: nobody learns when someone else's session ended.
#[test]
fn watches_are_bounded_by_dropping_the_oldest_and_only_own_sessions_are_watched() {
    let c = Cluster::start();
    wait_for("a leader", || c.leader(&[0, 1, 2]));
    let (bearer, _) = user_credential(&c, "watcher");
    let addr = c.procs[0].native;
    let close = |session: u64| close_session(&c, 0, session);
    runtime().block_on(async {
        let (mut admin_raw, _) = Raw::hello(addr, Some(admin())).await;
        let not_yours = open_session(&mut admin_raw, 1, 30_000).await;
        let (mut raw, welcome) = Raw::hello(addr, Some(bearer)).await;
        assert!(
            matches!(welcome, ServerFrame::Welcome { .. }),
            "{welcome:?}"
        );
        let bound = raftlock::http::NATIVE_WATCHES_PER_CONNECTION_MAX as u64;
        let mut own = Vec::new();
        for i in 0..bound + 6 {
            let session = open_session(&mut raw, 100 + i, 30_000).await;
            raw.send(&ClientFrame::Watch { session }).await;
            own.push(session);
        }
        raw.send(&ClientFrame::Watch { session: not_yours }).await;
        // Frames are handled in order: once a later call is answered, the
        // watches before it are in place.
        let keepalive = keepalive(own[1]);
        raw.send(&ClientFrame::Call {
            id: 1,
            call: NativeCall::Propose(keepalive.clone()),
        })
        .await;
        assert_eq!(response(raw.answer(1).await), Ok(Reply::Renewed));
        // Closed in this order: another's, the first own (its watch was
        // dropped), the last own (watched). Only the last is pushed.
        close(not_yours);
        close(own[0]);
        close(*own.last().unwrap());
        match raw.next().await {
            Some(ServerFrame::Ended {
                session, expired, ..
            }) => {
                assert_eq!(
                    session,
                    *own.last().unwrap(),
                    "only the latest watch is pushed"
                );
                assert!(!expired, "closed, not expired");
            }
            other => panic!("expected the watched session's end: {other:?}"),
        }
        // The connection still serves calls.
        raw.send(&ClientFrame::Call {
            id: 2,
            call: NativeCall::Propose(keepalive),
        })
        .await;
        assert_eq!(response(raw.answer(2).await), Ok(Reply::Renewed));
    });
}
