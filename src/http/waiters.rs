//! HTTP acquires waiting for a grant, and the one task that routes the
//! node's apply events to them. A signal names the acquire the grant
//! answers (its log index): the waiter takes only its own, since a lagging
//! or restarted node also replays older grants of the same session and
//! lock.
//!
//! Each waiting request used to hold its own subscription to the node's
//! event broadcast, so every event woke every waiter (sixteen requests
//! queued on one lock meant sixteen wake-ups per grant, across threads).
//! Now one task reads the events and wakes only the request a grant is
//! for. A request registers before it proposes its acquire, and the task
//! subscribed before the server took any request, so a grant cannot slip
//! between the two.

use crate::lock::{Event, Grant, LockMachine, SessionId};
use crate::runtime::Node;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::oneshot;

/// HTTP requests that may wait for a grant at once, per node.
pub const HTTP_WAITS_MAX: usize = 65_536;

/// What a waiting request is told.
#[derive(Debug, PartialEq, Eq)]
pub enum Signal {
    /// A grant of the lock to the session: the waiter checks it answers its
    /// own acquire (`Grant::acquire`, or `Grant::seq`).
    Granted(Grant),
    /// Events were missed (the router fell behind, or the node stopped):
    /// the grant may have happened unseen, so look it up.
    Recheck,
}

type Key = (SessionId, String);

#[derive(Default)]
pub struct Waiters {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    len: usize,
    by_key: HashMap<Key, Vec<(u64, oneshot::Sender<Signal>)>>,
}

/// A registration; pass it back to `unregister`.
pub struct Ticket {
    key: Key,
    id: u64,
    pub signal: oneshot::Receiver<Signal>,
}

impl Ticket {
    /// The session and lock waited for.
    pub fn key(&self) -> (SessionId, &str) {
        (self.key.0, &self.key.1)
    }
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a wait for `session`'s grant of `lock`; `None` when
    /// `HTTP_WAITS_MAX` requests already wait.
    pub fn register(&self, session: SessionId, lock: &str) -> Option<Ticket> {
        let mut inner = self.lock();
        if inner.len >= HTTP_WAITS_MAX {
            return None;
        }
        inner.next += 1;
        inner.len += 1;
        let id = inner.next;
        let key = (session, lock.to_string());
        let (tx, rx) = oneshot::channel();
        inner.by_key.entry(key.clone()).or_default().push((id, tx));
        Some(Ticket {
            key,
            id,
            signal: rx,
        })
    }

    /// Forgets a registration (signalled or not).
    pub fn unregister(&self, ticket: &Ticket) {
        let mut inner = self.lock();
        let Some(list) = inner.by_key.get_mut(&ticket.key) else {
            return;
        };
        let before = list.len();
        list.retain(|(id, _)| *id != ticket.id);
        let removed = before - list.len();
        if list.is_empty() {
            inner.by_key.remove(&ticket.key);
        }
        inner.len -= removed;
    }

    /// Requests waiting now.
    pub fn len(&self) -> usize {
        self.lock().len
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn granted(&self, grant: Grant) {
        let mut inner = self.lock();
        if let Some(list) = inner.by_key.remove(&(grant.session, grant.lock.clone())) {
            inner.len -= list.len();
            for (_, tx) in list {
                let _ = tx.send(Signal::Granted(grant.clone()));
            }
        }
    }

    fn recheck_all(&self) {
        let mut inner = self.lock();
        inner.len = 0;
        for (_, list) in inner.by_key.drain() {
            for (_, tx) in list {
                let _ = tx.send(Signal::Recheck);
            }
        }
    }
}

/// Subscribes to `node`'s events now and routes them until the node stops.
pub fn start(
    node: &Node<LockMachine>,
    waiters: Arc<Waiters>,
) -> impl std::future::Future<Output = ()> {
    route(node.subscribe(), waiters)
}

async fn route(mut events: broadcast::Receiver<Event>, waiters: Arc<Waiters>) {
    loop {
        match events.recv().await {
            Ok(Event::Granted(g)) => waiters.granted(g),
            // The machine dropped events: a grant may be among them.
            Ok(Event::Missed { .. }) => waiters.recheck_all(),
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => waiters.recheck_all(),
            Err(RecvError::Closed) => {
                waiters.recheck_all();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::{Mode, Token};

    fn grant_of(session: SessionId, lock: &str, token: Token) -> Grant {
        Grant {
            index: 1,
            acquire: 1,
            session,
            seq: 0,
            lock: lock.into(),
            mode: Mode::Exclusive,
            token,
            queued: true,
        }
    }

    fn grant(session: SessionId, lock: &str, token: Token) -> Event {
        Event::Granted(grant_of(session, lock, token))
    }

    #[test]
    fn a_grant_wakes_only_its_waiter_and_a_lag_wakes_all() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let waiters = Arc::new(Waiters::default());
            let (tx, rx) = broadcast::channel(2);
            let router = tokio::spawn(route(rx, waiters.clone()));
            let mut a = waiters.register(1, "x").unwrap();
            let mut b = waiters.register(2, "x").unwrap();
            let mut c = waiters.register(1, "y").unwrap();
            assert_eq!(waiters.len(), 3);
            tx.send(grant(2, "x", 7)).unwrap();
            assert_eq!(
                (&mut b.signal).await,
                Ok(Signal::Granted(grant_of(2, "x", 7)))
            );
            assert!(a.signal.try_recv().is_err(), "not for a");
            assert!(c.signal.try_recv().is_err(), "not for c");
            assert_eq!(waiters.len(), 2);

            // Three events into a channel of two while the router cannot
            // run: it lags, and every waiter is told to look for itself.
            for token in 8..=10 {
                tx.send(grant(9, "z", token)).unwrap();
            }
            assert_eq!((&mut a.signal).await, Ok(Signal::Recheck));
            assert_eq!((&mut c.signal).await, Ok(Signal::Recheck));
            assert!(waiters.is_empty());

            // Unregistering a ticket that was never signalled frees its slot.
            let d = waiters.register(3, "x").unwrap();
            waiters.unregister(&d);
            waiters.unregister(&d);
            assert!(waiters.is_empty());
            drop(tx);
            router.await.unwrap();
        });
    }
}
