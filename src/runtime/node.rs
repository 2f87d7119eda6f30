//! One raftlock node: the Raft actor run by its host, `RaftNode` (an actix
//! `Actor`; "host" here, since "actor" alone means a deterministic one).
//!
//! Inputs (peer messages, client requests, timers) are stepped through the
//! driver core (`crate::driver`) as they arrive, and one `Flush`, after the
//! mailbox drains, carries out its `Ready`: AppendEntries and replies go at
//! once, the writes go to the log writer thread as one numbered batch
//! (`writer.rs`), and what must wait for them comes out of the core when
//! the writer reports the batch durable, with the `Input::Persisted` to
//! step. The simulator runs the same core, so the ordering it checks is
//! this one. Peer connections follow the configuration in effect.

use super::error::{NodeError, RuntimeError};
use super::identity::{self, Cluster};
use super::metrics::Metrics;
use super::transport::{accept_loop, PeerLink, PeerSender};
use super::writer::{LogWriter, Report};
use crate::actor::{Instant, NodeId};
use crate::driver::DriverCore;
use crate::lock::LockMachine;
use crate::raft::{
    self, Applied, ConfChange, Envelope, Input, Membership, Message, Raft, Recorder, RequestError,
    RequestId, Role, SnapshotError, SnapshotJob, StateMachine,
};
use crate::storage::{FsDir, RaftStore};
use actix::prelude::*;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

/// Messages waiting in the host's mailbox; more are dropped.
pub const INBOUND_QUEUE_LEN_MAX: usize = 4096;
use crate::driver::FLUSH_STEPS_MAX;
/// How long a leader shutting down waits for leadership to move, and how
/// often it looks.
pub const SHUTDOWN_HANDOVER_MS: u64 = 2_000;
const SHUTDOWN_POLL_MS: u64 = 10;
/// A joining node repeats its request this often, at most this many times.
pub const JOIN_RETRY_INTERVAL_MS: u64 = 500;
pub const JOIN_ATTEMPTS_MAX: u32 = 600;
/// Machine events buffered for subscribers (the HTTP layer's waiters); a
/// subscriber that falls further behind misses some and polls instead.
pub const EVENTS_CHANNEL_LEN_MAX: usize = 4096;

/// What the production driver needs of a state machine beyond
/// `StateMachine`: the events its applies produce, published to
/// subscribers after every flush.
pub trait NodeMachine: StateMachine<Event: Clone + Send + 'static> + Unpin + 'static {}

impl NodeMachine for Recorder {}

impl NodeMachine for LockMachine {}

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: NodeId,
    pub data_dir: PathBuf,
    /// The initial cluster: every voter's peer address, this node's
    /// included. Empty when joining a running cluster.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// A member's peer address to ask for admission (as a learner, promoted
    /// once caught up). This node's own address is its listener's.
    pub join: Option<SocketAddr>,
    pub raft: raft::Config,
    /// The cluster this node belongs to: checked against the data dir and
    /// exchanged with peers when they connect.
    pub cluster: Cluster,
    /// Mutual TLS with peers; `None` only when run `--insecure`.
    pub tls: Option<Arc<crate::tls::PeerTls>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: NodeId,
    pub role: Role,
    pub term: raft::Term,
    pub leader: Option<NodeId>,
    pub commit_index: raft::Index,
    pub applied_index: raft::Index,
    pub last_index: raft::Index,
    /// The configuration in effect.
    pub membership: Membership,
    /// Each peer connection's send queue.
    pub peer_queues: Vec<PeerQueue>,
    /// Client requests (proposals and reads) waiting here for an answer.
    pub pending_requests: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerQueue {
    pub peer: NodeId,
    /// Frames waiting to be written (at most `PEER_SEND_QUEUE_LEN_MAX`).
    pub queued: usize,
    /// Frames dropped because the queue was full, since the connection's
    /// task started.
    pub dropped: u64,
}

/// A running node. Dropping it does not stop it; call `stop`.
pub struct Node<S: NodeMachine = Recorder> {
    id: NodeId,
    addr: Addr<RaftNode<S>>,
    tasks: Vec<JoinHandle<()>>,
    events: broadcast::Sender<S::Event>,
    metrics: Arc<Metrics>,
    cluster: Cluster,
}

impl Node<Recorder> {
    /// A node applying the test `Recorder` (see `start_with`).
    pub fn start(config: NodeConfig, listener: TcpListener) -> Result<Self, RuntimeError> {
        Node::start_with(config, listener, Recorder::new())
    }

    /// Commands applied, in order (bounded by the Recorder).
    pub async fn applied(&self) -> Result<Vec<Vec<u8>>, NodeError> {
        self.inspect(|r| r.applied().map(|(_, c)| c.clone()).collect())
            .await
    }
}

impl<S: NodeMachine> Node<S> {
    /// Recovers the node from `config.data_dir` and starts it on the
    /// current actix system, serving peers on `listener`, applying to
    /// `machine`.
    pub fn start_with(
        config: NodeConfig,
        listener: TcpListener,
        machine: S,
    ) -> Result<Self, RuntimeError> {
        let id = config.id;
        if config.join.is_none() && !config.peers.contains_key(&id) {
            return Err(RuntimeError::NotInCluster(id));
        }
        let own_addr = listener.local_addr()?;
        let dir = FsDir::open(&config.data_dir).map_err(|source| RuntimeError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        identity::check(&config.data_dir, id, &config.cluster)?;
        let (store, recovered, report) = RaftStore::open(dir)?;
        tracing::info!(
            node = id,
            term = recovered.hard_state.term,
            entries = recovered.entries.len(),
            snapshot = recovered.snapshot.as_ref().map_or(0, |s| s.index),
            records = report.records,
            torn_tail_bytes = report.torn_tail_bytes,
            "recovered"
        );
        let bootstrap =
            Membership::voters_at(config.peers.iter().map(|(&id, a)| (id, a.to_string())));
        let raft = Raft::new(
            id,
            bootstrap,
            config.raft.clone(),
            recovered,
            machine,
            entropy_seed(id),
        )?;
        let (events, _) = broadcast::channel(EVENTS_CHANNEL_LEN_MAX);
        let metrics = Arc::new(Metrics::default());

        let term = raft.term();
        // The writer reports to the host, so the host's address comes first.
        let mut ctx = Context::new();
        let to_host = ctx.address();
        let writer = LogWriter::start(id, store, metrics.clone(), move |report| {
            to_host.do_send(report)
        })?;
        let link = PeerLink {
            cluster_id: config.cluster.id(),
            tls: config.tls.clone(),
        };
        let host = RaftNode {
            id,
            raft,
            writer,
            core: DriverCore::new(),
            peers: BTreeMap::new(),
            origin: std::time::Instant::now(),
            timer_handle: None,
            flush_scheduled: false,
            steps_since_flush: 0,
            clients: BTreeMap::new(),
            next_request: 0,
            events: events.clone(),
            metrics: metrics.clone(),
            link: link.clone(),
            span: node_span(id, term),
        };
        ctx.set_mailbox_capacity(INBOUND_QUEUE_LEN_MAX);
        let addr = ctx.run(host);
        let inbound = addr.clone();
        let counted = metrics.clone();
        let mut tasks = vec![tokio::task::spawn_local(accept_loop(
            listener,
            link.clone(),
            move |env: Envelope| {
                // `to == 0` is a join request addressed to whoever answers;
                // nothing else may be addressed so.
                let join = matches!(env.msg, Message::Join { .. });
                let for_us = env.to == id || (env.to == 0 && join);
                if !for_us {
                    return;
                }
                // Counted before sending: the handler may run first.
                counted.inbound_queued.fetch_add(1, Ordering::Relaxed);
                if inbound.try_send(Inbound(env)).is_err() {
                    counted.inbound_queued.fetch_sub(1, Ordering::Relaxed);
                    counted.inbound_dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(node = id, "inbound queue full; dropping a peer message");
                }
            },
        ))];
        if let Some(join) = config.join {
            tasks.push(tokio::task::spawn_local(ask_to_join(
                id,
                own_addr,
                join,
                link,
                addr.clone(),
            )));
        }
        Ok(Node {
            id,
            addr,
            tasks,
            events,
            metrics,
            cluster: config.cluster,
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Events of the entries this node applies from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<S::Event> {
        self.events.subscribe()
    }

    /// Runs `f` on the node's state machine, between two steps.
    pub async fn inspect<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut S) -> R + Send + 'static,
    ) -> Result<R, NodeError> {
        self.addr
            .send(Inspect(Box::new(f)))
            .await
            .map_err(|_| NodeError::Stopped)
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The cluster this node belongs to.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    async fn request(&self, request: Request) -> Result<Applied, NodeError> {
        self.addr
            .send(request)
            .await
            .map_err(|_| NodeError::Stopped)?
    }

    /// Proposes a command; resolves once it is applied (or fails).
    pub async fn propose(&self, command: Vec<u8>) -> Result<Applied, NodeError> {
        self.request(Request::Propose(command)).await
    }

    /// A linearizable read (ReadIndex); any node can serve it.
    pub async fn read(&self, query: Vec<u8>) -> Result<Applied, NodeError> {
        self.request(Request::Read(query)).await
    }

    /// Asks this node, if leader, to hand leadership to `to`. Resolves when
    /// the target has been told to campaign (or the transfer failed).
    pub async fn transfer_leadership(&self, to: NodeId) -> Result<Applied, NodeError> {
        self.request(Request::Transfer(to)).await
    }

    /// Asks this node, if leader, to change membership by one server;
    /// resolves once the new configuration commits.
    pub async fn change_membership(&self, change: ConfChange) -> Result<Applied, NodeError> {
        self.request(Request::Change(change)).await
    }

    /// Asks this node, if leader, to admit `id` at peer address `addr`: it
    /// joins as a learner and is promoted once caught up (what `--join`
    /// asks for from the new node's side).
    pub fn admit(&self, id: NodeId, addr: String) {
        self.metrics.inbound_queued.fetch_add(1, Ordering::Relaxed);
        self.addr.do_send(Inbound(Envelope {
            from: id,
            to: self.id,
            msg: Message::Join { id, addr },
        }));
    }

    pub async fn status(&self) -> Result<NodeStatus, NodeError> {
        self.addr
            .send(GetStatus)
            .await
            .map_err(|_| NodeError::Stopped)
    }

    /// Graceful stop: a leader first hands leadership to its most caught-up
    /// voter (thesis 3.10) and waits, at most `SHUTDOWN_HANDOVER_MS`, for
    /// it to move, so the cluster does not wait out an election timeout.
    /// Returns whether leadership moved (false for a follower).
    pub async fn shutdown(&self) -> bool {
        let mut handed_over = false;
        if let Ok(status) = self.status().await {
            if status.role == Role::Leader {
                if let Some(to) = self.addr.send(BestSuccessor).await.ok().flatten() {
                    tracing::info!(
                        node = self.id,
                        to,
                        "handing over leadership before shutdown"
                    );
                    let _ = self.transfer_leadership(to).await;
                    let deadline =
                        std::time::Instant::now() + Duration::from_millis(SHUTDOWN_HANDOVER_MS);
                    while std::time::Instant::now() < deadline {
                        if self.status().await.map_or(true, |s| s.role != Role::Leader) {
                            handed_over = true;
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(SHUTDOWN_POLL_MS)).await;
                    }
                }
            }
        }
        self.stop_shared();
        handed_over
    }

    /// `stop` for a node shared with the HTTP server (which keeps its own
    /// handle until it has stopped).
    pub fn stop_shared(&self) {
        for task in &self.tasks {
            task.abort();
        }
        self.addr.do_send(Stop);
    }

    /// Stops the host and closes every connection, like a crash without
    /// losing fsynced data.
    pub fn stop(self) {
        for task in &self.tasks {
            task.abort();
        }
        self.addr.do_send(Stop);
    }
}

/// A joining node repeats its request until it is a voter.
async fn ask_to_join<S: NodeMachine>(
    id: NodeId,
    own: SocketAddr,
    join: SocketAddr,
    link: PeerLink,
    node: Addr<RaftNode<S>>,
) {
    let (sender, task) = PeerSender::spawn(0, join, link);
    let msg = Message::Join {
        id,
        addr: own.to_string(),
    };
    for attempt in 1..=JOIN_ATTEMPTS_MAX {
        if let Ok(s) = node.send(GetStatus).await {
            // Until a voter: a new leader does not know to promote this
            // learner, and the repeated request tells it.
            if s.membership.is_voter(id) {
                tracing::info!(node = id, attempt, "joined the cluster");
                task.abort();
                return;
            }
        }
        tracing::info!(node = id, %join, attempt, "asking to join");
        sender.send(&Envelope {
            from: id,
            to: 0,
            msg: msg.clone(),
        });
        tokio::time::sleep(Duration::from_millis(JOIN_RETRY_INTERVAL_MS)).await;
    }
    tracing::error!(node = id, %join, "gave up joining after {JOIN_ATTEMPTS_MAX} attempts");
    task.abort();
}

/// The span around a node's log lines. A root span (`parent: None`): made
/// on a term change while the old one is entered, it would otherwise nest
/// inside it, and lines would grow by one span per election.
fn node_span(id: NodeId, term: raft::Term) -> tracing::Span {
    tracing::info_span!(parent: None, "node", id, term)
}

/// The election-timeout RNG only needs to differ between nodes and runs;
/// the driver may read the OS's randomness, the Raft actor may not.
fn entropy_seed(id: NodeId) -> u64 {
    crate::entropy::random_u64().unwrap_or_else(|_| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nanos ^ id.rotate_left(32) ^ u64::from(std::process::id())
    })
}

struct RaftNode<S: NodeMachine> {
    id: NodeId,
    raft: Raft<S>,
    /// Owns the `RaftStore`; see `writer.rs`.
    writer: LogWriter,
    /// Effects, batches, held messages, timers, proposal batching: the
    /// rules both drivers share.
    core: DriverCore,
    /// One connection per other member, with its task and address.
    peers: BTreeMap<NodeId, (PeerSender, JoinHandle<()>, String)>,
    origin: std::time::Instant,
    timer_handle: Option<SpawnHandle>,
    flush_scheduled: bool,
    steps_since_flush: u32,
    clients: BTreeMap<RequestId, oneshot::Sender<Result<Applied, RequestError>>>,
    next_request: RequestId,
    events: broadcast::Sender<S::Event>,
    metrics: Arc<Metrics>,
    /// What its peer connections carry (`transport`).
    link: PeerLink,
    /// Every log line of this node's host carries its id and current term:
    /// a span made anew when the term changes, so a step only enters it.
    span: tracing::Span,
}

impl<S: NodeMachine> Actor for RaftNode<S> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.step(ctx, Input::Start);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        for (_, (_, task, _)) in std::mem::take(&mut self.peers) {
            task.abort();
        }
        // What was queued is written; then nothing touches the data dir.
        self.writer.close();
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Inbound(Envelope);

#[derive(Message)]
#[rtype(result = "Result<Applied, NodeError>")]
enum Request {
    Propose(Vec<u8>),
    Read(Vec<u8>),
    Transfer(NodeId),
    Change(ConfChange),
}

#[derive(Message)]
#[rtype(result = "NodeStatus")]
struct GetStatus;

/// The voter a leader would hand over to: the one with the longest log.
#[derive(Message)]
#[rtype(result = "Option<NodeId>")]
struct BestSuccessor;

#[derive(Message)]
#[rtype(result = "()")]
struct Flush;

/// A snapshot serialized on its own thread: the `Input::SnapshotBuilt`.
#[derive(actix::Message)]
#[rtype(result = "()")]
struct SnapshotBuilt(Input);

#[derive(Message)]
#[rtype(result = "()")]
struct Stop;

type InspectFn<S, R> = Box<dyn FnOnce(&mut S) -> R + Send>;

struct Inspect<S, R>(InspectFn<S, R>);

impl<S: 'static, R: Send + 'static> actix::Message for Inspect<S, R> {
    type Result = R;
}

impl<S: NodeMachine, R: Send + 'static> Handler<Inspect<S, R>> for RaftNode<S> {
    type Result = MessageResult<Inspect<S, R>>;
    fn handle(&mut self, Inspect(f): Inspect<S, R>, _: &mut Context<Self>) -> Self::Result {
        MessageResult(f(self.raft.state_machine_mut()))
    }
}

impl<S: NodeMachine> RaftNode<S> {
    fn now(&self) -> Instant {
        Instant::from_micros(self.origin.elapsed().as_micros() as u64)
    }

    /// Steps an input into the core, logging role changes; its effects
    /// wait for the next flush, which runs once the mailbox is drained or
    /// after `FLUSH_STEPS_MAX` inputs, so a steady flood of messages cannot
    /// hold a batch back for long.
    fn step(&mut self, ctx: &mut Context<Self>, input: Input) {
        self.observed(|node| {
            let now = node.now();
            node.core.step(&mut node.raft, now, input);
        });
        self.count_step(ctx);
    }

    /// Runs `f` (which steps the replica) inside the node's span, and
    /// notes what changed: the term (a new span), the leader, the role.
    fn observed<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let span = self.span.clone();
        let entered = span.enter();
        let before = (self.raft.role(), self.raft.term());
        let leader_before = self.raft.leader();
        let result = f(self);
        let after = (self.raft.role(), self.raft.term());
        drop(entered);
        if after.1 != before.1 {
            self.span = node_span(self.id, after.1);
        }
        let _span = self.span.clone().entered();
        let leader_after = self.raft.leader();
        if leader_after.is_some() && leader_after != leader_before {
            self.metrics
                .leader_changes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if before != after {
            tracing::info!(role = ?after.0, leader = ?self.raft.leader(), "role change");
        }
        result
    }

    /// Counts an input toward the next flush, and makes sure one comes.
    fn count_step(&mut self, ctx: &mut Context<Self>) {
        self.steps_since_flush += 1;
        if self.steps_since_flush >= FLUSH_STEPS_MAX {
            self.flush(ctx);
        } else if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.notify(Flush);
        }
    }

    /// Carries out the core's `Ready` (see the module doc), then publishes
    /// the events of what was applied.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        self.flush_scheduled = false;
        self.steps_since_flush = 0;
        self.connect_members();
        let ready = self.observed(|node| {
            let now = node.now();
            node.core.flush(&mut node.raft, now, |_| {})
        });
        let _span = self.span.clone().entered();
        for (to, msg) in ready.messages {
            self.send_to(to, msg);
        }
        for (id, result) in ready.replies {
            if let Some(tx) = self.clients.remove(&id) {
                let _ = tx.send(result);
            }
        }
        if let Some(batch) = ready.batch {
            if let Err(e) = self.writer.submit(batch.id, batch.ops) {
                self.storage_failed(ctx, &e);
                return;
            }
        }
        // Applied entries are committed: their events may go out now. With
        // no subscriber they are dropped (send fails harmlessly).
        for event in ready.events {
            let _ = self.events.send(event);
        }
        for job in ready.snapshots {
            self.build_snapshot(ctx, job);
        }
        self.arm_timer(ctx);
    }

    /// Serializes a frozen state on a thread of its own (a state of a
    /// million sessions takes a good fraction of a second), and steps the
    /// result back in. The replica asks for one at a time.
    fn build_snapshot(&mut self, ctx: &mut Context<Self>, job: SnapshotJob) {
        let to_host = ctx.address();
        let metrics = self.metrics.clone();
        let index = job.index;
        let spawned = std::thread::Builder::new()
            .name(format!("raftlock-snapshot-{}", self.id))
            .spawn(move || {
                let started = std::time::Instant::now();
                let input = job.run_catching_panics();
                metrics.snapshot_build.observe(started.elapsed());
                to_host.do_send(SnapshotBuilt(input));
            });
        if let Err(e) = spawned {
            // The replica keeps its log and tries again later.
            let result = Err(SnapshotError(format!("cannot start its thread: {e}")));
            self.step(ctx, Input::SnapshotBuilt { index, result });
        }
    }

    /// The writer made batches up to `batch` durable: send what waited for
    /// them and tell the replica how far its log is on disk.
    fn synced(&mut self, ctx: &mut Context<Self>, batch: u64) {
        let (released, persisted) = self.core.synced(batch);
        for (to, msg) in released {
            self.send_to(to, msg);
        }
        if let Some(input) = persisted {
            self.step(ctx, input);
        }
    }

    fn storage_failed(&mut self, ctx: &mut Context<Self>, e: &dyn std::fmt::Display) {
        // A node that cannot make its state durable must not answer for it:
        // stop, and let the rest of the cluster carry on.
        tracing::error!(node = self.id, error = %e, "storage failed; stopping the node");
        ctx.stop();
    }

    fn send_to(&self, to: NodeId, msg: Message) {
        if let Some((peer, _, _)) = self.peers.get(&to) {
            peer.send(&Envelope {
                from: self.id,
                to,
                msg,
            });
        }
    }

    /// Keeps one connection per other member of the configuration in effect,
    /// and to the current leader even if it is not one: a leader removing
    /// itself replicates until that commits (thesis 4.2.2), so it needs the
    /// acknowledgements of followers that already dropped it.
    fn connect_members(&mut self) {
        let members = &self.raft.membership().members;
        let leader = self.raft.leader();
        let stale: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(&id, _)| Some(id) != leader)
            .filter(|(id, (_, _, addr))| members.get(id).is_none_or(|m| &m.addr != addr))
            .map(|(&id, _)| id)
            .collect();
        for id in stale {
            if let Some((_, task, _)) = self.peers.remove(&id) {
                task.abort();
            }
        }
        let wanted: Vec<(NodeId, String)> = members
            .iter()
            .filter(|(&id, _)| id != self.id && !self.peers.contains_key(&id))
            .map(|(&id, m)| (id, m.addr.clone()))
            .collect();
        for (id, addr) in wanted {
            match addr.parse::<SocketAddr>() {
                Ok(sock) => {
                    let (sender, task) = PeerSender::spawn(id, sock, self.link.clone());
                    self.peers.insert(id, (sender, task, addr));
                }
                Err(e) => {
                    tracing::error!(node = self.id, peer = id, %addr, error = %e, "member address does not parse")
                }
            }
        }
    }

    /// One actix timer for the earliest deadline.
    fn arm_timer(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.timer_handle.take() {
            ctx.cancel_future(handle);
        }
        let Some(at) = self.core.next_deadline() else {
            return;
        };
        let wait = at.saturating_since(self.now());
        self.timer_handle = Some(ctx.run_later(wait, |act, ctx| {
            act.timer_handle = None;
            act.fire_due_timers(ctx);
        }));
    }

    fn fire_due_timers(&mut self, ctx: &mut Context<Self>) {
        let now = self.now();

        for timer in self.core.due_timers(now) {
            self.step(ctx, Input::Timer(timer));
        }
        if !self.flush_scheduled {
            self.arm_timer(ctx);
        }
    }
}

impl<S: NodeMachine> Handler<Inbound> for RaftNode<S> {
    type Result = ();
    fn handle(&mut self, Inbound(env): Inbound, ctx: &mut Context<Self>) {
        self.metrics.inbound_queued.fetch_sub(1, Ordering::Relaxed);
        self.step(
            ctx,
            Input::Message {
                from: env.from,
                msg: env.msg,
            },
        );
    }
}

impl<S: NodeMachine> Handler<Request> for RaftNode<S> {
    type Result = ResponseFuture<Result<Applied, NodeError>>;
    fn handle(&mut self, request: Request, ctx: &mut Context<Self>) -> Self::Result {
        self.next_request += 1;
        let id = self.next_request;
        let (tx, rx) = oneshot::channel();
        self.clients.insert(id, tx);
        let input = match request {
            // Proposals wait for the flush and go in as one batch, so the
            // leader sends one AppendEntries per follower for all of them.
            Request::Propose(command) => {
                if !self.core.propose(id, command) {
                    if let Some(tx) = self.clients.remove(&id) {
                        let _ = tx.send(Err(RequestError::Busy));
                    }
                }
                self.count_step(ctx);
                return self.answer(rx);
            }
            Request::Read(query) => Input::Read { id, query },
            Request::Transfer(to) => Input::TransferLeadership { id, to },
            Request::Change(change) => Input::ChangeMembership { id, change },
        };
        self.step(ctx, input);
        self.answer(rx)
    }
}

impl<S: NodeMachine> RaftNode<S> {
    /// The future a client request resolves with.
    fn answer(
        &self,
        rx: oneshot::Receiver<Result<Applied, RequestError>>,
    ) -> ResponseFuture<Result<Applied, NodeError>> {
        let metrics = self.metrics.clone();
        let started = std::time::Instant::now();
        Box::pin(async move {
            let result = rx.await;
            metrics.commit.observe(started.elapsed());
            match result {
                Ok(result) => result.map_err(NodeError::Rejected),
                Err(_) => Err(NodeError::Stopped),
            }
        })
    }
}

impl<S: NodeMachine> Handler<GetStatus> for RaftNode<S> {
    type Result = MessageResult<GetStatus>;
    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(NodeStatus {
            id: self.id,
            role: self.raft.role(),
            term: self.raft.term(),
            leader: self.raft.leader(),
            commit_index: self.raft.commit_index(),
            applied_index: self.raft.applied_index(),
            last_index: self.raft.log().last_index(),
            membership: self.raft.membership().clone(),
            peer_queues: self
                .peers
                .iter()
                .map(|(&peer, (sender, _, _))| PeerQueue {
                    peer,
                    queued: sender.queued(),
                    dropped: sender.dropped(),
                })
                .collect(),
            pending_requests: self.clients.len(),
        })
    }
}

impl<S: NodeMachine> Handler<BestSuccessor> for RaftNode<S> {
    type Result = Option<NodeId>;
    fn handle(&mut self, _: BestSuccessor, _: &mut Context<Self>) -> Option<NodeId> {
        self.raft.best_successor()
    }
}

impl<S: NodeMachine> Handler<Report> for RaftNode<S> {
    type Result = ();
    fn handle(&mut self, report: Report, ctx: &mut Context<Self>) {
        let span = self.span.clone();
        let _span = span.enter();
        match report {
            Report::Synced { batch } => self.synced(ctx, batch),
            Report::Failed { batch, error } => {
                self.storage_failed(ctx, &format!("writing batch {batch}: {error}"))
            }
        }
    }
}

impl<S: NodeMachine> Handler<SnapshotBuilt> for RaftNode<S> {
    type Result = ();
    fn handle(&mut self, built: SnapshotBuilt, ctx: &mut Context<Self>) {
        self.step(ctx, built.0);
    }
}

impl<S: NodeMachine> Handler<Flush> for RaftNode<S> {
    type Result = ();
    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) {
        self.flush(ctx);
    }
}

impl<S: NodeMachine> Handler<Stop> for RaftNode<S> {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
