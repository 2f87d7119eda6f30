//! The driver's handling of the session actor's effects.

use super::*;

fn ms(t: u64) -> Instant {
    Instant::from_micros(t * 1000)
}

/// Issue 11, hole 4: a grant processed at or after the lease's end made
/// the session report the lock lost in the same step, before the guard's
/// lost-watch existed, so `Guard::lost()` never resolved and `raftlock
/// lock` kept running its command while another client held the lock.
#[test]
fn a_grant_that_arrives_after_the_lease_ended_is_born_lost() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = SessionConfig::new(vec![1], Duration::from_secs(2));
        let mut session = Session::new(config, 7);
        let sent = |effects: &[Effect]| {
            effects.iter().find_map(|e| match e {
                Effect::Send { rpc, .. } => Some(*rpc),
                _ => None,
            })
        };
        let open = sent(&session.handle(ms(0), Input::Start)).unwrap();
        let opened = crate::lock::encode(&Ok::<_, LockError>(crate::lock::Reply::Opened {
            session: 1,
            ttl_ms: 2000,
        }));
        session.handle(
            ms(1),
            Input::Reply {
                rpc: open,
                reply: NodeReply::Output(opened),
            },
        );
        let acquire = Call::Acquire {
            lock: "x".into(),
            mode: Mode::Exclusive,
            wait: None,
        };
        let rpc = sent(&session.handle(
            ms(10),
            Input::Call {
                id: 5,
                call: acquire,
            },
        ))
        .unwrap();
        // The process was stopped; it wakes long after its lease (2 s)
        // ended, and the first thing it sees is the grant.
        let granted = crate::lock::encode(&Ok::<_, LockError>(crate::lock::Reply::Granted {
            token: 9,
        }));
        let late = ms(5_000);
        let effects = session.handle(
            late,
            Input::Reply {
                rpc,
                reply: NodeReply::Output(granted),
            },
        );
        assert!(
            matches!(&effects[..], [Effect::Done { .. }, Effect::Lost { .. }, ..]),
            "the grant and its loss come in one step: {effects:?}"
        );

        let (session_tx, _session_rx) = watch::channel(Some(1));
        struct Nowhere;
        impl Transport for Nowhere {
            fn call(&self, _: NodeId, _: ToNode) -> Reply {
                Box::pin(async { NodeReply::Unavailable })
            }
        }
        let clock: Clock = Box::new(move || late);
        let mut driver = Driver::new(session, Arc::new(Nowhere), clock);
        driver.session_tx = session_tx;
        let (tx, rx) = oneshot::channel();
        driver.calls.insert(
            5,
            Caller::Acquire {
                lock: "x".into(),
                tx,
            },
        );
        let (replies, _inputs) = mpsc::channel(16);
        driver.carry_out(late, effects, &replies);
        let granted = rx.await.unwrap().unwrap();
        assert_eq!(granted.token, 9);
        assert!(*granted.lost.borrow(), "the guard must be born lost");
    });
}
