//! Production's driver of the request layer (`crate::gateway`): one task
//! per node owns the `Gateway` and steps it with the handlers' calls, the
//! outcomes of the proposals and reads it asked for, the node's lock events
//! and the time; then carries out its effects. The simulator drives the
//! same gateway from its simulated node (`sim/cluster.rs`).
//!
//! A handler's call ends in its answer; a handler dropped before that
//! (actix dropped it) or whose client is seen to leave (`PeerSocket`) tells
//! the gateway the client went away, and what the call started is undone.

use super::error::ApiError;
use super::peer::{PeerSocket, PEER_CHECK_MS};
use crate::actor::Instant;
use crate::gateway::{
    Answer, CallId, Effect, Gateway, GatewayConfig, GatewayError, OpId, Request, CALLS_MAX,
};
use crate::lock::auth::CredentialId;
use crate::lock::{Event, LockMachine};
use crate::raft::Applied;
use crate::runtime::{Node, NodeError};
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, oneshot};

/// Calls queued for the gateway task; a handler waits for room.
pub const GATEWAY_INBOX_LEN_MAX: usize = 4096;
/// Calls the task takes from its inbox before it carries out their
/// effects (as the node's actor drains its mailbox before a flush): the
/// keepalives among them are proposed as one entry, up to
/// `KEEPALIVES_PER_ENTRY_MAX`.
pub const CALLS_PER_TURN_MAX: usize = crate::lock::KEEPALIVES_PER_ENTRY_MAX;

type Reply = oneshot::Sender<Result<Answer, GatewayError>>;
/// Set by a call's handler when its client went away (before the notice is
/// sent), so that a departure that overtakes its call is never lost.
type Departed = Arc<AtomicBool>;
type Inbound = (CallId, Option<CredentialId>, Request, Reply, Departed);
type Done = Pin<Box<dyn Future<Output = (OpId, Result<Applied, GatewayError>)>>>;

/// The handlers' end of the gateway task.
pub struct GatewayHandle {
    calls: mpsc::Sender<Inbound>,
    /// One per call at most, sent only once the call is in the inbox, so
    /// it never fills: as long as the calls the gateway and the inbox hold.
    gone: mpsc::Sender<CallId>,
    next: AtomicU64,
    waiting: Arc<AtomicUsize>,
}

impl GatewayHandle {
    /// Starts the gateway task for `node` on the current actix runtime,
    /// subscribed to the node's events before any call is taken.
    pub fn start(node: Arc<Node<LockMachine>>, config: GatewayConfig) -> Arc<GatewayHandle> {
        let (calls, calls_rx) = mpsc::channel(GATEWAY_INBOX_LEN_MAX);
        let (gone, gone_rx) = mpsc::channel(CALLS_MAX + GATEWAY_INBOX_LEN_MAX);
        let waiting = Arc::new(AtomicUsize::new(0));
        let task = Task {
            events: node.subscribe(),
            node,
            gateway: Gateway::new(config),
            replies: HashMap::new(),
            in_flight: FuturesUnordered::new(),
            origin: tokio::time::Instant::now(),
            waiting: waiting.clone(),
        };
        actix_rt::spawn(task.run(calls_rx, gone_rx));
        Arc::new(GatewayHandle {
            calls,
            gone,
            next: AtomicU64::new(1),
            waiting,
        })
    }

    /// Calls waiting for a grant on this node.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Makes a call on `caller`'s behalf and waits for its answer.
    pub async fn call(
        &self,
        caller: Option<CredentialId>,
        request: Request,
        peer: Option<PeerSocket>,
    ) -> Result<Answer, ApiError> {
        match self.ask(caller, request, peer).await {
            Some(result) => result.map_err(ApiError::from),
            None => Err(ApiError::ClientGone),
        }
    }

    /// Makes a call and waits for its answer; `None` when, with `peer`, the
    /// client closed its connection meanwhile (the call is then ended).
    pub async fn ask(
        &self,
        caller: Option<CredentialId>,
        request: Request,
        peer: Option<PeerSocket>,
    ) -> Option<Result<Answer, GatewayError>> {
        let call = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = oneshot::channel();
        let departed = Departed::default();
        if self
            .calls
            .send((call, caller, request, tx, departed.clone()))
            .await
            .is_err()
        {
            return Some(Err(GatewayError::Stopped));
        }
        let mut watch = Gone {
            tx: self.gone.clone(),
            call,
            departed,
            armed: true,
        };
        let answer = match peer {
            None => (&mut rx).await,
            Some(peer) => {
                let mut check = tokio::time::interval(Duration::from_millis(PEER_CHECK_MS));
                loop {
                    tokio::select! {
                        // An answer that is ready is taken, even from a
                        // client seen to leave: the gateway has finished
                        // that call and could not undo it any more.
                        biased;
                        answer = &mut rx => break answer,
                        _ = check.tick() => if peer.gone() {
                            // `watch` tells the gateway as it drops.
                            return None;
                        },
                    }
                }
            }
        };
        watch.armed = false;
        Some(answer.unwrap_or(Err(GatewayError::Stopped)))
    }
}

/// Tells the gateway a call's client went away, unless disarmed.
struct Gone {
    tx: mpsc::Sender<CallId>,
    call: CallId,
    departed: Departed,
    armed: bool,
}

impl Drop for Gone {
    fn drop(&mut self) {
        if self.armed {
            self.departed.store(true, Ordering::Release);
            // Room is certain: one message per call the gateway or the
            // inbox holds, and that many slots.
            let _ = self.tx.try_send(self.call);
        }
    }
}

struct Task {
    node: Arc<Node<LockMachine>>,
    gateway: Gateway,
    events: tokio::sync::broadcast::Receiver<Event>,
    replies: HashMap<CallId, Reply>,
    in_flight: FuturesUnordered<Done>,
    origin: tokio::time::Instant,
    waiting: Arc<AtomicUsize>,
}

impl Task {
    fn now(&self) -> Instant {
        Instant::from_micros(u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    async fn run(mut self, mut calls: mpsc::Receiver<Inbound>, mut gone: mpsc::Receiver<CallId>) {
        let mut events_open = true;
        loop {
            let wake = self
                .gateway
                .poll_timeout()
                .map(|at| self.origin + Duration::from_micros(at.as_micros()));
            tokio::select! {
                biased;
                Some((op, result)) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    let now = self.now();
                    self.gateway.handle_done(now, op, result);
                }
                event = self.events.recv(), if events_open => {
                    let now = self.now();
                    match event {
                        Ok(e) => self.gateway.handle_event(now, &e),
                        // Fell behind the node's events: a grant may be
                        // among those lost.
                        Err(RecvError::Lagged(_)) => self.gateway.handle_missed(),
                        Err(RecvError::Closed) => {
                            events_open = false;
                            self.gateway.handle_missed();
                        }
                    }
                }
                call = calls.recv() => {
                    let Some(inbound) = call else { return };
                    self.take_call(inbound);
                    // What else has arrived goes in the same turn, so that
                    // its keepalives share one log entry.
                    for _ in 1..CALLS_PER_TURN_MAX {
                        match calls.try_recv() {
                            Ok(inbound) => self.take_call(inbound),
                            Err(_) => break,
                        }
                    }
                }
                Some(call) = gone.recv() => {
                    self.replies.remove(&call);
                    self.gateway.handle_gone(call);
                }
                _ = sleep_until(wake), if wake.is_some() => {
                    let now = self.now();
                    self.gateway.handle_timeout(now);
                }
            }
            self.carry_out();
        }
    }

    fn take_call(&mut self, (call, caller, request, reply, departed): Inbound) {
        self.replies.insert(call, reply);
        let now = self.now();
        self.gateway.handle_call_as(now, call, caller, request);
        // Its client left before the call got here: the notice came first
        // and named a call not yet known.
        if departed.load(Ordering::Acquire) && self.replies.remove(&call).is_some() {
            self.gateway.handle_gone(call);
        }
    }

    fn carry_out(&mut self) {
        while let Some(effect) = self.gateway.poll_effect() {
            match effect {
                Effect::Propose { op, command } => {
                    let node = self.node.clone();
                    self.in_flight.push(Box::pin(async move {
                        (op, node.propose(command).await.map_err(gateway_error))
                    }));
                }
                Effect::Read { op, query } => {
                    let node = self.node.clone();
                    self.in_flight.push(Box::pin(async move {
                        (op, node.read(query).await.map_err(gateway_error))
                    }));
                }
                Effect::Answer { call, result } => {
                    if let Some(reply) = self.replies.remove(&call) {
                        let _ = reply.send(result);
                    }
                }
                Effect::Count { operation, outcome } => {
                    self.node.metrics().operation(operation, outcome);
                }
            }
        }
        self.waiting
            .store(self.gateway.waiting(), Ordering::Relaxed);
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn gateway_error(e: NodeError) -> GatewayError {
    match e {
        NodeError::Rejected(e) => GatewayError::Raft(e),
        NodeError::Stopped => GatewayError::Stopped,
    }
}
