//! The simulation driver: runs the production Raft actor and storage code on
//! madsim nodes, with messages over `madsim::net::Endpoint` (encoded with the
//! production frame codec), timers on madsim time seen through each node's
//! skewed, drifting clock, and a `SimDisk` per node that outlives crashes.

use crate::checker::Checker;
use crate::shared::{lock, Control, Shared, RECENT_GRANTS_MAX};
use futures::channel::mpsc;
use futures::StreamExt;
use madsim::net::Endpoint;
use madsim::time::timeout;
use raftlock::actor::NodeId;
use raftlock::credential::{
    lookup, parse_authorization, verify, Bearer, Lookup, BOOTSTRAP_RETRY_MS,
};
use raftlock::driver::{DriverCore, FLUSH_STEPS_MAX};
use raftlock::gateway::Request as Call;
use raftlock::gateway::{CallId, Gateway, GatewayConfig, GatewayError, OpId};
use raftlock::lock::auth::{CredentialId, SecretHash};
use raftlock::lock::{
    encode, Command, Event, Grant, LockError, LockMachine, Query, QueryAnswer, SessionId,
};
use raftlock::net::{decode_frame, encode_frame};
use raftlock::raft::{
    ConfChange, Effect, Envelope, Input, Membership, Message, Raft, Recorder, RequestError,
    RequestId, SnapshotJob, StateMachine,
};
use raftlock::storage::{RaftStore, SimDisk};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const TAG: u64 = 1;
/// Frames queued for a node's actor loop; more are dropped (like a full
/// socket buffer), which Raft tolerates.
pub const SIM_INBOX_LEN_MAX: usize = 1024;
/// Simulated fsync latency range (the median measured here is ~170 us).
pub const FSYNC_US_MIN: u64 = 50;
pub const FSYNC_US_MAX: u64 = 2000;
/// Simulated time a snapshot takes to serialize off the node's thread:
/// entries go on being applied meanwhile, and a snapshot from the leader
/// may overtake it.
pub const SNAPSHOT_BUILD_MS_MAX: u64 = 100;
/// How long a simulated client waits for a reply before trying elsewhere.
pub const CLIENT_REQUEST_TIMEOUT_MS: u64 = 400;
/// Share of client operations that are linearizable reads, in percent.
pub const CLIENT_READ_PERCENT: u32 = 30;
/// How often an idle node loop wakes to look for control requests.
const CONTROL_POLL_MS: u64 = 50;
/// A node that is not a voter asks to join this often (as in production).
const JOIN_RETRY_MS: u64 = 500;

#[derive(Debug, Serialize, Deserialize)]
pub enum SimFrame {
    Peer(Envelope),
    Request {
        id: u64,
        command: Vec<u8>,
    },
    Read {
        id: u64,
        query: Vec<u8>,
    },
    /// The index and the state machine's output.
    Reply {
        id: u64,
        result: Result<(u64, Vec<u8>), RequestError>,
    },
    /// A queued acquire was granted (pushed to the session's client).
    Pushed(Grant),
    /// A client's call to the node's request layer (`raftlock::gateway`),
    /// as production's HTTP handlers make it: the lock scenarios' clients
    /// send only these.
    Call {
        id: u64,
        /// The `Authorization` value (`Bearer rlk_...`), as production's
        /// HTTP and native doors receive it.
        credential: Option<String>,
        request: raftlock::gateway::Request,
    },
    /// The request layer's answer to a `Call`.
    Answer {
        id: u64,
        result: Result<raftlock::gateway::Answer, GatewayError>,
    },
    /// The client of call `id` went away (closed its connection).
    Gone {
        id: u64,
    },
}

/// A call in progress on a node: who made it, and what its output is.
struct CallFrom {
    addr: SocketAddr,
    id: u64,
    output: OutputKind,
}

/// How a call's `Answer::Output` decodes.
#[derive(Clone, Copy)]
enum OutputKind {
    /// A proposal's: the lock machine's `Response`.
    Response,
    /// A read's: a `QueryAnswer`.
    QueryAnswer,
    /// Acquires and waits answer in their own variants.
    Other,
}

impl OutputKind {
    fn of(request: &Call) -> OutputKind {
        match request {
            Call::Propose(_) | Call::Manage(_) => OutputKind::Response,
            Call::Read(_) => OutputKind::QueryAnswer,
            Call::Acquire(_) | Call::Wait(_) => OutputKind::Other,
        }
    }

    /// The 401 or 403 an answer is, if it is one (`why`: the door's
    /// reason, when the door refused).
    fn refusal(
        self,
        result: &Result<raftlock::gateway::Answer, GatewayError>,
        why: &str,
    ) -> Option<String> {
        use raftlock::gateway::Answer;
        let refused = |e: &LockError| {
            matches!(e, LockError::Forbidden(_) | LockError::Unauthenticated)
                .then(|| format!("{e} {why}"))
        };
        match (self, result) {
            (_, Err(GatewayError::Forbidden(m))) => Some(m.clone()),
            (_, Err(GatewayError::Lock(e))) => refused(e),
            (_, Ok(Answer::Waited(Some(Err(e))))) => refused(e),
            (OutputKind::Response, Ok(Answer::Output(a))) => {
                match postcard::from_bytes::<raftlock::lock::Response>(&a.output) {
                    Ok(Err(e)) => refused(&e),
                    _ => None,
                }
            }
            (OutputKind::QueryAnswer, Ok(Answer::Output(a))) => {
                match postcard::from_bytes::<QueryAnswer>(&a.output) {
                    Ok(QueryAnswer::Refused(e)) => refused(&e),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

/// Sessions whose client address a node remembers for pushes.
pub const PUSH_SESSIONS_MAX: usize = 1024;

/// What the simulation needs of a state machine beyond `StateMachine`.
pub trait SimMachine: StateMachine + Sized + 'static {
    fn create(shared: &Shared) -> Self;
    /// A flush's events (`Ready::events`): reports them to the checkers;
    /// returns them as lock events (for the request layer, and grants to
    /// push to clients).
    fn report(
        node: NodeId,
        events: Vec<Self::Event>,
        checker: &mut Checker,
        shared: &Shared,
    ) -> Vec<Event>;
    /// The session a proposed command belongs to, if any.
    fn session_of(command: &[u8]) -> Option<SessionId>;
    /// What the credential table holds for `id` (hash, admin), as the
    /// production door reads it.
    fn credential(&self, id: CredentialId) -> Option<(SecretHash, bool)>;
    /// Whether the first admin credential was ever created.
    fn bootstrapped(&self) -> bool;
}

impl SimMachine for Recorder {
    fn create(_: &Shared) -> Self {
        Recorder::new()
    }
    fn report(_: NodeId, _: Vec<()>, _: &mut Checker, _: &Shared) -> Vec<Event> {
        Vec::new()
    }
    fn session_of(_: &[u8]) -> Option<SessionId> {
        None
    }
    fn credential(&self, _: CredentialId) -> Option<(SecretHash, bool)> {
        None
    }
    fn bootstrapped(&self) -> bool {
        true
    }
}

impl SimMachine for LockMachine {
    fn create(shared: &Shared) -> Self {
        LockMachine::new(shared.lock_config.clone())
    }
    fn report(
        node: NodeId,
        events: Vec<Event>,
        checker: &mut Checker,
        shared: &Shared,
    ) -> Vec<Event> {
        checker.on_lock_events(node, &events, &shared.lin_locks);
        let mut recent = lock(&shared.recent_grants);
        for e in &events {
            if let Event::Granted(g) = e {
                if recent.len() >= RECENT_GRANTS_MAX {
                    recent.pop_front();
                }
                recent.push_back(g.clone());
            }
        }
        events
    }
    fn session_of(command: &[u8]) -> Option<SessionId> {
        match postcard::from_bytes::<Command>(command) {
            Ok(Command::Request(r)) => Some(r.session),
            _ => None,
        }
    }
    fn credential(&self, id: CredentialId) -> Option<(SecretHash, bool)> {
        LockMachine::credential(self, id)
    }
    fn bootstrapped(&self) -> bool {
        LockMachine::bootstrapped(self)
    }
}

pub fn addr_of(id: NodeId) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, id as u8], 7000))
}

pub const CLIENT_ADDR: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::new(10, 0, 1, 1),
    9000,
));

pub async fn send(ep: &Endpoint, to: SocketAddr, frame: &SimFrame) {
    if let Ok(bytes) = encode_frame(frame) {
        // A send to a clogged or dead peer is silently lost, as on a network.
        let _ = ep.send_to_raw(to, TAG, Box::new(bytes)).await;
    }
}

/// The answer to call `id` when it reaches `ep` (other frames are
/// dropped); None once the endpoint is closed. Callers bound the wait.
pub async fn answer_to(
    ep: &Endpoint,
    id: u64,
) -> Option<Result<raftlock::gateway::Answer, GatewayError>> {
    loop {
        let (payload, _) = ep.recv_from_raw(TAG).await.ok()?;
        let Ok(bytes) = payload.downcast::<Vec<u8>>() else {
            continue;
        };
        if let Ok(Some((SimFrame::Answer { id: a, result }, _))) = decode_frame::<SimFrame>(&bytes)
        {
            if a == id {
                return Some(result);
            }
        }
    }
}

async fn recv_loop(ep: Arc<Endpoint>, mut tx: mpsc::Sender<(SimFrame, SocketAddr)>) {
    while let Ok((payload, from)) = ep.recv_from_raw(TAG).await {
        let Ok(bytes) = payload.downcast::<Vec<u8>>() else {
            continue;
        };
        if let Ok(Some((frame, _))) = decode_frame::<SimFrame>(&bytes) {
            let _ = tx.try_send((frame, from));
        }
    }
}

/// One node's life: recover from its disk, then step the actor forever.
pub async fn run_node<S: SimMachine>(id: NodeId, disk: SimDisk, shared: Arc<Shared>) {
    let ep = Arc::new(
        Endpoint::bind(addr_of(id))
            .await
            .expect("bind node endpoint"),
    );
    let (store, recovered, _report) = match RaftStore::open(disk.clone()) {
        Ok(x) => x,
        Err(e) => panic!("node {id} cannot recover its disk: {e}"),
    };
    lock(&shared.checker).on_recovered(id, &recovered);
    let bootstrap = if shared.bootstrap.contains(id) {
        shared.bootstrap.clone()
    } else {
        Membership::default()
    };
    let seed: u64 = madsim::rand::random();
    let raft = Raft::new(
        id,
        bootstrap,
        shared.config.clone(),
        recovered,
        S::create(&shared),
        seed,
    )
    .expect("valid raft config");
    let (tx, mut rx) = mpsc::channel(SIM_INBOX_LEN_MAX);
    madsim::task::spawn(recv_loop(ep.clone(), tx));

    let mut node = NodeLoop {
        id,
        raft,
        store,
        ep,
        shared: shared.clone(),
        core: DriverCore::new(),
        clients: BTreeMap::new(),
        outbox: Vec::new(),
        sessions: BTreeMap::new(),
        gateway: Gateway::new(GatewayConfig {
            drift_ppm: shared.lock_config.drift_ppm,
            bugs: shared.gateway_bugs,
        }),
        calls: BTreeMap::new(),
        authenticating: BTreeMap::new(),
        call_of: BTreeMap::new(),
        next_call: 0,
        gateway_ops: BTreeMap::new(),
        controls: BTreeMap::new(),
        next_request: 0,
        applied_seen: 0,
        last_join: None,
        last_bootstrap: None,
        snapshot_jobs: Vec::new(),
    };
    node.step(Input::Start);
    node.flush().await;
    loop {
        let g = shared.elapsed();
        let clock = lock(&shared.clocks)[&id].clone();
        let timer_wait = [node.core.next_deadline(), node.gateway.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .map(|at| clock.global_until(g, at));
        let snapshot_wait = node
            .snapshot_jobs
            .iter()
            .map(|(due, _)| due.saturating_sub(g))
            .min();
        let wait = [timer_wait, snapshot_wait]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(Duration::MAX)
            .min(Duration::from_millis(CONTROL_POLL_MS));
        let controls = lock(&shared.controls).remove(&id).unwrap_or_default();
        for control in controls {
            node.next_request += 1;
            let id = node.next_request;
            node.controls.insert(id, control);
            let input = match control {
                Control::TransferLeadership { to } => Input::TransferLeadership { id, to },
                Control::RemoveVoter { id: victim } => Input::ChangeMembership {
                    id,
                    change: ConfChange::Remove { id: victim },
                },
            };
            node.step(input);
        }
        node.maybe_ask_to_join(g).await;
        node.maybe_bootstrap(g);
        match timeout(wait, rx.next()).await {
            Ok(Some((frame, from_addr))) => {
                node.accept(frame, from_addr);
                // As the production actor drains its mailbox before a
                // flush: what else has arrived goes in the same flush
                // (proposals in one batch), up to the same bound.
                for _ in 1..FLUSH_STEPS_MAX {
                    match rx.try_recv() {
                        Ok((frame, from_addr)) => node.accept(frame, from_addr),
                        Err(_) => break,
                    }
                }
            }
            Ok(None) => return,
            Err(_) => {}
        }
        node.finish_snapshots(shared.elapsed());
        let now = clock.local(shared.elapsed());
        for t in node.core.due_timers(now) {
            node.step(Input::Timer(t));
        }
        node.gateway.handle_timeout(now);
        node.flush().await;
    }
}

struct NodeLoop<S> {
    id: NodeId,
    raft: Raft<S>,
    store: RaftStore<SimDisk>,
    ep: Arc<Endpoint>,
    shared: Arc<Shared>,
    /// The rules production's driver runs too (`raftlock::driver`).
    core: DriverCore,
    clients: BTreeMap<RequestId, (SocketAddr, u64)>,
    /// Frames to clients (pushed grants, answered waits) made by a step,
    /// sent at the next flush.
    outbox: Vec<(SocketAddr, SimFrame)>,
    /// Where to push a session's grants: the client that last wrote here.
    sessions: BTreeMap<SessionId, SocketAddr>,
    /// The request layer production's HTTP handlers call.
    gateway: Gateway,
    /// Calls in progress: the client's address and its id for the call.
    calls: BTreeMap<CallId, CallFrom>,
    /// Calls whose credential the door is reading from the cluster, by the
    /// read's request id.
    authenticating: BTreeMap<RequestId, (CallId, Bearer, Call)>,
    call_of: BTreeMap<(SocketAddr, u64), CallId>,
    next_call: CallId,
    /// Proposals and reads made for the request layer.
    gateway_ops: BTreeMap<RequestId, OpId>,
    /// Requests that came from the supervisor's control channel.
    controls: BTreeMap<RequestId, Control>,
    next_request: RequestId,
    applied_seen: u64,
    last_join: Option<Duration>,
    last_bootstrap: Option<Duration>,
    /// Snapshots being serialized "on another thread", and the global
    /// time each is done; a crash loses them, as it would the thread.
    snapshot_jobs: Vec<(Duration, SnapshotJob)>,
}

impl<S: SimMachine> NodeLoop<S> {
    fn remember_session(&mut self, session: SessionId, addr: SocketAddr) {
        if self.sessions.len() >= PUSH_SESSIONS_MAX && !self.sessions.contains_key(&session) {
            // Forget the oldest session; its client still polls.
            self.sessions.pop_first();
        }
        self.sessions.insert(session, addr);
    }

    /// The lowest-id member of the initial configuration proposes the
    /// first admin credential until its lock machine has one, every
    /// `BOOTSTRAP_RETRY_MS`: production's `bootstrap_if_never` (a no-op
    /// once any credential existed).
    fn maybe_bootstrap(&mut self, g: Duration) {
        let first = self.shared.bootstrap.members.keys().next() == Some(&self.id);
        if !first || self.raft.state_machine().bootstrapped() {
            return;
        }
        let retry = Duration::from_millis(BOOTSTRAP_RETRY_MS);
        if self.last_bootstrap.is_some_and(|t| g < t + retry) {
            return;
        }
        self.last_bootstrap = Some(g);
        let admin = &self.shared.admin;
        let command = Command::Bootstrap {
            id: admin.id,
            hash: admin.hash(),
        };
        self.next_request += 1;
        // Its reply goes nowhere: the next look at the table tells.
        self.core.propose(self.next_request, encode(&command));
    }

    /// A node that is not a voter asks a bootstrap member to add it, every
    /// `JOIN_RETRY_MS`: the production `--join` flow.
    async fn maybe_ask_to_join(&mut self, g: Duration) {
        if self.raft.membership().is_voter(self.id) {
            return;
        }
        if self
            .last_join
            .is_some_and(|t| g < t + Duration::from_millis(JOIN_RETRY_MS))
        {
            return;
        }
        self.last_join = Some(g);
        let members: Vec<NodeId> = self
            .shared
            .bootstrap
            .members
            .keys()
            .copied()
            .filter(|&m| m != self.id)
            .collect();
        let Some(&to) = members.get(madsim::rand::thread_rng().gen_range(0..members.len().max(1)))
        else {
            return;
        };
        let msg = Message::Join {
            id: self.id,
            addr: addr_of(self.id).to_string(),
        };
        let frame = SimFrame::Peer(Envelope {
            from: self.id,
            to: 0,
            msg,
        });
        send(&self.ep, self.shared.addrs[&to], &frame).await;
    }

    fn client_request(&mut self, addr: SocketAddr, client_id: u64) -> RequestId {
        self.next_request += 1;
        self.clients.insert(self.next_request, (addr, client_id));
        self.next_request
    }

    /// A frame from the network: a peer's message or a client's request,
    /// stepped (or, for a proposal, buffered for the flush's batch).
    fn accept(&mut self, frame: SimFrame, from_addr: SocketAddr) {
        let input = match frame {
            SimFrame::Peer(env) if env.to == self.id || env.to == 0 => Input::Message {
                from: env.from,
                msg: env.msg,
            },
            SimFrame::Request {
                id: client_id,
                command,
            } => {
                if let Some(session) = S::session_of(&command) {
                    self.remember_session(session, from_addr);
                }
                let id = self.client_request(from_addr, client_id);
                if !self.core.propose(id, command) {
                    self.clients.remove(&id);
                    let busy = SimFrame::Reply {
                        id: client_id,
                        result: Err(RequestError::Busy),
                    };
                    self.outbox.push((from_addr, busy));
                }
                return;
            }
            SimFrame::Read {
                id: client_id,
                query,
            } => Input::Read {
                id: self.client_request(from_addr, client_id),
                query,
            },
            SimFrame::Call {
                id: client_id,
                credential,
                request,
            } => {
                if let Call::Propose(command) = &request {
                    if let Some(session) = S::session_of(command) {
                        self.remember_session(session, from_addr);
                    }
                }
                // A client reusing an id (it never does) replaces its call.
                if let Some(old) = self.call_of.remove(&(from_addr, client_id)) {
                    self.forget_call(old);
                }
                self.next_call += 1;
                let call = self.next_call;
                let from = CallFrom {
                    addr: from_addr,
                    id: client_id,
                    output: OutputKind::of(&request),
                };
                self.calls.insert(call, from);
                self.call_of.insert((from_addr, client_id), call);
                self.admit(call, credential, request);
                return;
            }
            SimFrame::Gone { id: client_id } => {
                if let Some(call) = self.call_of.remove(&(from_addr, client_id)) {
                    self.forget_call(call);
                }
                return;
            }
            _ => return,
        };
        self.step(input);
    }

    /// A call whose client went away (or replaced it).
    fn forget_call(&mut self, call: CallId) {
        self.calls.remove(&call);
        self.authenticating.retain(|_, (c, _, _)| *c != call);
        self.gateway.handle_gone(call);
    }

    /// The door, as production's (`http::auth`): a call must carry a
    /// credential whose secret matches the node's table, or, for an id the
    /// table does not know yet, the cluster's (a linearizable read, at most
    /// `FALLBACK_READS_MAX` at once). The call-rate limit is not modelled.
    fn admit(&mut self, call: CallId, credential: Option<String>, request: Call) {
        let Some(header) = credential else {
            return self.refuse(call, "no credential".to_string());
        };
        let bearer = match parse_authorization(&header) {
            Ok(b) => b,
            Err(e) => return self.refuse(call, e.to_string()),
        };
        let local = self.raft.state_machine().credential(bearer.id);
        match lookup(local, self.authenticating.len()) {
            Ok(Lookup::Local(stored)) => self.authenticated(call, &bearer, Some(stored), request),
            Ok(Lookup::ReadCluster) => {
                self.next_request += 1;
                let id = self.next_request;
                let query = encode(&Query::Credential { id: bearer.id });
                self.authenticating.insert(id, (call, bearer, request));
                self.step(Input::Read { id, query });
            }
            // Production's 503: the client retries.
            Err(_) => self.unavailable(call, RequestError::Busy),
        }
    }

    /// The door's decision once it knows what the table stores.
    fn authenticated(
        &mut self,
        call: CallId,
        bearer: &Bearer,
        stored: Option<(SecretHash, bool)>,
        request: Call,
    ) {
        let verified = match (self.shared.skip_secret_check, stored) {
            (true, Some((_, admin))) => Ok(admin),
            _ => verify(bearer, stored),
        };
        match verified {
            Ok(_admin) => {
                let now = self.local_now();
                self.gateway
                    .handle_call_as(now, call, Some(bearer.id), request);
            }
            Err(e) => self.refuse(call, e.to_string()),
        }
    }

    /// A 401 at the door: the call never reaches the request layer.
    fn refuse(&mut self, call: CallId, why: String) {
        let Some(from) = self.calls.remove(&call) else {
            return;
        };
        self.call_of.remove(&(from.addr, from.id));
        if crate::trace::on() {
            use crate::trace::V;
            let mut checker = lock(&self.shared.checker);
            checker.now = self.shared.elapsed();
            let fields = [
                ("client", V::S(&from.addr.to_string())),
                ("why", V::S(&why)),
            ];
            checker.trace_event(self.id, "door_refused", &fields);
        }
        let result = Err(GatewayError::Lock(LockError::Unauthenticated));
        self.answer_call(from, result, &why);
    }

    /// Sends a call's answer (at the flush), after the access checker has
    /// seen whether it refused a well-behaved client.
    fn answer_call(
        &mut self,
        from: CallFrom,
        result: Result<raftlock::gateway::Answer, GatewayError>,
        why: &str,
    ) {
        if let Some(refusal) = from.output.refusal(&result, why) {
            let mut checker = lock(&self.shared.checker);
            checker.now = self.shared.elapsed();
            checker.on_refused(from.addr, &refusal);
        }
        let frame = SimFrame::Answer {
            id: from.id,
            result,
        };
        self.outbox.push((from.addr, frame));
    }

    /// The answer to a door's read of the cluster's credential table.
    fn credential_read(
        &mut self,
        (call, bearer, request): (CallId, Bearer, Call),
        result: Result<raftlock::raft::Applied, RequestError>,
    ) {
        match result.map(|a| postcard::from_bytes::<QueryAnswer>(&a.output)) {
            Ok(Ok(QueryAnswer::Credential(stored))) => {
                self.authenticated(call, &bearer, stored, request)
            }
            // Production's 503 for an answer it cannot read.
            Ok(_) => self.unavailable(call, RequestError::Busy),
            // Production answers 503 with the node's error.
            Err(e) => self.unavailable(call, e),
        }
    }

    /// A 503 at the door: the node could not check the credential.
    fn unavailable(&mut self, call: CallId, e: RequestError) {
        if let Some(from) = self.calls.remove(&call) {
            self.call_of.remove(&(from.addr, from.id));
            self.answer_call(from, Err(GatewayError::Raft(e)), "");
        }
    }

    fn local_now(&self) -> raftlock::actor::Instant {
        lock(&self.shared.clocks)[&self.id].local(self.shared.elapsed())
    }

    /// Steps the snapshots whose serialization is done by global time `g`.
    fn finish_snapshots(&mut self, g: Duration) {
        let (done, building) = std::mem::take(&mut self.snapshot_jobs)
            .into_iter()
            .partition(|(due, _)| *due <= g);
        self.snapshot_jobs = building;
        for (_, job) in done {
            self.step(job.run());
        }
    }

    /// Steps one input through the driver core and shows its effects to
    /// the checkers.
    fn step(&mut self, input: Input) {
        let now = self.local_now();
        let trace = std::env::var_os("SIM_TRACE").is_some();
        let input_text = if trace {
            format!("{input:?}")
        } else {
            String::new()
        };
        if let (true, Input::Message { from, msg }) = (crate::trace::on(), &input) {
            // A send with no matching receive was dropped by the network.
            let kind = message_kind(msg);
            let mut checker = lock(&self.shared.checker);
            checker.now = self.shared.elapsed();
            checker.trace_event(
                self.id,
                "recv",
                &[
                    ("from", crate::trace::V::N(*from)),
                    ("msg", crate::trace::V::S(&kind)),
                ],
            );
        }
        let effects = self.core.step(&mut self.raft, now, input).to_vec();
        self.observe(&input_text, &effects);
    }

    /// Shows a step's effects to the checkers (and the step trace).
    fn observe(&mut self, input_text: &str, effects: &[Effect]) {
        let shared = self.shared.clone();
        let g = shared.elapsed();
        if std::env::var_os("SIM_TRACE").is_some() {
            let cut = |s: String| s.chars().take(400).collect::<String>();
            eprintln!(
                "{:?} n{} t{} {:?} c{} last{} <- {}",
                g,
                self.id,
                self.raft.term(),
                self.raft.role(),
                self.raft.commit_index(),
                self.raft.log().last_index(),
                cut(input_text.to_string())
            );
            for e in effects {
                eprintln!("      -> {}", cut(format!("{e:?}")));
            }
        }
        {
            let mut checker = lock(&shared.checker);
            checker.now = g;
            let raft = &self.raft;
            checker.on_step(
                self.id,
                effects,
                raft.term(),
                raft.role(),
                raft.commit_index(),
                raft.log(),
            );
            for index in self.applied_seen + 1..=raft.applied_index() {
                if let Some(e) = raft.log().get(index) {
                    checker.on_applied(self.id, e);
                }
            }
            self.applied_seen = raft.applied_index();
        }
    }

    /// What the flush's applies did, to the checkers: at once, before any
    /// send of this flush yields (a crash landing there must not lose the
    /// record of an apply whose effects a reply already carries).
    fn report_events(&mut self, events: Vec<S::Event>) -> Vec<Event> {
        let shared = self.shared.clone();
        let mut checker = lock(&shared.checker);
        checker.now = shared.elapsed();
        S::report(self.id, events, &mut checker, &shared)
    }

    /// The flush's events, as production's host publishes them after the
    /// replies: to the request layer, and queued grants pushed to the
    /// client that last sent their session's request here.
    fn deliver_events(&mut self, events: Vec<Event>) {
        let now = self.local_now();
        for event in events {
            self.gateway.handle_event(now, &event);
            if let Event::Granted(grant) = event {
                if !grant.queued {
                    continue;
                }
                if let Some(&addr) = self.sessions.get(&grant.session) {
                    self.outbox.push((addr, SimFrame::Pushed(grant)));
                }
            }
        }
    }

    /// Carries out the request layer's effects: its proposals join the
    /// flush's batch (Busy when the batch is full, as in production), its
    /// reads are stepped, its answers go out with the flush. Returns
    /// whether there were any.
    fn pump_gateway(&mut self) -> bool {
        use raftlock::gateway::Effect as G;
        let mut any = false;
        while let Some(effect) = self.gateway.poll_effect() {
            any = true;
            match effect {
                G::Propose { op, command } => {
                    if let Ok(Command::KeepAlives(items)) = postcard::from_bytes(&command) {
                        if items.len() > 1 {
                            lock(&self.shared.checker).stats.shared_keepalive_entries += 1;
                        }
                    }
                    self.next_request += 1;
                    let id = self.next_request;
                    if self.core.propose(id, command) {
                        self.gateway_ops.insert(id, op);
                    } else {
                        let now = self.local_now();
                        lock(&self.shared.checker).stats.limits.busy += 1;
                        let busy = Err(GatewayError::Raft(RequestError::Busy));
                        self.gateway.handle_done(now, op, busy);
                    }
                }
                G::Read { op, query } => {
                    self.next_request += 1;
                    let id = self.next_request;
                    self.gateway_ops.insert(id, op);
                    self.step(Input::Read { id, query });
                }
                G::Answer { call, result } => {
                    if let Some(from) = self.calls.remove(&call) {
                        self.call_of.remove(&(from.addr, from.id));
                        self.answer_call(from, result, "");
                    }
                }
                G::Count { .. } => {}
            }
        }
        any
    }

    /// Carries out the driver core's `Ready`, production's ordering:
    /// AppendEntries and replies leave at once, the writes go to the disk
    /// (with a simulated fsync latency, during which a crash may land), and
    /// what waited for them leaves once they are durable; the `Persisted`
    /// that follows is stepped and flushed in turn.
    async fn flush(&mut self) {
        loop {
            self.pump_gateway();
            let now = self.local_now();
            let mut batch_effects = Vec::new();
            let ready = self
                .core
                .flush(&mut self.raft, now, |e| batch_effects.extend_from_slice(e));
            if !batch_effects.is_empty() {
                self.observe("ProposeBatch", &batch_effects);
            }
            let events = self.report_events(ready.events);
            for job in ready.snapshots {
                let ms = madsim::rand::thread_rng().gen_range(0..=SNAPSHOT_BUILD_MS_MAX);
                let due = self.shared.elapsed() + Duration::from_millis(ms);
                self.snapshot_jobs.push((due, job));
            }
            for (addr, frame) in std::mem::take(&mut self.outbox) {
                send(&self.ep, addr, &frame).await;
            }
            for (to, msg) in ready.messages {
                self.send_peer(to, msg).await;
            }
            for (id, result) in ready.replies {
                self.reply(id, result).await;
            }
            self.deliver_events(events);
            for (addr, frame) in std::mem::take(&mut self.outbox) {
                send(&self.ep, addr, &frame).await;
            }
            let Some(batch) = ready.batch else {
                // Replies may have made the request layer act again.
                if self.pump_gateway() {
                    continue;
                }
                return;
            };
            for op in &batch.ops {
                self.store.write(op).expect("sim disk write");
            }
            self.store.flush().expect("sim disk flush");
            if batch.sync {
                // The fsync takes time, and a crash may land while it runs:
                // the written bytes are then lost or torn. Only what the
                // core let out may have left the node, so that must be
                // harmless.
                let latency = madsim::rand::thread_rng().gen_range(FSYNC_US_MIN..FSYNC_US_MAX);
                madsim::time::sleep(Duration::from_micros(latency)).await;
                self.store.sync().expect("sim disk sync");
            }
            let (released, persisted) = self.core.synced(batch.id);
            for (to, msg) in released {
                self.send_peer(to, msg).await;
            }
            if let Some(input) = persisted {
                self.step(input);
            }
        }
    }

    async fn send_peer(&mut self, to: NodeId, msg: Message) {
        let shared = self.shared.clone();
        if crate::trace::on() {
            let kind = message_kind(&msg);
            let mut checker = lock(&shared.checker);
            checker.now = shared.elapsed();
            checker.trace_event(
                self.id,
                "send",
                &[
                    ("to", crate::trace::V::N(to)),
                    ("msg", crate::trace::V::S(&kind)),
                ],
            );
        }
        let frame = SimFrame::Peer(Envelope {
            from: self.id,
            to,
            msg,
        });
        send(&self.ep, shared.addrs[&to], &frame).await;
    }

    async fn reply(
        &mut self,
        id: RequestId,
        result: Result<raftlock::raft::Applied, RequestError>,
    ) {
        lock(&self.shared.checker).stats.limits.on_result(&result);
        if let Some(control) = self.controls.remove(&id) {
            if result.is_ok() && matches!(control, Control::TransferLeadership { .. }) {
                *lock(&self.shared.transfers_done) += 1;
            }
        } else if let Some(waiting) = self.authenticating.remove(&id) {
            self.credential_read(waiting, result);
        } else if let Some(op) = self.gateway_ops.remove(&id) {
            let now = self.local_now();
            let result = result.map_err(GatewayError::Raft);
            self.gateway.handle_done(now, op, result);
        } else if let Some((addr, client_id)) = self.clients.remove(&id) {
            let result = result.map(|a| (a.index, a.output));
            send(
                &self.ep,
                addr,
                &SimFrame::Reply {
                    id: client_id,
                    result,
                },
            )
            .await;
        }
    }
}

fn index_of(output: &[u8]) -> u64 {
    output.try_into().map(u64::from_le_bytes).unwrap_or(0)
}

/// A client mixing proposals of unique commands (following leader hints)
/// with linearizable reads sent to random nodes, so followers serve some.
/// Every read is checked against the writes that completed before it began.
pub async fn run_client(shared: Arc<Shared>) {
    let ep = Endpoint::bind(CLIENT_ADDR)
        .await
        .expect("bind client endpoint");
    let nodes: Vec<NodeId> = shared.addrs.keys().copied().collect();
    let mut target = nodes[0];
    let mut id = 0u64;
    // Highest index of any write known to have completed.
    let mut completed_floor = 0u64;
    loop {
        id += 1;
        let invoked = shared.elapsed();
        let read = madsim::rand::thread_rng().gen_ratio(CLIENT_READ_PERCENT, 100);
        let asked = if read {
            nodes[madsim::rand::thread_rng().gen_range(0..nodes.len())]
        } else {
            target
        };
        let frame = if read {
            SimFrame::Read {
                id,
                query: Vec::new(),
            }
        } else {
            SimFrame::Request {
                id,
                command: format!("cmd-{id}").into_bytes(),
            }
        };
        let floor = completed_floor;
        send(&ep, shared.addrs[&asked], &frame).await;
        let reply = timeout(Duration::from_millis(CLIENT_REQUEST_TIMEOUT_MS), async {
            loop {
                let Ok((payload, _)) = ep.recv_from_raw(TAG).await else {
                    return None;
                };
                let Ok(bytes) = payload.downcast::<Vec<u8>>() else {
                    continue;
                };
                if let Ok(Some((SimFrame::Reply { id: rid, result }, _))) =
                    decode_frame::<SimFrame>(&bytes)
                {
                    if rid == id {
                        return Some(result);
                    }
                }
            }
        })
        .await;
        match (read, reply) {
            (false, Ok(Some(Ok((index, _))))) => {
                completed_floor = completed_floor.max(index);
                let mut stats = lock(&shared.client);
                stats.committed += 1;
                stats.last_commit_invoked = Some(invoked);
            }
            (true, Ok(Some(Ok((_, output))))) => {
                lock(&shared.checker).on_read(asked, floor, index_of(&output));
                lock(&shared.client).reads += 1;
            }
            (false, Ok(Some(Err(RequestError::NotLeader { leader: Some(l) })))) => target = l,
            (false, _) => target = nodes[madsim::rand::thread_rng().gen_range(0..nodes.len())],
            (true, _) => {}
        }
        let pause = madsim::rand::thread_rng().gen_range(1..20);
        madsim::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// A message's kind and size, for the trace (not its contents).
fn message_kind(msg: &Message) -> String {
    match msg {
        Message::Append(a) => format!("Append(term {}, {} entries)", a.term, a.entries.len()),
        Message::AppendResponse(r) => format!("AppendResponse(term {}, {:?})", r.term, r.result),
        Message::Vote(v) => format!("Vote(term {})", v.term),
        Message::PreVote(v) => format!("PreVote(term {})", v.term),
        Message::VoteResponse(v) => format!("VoteResponse(term {}, {})", v.term, v.granted),
        Message::PreVoteResponse(v) => format!("PreVoteResponse(term {}, {})", v.term, v.granted),
        other => {
            let text = format!("{other:?}");
            text.chars().take(60).collect()
        }
    }
}
