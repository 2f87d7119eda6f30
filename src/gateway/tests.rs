//! Exact effects for exact inputs, as openraft's engine tests do.

use super::*;
use crate::lock::{Grant, LockError, Mode, Op, SessionInfo, Token};
use std::time::Duration;

const DRIFT_PPM: u32 = 50_000;

fn at(ms: u64) -> Instant {
    Instant::from_micros(ms * 1000)
}

fn gateway() -> Gateway {
    Gateway::new(GatewayConfig::new(DRIFT_PPM))
}

/// Effects, without the per-proposal counts (`all_effects` has them; the
/// counts of waits stay, since they say how a wait ended).
fn effects(g: &mut Gateway) -> Vec<Effect> {
    all_effects(g)
        .into_iter()
        .filter(|e| !matches!(e, Effect::Count { operation, .. } if *operation != "wait"))
        .collect()
}

fn all_effects(g: &mut Gateway) -> Vec<Effect> {
    std::iter::from_fn(|| g.poll_effect()).collect()
}

fn response(index: u64, r: Result<Reply, LockError>) -> Result<Applied, GatewayError> {
    Ok(Applied {
        index,
        output: encode(&r),
    })
}

fn answer(index: u64, a: QueryAnswer) -> Result<Applied, GatewayError> {
    Ok(Applied {
        index,
        output: encode(&a),
    })
}

fn proposal(op: OpId, session: SessionId, o: Op) -> Effect {
    Effect::Propose {
        op,
        command: encode(&Command::Unsequenced { session, op: o }),
    }
}

fn acquire_op(lock: &str, wait: bool) -> Op {
    Op::Acquire {
        lock: lock.into(),
        mode: Mode::Exclusive,
        wait,
    }
}

fn session_read(op: OpId, session: SessionId) -> Effect {
    Effect::Read {
        op,
        query: encode(&Query::Session { session }),
    }
}

fn grant(session: SessionId, lock: &str, acquire: u64, seq: u64, token: Token) -> Event {
    Event::Granted(Grant {
        index: acquire + 5,
        acquire,
        session,
        seq,
        lock: lock.into(),
        mode: Mode::Exclusive,
        token,
        queued: true,
    })
}

fn count(operation: &'static str, outcome: &'static str) -> Effect {
    Effect::Count { operation, outcome }
}

fn acquired(session: SessionId, token: Token, ttl: Option<u64>, lease: Option<u64>) -> Effect {
    Effect::Answer {
        call: 1,
        result: Ok(Answer::Acquired(Acquired {
            lock: "L".into(),
            token,
            session,
            mode: Mode::Exclusive,
            ttl_ms: ttl,
            lease_ms: lease,
        })),
    }
}

fn acquire(session: SessionChoice, wait_ms: u64) -> Request {
    Request::Acquire(AcquireArgs {
        lock: "L".into(),
        mode: Mode::Exclusive,
        wait_ms,
        session,
    })
}

/// A one-lock acquire that queued: open (op 1) returned session 7, the
/// acquire (op 2) queued at index 20. Renewal due at 1000 ms (TTL 3 s).
fn queued_one_lock(g: &mut Gateway) {
    let one_lock = SessionChoice::OneLock {
        ttl_ms: 3000,
        nonce: 99,
    };
    g.handle_call(at(0), 1, acquire(one_lock, 10_000));
    assert_eq!(
        effects(g),
        vec![Effect::Propose {
            op: 1,
            command: encode(&Command::Open {
                nonce: 99,
                ttl_ms: 3000
            })
        }]
    );
    let opened = Reply::Opened {
        session: 7,
        ttl_ms: 3000,
    };
    g.handle_done(at(2), 1, response(3, Ok(opened)));
    assert_eq!(effects(g), vec![proposal(2, 7, acquire_op("L", true))]);
    g.handle_done(at(4), 2, response(20, Ok(Reply::Queued { position: 0 })));
    assert_eq!(effects(g), vec![]);
    assert_eq!(g.waiting(), 1);
    assert_eq!(g.poll_timeout(), Some(at(1000)), "the renewal, TTL/3");
}

#[test]
fn every_proposal_is_counted_by_its_command_and_outcome() {
    let mut g = gateway();
    queued_one_lock(&mut g);
    g.handle_gone(1);
    assert_eq!(
        all_effects(&mut g),
        vec![proposal(3, 7, Op::Close), count("wait", "abandoned")]
    );
    g.handle_done(at(5), 3, response(21, Ok(Reply::Closed)));
    assert_eq!(all_effects(&mut g), vec![count("close", "closed")]);
    g.handle_call(
        at(6),
        2,
        Request::Propose(encode(&Command::Open {
            nonce: 1,
            ttl_ms: 500,
        })),
    );
    all_effects(&mut g);
    g.handle_done(
        at(7),
        4,
        Err(GatewayError::Raft(RequestError::LeadershipLost)),
    );
    assert_eq!(
        all_effects(&mut g),
        vec![
            count("open", "unavailable"),
            Effect::Answer {
                call: 2,
                result: Err(GatewayError::Raft(RequestError::LeadershipLost))
            }
        ]
    );
    g.handle_call(
        at(8),
        3,
        Request::Read(encode(&Query::Session { session: 7 })),
    );
    all_effects(&mut g);
    g.handle_done(at(9), 5, answer(22, QueryAnswer::Session(None)));
    let after_read = all_effects(&mut g);
    assert!(
        !after_read.iter().any(|e| matches!(e, Effect::Count { .. })),
        "reads are not counted: {after_read:?}"
    );
}

#[test]
fn a_proposal_whose_client_went_away_is_counted_but_not_answered() {
    let mut g = gateway();
    let close = encode(&Command::Unsequenced {
        session: 5,
        op: Op::Close,
    });
    g.handle_call(at(0), 1, Request::Propose(close));
    all_effects(&mut g);
    g.handle_gone(1);
    assert_eq!(g.calls(), 0);
    g.handle_done(at(1), 1, response(12, Ok(Reply::Closed)));
    assert_eq!(all_effects(&mut g), vec![count("close", "closed")]);
}

fn keepalive(session: SessionId) -> Vec<u8> {
    encode(&Command::Unsequenced {
        session,
        op: Op::KeepAlive,
    })
}

/// Keepalives that arrive in one turn are one entry; each call is told
/// its own keepalive's response, as if it had been an entry of its own.
#[test]
fn keepalives_of_one_turn_are_one_entry_and_each_gets_its_own_answer() {
    let mut g = gateway();
    g.handle_call(at(0), 1, Request::Propose(keepalive(5)));
    g.handle_call_as(at(0), 2, Some(77), Request::Propose(keepalive(6)));
    g.handle_call(at(0), 3, Request::Propose(keepalive(7)));
    let items = vec![
        serde_bytes::ByteBuf::from(keepalive(5)),
        serde_bytes::ByteBuf::from(encode(&Command::As {
            credential: 77,
            command: keepalive(6),
        })),
        serde_bytes::ByteBuf::from(keepalive(7)),
    ];
    assert_eq!(
        all_effects(&mut g),
        vec![Effect::Propose {
            op: 1,
            command: encode(&Command::KeepAlives(items)),
        }]
    );
    g.handle_gone(3);
    let each = vec![
        Ok(Reply::Renewed),
        Err(LockError::Forbidden("not yours".into())),
        Ok(Reply::Renewed),
    ];
    g.handle_done(at(1), 1, response(40, Ok(Reply::KeepAlives(each))));
    assert_eq!(
        all_effects(&mut g),
        vec![
            count("keepalive", "renewed"),
            Effect::Answer {
                call: 1,
                result: response(40, Ok(Reply::Renewed)).map(Answer::Output),
            },
            count("keepalive", "forbidden"),
            Effect::Answer {
                call: 2,
                result: response(40, Err(LockError::Forbidden("not yours".into())))
                    .map(Answer::Output),
            },
            // Its client left: counted, not answered.
            count("keepalive", "renewed"),
        ]
    );
    assert_eq!(g.calls(), 0);
}

#[test]
fn a_keepalive_batch_that_fails_fails_each_keepalive_and_batches_are_bounded() {
    let mut g = gateway();
    let n = KEEPALIVES_PER_ENTRY_MAX as u64 + 1;
    for call in 1..=n {
        g.handle_call(at(0), call, Request::Propose(keepalive(call)));
    }
    let proposals: Vec<usize> = all_effects(&mut g)
        .iter()
        .map(|e| match e {
            Effect::Propose { command, .. } => match postcard::from_bytes::<Command>(command) {
                Ok(Command::KeepAlives(items)) => items.len(),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(proposals, vec![KEEPALIVES_PER_ENTRY_MAX, 1]);
    let lost = Err(GatewayError::Raft(RequestError::LeadershipLost));
    g.handle_done(at(1), 2, lost.clone());
    let answers = all_effects(&mut g);
    assert_eq!(
        answers,
        vec![
            count("keepalive", "unavailable"),
            Effect::Answer {
                call: n,
                result: lost.map(Answer::Output)
            }
        ]
    );
}

#[test]
fn a_try_lock_in_the_callers_session_is_one_proposal() {
    let mut g = gateway();
    g.handle_call(at(0), 1, acquire(SessionChoice::Existing(5), 0));
    assert_eq!(
        effects(&mut g),
        vec![proposal(1, 5, acquire_op("L", false))]
    );
    assert_eq!(g.waiting(), 0, "a try-lock waits for no event");
    g.handle_done(at(1), 1, response(9, Ok(Reply::Granted { token: 4 })));
    assert_eq!(effects(&mut g), vec![acquired(5, 4, None, None)]);
    assert_eq!(g.calls(), 0);
}

/// Issue 11, hole 3: a grant replayed by a lagging or restarted node (an
/// older acquire of the same session and lock) never answers the wait.
#[test]
fn a_wait_is_answered_by_its_own_acquires_grant_only() {
    let mut g = gateway();
    queued_one_lock(&mut g);
    g.handle_event(at(10), &grant(7, "L", 12, 0, 3));
    assert_eq!(effects(&mut g), vec![], "an older acquire's grant");
    g.handle_event(at(11), &grant(8, "L", 20, 0, 4));
    assert_eq!(effects(&mut g), vec![], "another session's grant");
    g.handle_event(at(12), &grant(7, "L", 20, 0, 5));
    // TTL 3000 ms less 5% drift, 12 ms after the open was sent.
    assert_eq!(
        effects(&mut g),
        vec![
            count("wait", "granted"),
            acquired(7, 5, Some(3000), Some(2838))
        ]
    );
    assert_eq!((g.calls(), g.waiting(), g.poll_timeout()), (0, 0, None));
}

#[cfg(feature = "sim")]
#[test]
fn the_negative_control_takes_a_replayed_grant() {
    let mut g = Gateway::new(GatewayConfig {
        drift_ppm: DRIFT_PPM,
        bugs: GatewayBugs {
            match_grants_by_name: true,
        },
    });
    queued_one_lock(&mut g);
    g.handle_event(at(10), &grant(7, "L", 12, 0, 3));
    assert_eq!(
        effects(&mut g),
        vec![
            count("wait", "granted"),
            acquired(7, 3, Some(3000), Some(2840))
        ]
    );
}

#[test]
fn a_grant_applied_before_the_acquires_answer_is_kept_for_it() {
    let mut g = gateway();
    g.handle_call(at(0), 1, acquire(SessionChoice::Existing(5), 1000));
    assert_eq!(effects(&mut g), vec![proposal(1, 5, acquire_op("L", true))]);
    // The router saw the grant before the proposal's answer came back.
    g.handle_event(at(1), &grant(5, "L", 30, 0, 8));
    g.handle_done(at(2), 1, response(30, Ok(Reply::Queued { position: 0 })));
    assert_eq!(
        effects(&mut g),
        vec![count("wait", "granted"), acquired(5, 8, None, None)]
    );
}

#[test]
fn at_its_deadline_a_wait_is_cancelled_and_its_one_lock_session_closed() {
    let mut g = gateway();
    g.handle_call(at(0), 1, acquire(SessionChoice::Existing(5), 500));
    g.handle_done(at(2), 1, response(30, Ok(Reply::Queued { position: 1 })));
    effects(&mut g);
    assert_eq!(g.poll_timeout(), Some(at(500)));
    g.handle_timeout(at(499));
    assert_eq!(effects(&mut g), vec![]);
    g.handle_timeout(at(500));
    let cancel = Op::Cancel { lock: "L".into() };
    assert_eq!(effects(&mut g), vec![proposal(2, 5, cancel)]);
    g.handle_done(at(501), 2, response(31, Ok(Reply::Cancelled)));
    let timed_out = GatewayError::TimedOut {
        lock: "L".into(),
        wait_ms: 500,
    };
    assert_eq!(
        effects(&mut g),
        vec![
            count("wait", "timed_out"),
            Effect::Answer {
                call: 1,
                result: Err(timed_out)
            }
        ]
    );

    // One-lock: the session that served nothing is closed.
    let mut g = gateway();
    queued_one_lock(&mut g);
    g.handle_timeout(at(10_003));
    let e = effects(&mut g);
    assert!(
        e.contains(&proposal(4, 7, Op::Cancel { lock: "L".into() })),
        "{e:?}"
    );
    g.handle_done(at(10_004), 4, response(50, Ok(Reply::Cancelled)));
    let e = effects(&mut g);
    assert_eq!(e[0], proposal(5, 7, Op::Close), "{e:?}");
}

#[test]
fn a_cancel_that_loses_to_the_grant_answers_with_the_grant() {
    let mut g = gateway();
    g.handle_call(at(0), 1, acquire(SessionChoice::Existing(5), 500));
    g.handle_done(at(2), 1, response(30, Ok(Reply::Queued { position: 0 })));
    g.handle_timeout(at(500));
    effects(&mut g);
    g.handle_done(at(501), 2, response(31, Ok(Reply::Granted { token: 9 })));
    assert_eq!(
        effects(&mut g),
        vec![count("wait", "granted"), acquired(5, 9, None, None)]
    );
}

#[test]
fn a_one_lock_session_is_renewed_while_it_waits_and_the_lease_counts_from_the_send() {
    let mut g = gateway();
    queued_one_lock(&mut g);
    g.handle_timeout(at(1000));
    assert_eq!(effects(&mut g), vec![proposal(3, 7, Op::KeepAlive)]);
    g.handle_done(at(1010), 3, response(40, Ok(Reply::Renewed)));
    assert_eq!(g.poll_timeout(), Some(at(2000)), "TTL/3 after the send");
    g.handle_event(at(1500), &grant(7, "L", 20, 0, 5));
    // 2850 ms trusted from 1000 ms: 2350 left at 1500 ms.
    assert_eq!(
        effects(&mut g),
        vec![
            count("wait", "granted"),
            acquired(7, 5, Some(3000), Some(2350))
        ]
    );
}

#[test]
fn a_renewal_that_finds_the_session_expired_ends_the_wait() {
    let mut g = gateway();
    queued_one_lock(&mut g);
    g.handle_timeout(at(1000));
    effects(&mut g);
    g.handle_done(
        at(1001),
        3,
        response(40, Err(LockError::SessionNotFound(7))),
    );
    assert_eq!(
        effects(&mut g),
        vec![
            count("wait", "error"),
            Effect::Answer {
                call: 1,
                result: Err(GatewayError::Lock(LockError::SessionNotFound(7)))
            }
        ],
        "nothing to close or cancel: the session is gone"
    );
    assert_eq!((g.calls(), g.waiting(), g.poll_timeout()), (0, 0, None));
}

#[test]
fn a_renewal_refused_for_a_moment_is_tried_again_soon() {
    let mut g = gateway();
    queued_one_lock(&mut g);
    g.handle_timeout(at(1000));
    effects(&mut g);
    g.handle_done(at(1001), 3, Err(GatewayError::Raft(RequestError::Busy)));
    assert_eq!(g.poll_timeout(), Some(at(1251)), "TTL/12 later");
}

#[test]
fn a_client_that_goes_away_leaves_nothing_queued() {
    // While waiting in a one-lock session: the session is closed.
    let mut g = gateway();
    queued_one_lock(&mut g);
    g.handle_gone(1);
    assert_eq!(
        effects(&mut g),
        vec![proposal(3, 7, Op::Close), count("wait", "abandoned")]
    );
    assert_eq!((g.calls(), g.waiting(), g.poll_timeout()), (0, 0, None));

    // While waiting in its own session: the wait is cancelled.
    let mut g = gateway();
    g.handle_call(at(0), 1, acquire(SessionChoice::Existing(5), 1000));
    g.handle_done(at(1), 1, response(30, Ok(Reply::Queued { position: 0 })));
    effects(&mut g);
    g.handle_gone(1);
    let cancel = Op::Cancel { lock: "L".into() };
    assert_eq!(
        effects(&mut g),
        vec![proposal(2, 5, cancel), count("wait", "abandoned")]
    );

    // While its session was being opened: closed once the open returns,
    // and the acquire is never proposed.
    let mut g = gateway();
    let one_lock = SessionChoice::OneLock {
        ttl_ms: 3000,
        nonce: 1,
    };
    g.handle_call(at(0), 1, acquire(one_lock, 1000));
    effects(&mut g);
    g.handle_gone(1);
    assert_eq!(effects(&mut g), vec![]);
    let opened = Reply::Opened {
        session: 7,
        ttl_ms: 3000,
    };
    g.handle_done(at(2), 1, response(3, Ok(opened)));
    assert_eq!(
        effects(&mut g),
        vec![proposal(2, 7, Op::Close), count("wait", "abandoned")]
    );
    assert_eq!(g.calls(), 0);
}

#[test]
fn a_grant_in_the_callers_session_stays_when_the_caller_left_mid_proposal() {
    let mut g = gateway();
    g.handle_call(at(0), 1, acquire(SessionChoice::Existing(5), 1000));
    effects(&mut g);
    g.handle_gone(1);
    g.handle_done(at(1), 1, response(30, Ok(Reply::Granted { token: 3 })));
    assert_eq!(
        effects(&mut g),
        vec![count("wait", "abandoned")],
        "no answer, no release: GET /sessions/5 shows the grant"
    );
}

#[test]
fn missed_events_make_a_wait_look_its_session_up() {
    let mut g = gateway();
    queued_one_lock(&mut g);
    g.handle_event(at(5), &Event::Missed { count: 3 });
    assert_eq!(effects(&mut g), vec![session_read(3, 7)]);
    let not_yet = SessionInfo {
        ttl_ms: 3000,
        held: vec![],
        waiting: vec!["L".into()],
        expires_in_ms: Some(2000),
    };
    g.handle_done(at(6), 3, answer(21, QueryAnswer::Session(Some(not_yet))));
    assert_eq!(effects(&mut g), vec![], "still waiting");
    g.handle_missed();
    assert_eq!(effects(&mut g), vec![session_read(4, 7)]);
    let held = SessionInfo {
        ttl_ms: 3000,
        held: vec![("L".into(), 6)],
        waiting: vec![],
        expires_in_ms: Some(2000),
    };
    g.handle_done(at(8), 4, answer(22, QueryAnswer::Session(Some(held))));
    assert_eq!(
        effects(&mut g),
        vec![
            count("wait", "granted"),
            acquired(7, 6, Some(3000), Some(2842))
        ]
    );
}

#[test]
fn an_unknown_outcome_cancels_the_wait_and_closes_a_one_lock_session() {
    let mut g = gateway();
    g.handle_call(at(0), 1, acquire(SessionChoice::Existing(5), 1000));
    effects(&mut g);
    let lost = GatewayError::Raft(RequestError::LeadershipLost);
    g.handle_done(at(1), 1, Err(lost.clone()));
    let cancel = Op::Cancel { lock: "L".into() };
    assert_eq!(
        effects(&mut g),
        vec![
            proposal(2, 5, cancel),
            count("wait", "error"),
            Effect::Answer {
                call: 1,
                result: Err(lost)
            }
        ]
    );
}

#[test]
fn bad_acquires_are_refused_before_anything_is_proposed() {
    let mut g = gateway();
    let mut long = acquire(SessionChoice::Existing(5), WAIT_MS_MAX + 1);
    g.handle_call(at(0), 1, long.clone());
    if let Request::Acquire(a) = &mut long {
        a.wait_ms = 0;
        a.lock = String::new();
    }
    g.handle_call(at(0), 2, long);
    let e = effects(&mut g);
    assert_eq!(e.len(), 2, "{e:?}");
    for (i, effect) in e.iter().enumerate() {
        assert!(
            matches!(effect, Effect::Answer { call, result: Err(GatewayError::BadRequest(_)) } if *call == i as u64 + 1),
            "{effect:?}"
        );
    }
    assert_eq!(g.calls(), 0);
}

#[test]
fn a_native_wait_takes_the_grant_with_its_sequence_number() {
    let mut g = gateway();
    let w = WaitFor {
        session: 5,
        seq: 4,
        lock: "L".into(),
        timeout_ms: 5000,
    };
    g.handle_call(at(0), 1, Request::Wait(w.clone()));
    assert_eq!(effects(&mut g), vec![session_read(1, 5)]);
    let waiting = SessionInfo {
        ttl_ms: 3000,
        held: vec![],
        waiting: vec!["L".into()],
        expires_in_ms: Some(2000),
    };
    g.handle_done(at(1), 1, answer(9, QueryAnswer::Session(Some(waiting))));
    assert_eq!(effects(&mut g), vec![]);
    g.handle_event(at(2), &grant(5, "L", 3, 2, 1));
    assert_eq!(effects(&mut g), vec![], "an older request's grant");
    g.handle_event(at(3), &grant(5, "L", 8, 4, 2));
    let granted = Ok(Answer::Waited(Some(Ok(Reply::Granted { token: 2 }))));
    assert_eq!(
        effects(&mut g),
        vec![Effect::Answer {
            call: 1,
            result: granted
        }]
    );

    // Not yet at the deadline (capped), and gone sessions are said so.
    let mut g = gateway();
    let long = WaitFor {
        timeout_ms: u64::MAX,
        ..w.clone()
    };
    g.handle_call(at(0), 1, Request::Wait(long));
    effects(&mut g);
    assert_eq!(g.poll_timeout(), Some(at(NATIVE_WAIT_MS_MAX)));
    g.handle_timeout(at(NATIVE_WAIT_MS_MAX));
    let not_yet = Ok(Answer::Waited(None));
    assert_eq!(
        effects(&mut g),
        vec![Effect::Answer {
            call: 1,
            result: not_yet
        }]
    );
    g.handle_done(
        at(NATIVE_WAIT_MS_MAX + 1),
        1,
        answer(9, QueryAnswer::Session(None)),
    );
    assert_eq!(effects(&mut g), vec![], "a finished call's read is ignored");
    g.handle_call(at(0), 2, Request::Wait(w));
    effects(&mut g);
    g.handle_done(at(1), 2, answer(9, QueryAnswer::Session(None)));
    let gone = Ok(Answer::Waited(Some(Err(LockError::SessionNotFound(5)))));
    assert_eq!(
        effects(&mut g),
        vec![Effect::Answer {
            call: 2,
            result: gone
        }]
    );
}

/// Issue 11, hole 2, at this layer: no client door proposes a command only
/// the leader's own clock may decide.
#[test]
fn proposals_pass_through_but_leader_only_and_garbage_are_refused() {
    let mut g = gateway();
    let expire = encode(&Command::Expire {
        session: 5,
        renewal: 9,
    });
    g.handle_call(at(0), 1, Request::Propose(expire));
    g.handle_call(at(0), 2, Request::Propose(vec![0xff; 3]));
    g.handle_call(at(0), 3, Request::Read(vec![0xff; 3]));
    let e = effects(&mut g);
    assert!(
        matches!(
            &e[0],
            Effect::Answer {
                call: 1,
                result: Err(GatewayError::Forbidden(_))
            }
        ),
        "{e:?}"
    );
    assert!(
        matches!(
            &e[1],
            Effect::Answer {
                call: 2,
                result: Err(GatewayError::BadRequest(_))
            }
        ),
        "{e:?}"
    );
    assert!(
        matches!(
            &e[2],
            Effect::Answer {
                call: 3,
                result: Err(GatewayError::BadRequest(_))
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.len(), 3);

    let close = encode(&Command::Unsequenced {
        session: 5,
        op: Op::Close,
    });
    g.handle_call(at(0), 4, Request::Propose(close.clone()));
    assert_eq!(
        effects(&mut g),
        vec![Effect::Propose {
            op: 1,
            command: close
        }]
    );
    let done = response(12, Ok(Reply::Closed));
    g.handle_done(at(1), 1, done.clone());
    assert_eq!(
        all_effects(&mut g),
        vec![
            count("close", "closed"),
            Effect::Answer {
                call: 4,
                result: done.map(Answer::Output)
            }
        ]
    );
}

#[test]
fn calls_are_bounded() {
    let mut g = gateway();
    for call in 0..CALLS_MAX as u64 {
        g.handle_call(
            at(0),
            call,
            Request::Read(encode(&Query::Session { session: 1 })),
        );
    }
    effects(&mut g);
    g.handle_call(at(0), u64::MAX, Request::Read(vec![]));
    assert!(matches!(
        effects(&mut g).as_slice(),
        [Effect::Answer {
            result: Err(GatewayError::TooMany(_)),
            ..
        }]
    ));
}

#[test]
fn the_native_client_is_told_what_production_tells_it() {
    let out = Applied {
        index: 3,
        output: vec![1, 2],
    };
    assert_eq!(
        node_reply(Ok(Answer::Output(out))),
        NodeReply::Output(vec![1, 2])
    );
    assert_eq!(
        node_reply(Ok(Answer::Waited(None))),
        NodeReply::Output(encode(&QueryAnswer::Response(None)))
    );
    let not_leader = RequestError::NotLeader { leader: Some(2) };
    assert_eq!(
        node_reply(Err(not_leader.into())),
        NodeReply::NotLeader(Some(2))
    );
    for refused in [
        GatewayError::Forbidden("x".into()),
        GatewayError::BadRequest("x".into()),
        RequestError::NotAllowed("x".into()).into(),
        RequestError::TooLarge { bytes: 2, max: 1 }.into(),
    ] {
        assert!(matches!(node_reply(Err(refused)), NodeReply::Refused(_)));
    }
    for retry in [
        GatewayError::TooMany("x".into()),
        GatewayError::Stopped,
        RequestError::Busy.into(),
        RequestError::LeadershipLost.into(),
    ] {
        assert_eq!(node_reply(Err(retry)), NodeReply::Unavailable);
    }
    let _ = Duration::ZERO;
}

/// Review finding: an undo the cluster could not decide was dropped, so a
/// queued wait of an abandoned one-lock session could be granted to nobody.
#[test]
fn a_close_the_cluster_cannot_decide_is_tried_again_until_it_is() {
    let mut g = gateway();
    queued_one_lock(&mut g);
    g.handle_gone(1);
    effects(&mut g);
    let no_leader = GatewayError::Raft(RequestError::NotLeader { leader: None });
    g.handle_done(at(5), 3, Err(no_leader));
    assert_eq!(effects(&mut g), vec![]);
    assert_eq!(g.poll_timeout(), Some(at(5 + UNDO_RETRY_MS_MIN)));
    g.handle_timeout(at(105));
    assert_eq!(effects(&mut g), vec![proposal(4, 7, Op::Close)]);
    g.handle_done(at(106), 4, Err(GatewayError::Raft(RequestError::Busy)));
    assert_eq!(
        g.poll_timeout(),
        Some(at(106 + 2 * UNDO_RETRY_MS_MIN)),
        "the delay doubles"
    );
    g.handle_timeout(at(306));
    assert_eq!(effects(&mut g), vec![proposal(5, 7, Op::Close)]);
    g.handle_done(at(307), 5, response(40, Err(LockError::SessionNotFound(7))));
    assert_eq!(g.poll_timeout(), None, "the lock machine's answer ends it");

    // And it gives up after UNDO_ATTEMPTS_MAX attempts.
    let mut g = gateway();
    queued_one_lock(&mut g);
    g.handle_gone(1);
    effects(&mut g);
    let mut op = 3;
    let mut now = 5;
    for _ in 0..UNDO_ATTEMPTS_MAX {
        g.handle_done(at(now), op, Err(GatewayError::Stopped));
        effects(&mut g);
        match g.poll_timeout() {
            Some(t) => {
                g.handle_timeout(t);
                now = t.as_micros() / 1000;
                op += 1;
            }
            None => break,
        }
    }
    assert_eq!(op, 3 + u64::from(UNDO_ATTEMPTS_MAX) - 1);
    assert_eq!(g.poll_timeout(), None);

    // A cancel in the caller's own session is not retried: by then the
    // session may be waiting again on its owner's behalf.
    let mut g = gateway();
    g.handle_call(at(0), 1, acquire(SessionChoice::Existing(5), 1000));
    g.handle_done(at(1), 1, response(30, Ok(Reply::Queued { position: 0 })));
    g.handle_gone(1);
    effects(&mut g);
    g.handle_done(at(2), 2, Err(GatewayError::Stopped));
    assert_eq!(g.poll_timeout(), None);
}

/// Review finding: while events kept being missed, a wait looked its
/// session up again and again past its deadline and was never answered.
#[test]
fn a_wait_whose_lookups_keep_missing_events_still_ends_at_its_deadline() {
    let mut g = gateway();
    g.handle_call(at(0), 1, acquire(SessionChoice::Existing(5), 1000));
    effects(&mut g);
    g.handle_done(at(1), 1, response(30, Ok(Reply::Queued { position: 0 })));
    effects(&mut g);
    g.handle_missed();
    assert_eq!(effects(&mut g), vec![session_read(2, 5)]);
    g.handle_missed();
    g.handle_timeout(at(1001));
    assert_eq!(effects(&mut g), vec![], "the look in flight decides");
    let not_yet = SessionInfo {
        ttl_ms: 3000,
        held: vec![],
        waiting: vec!["L".into()],
        expires_in_ms: Some(2000),
    };
    g.handle_done(at(1002), 2, answer(31, QueryAnswer::Session(Some(not_yet))));
    let cancel = Op::Cancel { lock: "L".into() };
    assert_eq!(effects(&mut g), vec![proposal(3, 5, cancel)]);
}

/// A credential's native wait on a session that is not its own is told
/// nothing of the grant, even one applied before the lock machine's
/// refusal came back; its own wait is told the early grant once the look
/// at the session says it may.
#[test]
fn a_wait_tells_a_grant_only_once_its_credential_may_see_the_session() {
    let w = WaitFor {
        session: 5,
        seq: 4,
        lock: "L".into(),
        timeout_ms: 5000,
    };
    let mut g = gateway();
    g.handle_call_as(at(0), 1, Some(77), Request::Wait(w.clone()));
    let read = effects(&mut g);
    assert_eq!(read.len(), 1);
    g.handle_event(at(1), &grant(5, "L", 8, 4, 2));
    assert_eq!(effects(&mut g), vec![], "not before the refusal or consent");
    let refused = QueryAnswer::Refused(LockError::Forbidden("not yours".into()));
    g.handle_done(at(2), 1, answer(9, refused));
    let told = effects(&mut g);
    assert!(
        matches!(
            &told[..],
            [Effect::Answer {
                call: 1,
                result: Err(GatewayError::Lock(LockError::Forbidden(_)))
            }]
        ),
        "{told:?}"
    );

    let mut g = gateway();
    g.handle_call_as(at(0), 1, Some(77), Request::Wait(w));
    effects(&mut g);
    g.handle_event(at(1), &grant(5, "L", 8, 4, 2));
    assert_eq!(effects(&mut g), vec![]);
    let waiting = SessionInfo {
        ttl_ms: 3000,
        held: vec![],
        waiting: vec!["L".into()],
        expires_in_ms: Some(2000),
    };
    g.handle_done(at(2), 1, answer(9, QueryAnswer::Session(Some(waiting))));
    let granted = Ok(Answer::Waited(Some(Ok(Reply::Granted { token: 2 }))));
    assert_eq!(
        effects(&mut g),
        vec![Effect::Answer {
            call: 1,
            result: granted
        }]
    );
}

/// A credential's calls in progress are bounded (and refused calls are
/// not counted, nor kept).
#[test]
fn one_credential_cannot_fill_the_calls_and_refused_calls_leave_nothing() {
    let mut g = gateway();
    let wait = |session| {
        Request::Wait(WaitFor {
            session,
            seq: 1,
            lock: "L".into(),
            timeout_ms: 60_000,
        })
    };
    for call in 0..CALLS_PER_CREDENTIAL_MAX as u64 {
        g.handle_call_as(at(0), call, Some(7), wait(call));
    }
    effects(&mut g);
    let over = CALLS_PER_CREDENTIAL_MAX as u64;
    g.handle_call_as(at(0), over, Some(7), wait(1));
    assert!(matches!(
        &effects(&mut g)[..],
        [Effect::Answer {
            result: Err(GatewayError::TooMany(_)),
            ..
        }]
    ));
    // Another credential is not held back.
    g.handle_call_as(at(0), over + 1, Some(8), wait(1));
    assert!(!matches!(&effects(&mut g)[..], [Effect::Answer { .. }]));
    // Garbage refused at the door leaves no trace behind.
    let mut g = gateway();
    for call in 0..1000 {
        g.handle_call_as(at(0), call, Some(9), Request::Propose(vec![0xff; 3]));
    }
    assert_eq!(g.calls(), 0);
    g.handle_call_as(at(0), 5000, Some(9), wait(1));
    assert_eq!(g.calls(), 1);
}
