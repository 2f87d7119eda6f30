//! One raftlock node: the Raft actor inside an actix actor.
//!
//! Inputs (peer messages, proposals, timers) are stepped through the actor
//! as they arrive; their effects are queued and executed by one `Flush`
//! that runs after the mailbox drains. A flush writes every queued persist,
//! fsyncs once, and only then lets the queued sends and replies out: group
//! commit, and the effect-order contract of `crate::actor`.

use super::error::{ClientError, RuntimeError};
use super::transport::{accept_loop, PeerSender};
use crate::actor::{Instant, NodeId};
use crate::raft::{
    self, Applied, Effect, Envelope, Input, Raft, Recorder, RequestError, RequestId, Role, Timer,
};
use crate::storage::{FsDir, RaftStore};
use actix::prelude::*;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Messages waiting in the actor's mailbox; more are dropped.
pub const INBOUND_QUEUE_LEN_MAX: usize = 4096;

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: NodeId,
    pub data_dir: PathBuf,
    /// Every voter's peer address, this node's included.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    pub raft: raft::Config,
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
    /// Digest of the applied state machine (equal on nodes at equal index).
    pub digest: u64,
    /// Commands applied, in order (bounded by the Recorder).
    pub applied: Vec<Vec<u8>>,
}

/// A running node. Dropping it does not stop it; call `stop`.
pub struct Node {
    id: NodeId,
    addr: Addr<RaftNode>,
    tasks: Vec<JoinHandle<()>>,
}

impl Node {
    /// Recovers the node from `config.data_dir` and starts it on the
    /// current actix system, serving peers on `listener`.
    pub fn start(config: NodeConfig, listener: TcpListener) -> Result<Node, RuntimeError> {
        let id = config.id;
        if !config.peers.contains_key(&id) {
            return Err(RuntimeError::NotInCluster(id));
        }
        let dir = FsDir::open(&config.data_dir).map_err(|source| RuntimeError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let (store, recovered, report) = RaftStore::open(dir)?;
        tracing::info!(
            node = id,
            term = recovered.hard_state.term,
            entries = recovered.entries.len(),
            records = report.records,
            torn_tail_bytes = report.torn_tail_bytes,
            "recovered"
        );
        let voters = config.peers.keys().copied().collect();
        let raft = Raft::new(
            id,
            voters,
            config.raft.clone(),
            recovered,
            Recorder::new(),
            entropy_seed(id),
        )?;

        let mut tasks = Vec::new();
        let mut peers = BTreeMap::new();
        for (&peer, &addr) in config.peers.iter().filter(|(&p, _)| p != id) {
            let (sender, task) = PeerSender::spawn(peer, addr);
            peers.insert(peer, sender);
            tasks.push(task);
        }
        let actor = RaftNode {
            id,
            raft,
            store,
            peers,
            origin: std::time::Instant::now(),
            timers: BTreeMap::new(),
            timer_handle: None,
            queued: Vec::new(),
            flush_scheduled: false,
            clients: BTreeMap::new(),
            next_request: 0,
        };
        let addr = RaftNode::create(|ctx| {
            ctx.set_mailbox_capacity(INBOUND_QUEUE_LEN_MAX);
            actor
        });
        let inbound = addr.clone();
        tasks.push(tokio::task::spawn_local(accept_loop(
            listener,
            move |env: Envelope| {
                if env.to == id && inbound.try_send(Inbound(env)).is_err() {
                    tracing::debug!(node = id, "inbound queue full; dropping a peer message");
                }
            },
        )));
        Ok(Node { id, addr, tasks })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Proposes a command; resolves once it is applied (or fails).
    pub async fn propose(&self, command: Vec<u8>) -> Result<Applied, ClientError> {
        self.addr
            .send(Request::Propose(command))
            .await
            .map_err(|_| ClientError::Stopped)?
    }

    /// A linearizable read (ReadIndex); any node can serve it.
    pub async fn read(&self, query: Vec<u8>) -> Result<Applied, ClientError> {
        self.addr
            .send(Request::Read(query))
            .await
            .map_err(|_| ClientError::Stopped)?
    }

    /// Asks this node, if leader, to hand leadership to `to`. Resolves when
    /// the target has been told to campaign (or the transfer failed).
    pub async fn transfer_leadership(&self, to: NodeId) -> Result<Applied, ClientError> {
        self.addr
            .send(Request::Transfer(to))
            .await
            .map_err(|_| ClientError::Stopped)?
    }

    pub async fn status(&self) -> Result<NodeStatus, ClientError> {
        self.addr
            .send(GetStatus)
            .await
            .map_err(|_| ClientError::Stopped)
    }

    /// Stops the actor and closes every connection, like a crash without
    /// losing fsynced data.
    pub fn stop(self) {
        for task in &self.tasks {
            task.abort();
        }
        self.addr.do_send(Stop);
    }
}

/// The election-timeout RNG only needs to differ between nodes and runs;
/// the driver may read the clock, the actor may not.
fn entropy_seed(id: NodeId) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ id.rotate_left(32) ^ u64::from(std::process::id())
}

struct RaftNode {
    id: NodeId,
    raft: Raft<Recorder>,
    store: RaftStore<FsDir>,
    peers: BTreeMap<NodeId, PeerSender>,
    origin: std::time::Instant,
    timers: BTreeMap<Timer, Instant>,
    timer_handle: Option<SpawnHandle>,
    /// Effects of steps taken since the last flush, in order.
    queued: Vec<Effect>,
    flush_scheduled: bool,
    clients: BTreeMap<RequestId, oneshot::Sender<Result<Applied, RequestError>>>,
    next_request: RequestId,
}

impl Actor for RaftNode {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.step(ctx, Input::Start);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Inbound(Envelope);

#[derive(Message)]
#[rtype(result = "Result<Applied, ClientError>")]
enum Request {
    Propose(Vec<u8>),
    Read(Vec<u8>),
    Transfer(NodeId),
}

#[derive(Message)]
#[rtype(result = "NodeStatus")]
struct GetStatus;

#[derive(Message)]
#[rtype(result = "()")]
struct Flush;

#[derive(Message)]
#[rtype(result = "()")]
struct Stop;

impl RaftNode {
    fn now(&self) -> Instant {
        Instant::from_micros(self.origin.elapsed().as_micros() as u64)
    }

    fn step(&mut self, ctx: &mut Context<Self>, input: Input) {
        let before = (self.raft.role(), self.raft.term());
        let effects = {
            let _span =
                tracing::debug_span!("raft", node = self.id, term = self.raft.term()).entered();
            self.raft.handle(self.now(), input)
        };
        let after = (self.raft.role(), self.raft.term());
        if before != after {
            tracing::info!(node = self.id, term = after.1, role = ?after.0, leader = ?self.raft.leader(), "role change");
        }
        self.queued.extend(effects);
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.notify(Flush);
        }
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        self.flush_scheduled = false;
        let effects = std::mem::take(&mut self.queued);
        let mut sync = false;
        let mut written = Ok(());
        for effect in &effects {
            if let Effect::Persist { op, sync: s } = effect {
                sync |= *s;
                if written.is_ok() {
                    written = self.store.write(op);
                }
            }
        }
        let started = std::time::Instant::now();
        let durable = written.and_then(|()| {
            if sync {
                self.store.sync()
            } else {
                self.store.flush()
            }
        });
        if let Err(e) = durable {
            // A node that cannot make its state durable must not answer for
            // it: stop, and let the rest of the cluster carry on.
            tracing::error!(node = self.id, error = %e, "storage failed; stopping the node");
            ctx.stop();
            return;
        }
        if sync {
            tracing::trace!(
                node = self.id,
                micros = started.elapsed().as_micros() as u64,
                "fsync"
            );
        }
        for effect in effects {
            match effect {
                Effect::Persist { .. } => {}
                Effect::Send { to, msg } => {
                    if let Some(peer) = self.peers.get(&to) {
                        peer.send(&Envelope {
                            from: self.id,
                            to,
                            msg,
                        });
                    }
                }
                Effect::SetTimer { timer, at } => {
                    self.timers.insert(timer, at);
                }
                Effect::CancelTimer(timer) => {
                    self.timers.remove(&timer);
                }
                Effect::Reply { id, result } => {
                    if let Some(tx) = self.clients.remove(&id) {
                        let _ = tx.send(result);
                    }
                }
            }
        }
        self.arm_timer(ctx);
    }

    /// One actix timer for the earliest deadline.
    fn arm_timer(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.timer_handle.take() {
            ctx.cancel_future(handle);
        }
        let Some(&at) = self.timers.values().min() else {
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
        let due: Vec<Timer> = self
            .timers
            .iter()
            .filter(|(_, &at)| at <= now)
            .map(|(&t, _)| t)
            .collect();
        for timer in due {
            self.timers.remove(&timer);
            self.step(ctx, Input::Timer(timer));
        }
        if !self.flush_scheduled {
            self.arm_timer(ctx);
        }
    }
}

impl Handler<Inbound> for RaftNode {
    type Result = ();
    fn handle(&mut self, Inbound(env): Inbound, ctx: &mut Context<Self>) {
        self.step(
            ctx,
            Input::Message {
                from: env.from,
                msg: env.msg,
            },
        );
    }
}

impl Handler<Request> for RaftNode {
    type Result = ResponseFuture<Result<Applied, ClientError>>;
    fn handle(&mut self, request: Request, ctx: &mut Context<Self>) -> Self::Result {
        self.next_request += 1;
        let id = self.next_request;
        let (tx, rx) = oneshot::channel();
        self.clients.insert(id, tx);
        let input = match request {
            Request::Propose(command) => Input::Propose { id, command },
            Request::Read(query) => Input::Read { id, query },
            Request::Transfer(to) => Input::TransferLeadership { id, to },
        };
        self.step(ctx, input);
        Box::pin(async move {
            match rx.await {
                Ok(result) => result.map_err(ClientError::Rejected),
                Err(_) => Err(ClientError::Stopped),
            }
        })
    }
}

impl Handler<GetStatus> for RaftNode {
    type Result = MessageResult<GetStatus>;
    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        let sm = self.raft.state_machine();
        MessageResult(NodeStatus {
            id: self.id,
            role: self.raft.role(),
            term: self.raft.term(),
            leader: self.raft.leader(),
            commit_index: self.raft.commit_index(),
            applied_index: self.raft.applied_index(),
            last_index: self.raft.log().last_index(),
            digest: sm.digest(),
            applied: sm.applied().iter().map(|(_, c)| c.clone()).collect(),
        })
    }
}

impl Handler<Flush> for RaftNode {
    type Result = ();
    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) {
        self.flush(ctx);
    }
}

impl Handler<Stop> for RaftNode {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
