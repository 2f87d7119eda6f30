//! The lock manager: a deterministic state machine applied by Raft.
//!
//! Replicated state (`State`, in snapshots) depends only on the log. Each
//! replica also keeps `Local` bookkeeping from its own clock: when it
//! applied each session's latest renewal and each lock-delay's start. Only
//! the leader acts on it, by proposing `Expire` and `Undelay` entries
//! (docs/SAFETY.md rules 1 and 3).

use super::auth::{Action, CredentialId, CredentialInfo, Policy, SecretHash, CREDENTIALS_MAX};
use super::command::{
    Command, Event, FileInfo, Grant, HolderInfo, LockError, LockInfo, Mode, Op, Query, QueryAnswer,
    Reply, Request, Response, SessionId, SessionInfo, Token,
};
use super::config::LockConfig;
use super::table::Table;
use crate::actor::Instant;
use crate::raft::{FrozenState, Index, RestoreError, SnapshotError, StateMachine, Term};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// Sessions one `Query::Sessions` lists at most.
pub const SESSIONS_LISTED_MAX: u32 = 1000;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    sessions: Table<SessionId, Session>,
    /// Open nonce -> session it created, while that session lives.
    nonces: Table<u64, SessionId>,
    locks: Table<String, Lock>,
    files: Table<String, File>,
    /// The last fencing token issued; tokens are 1, 2, 3... in grant order
    /// across all locks, so strictly increasing per lock.
    last_token: Token,
    credentials: Table<CredentialId, Credential>,
    /// A credential was created once: `Bootstrap` does nothing any more.
    bootstrapped: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Credential {
    name: String,
    hash: SecretHash,
    policy: Policy,
    /// Index of the entry that created it.
    created: Index,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    ttl_ms: u64,
    nonce: u64,
    /// The credential that opened it: no other (admin aside) may use it.
    /// None: opened through an insecure door, by nobody in particular.
    owner: Option<CredentialId>,
    /// Index of the entry that last renewed the lease (open or keepalive).
    renewal: Index,
    held: BTreeMap<String, Token>,
    /// Lock -> sequence number of the acquire waiting for it.
    waiting: BTreeMap<String, u64>,
    acked: u64,
    /// Responses to requests after `acked` (exactly-once).
    responses: BTreeMap<u64, Response>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Lock {
    holders: BTreeMap<SessionId, (Mode, Token)>,
    waiters: VecDeque<Waiter>,
    /// Freed by the expiry at this index; no grants until its `Undelay`.
    delayed_since: Option<Index>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Waiter {
    session: SessionId,
    seq: u64,
    mode: Mode,
    /// The log index of the acquire that queued it.
    index: Index,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct File {
    token: Token,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

/// This replica's own-clock records; never replicated, never in snapshots.
/// A missing record (after a restore) counts as "now" when first needed,
/// which only ever makes an expiry later.
#[derive(Debug, Default)]
struct Local {
    renewed_at: BTreeMap<SessionId, Instant>,
    /// The same records ordered by when each lease runs out here (renewal
    /// plus stretched TTL): the leader's scan at every heartbeat reads the
    /// leases that ran out, not every session. A scan of all of them cost
    /// ~100 ns a session, every 50 ms: a million sessions kept the leader
    /// busy for longer than the heartbeat interval.
    runs_out: BTreeSet<(Instant, SessionId)>,
    delayed_at: BTreeMap<String, Instant>,
    /// Restored from a snapshot: delayed locks may lack a `delayed_at`
    /// (seeded at the next leader scan).
    delays_unseeded: bool,
    /// What this node proposed as leader in `term`, so it proposes once.
    term: Term,
    expiry_proposed: BTreeMap<SessionId, Index>,
    undelay_proposed: BTreeMap<String, Index>,
    events: VecDeque<Event>,
    /// Events dropped since the last `take_events`.
    events_missed: u64,
}

pub struct LockMachine {
    config: LockConfig,
    state: State,
    local: Local,
    /// Derived from `state` (recomputed on restore, checked by
    /// `check_invariants`): the bounded totals.
    totals: Totals,
    /// Derived likewise: each credential's sessions, for its limits.
    owned: BTreeMap<CredentialId, BTreeSet<SessionId>>,
}

/// Each credential's sessions.
fn owned_index(state: &State) -> BTreeMap<CredentialId, BTreeSet<SessionId>> {
    let mut owned: BTreeMap<CredentialId, BTreeSet<SessionId>> = BTreeMap::new();
    for (&id, s) in &state.sessions {
        if let Some(owner) = s.owner {
            owned.entry(owner).or_default().insert(id);
        }
    }
    owned
}

/// Totals the limits bound, kept up to date by every change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Totals {
    /// Holders plus waiters over all locks.
    lock_entries: usize,
    /// Bytes of all fenced files.
    file_bytes: usize,
}

impl Totals {
    fn of(state: &State) -> Totals {
        Totals {
            lock_entries: state
                .locks
                .values()
                .map(|l| l.holders.len() + l.waiters.len())
                .sum(),
            file_bytes: state.files.values().map(|f| f.data.len()).sum(),
        }
    }
}

impl LockMachine {
    pub fn new(config: LockConfig) -> Self {
        LockMachine {
            config,
            state: State::default(),
            local: Local::default(),
            totals: Totals::default(),
            owned: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> &LockConfig {
        &self.config
    }

    /// What applies did since the last call, in order (the driver core
    /// hands them out at each flush: `StateMachine::take_events`). Drivers
    /// push the queued grants to the clients they serve; the simulator
    /// checks all.
    fn drain_events(&mut self) -> Vec<Event> {
        let missed = std::mem::take(&mut self.local.events_missed);
        let mut out = Vec::with_capacity(self.local.events.len() + 1);
        if missed > 0 {
            out.push(Event::Missed { count: missed });
        }
        out.extend(self.local.events.drain(..));
        out
    }

    /// Keeps an event for the driver. Beyond the bound the oldest is
    /// dropped and counted; `take_events` then starts with `Missed`, so a
    /// subscriber looks its grants up instead of waiting for them.
    fn record(&mut self, event: Event) {
        if self.local.events.len() >= self.config.limits.events_pending_max {
            self.local.events.pop_front();
            self.local.events_missed += 1;
        }
        self.local.events.push_back(event);
    }

    pub fn sessions(&self) -> usize {
        self.state.sessions.len()
    }

    /// (sessions, locks, waiters, files), for metrics.
    pub fn sizes(&self) -> (usize, usize, usize, usize) {
        let waiters = self.state.locks.values().map(|l| l.waiters.len()).sum();
        (
            self.state.sessions.len(),
            self.state.locks.len(),
            waiters,
            self.state.files.len(),
        )
    }

    pub fn last_token(&self) -> Token {
        self.state.last_token
    }

    /// Applies a decoded command; `apply` wraps it in the wire encoding.
    pub fn apply_command(&mut self, index: Index, now: Instant, command: Command) -> Response {
        let response = match command {
            // Once credentials exist, a client command comes on one's behalf
            // or not at all (defence in depth: secure doors always wrap).
            Command::Open { .. } | Command::Request(_) | Command::Unsequenced { .. }
                if self.state.bootstrapped =>
            {
                Err(LockError::Unauthenticated)
            }
            Command::Open { nonce, ttl_ms } => self.open(index, now, nonce, ttl_ms, None),
            Command::Request(req) => self
                .authorize_session(None, req.session)
                .and_then(|()| self.request(index, now, req)),
            Command::Unsequenced { session, op } => self
                .authorize_session(None, session)
                .and_then(|()| self.unsequenced(index, now, session, op)),
            Command::As {
                credential,
                command,
            } => match postcard::from_bytes::<Command>(&command) {
                Ok(command) => self.apply_as(index, now, credential, command),
                Err(e) => Err(LockError::Malformed(e.to_string())),
            },
            Command::Bootstrap { id, hash } => {
                let effective = !self.state.bootstrapped;
                if effective {
                    self.insert_credential(index, id, "admin".into(), hash, Policy::admin());
                }
                Ok(Reply::Internal { effective })
            }
            Command::KeepAlives(items) => Ok(Reply::KeepAlives(
                items
                    .iter()
                    .map(|item| self.apply_keepalive(index, now, item))
                    .collect(),
            )),
            Command::CreateCredential { .. } | Command::RevokeCredential { .. } => Err(
                LockError::Forbidden("credentials are managed by an admin credential".into()),
            ),
            Command::Expire { session, renewal } => {
                let effective = self
                    .state
                    .sessions
                    .get(&session)
                    .is_some_and(|s| s.renewal == renewal);
                if effective {
                    self.end_session(index, now, session, true);
                }
                Ok(Reply::Internal { effective })
            }
            Command::Undelay { lock, freed } => {
                let effective = self
                    .state
                    .locks
                    .get(&lock)
                    .is_some_and(|l| l.delayed_since == Some(freed));
                if effective {
                    if let Some(l) = self.state.locks.get_mut(&lock) {
                        l.delayed_since = None;
                    }
                    self.local.delayed_at.remove(&lock);
                    self.record(Event::Undelayed {
                        index,
                        lock: lock.clone(),
                    });
                    self.grant_waiters(index, &lock);
                    self.forget_if_idle(&lock);
                }
                Ok(Reply::Internal { effective })
            }
        };
        // A machine broken on purpose (a negative control) is left to the
        // simulator's checkers, which must catch it from the outside.
        if !self.config.reset_tokens_on_restore() {
            debug_assert_eq!(self.check_invariants(), Ok(()));
        }
        response
    }

    /// Answers a decoded query.
    pub fn answer(&self, now: Instant, query: Query) -> QueryAnswer {
        let anonymous = !matches!(query, Query::As { .. } | Query::Credential { .. });
        if anonymous && self.state.bootstrapped {
            return QueryAnswer::Refused(LockError::Unauthenticated);
        }
        self.answer_unchecked(now, query)
    }

    /// `answer` without the check that credentials, once they exist, are
    /// used (for `answer_as`, which has checked them).
    pub(super) fn answer_unchecked(&self, now: Instant, query: Query) -> QueryAnswer {
        match query {
            Query::As { credential, query } => match postcard::from_bytes::<Query>(&query) {
                Ok(query) => self.answer_as(now, credential, query),
                Err(e) => QueryAnswer::Malformed(e.to_string()),
            },
            Query::Credential { id } => QueryAnswer::Credential(self.credential(id)),
            Query::Credentials => QueryAnswer::Credentials(
                self.state
                    .credentials
                    .iter()
                    .map(|(&id, c)| CredentialInfo {
                        id,
                        name: c.name.clone(),
                        policy: c.policy.clone(),
                        created: c.created,
                    })
                    .collect(),
            ),
            Query::Lock { name } => {
                let Some(lock) = self.state.locks.get(&name) else {
                    return QueryAnswer::Lock(LockInfo::default());
                };
                QueryAnswer::Lock(LockInfo {
                    holders: lock
                        .holders
                        .iter()
                        .map(|(&session, &(mode, token))| HolderInfo {
                            session,
                            mode,
                            token,
                            expires_in_ms: self.expires_in_ms(now, session),
                        })
                        .collect(),
                    waiters: lock.waiters.iter().map(|w| (w.session, w.mode)).collect(),
                    delayed: lock.delayed_since.is_some(),
                })
            }
            Query::Session { session } => QueryAnswer::Session(
                self.state
                    .sessions
                    .get(&session)
                    .map(|s| self.session_info(now, session, s)),
            ),
            Query::Sessions { after, limit } => QueryAnswer::Sessions(
                self.state
                    .sessions
                    .range(after.saturating_add(1)..)
                    .take(limit.min(SESSIONS_LISTED_MAX) as usize)
                    .map(|(&id, s)| (id, self.session_info(now, id, s)))
                    .collect(),
            ),
            Query::Response { session, seq } => QueryAnswer::Response(
                self.state
                    .sessions
                    .get(&session)
                    .map(|s| s.responses.get(&seq).cloned())
                    .unwrap_or(Some(Err(LockError::SessionNotFound(session)))),
            ),
            Query::File { name } => {
                QueryAnswer::File(self.state.files.get(&name).map(|f| FileInfo {
                    token: f.token,
                    data: f.data.clone(),
                }))
            }
        }
    }

    /// The leader's decisions at local time `now` (docs/SAFETY.md rule 3):
    /// expire every session whose latest renewal this node applied more
    /// than `TTL * (1 + ρ)` ago on its own clock, and end every lock-delay
    /// that has run its course. Each is proposed once per term.
    pub fn leader_commands(&mut self, now: Instant, term: Term) -> Vec<Command> {
        if term != self.local.term {
            self.local.term = term;
            self.local.expiry_proposed.clear();
            self.local.undelay_proposed.clear();
        }
        self.seed_local_records(now);
        let budget = self.config.limits.leader_commands_per_tick_max;
        let mut out = Vec::new();
        for &(runs_out, id) in &self.local.runs_out {
            if runs_out > now {
                break;
            }
            if out.len() >= budget {
                return out;
            }
            let Some(session) = self.state.sessions.get(&id) else {
                continue;
            };
            if self.local.expiry_proposed.get(&id) != Some(&session.renewal) {
                self.local.expiry_proposed.insert(id, session.renewal);
                out.push(Command::Expire {
                    session: id,
                    renewal: session.renewal,
                });
            }
        }
        for (name, &delayed_at) in &self.local.delayed_at {
            let Some(freed) = self.state.locks.get(name).and_then(|l| l.delayed_since) else {
                continue;
            };
            if out.len() >= budget {
                break;
            }
            if now >= delayed_at + self.config.lock_delay
                && self.local.undelay_proposed.get(name) != Some(&freed)
            {
                self.local.undelay_proposed.insert(name.clone(), freed);
                out.push(Command::Undelay {
                    lock: name.clone(),
                    freed,
                });
            }
        }
        out
    }

    /// Gives every session and delayed lock that has no own-clock record
    /// (restored from a snapshot) one of `now`: unknown counts as "now",
    /// which only ever makes an expiry later. A pass over the state, once
    /// after a restore.
    fn seed_local_records(&mut self, now: Instant) {
        if self.local.renewed_at.len() < self.state.sessions.len() {
            let unseeded: Vec<(SessionId, u64)> = self
                .state
                .sessions
                .iter()
                .filter(|(id, _)| !self.local.renewed_at.contains_key(*id))
                .map(|(&id, s)| (id, s.ttl_ms))
                .collect();
            for (id, ttl_ms) in unseeded {
                self.renewed(id, ttl_ms, now);
            }
        }
        if self.local.delays_unseeded {
            self.local.delays_unseeded = false;
            for (name, lock) in &self.state.locks {
                if lock.delayed_since.is_some() {
                    self.local.delayed_at.entry(name.clone()).or_insert(now);
                }
            }
        }
    }

    /// Records that this replica applied a renewal of session `id` at `now`.
    fn renewed(&mut self, id: SessionId, ttl_ms: u64, now: Instant) {
        let lease = self.config.stretch(Duration::from_millis(ttl_ms));
        if let Some(before) = self.local.renewed_at.insert(id, now) {
            self.local.runs_out.remove(&(before + lease, id));
        }
        self.local.runs_out.insert((now + lease, id));
    }

    /// Drops session `id`'s own-clock records.
    fn forget_renewal(&mut self, id: SessionId, ttl_ms: u64) {
        let lease = self.config.stretch(Duration::from_millis(ttl_ms));
        if let Some(before) = self.local.renewed_at.remove(&id) {
            self.local.runs_out.remove(&(before + lease, id));
        }
        self.local.expiry_proposed.remove(&id);
    }

    fn session_info(&self, now: Instant, id: SessionId, s: &Session) -> SessionInfo {
        SessionInfo {
            ttl_ms: s.ttl_ms,
            held: s.held.iter().map(|(l, &t)| (l.clone(), t)).collect(),
            waiting: s.waiting.keys().cloned().collect(),
            expires_in_ms: self.expires_in_ms(now, id),
        }
    }

    fn expires_in_ms(&self, now: Instant, session: SessionId) -> Option<u64> {
        let s = self.state.sessions.get(&session)?;
        let at = *self.local.renewed_at.get(&session)?
            + self.config.stretch(Duration::from_millis(s.ttl_ms));
        Some(at.saturating_since(now).as_millis() as u64)
    }

    fn open(
        &mut self,
        index: Index,
        now: Instant,
        nonce: u64,
        ttl_ms: u64,
        owner: Option<CredentialId>,
    ) -> Response {
        let limits = &self.config.limits;
        if !(limits.ttl_ms_min..=limits.ttl_ms_max).contains(&ttl_ms) {
            return Err(LockError::TtlOutOfRange {
                ttl_ms,
                min_ms: limits.ttl_ms_min,
                max_ms: limits.ttl_ms_max,
            });
        }
        if let Some(&session) = self.state.nonces.get(&nonce) {
            let Some(s) = self.state.sessions.get(&session) else {
                return Err(LockError::SessionNotFound(session));
            };
            if s.owner != owner {
                return Err(LockError::Forbidden(
                    "the session of this nonce belongs to another credential".into(),
                ));
            }
            return Ok(Reply::Opened {
                session,
                ttl_ms: s.ttl_ms,
            });
        }
        if self.state.sessions.len() >= limits.sessions_max {
            return Err(LockError::TooManySessions(limits.sessions_max));
        }
        if let Some(owner) = owner.filter(|&o| !self.is_admin(o)) {
            let max = limits.sessions_per_credential_max;
            if self.owned.get(&owner).map_or(0, BTreeSet::len) >= max {
                return Err(LockError::CredentialSessionsFull(max));
            }
        }
        if let Some(owner) = owner {
            self.owned.entry(owner).or_default().insert(index);
        }
        self.state.sessions.insert(
            index,
            Session {
                ttl_ms,
                nonce,
                owner,
                renewal: index,
                held: BTreeMap::new(),
                waiting: BTreeMap::new(),
                acked: 0,
                responses: BTreeMap::new(),
            },
        );
        self.state.nonces.insert(nonce, index);
        self.renewed(index, ttl_ms, now);
        Ok(Reply::Opened {
            session: index,
            ttl_ms,
        })
    }

    /// Exactly-once: a request already applied gets its kept response; one
    /// older than what the client acknowledged gets an error, never a
    /// second execution.
    fn request(&mut self, index: Index, now: Instant, req: Request) -> Response {
        let inflight_max = self.config.limits.requests_inflight_max;
        let Some(session) = self.state.sessions.get_mut(&req.session) else {
            return Err(LockError::SessionNotFound(req.session));
        };
        if req.seq <= session.acked {
            return Err(LockError::SequenceTooOld {
                seq: req.seq,
                acked: session.acked,
            });
        }
        if let Some(kept) = session.responses.get(&req.seq) {
            if !self.config.skip_dedup() {
                return kept.clone();
            }
        }
        // A client cannot have seen the response to the request it sends.
        let acked = req.acked.min(req.seq - 1).max(session.acked);
        session.acked = acked;
        session.responses = session.responses.split_off(&(acked + 1));
        // Saturating: `seq` and `acked` are the client's to choose.
        if req.seq > acked.saturating_add(inflight_max) {
            return Err(LockError::TooManyInflight {
                seq: req.seq,
                acked,
                inflight_max,
            });
        }
        self.record(Event::Executed {
            index,
            session: req.session,
            seq: req.seq,
        });
        let response = self.execute(index, now, req.session, req.seq, req.op);
        if let Some(session) = self.state.sessions.get_mut(&req.session) {
            session.responses.insert(req.seq, response.clone());
        }
        response
    }

    fn execute(&mut self, index: Index, now: Instant, id: SessionId, seq: u64, op: Op) -> Response {
        match op {
            Op::KeepAlive => {
                if let Some(s) = self.state.sessions.get_mut(&id) {
                    s.renewal = index;
                    let ttl_ms = s.ttl_ms;
                    self.renewed(id, ttl_ms, now);
                }
                Ok(Reply::Renewed)
            }
            Op::Close => {
                self.end_session(index, now, id, false);
                Ok(Reply::Closed)
            }
            Op::Acquire { lock, mode, wait } => self.acquire(index, id, seq, lock, mode, wait),
            Op::Cancel { lock } => self.cancel(index, id, lock),
            Op::Release { lock, token } => self.release(index, id, lock, token),
            Op::Append { file, token, data } => self.append(id, file, token, data),
        }
    }

    fn unsequenced(&mut self, index: Index, now: Instant, session: SessionId, op: Op) -> Response {
        if self.state.sessions.contains_key(&session) {
            self.execute(index, now, session, 0, op)
        } else {
            Err(LockError::SessionNotFound(session))
        }
    }

    /// One item of `Command::KeepAlives`: a keepalive, alone or on a
    /// credential's behalf, applied as its own entry would be (nothing
    /// else may ride in a batch).
    fn apply_keepalive(&mut self, index: Index, now: Instant, item: &[u8]) -> Response {
        let command = postcard::from_bytes::<Command>(item)
            .map_err(|e| LockError::Malformed(e.to_string()))?;
        let inner = match &command {
            Command::As { command, .. } => postcard::from_bytes::<Command>(command)
                .map_err(|e| LockError::Malformed(e.to_string()))?,
            other => other.clone(),
        };
        match inner {
            Command::Unsequenced {
                op: Op::KeepAlive, ..
            } => self.apply_command(index, now, command),
            _ => Err(LockError::Malformed(
                "a keepalive batch carries keepalives only".into(),
            )),
        }
    }

    /// A command on behalf of `credential`: refused unless the credential
    /// exists and its policy allows it; its sessions are its own.
    fn apply_as(
        &mut self,
        index: Index,
        now: Instant,
        credential: CredentialId,
        command: Command,
    ) -> Response {
        let policy = self.policy(credential)?.clone();
        match command {
            Command::Open { nonce, ttl_ms } => {
                if !policy.may_open_sessions() {
                    return Err(LockError::Forbidden(
                        "the credential may not acquire any lock".into(),
                    ));
                }
                self.open(index, now, nonce, ttl_ms, Some(credential))
            }
            Command::Request(req) => {
                self.authorize_session(Some((credential, &policy)), req.session)?;
                authorize_op(&policy, &req.op)?;
                self.request(index, now, req)
            }
            Command::Unsequenced { session, op } => {
                self.authorize_session(Some((credential, &policy)), session)?;
                authorize_op(&policy, &op)?;
                self.unsequenced(index, now, session, op)
            }
            Command::CreateCredential {
                id,
                name,
                hash,
                policy: new,
            } => {
                require_admin(&policy)?;
                self.create_credential(index, id, name, hash, new)
            }
            Command::RevokeCredential { id } => {
                require_admin(&policy)?;
                if self.state.credentials.remove(&id).is_none() {
                    return Err(LockError::UnknownCredential);
                }
                self.cancel_waits_of(index, id);
                Ok(Reply::CredentialRevoked)
            }
            Command::As { .. }
            | Command::KeepAlives(_)
            | Command::Bootstrap { .. }
            | Command::Expire { .. }
            | Command::Undelay { .. } => Err(LockError::Forbidden(
                "only client commands may be sent on a credential's behalf".into(),
            )),
        }
    }

    /// A revoked credential's queued acquires leave their queues: nothing
    /// may hand it a new grant (and a fencing token). What its sessions
    /// hold stays until they expire: their clients may still trust those
    /// leases, and a lock granted to another meanwhile would have two
    /// believers.
    fn cancel_waits_of(&mut self, index: Index, owner: CredentialId) {
        let sessions: Vec<SessionId> = self
            .owned
            .get(&owner)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for session in sessions {
            let waits: Vec<String> = self
                .state
                .sessions
                .get(&session)
                .map(|s| s.waiting.keys().cloned().collect())
                .unwrap_or_default();
            for lock in waits {
                let _ = self.cancel(index, session, lock);
            }
        }
    }

    fn policy(&self, credential: CredentialId) -> Result<&Policy, LockError> {
        self.state
            .credentials
            .get(&credential)
            .map(|c| &c.policy)
            .ok_or(LockError::Unauthenticated)
    }

    /// Whether `caller` (None: an insecure door's anonymous call) may use
    /// `session`: its owner, or an admin. A session that does not exist is
    /// left to the command's own `SessionNotFound`.
    fn authorize_session(
        &self,
        caller: Option<(CredentialId, &Policy)>,
        session: SessionId,
    ) -> Result<(), LockError> {
        let Some(s) = self.state.sessions.get(&session) else {
            return Ok(());
        };
        #[cfg(feature = "sim")]
        if self.config.bugs.skip_ownership {
            return Ok(());
        }
        let allowed = match caller {
            Some((_, policy)) if policy.admin => true,
            Some((id, _)) => s.owner == Some(id),
            None => s.owner.is_none(),
        };
        if allowed {
            Ok(())
        } else {
            Err(LockError::Forbidden(format!(
                "session {session} belongs to another credential"
            )))
        }
    }

    fn create_credential(
        &mut self,
        index: Index,
        id: CredentialId,
        name: String,
        hash: SecretHash,
        policy: Policy,
    ) -> Response {
        if self.state.credentials.contains_key(&id) {
            return Err(LockError::CredentialExists);
        }
        if self.state.credentials.len() >= CREDENTIALS_MAX {
            return Err(LockError::TooManyCredentials(CREDENTIALS_MAX));
        }
        if name.len() > super::auth::CREDENTIAL_NAME_BYTES_MAX {
            return Err(LockError::BadPolicy(format!(
                "name of {} bytes; at most {}",
                name.len(),
                super::auth::CREDENTIAL_NAME_BYTES_MAX
            )));
        }
        policy
            .check(self.config.limits.name_bytes_max)
            .map_err(LockError::BadPolicy)?;
        self.insert_credential(index, id, name, hash, policy);
        Ok(Reply::CredentialCreated { id })
    }

    fn insert_credential(
        &mut self,
        index: Index,
        id: CredentialId,
        name: String,
        hash: SecretHash,
        policy: Policy,
    ) {
        self.state.bootstrapped = true;
        self.state.credentials.insert(
            id,
            Credential {
                name,
                hash,
                policy,
                created: index,
            },
        );
    }

    /// Whether a credential was ever created (the first by `Bootstrap`).
    pub fn bootstrapped(&self) -> bool {
        self.state.bootstrapped
    }

    fn is_admin(&self, id: CredentialId) -> bool {
        self.state
            .credentials
            .get(&id)
            .is_some_and(|c| c.policy.admin)
    }

    /// Locks the credential's sessions hold plus await.
    fn owned_entries(&self, owner: CredentialId) -> usize {
        self.owned.get(&owner).map_or(0, |set| {
            set.iter()
                .filter_map(|s| self.state.sessions.get(s))
                .map(|s| s.held.len() + s.waiting.len())
                .sum()
        })
    }

    /// Whether `caller` may learn when `session` ends (the native
    /// protocol's `Watch`): its owner or an admin; on an insecure door
    /// (no caller), a session opened there. False for a session this
    /// replica does not know.
    pub fn may_watch(&self, caller: Option<CredentialId>, session: SessionId) -> bool {
        let Some(s) = self.state.sessions.get(&session) else {
            return false;
        };
        match caller {
            Some(id) => s.owner == Some(id) || self.is_admin(id),
            None => s.owner.is_none(),
        }
    }

    /// The stored hash of `id`'s secret and whether it is an admin: what a
    /// node checks a caller's bearer secret against (a local read: the
    /// machine checks again when it applies what the caller sent).
    pub fn credential(&self, id: CredentialId) -> Option<(SecretHash, bool)> {
        self.state
            .credentials
            .get(&id)
            .map(|c| (c.hash, c.policy.admin))
    }

    /// A query on behalf of `credential`.
    fn answer_as(&self, now: Instant, credential: CredentialId, query: Query) -> QueryAnswer {
        let policy = match self.policy(credential) {
            Ok(p) => p,
            Err(e) => return QueryAnswer::Refused(e),
        };
        let refused = |what: String| QueryAnswer::Refused(LockError::Forbidden(what));
        let (action, name) = match &query {
            Query::Lock { name } => (Action::Status, name),
            Query::File { name } => (Action::Read, name),
            Query::Session { session } | Query::Response { session, .. } => {
                return match self.authorize_session(Some((credential, policy)), *session) {
                    Ok(()) => self.answer_unchecked(now, query),
                    Err(e) => QueryAnswer::Refused(e),
                };
            }
            Query::Sessions { after, limit } => {
                if policy.admin {
                    return self.answer_unchecked(now, query);
                }
                // Its own sessions, from the index: a page costs its length.
                let own = self.owned.get(&credential);
                return QueryAnswer::Sessions(
                    own.into_iter()
                        .flat_map(|set| set.range(after.saturating_add(1)..))
                        .filter_map(|id| self.state.sessions.get(id).map(|s| (*id, s)))
                        .take((*limit).min(SESSIONS_LISTED_MAX) as usize)
                        .map(|(id, s)| (id, self.session_info(now, id, s)))
                        .collect(),
                );
            }
            Query::Credentials => {
                return if policy.admin {
                    self.answer_unchecked(now, query)
                } else {
                    refused("listing credentials needs an admin credential".into())
                };
            }
            Query::As { .. } | Query::Credential { .. } => {
                return refused("not a query for a client".into())
            }
        };
        if policy.allows(action, name) {
            self.answer_unchecked(now, query)
        } else {
            refused(format!("{} of {name:?} is not allowed", action.name()))
        }
    }

    fn check_name(&self, name: &str) -> Result<(), LockError> {
        let max = self.config.limits.name_bytes_max;
        if name.is_empty() || name.len() > max {
            return Err(LockError::BadName {
                len: name.len(),
                max,
            });
        }
        Ok(())
    }

    fn acquire(
        &mut self,
        index: Index,
        id: SessionId,
        seq: u64,
        name: String,
        mode: Mode,
        wait: bool,
    ) -> Response {
        self.check_name(&name)?;
        if mode == Mode::Semaphore(0) {
            return Err(LockError::ZeroLimit);
        }
        let limits = &self.config.limits;
        let session = self
            .state
            .sessions
            .get(&id)
            .ok_or(LockError::SessionNotFound(id))?;
        let lock = self.state.locks.get(&name);
        if let Some(&token) = session.held.get(&name) {
            // A re-acquire in the mode held returns the same grant (it does
            // not count: one release frees it); any other mode is refused,
            // never granted beside other holders (docs/SAFETY.md 5).
            let held = lock
                .and_then(|l| l.holders.get(&id))
                .map_or(mode, |&(m, _)| m);
            if self.config.reacquire_ignores_mode() {
                return Ok(Reply::Granted { token });
            }
            return same_mode(held, mode).map(|()| Reply::Granted { token });
        }
        if session.waiting.contains_key(&name) {
            let waiter =
                lock.and_then(|l| l.waiters.iter().enumerate().find(|(_, w)| w.session == id));
            let (position, waiting) = waiter.map_or((0, mode), |(i, w)| (i, w.mode));
            return same_mode(waiting, mode).map(|()| Reply::Queued {
                position: position as u32,
            });
        }
        if session.held.len() + session.waiting.len() >= limits.locks_per_session_max {
            return Err(LockError::TooManyLocks(limits.locks_per_session_max));
        }
        if let Some(owner) = session.owner.filter(|&o| !self.is_admin(o)) {
            let max = limits.locks_per_credential_max;
            if self.owned_entries(owner) >= max {
                return Err(LockError::CredentialLocksFull(max));
            }
        }
        // A grant or a queued wait adds one entry to the lock tables.
        if self.totals.lock_entries >= limits.lock_entries_max {
            return Err(LockError::LockTablesFull(limits.lock_entries_max));
        }
        let waiters_max = limits.waiters_per_lock_max;
        if let Some(held) = lock.and_then(|l| semaphore_limit(l, mode)) {
            if let Mode::Semaphore(asked) = mode {
                return Err(LockError::LimitMismatch { held, asked });
            }
        }
        let free = lock.is_none_or(|l| {
            l.delayed_since.is_none() && l.waiters.is_empty() && admits(&l.holders, mode)
        });
        if free {
            let token = self.grant(index, index, &name, id, seq, mode);
            return Ok(Reply::Granted { token });
        }
        if !wait {
            return Err(LockError::Busy);
        }
        let lock = self.state.locks.get_or_default(name.clone());
        if lock.waiters.len() >= waiters_max {
            return Err(LockError::TooManyWaiters(waiters_max));
        }
        lock.waiters.push_back(Waiter {
            session: id,
            seq,
            mode,
            index,
        });
        self.totals.lock_entries += 1;
        let position = (lock.waiters.len() - 1) as u32;
        if let Some(s) = self.state.sessions.get_mut(&id) {
            s.waiting.insert(name, seq);
        }
        Ok(Reply::Queued { position })
    }

    fn cancel(&mut self, index: Index, id: SessionId, name: String) -> Response {
        let session = self
            .state
            .sessions
            .get_mut(&id)
            .ok_or(LockError::SessionNotFound(id))?;
        if let Some(&token) = session.held.get(&name) {
            // Granted before the cancel: the client learns it holds the lock.
            return Ok(Reply::Granted { token });
        }
        let Some(seq) = session.waiting.remove(&name) else {
            return Err(LockError::NotWaiting);
        };
        // The acquire's own response now tells a poller it was cancelled.
        if let Some(r) = session.responses.get_mut(&seq) {
            *r = Ok(Reply::Cancelled);
        }
        if let Some(lock) = self.state.locks.get_mut(&name) {
            let before = lock.waiters.len();
            lock.waiters.retain(|w| w.session != id);
            self.totals.lock_entries -= before - lock.waiters.len();
        }
        self.record(Event::Cancelled {
            index,
            session: id,
            lock: name.clone(),
        });
        // A cancelled head of queue may have been all that blocked others.
        self.grant_waiters(index, &name);
        self.forget_if_idle(&name);
        Ok(Reply::Cancelled)
    }

    fn release(&mut self, index: Index, id: SessionId, name: String, token: Token) -> Response {
        let session = self
            .state
            .sessions
            .get_mut(&id)
            .ok_or(LockError::SessionNotFound(id))?;
        if session.held.get(&name) != Some(&token) {
            if !self.state.locks.contains_key(&name) {
                return Err(LockError::UnknownLock);
            }
            return Err(LockError::NotHolder);
        }
        session.held.remove(&name);
        if let Some(lock) = self.state.locks.get_mut(&name) {
            if lock.holders.remove(&id).is_some() {
                self.totals.lock_entries -= 1;
            }
        }
        self.record(Event::Released {
            index,
            session: id,
            lock: name.clone(),
            token,
        });
        self.grant_waiters(index, &name);
        self.forget_if_idle(&name);
        Ok(Reply::Released)
    }

    fn append(&mut self, id: SessionId, name: String, token: Token, data: Vec<u8>) -> Response {
        self.check_name(&name)?;
        let limits = &self.config.limits;
        let current = self
            .state
            .locks
            .get(&name)
            .and_then(|l| l.holders.get(&id))
            .is_some_and(|&(mode, t)| mode == Mode::Exclusive && t == token);
        if !current {
            return Err(LockError::StaleToken { token });
        }
        if !self.state.files.contains_key(&name) && self.state.files.len() >= limits.files_max {
            return Err(LockError::TooManyFiles(limits.files_max));
        }
        let file_bytes_max = limits.file_bytes_max;
        let files_bytes_max = limits.files_bytes_max;
        if self.totals.file_bytes + data.len() > files_bytes_max {
            return Err(LockError::FilesFull(files_bytes_max));
        }
        let file = self.state.files.get_or_default(name);
        if file.data.len() + data.len() > file_bytes_max {
            return Err(LockError::FileTooLarge(file_bytes_max));
        }
        // The holder's token is the newest grant of the lock, so it is at
        // least any token that appended before.
        debug_assert!(token >= file.token, "fencing token went backwards");
        if token < file.token {
            return Err(LockError::StaleToken { token });
        }
        file.token = token;
        let offset = file.data.len() as u64;
        file.data.extend_from_slice(&data);
        self.totals.file_bytes += data.len();
        Ok(Reply::Appended { offset })
    }

    /// Removes a session: its locks are freed (after a lock-delay if it
    /// expired) and its waits cancelled, granting whoever is next.
    fn end_session(&mut self, index: Index, now: Instant, id: SessionId, expired: bool) {
        let Some(session) = self.state.sessions.remove(&id) else {
            return;
        };
        self.state.nonces.remove(&session.nonce);
        if let Some(owner) = session.owner {
            if let Some(set) = self.owned.get_mut(&owner) {
                set.remove(&id);
                if set.is_empty() {
                    self.owned.remove(&owner);
                }
            }
        }
        self.record(Event::Ended {
            index,
            session: id,
            expired,
            held: session.held.iter().map(|(l, &t)| (l.clone(), t)).collect(),
        });
        self.forget_renewal(id, session.ttl_ms);
        let delay = expired && !self.config.lock_delay.is_zero();
        for name in session.held.keys().chain(session.waiting.keys()) {
            if let Some(lock) = self.state.locks.get_mut(name) {
                let was_holder = lock.holders.remove(&id).is_some();
                let before = lock.waiters.len();
                lock.waiters.retain(|w| w.session != id);
                self.totals.lock_entries -= usize::from(was_holder) + before - lock.waiters.len();
                if delay && was_holder {
                    lock.delayed_since = Some(index);
                    self.local.delayed_at.insert(name.clone(), now);
                }
            }
            self.grant_waiters(index, name);
            self.forget_if_idle(name);
        }
    }

    /// Grants `name` at log index `index` to the acquire at index
    /// `acquire` (the same index unless it waited in the queue).
    fn grant(
        &mut self,
        index: Index,
        acquire: Index,
        name: &str,
        id: SessionId,
        seq: u64,
        mode: Mode,
    ) -> Token {
        self.state.last_token += 1;
        let token = self.state.last_token;
        let holders = &mut self.state.locks.get_or_default(name.to_string()).holders;
        if holders.insert(id, (mode, token)).is_none() {
            self.totals.lock_entries += 1;
        }
        if let Some(s) = self.state.sessions.get_mut(&id) {
            s.held.insert(name.to_string(), token);
        }
        self.record(Event::Granted(Grant {
            index,
            acquire,
            session: id,
            seq,
            lock: name.to_string(),
            mode,
            token,
            queued: acquire != index,
        }));
        token
    }

    /// Grants waiters from the head of the queue while they fit: strict
    /// FIFO (a reader behind a waiting writer waits), and only the waiters
    /// granted are notified.
    fn grant_waiters(&mut self, index: Index, name: &str) {
        loop {
            let Some(lock) = self.state.locks.get_mut(name) else {
                return;
            };
            if lock.delayed_since.is_some() {
                return;
            }
            let Some(head) = lock.waiters.front() else {
                return;
            };
            if !admits(&lock.holders, head.mode) {
                return;
            }
            let Some(w) = lock.waiters.pop_front() else {
                return;
            };
            self.totals.lock_entries -= 1;
            let token = self.grant(index, w.index, name, w.session, w.seq, w.mode);
            if let Some(s) = self.state.sessions.get_mut(&w.session) {
                s.waiting.remove(name);
                if let Some(r) = s.responses.get_mut(&w.seq) {
                    *r = Ok(Reply::Granted { token });
                }
            }
        }
    }

    fn forget_if_idle(&mut self, name: &str) {
        let idle = self.state.locks.get(name).is_some_and(|l| {
            l.holders.is_empty() && l.waiters.is_empty() && l.delayed_since.is_none()
        });
        if idle {
            self.state.locks.remove(name);
        }
    }

    /// Cross-checks the tables; `Err` names the first inconsistency.
    pub fn check_invariants(&self) -> Result<(), String> {
        let st = &self.state;
        if self.totals != Totals::of(st) {
            return Err(format!(
                "totals {:?} kept, {:?} counted",
                self.totals,
                Totals::of(st)
            ));
        }
        for (name, lock) in &st.locks {
            if lock.holders.is_empty() && lock.waiters.is_empty() && lock.delayed_since.is_none() {
                return Err(format!("idle lock {name} kept"));
            }
            let modes: Vec<Mode> = lock.holders.values().map(|&(m, _)| m).collect();
            let exclusive = modes.iter().filter(|&&m| m == Mode::Exclusive).count();
            if exclusive > 0 && modes.len() > 1 {
                return Err(format!("lock {name}: exclusive holder shares it"));
            }
            if let Some(Mode::Semaphore(n)) = modes.first() {
                if modes.len() > *n as usize || modes.iter().any(|m| m != &Mode::Semaphore(*n)) {
                    return Err(format!("lock {name}: semaphore over its limit or mixed"));
                }
            }
            if modes.contains(&Mode::Shared) && modes.iter().any(|&m| m != Mode::Shared) {
                return Err(format!("lock {name}: readers share with non-readers"));
            }
            for (id, &(_, token)) in &lock.holders {
                if token > st.last_token {
                    return Err(format!("lock {name}: token {token} not issued yet"));
                }
                let held = st.sessions.get(id).and_then(|s| s.held.get(name));
                if held != Some(&token) {
                    return Err(format!("lock {name}: holder {id} does not know it"));
                }
            }
            for w in &lock.waiters {
                let known = st
                    .sessions
                    .get(&w.session)
                    .is_some_and(|s| s.waiting.get(name) == Some(&w.seq));
                if !known {
                    return Err(format!("lock {name}: waiter {} unknown", w.session));
                }
            }
        }
        for (id, s) in &st.sessions {
            if st.nonces.get(&s.nonce) != Some(id) {
                return Err(format!("session {id}: nonce not indexed"));
            }
            for name in s.held.keys() {
                if !st
                    .locks
                    .get(name)
                    .is_some_and(|l| l.holders.contains_key(id))
                {
                    return Err(format!("session {id}: holds {name} unrecorded"));
                }
            }
            if s.responses.len() as u64 > self.config.limits.requests_inflight_max {
                return Err(format!("session {id}: too many kept responses"));
            }
        }
        if self.owned != owned_index(st) {
            return Err("the credentials' session index disagrees with the sessions".into());
        }
        if st.credentials.len() > CREDENTIALS_MAX {
            return Err(format!("{} credentials kept", st.credentials.len()));
        }
        if !st.credentials.is_empty() && !st.bootstrapped {
            return Err("credentials kept before the bootstrap".into());
        }
        Ok(())
    }
}

fn require_admin(policy: &Policy) -> Result<(), LockError> {
    if policy.admin {
        Ok(())
    } else {
        Err(LockError::Forbidden(
            "managing credentials needs an admin credential".into(),
        ))
    }
}

/// Whether `policy` allows the lock or file operation `op`. Renewing and
/// closing a session need only its ownership, checked before.
fn authorize_op(policy: &Policy, op: &Op) -> Result<(), LockError> {
    let (action, name) = match op {
        Op::KeepAlive | Op::Close => return Ok(()),
        Op::Acquire { lock, .. } | Op::Cancel { lock } | Op::Release { lock, .. } => {
            (Action::Acquire, lock)
        }
        Op::Append { file, .. } => (Action::Append, file),
    };
    if policy.allows(action, name) {
        Ok(())
    } else {
        Err(LockError::Forbidden(format!(
            "{} of {name:?} is not allowed",
            action.name()
        )))
    }
}

/// Whether a grant in `mode` fits next to `holders`.
fn admits(holders: &BTreeMap<SessionId, (Mode, Token)>, mode: Mode) -> bool {
    if holders.is_empty() {
        return true;
    }
    match mode {
        Mode::Exclusive => false,
        Mode::Shared => holders.values().all(|&(m, _)| m == Mode::Shared),
        Mode::Semaphore(n) => {
            holders.values().all(|&(m, _)| m == Mode::Semaphore(n)) && holders.len() < n as usize
        }
    }
}

/// A session asking again for a lock it holds or awaits must ask in the
/// same mode: a different semaphore limit is a `LimitMismatch`, any other
/// change (an upgrade from shared to exclusive, a downgrade, a switch
/// between semaphore and lock) a `ModeConflict`.
fn same_mode(held: Mode, asked: Mode) -> Result<(), LockError> {
    match (held, asked) {
        _ if held == asked => Ok(()),
        (Mode::Semaphore(held), Mode::Semaphore(asked)) => {
            Err(LockError::LimitMismatch { held, asked })
        }
        _ => Err(LockError::ModeConflict { held, asked }),
    }
}

/// The semaphore limit a lock is already used with, if `mode` disagrees.
fn semaphore_limit(lock: &Lock, mode: Mode) -> Option<u32> {
    let Mode::Semaphore(asked) = mode else {
        return None;
    };
    lock.holders
        .values()
        .map(|&(m, _)| m)
        .chain(lock.waiters.iter().map(|w| w.mode))
        .find_map(|m| match m {
            Mode::Semaphore(n) if n != asked => Some(n),
            _ => None,
        })
}

impl StateMachine for LockMachine {
    type Event = Event;

    fn take_events(&mut self) -> Vec<Event> {
        self.drain_events()
    }

    fn apply(&mut self, index: Index, now: Instant, command: &[u8]) -> Vec<u8> {
        let response = match postcard::from_bytes::<Command>(command) {
            Ok(command) => self.apply_command(index, now, command),
            Err(e) => Err(LockError::Malformed(e.to_string())),
        };
        encode(&response)
    }

    fn query(&self, now: Instant, query: &[u8]) -> Vec<u8> {
        let answer = match postcard::from_bytes::<Query>(query) {
            Ok(q) => self.answer(now, q),
            Err(e) => QueryAnswer::Malformed(e.to_string()),
        };
        encode(&answer)
    }

    fn leader_tick(&mut self, now: Instant, term: Term) -> Vec<Vec<u8>> {
        self.leader_commands(now, term).iter().map(encode).collect()
    }

    /// Expiries and undelays rest on the leader's own clock (docs/SAFETY.md
    /// rule 1): a client that could propose one would end any session.
    fn admits_from_client(&self, command: &[u8]) -> Result<(), String> {
        match postcard::from_bytes::<Command>(command) {
            Ok(c) if c.is_leader_only() => Err(format!(
                "{} is decided by the leader's own clock; clients cannot propose it",
                c.label()
            )),
            // An undecodable command is applied as `Malformed`, harmlessly.
            _ => Ok(()),
        }
    }

    /// The replicated state's tables are persistent (`Table`): the copy
    /// shares them, and writes after it copy what they change.
    fn freeze(&self) -> Arc<dyn FrozenState> {
        Arc::new(self.state.clone())
    }

    /// All or nothing: a snapshot that does not decode, or whose tables do
    /// not agree, leaves the machine as it was.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
        let state: State =
            postcard::from_bytes(snapshot).map_err(|e| RestoreError(e.to_string()))?;
        let mut restored = LockMachine {
            config: self.config.clone(),
            totals: Totals::of(&state),
            owned: owned_index(&state),
            state,
            // Own-clock records start over: unknown counts as "now" later.
            local: Local {
                delays_unseeded: true,
                ..Local::default()
            },
        };
        restored.check_invariants().map_err(RestoreError)?;
        if restored.config.reset_tokens_on_restore() {
            restored.state.last_token = 0;
        }
        *self = restored;
        Ok(())
    }
}

impl FrozenState for State {
    fn serialize(&self) -> Result<Vec<u8>, SnapshotError> {
        postcard::to_allocvec(self).map_err(|e| SnapshotError(e.to_string()))
    }
}

/// postcard of our own types into a Vec cannot fail (no maps with
/// non-string keys, no unsized data); an empty output would mean a bug.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).unwrap_or_default()
}

#[cfg(test)]
mod restore_tests {
    use super::*;

    /// Issue 11, item 11: a snapshot whose tables disagree is refused and
    /// leaves the machine as it was (it used to be half restored).
    #[test]
    fn a_restore_is_all_or_nothing() {
        let mut m = LockMachine::new(LockConfig::default());
        let open = Command::Open {
            nonce: 7,
            ttl_ms: 10_000,
        };
        assert!(m.apply_command(1, Instant::ZERO, open).is_ok());
        let before = m.snapshot().unwrap();
        let mut broken = State::default();
        broken.locks.insert(
            "x".into(),
            Lock {
                holders: BTreeMap::from([(99, (Mode::Exclusive, 1))]),
                ..Lock::default()
            },
        );
        broken.last_token = 1;
        let bytes = postcard::to_allocvec(&broken).unwrap();
        assert!(m.restore(&bytes).is_err());
        assert_eq!(m.snapshot().unwrap(), before);
        assert_eq!(m.sessions(), 1);
    }

    /// Issue 11, item 11: `seq` and `acked` are the client's to choose; one
    /// near u64::MAX overflowed the in-flight bound (a debug-build panic).
    #[test]
    fn a_sequence_number_near_the_top_is_refused_not_a_panic() {
        let mut m = LockMachine::new(LockConfig::default());
        let open = Command::Open {
            nonce: 7,
            ttl_ms: 10_000,
        };
        assert!(m.apply_command(1, Instant::ZERO, open).is_ok());
        let req = Request {
            session: 1,
            seq: u64::MAX,
            acked: u64::MAX,
            op: Op::KeepAlive,
        };
        assert_eq!(
            m.apply_command(2, Instant::ZERO, Command::Request(req)),
            Ok(Reply::Renewed)
        );
        let open = Command::Open {
            nonce: 8,
            ttl_ms: 10_000,
        };
        assert!(m.apply_command(3, Instant::ZERO, open).is_ok());
        let req = Request {
            session: 3,
            seq: u64::MAX,
            acked: 0,
            op: Op::KeepAlive,
        };
        assert!(matches!(
            m.apply_command(4, Instant::ZERO, Command::Request(req)),
            Err(LockError::TooManyInflight { .. })
        ));
    }
}
