//! What clients and the leader put in the log, and what comes back.
//!
//! Everything here is encoded with postcard: log entries are
//! `postcard(Command)`, their outputs `postcard(Response)`, reads
//! `postcard(Query)` answered by `postcard(QueryAnswer)`.

use super::auth::{CredentialId, CredentialInfo, Policy, SecretHash};
use crate::raft::Index;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A session's id: the log index of the entry that opened it, so ids are
/// never reused, even across restarts and snapshots.
pub type SessionId = u64;
/// A fencing token: distinct per grant and strictly increasing per lock.
pub type Token = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Mode {
    /// One holder (a writer).
    Exclusive,
    /// Any number of holders, none exclusive (readers).
    Shared,
    /// Up to `n` holders, each with its own token (a counting semaphore).
    /// Every holder and waiter of a lock must agree on `n`.
    Semaphore(u32),
}

/// One log entry of the lock service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Opens a session. `nonce` (client-chosen, random) makes a retried
    /// open return the session the first one created.
    Open { nonce: u64, ttl_ms: u64 },
    /// A request within a session, applied exactly once.
    Request(Request),
    /// A request without a sequence number (plain HTTP calls such as
    /// curl's): run every time it is applied, response not kept. A retry
    /// may run twice; clients that retry use `Request`.
    Unsequenced { session: SessionId, op: Op },
    /// Proposed by a leader whose own clock says the session's lease is
    /// over; `renewal` is the renewal entry that decision rests on, and the
    /// expiry does nothing if the session was renewed since.
    Expire { session: SessionId, renewal: Index },
    /// Proposed by a leader once the lock-delay of a lock freed by the
    /// expiry at index `freed` has passed.
    Undelay { lock: String, freed: Index },
    /// `command` (a postcard `Command`) on behalf of `credential`, which
    /// the proposing node has authenticated; applied only while the
    /// credential exists and if its policy allows it. Only nodes wrap: no
    /// client door accepts it. Bytes, not a nested `Command`: decoding a
    /// client's bytes must never recurse (`As` in `As` in ... would
    /// overflow the stack), and the inner one is decoded once, at apply.
    As {
        credential: CredentialId,
        #[serde(with = "serde_bytes")]
        command: Vec<u8>,
    },
    /// Creates the cluster's first admin credential; does nothing once any
    /// credential was ever created. Proposed by the bootstrapping node.
    Bootstrap { id: CredentialId, hash: SecretHash },
    /// Admin only (inside `As`).
    CreateCredential {
        id: CredentialId,
        name: String,
        hash: SecretHash,
        policy: Policy,
    },
    /// Admin only (inside `As`). The credential's sessions are not ended:
    /// nothing can renew them any more, so they expire.
    RevokeCredential { id: CredentialId },
    /// Keepalives that reached one node during one turn of its request
    /// layer, renewed by one entry (docs/SAFETY.md section 3: each replica
    /// counts every lease in it from its own apply of this entry, as it
    /// would for each keepalive alone). Each item is an encoded
    /// `Unsequenced { op: KeepAlive }`, inside `As` when a credential sent
    /// it; each is checked and answered on its own. Only nodes send it.
    KeepAlives(Vec<serde_bytes::ByteBuf>),
}

/// Keepalives one `Command::KeepAlives` entry carries at most: 512 items
/// of at most `KEEPALIVE_ITEM_BYTES_MAX` stay under 16 KiB, the smallest
/// entry bound anything runs with (the simulator's tight limits).
pub const KEEPALIVES_PER_ENTRY_MAX: usize = 512;
/// Encoded bytes of one item: `As` (tag, credential id, length) around
/// `Unsequenced` (tag, session id, op), varints at their widest.
pub const KEEPALIVE_ITEM_BYTES_MAX: usize = 1 + 10 + 1 + (1 + 10 + 1);

/// A session request. `seq` numbers requests per session from 1; every
/// response with a sequence number `<= acked` has reached the client and
/// may be forgotten (Raft thesis 6.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub session: SessionId,
    pub seq: u64,
    pub acked: u64,
    pub op: Op,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Renews the session's lease.
    KeepAlive,
    /// Ends the session: releases what it holds, cancels its waits.
    Close,
    /// Takes a lock, or (`wait`) joins its FIFO queue.
    Acquire {
        lock: String,
        mode: Mode,
        wait: bool,
    },
    /// Leaves the queue of a lock (the client's wait timed out).
    Cancel { lock: String },
    /// Gives a held lock back; `token` proves which grant is released.
    Release { lock: String, token: Token },
    /// Appends to the fenced file guarded by the lock of the same name;
    /// accepted only with the current exclusive holder's token.
    Append {
        file: String,
        token: Token,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
}

impl Command {
    /// Commands only a leader proposes, from its own clock (docs/SAFETY.md
    /// rule 1); refused from every client door.
    pub fn is_leader_only(&self) -> bool {
        match self {
            Command::Expire { .. } | Command::Undelay { .. } => true,
            // One level only (see `As`): a nested `As` is refused at apply.
            Command::As { command, .. } => postcard::from_bytes::<Command>(command)
                .is_ok_and(|c| matches!(c, Command::Expire { .. } | Command::Undelay { .. })),
            _ => false,
        }
    }

    /// What a client may send through the native door: its own session
    /// commands. Wrapping in `As` and the credential commands are the
    /// node's (after it authenticated the caller), expiries the leader's.
    pub fn is_client_command(&self) -> bool {
        matches!(
            self,
            Command::Open { .. } | Command::Request(_) | Command::Unsequenced { .. }
        )
    }

    /// The operation, as a metrics label.
    pub fn label(&self) -> &'static str {
        match self {
            Command::Open { .. } => "open",
            Command::Request(Request { op, .. }) | Command::Unsequenced { op, .. } => op.label(),
            Command::Expire { .. } => "expire",
            Command::Undelay { .. } => "undelay",
            Command::As { command, .. } => match postcard::from_bytes::<Command>(command) {
                Ok(Command::As { .. }) | Err(_) => "as",
                Ok(inner) => inner.label(),
            },
            Command::Bootstrap { .. } => "bootstrap",
            Command::CreateCredential { .. } => "create_credential",
            Command::RevokeCredential { .. } => "revoke_credential",
            Command::KeepAlives(_) => "keepalives",
        }
    }
}

impl Op {
    /// The operation, as a metrics label.
    pub fn label(&self) -> &'static str {
        match self {
            Op::KeepAlive => "keepalive",
            Op::Close => "close",
            Op::Acquire { wait: false, .. } => "try_acquire",
            Op::Acquire { wait: true, .. } => "acquire",
            Op::Cancel { .. } => "cancel",
            Op::Release { .. } => "release",
            Op::Append { .. } => "append",
        }
    }
}

/// A response's outcome, as a metrics label.
pub fn outcome_label(response: &Response) -> &'static str {
    match response {
        Ok(Reply::Opened { .. }) => "opened",
        Ok(Reply::Renewed) => "renewed",
        Ok(Reply::Closed) => "closed",
        Ok(Reply::Granted { .. }) => "granted",
        Ok(Reply::Queued { .. }) => "queued",
        Ok(Reply::Cancelled) => "cancelled",
        Ok(Reply::Released) => "released",
        Ok(Reply::Appended { .. }) => "appended",
        Ok(Reply::Internal { effective: true }) => "effective",
        Ok(Reply::Internal { effective: false }) => "no_effect",
        Ok(Reply::CredentialCreated { .. }) => "credential_created",
        Ok(Reply::CredentialRevoked) => "credential_revoked",
        Ok(Reply::KeepAlives(_)) => "renewed_batch",
        Err(e) => match e {
            LockError::SessionNotFound(_) => "session_not_found",
            LockError::SequenceTooOld { .. } => "sequence_too_old",
            LockError::TooManyInflight { .. } => "too_many_inflight",
            LockError::BadName { .. } => "bad_name",
            LockError::TtlOutOfRange { .. } => "bad_ttl",
            LockError::ZeroLimit => "bad_limit",
            LockError::TooManySessions(_)
            | LockError::TooManyLocks(_)
            | LockError::TooManyWaiters(_)
            | LockError::TooManyFiles(_)
            | LockError::FilesFull(_)
            | LockError::LockTablesFull(_) => "limit_reached",
            LockError::Busy => "busy",
            LockError::LimitMismatch { .. } => "limit_mismatch",
            LockError::ModeConflict { .. } => "mode_conflict",
            LockError::NotHolder => "not_holder",
            LockError::UnknownLock => "unknown_lock",
            LockError::NotWaiting => "not_waiting",
            LockError::StaleToken { .. } => "stale_token",
            LockError::FileTooLarge(_) => "file_too_large",
            LockError::Malformed(_) => "malformed",
            LockError::Unauthenticated => "unauthenticated",
            LockError::Forbidden(_) => "forbidden",
            LockError::CredentialExists | LockError::UnknownCredential => "bad_credential",
            LockError::TooManyCredentials(_)
            | LockError::CredentialSessionsFull(_)
            | LockError::CredentialLocksFull(_) => "limit_reached",
            LockError::BadPolicy(_) => "bad_policy",
        },
    }
}

/// What a command's entry produced.
pub type Response = Result<Reply, LockError>;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Opened {
        session: SessionId,
        ttl_ms: u64,
    },
    Renewed,
    Closed,
    Granted {
        token: Token,
    },
    /// Waiting, `position` waiters ahead (0: next).
    Queued {
        position: u32,
    },
    Cancelled,
    Released,
    Appended {
        offset: u64,
    },
    /// An expiry, undelay or bootstrap entry: whether it did anything.
    Internal {
        effective: bool,
    },
    CredentialCreated {
        id: CredentialId,
    },
    CredentialRevoked,
    /// Each keepalive's own response, in the order of `Command::KeepAlives`.
    KeepAlives(Vec<Response>),
}

/// Why a request was refused. The error is the request's one and only
/// outcome: a retry gets the same answer.
#[derive(Clone, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum LockError {
    #[error("session {0} does not exist (closed or expired)")]
    SessionNotFound(SessionId),
    #[error("request {seq} is older than the responses kept (acked {acked})")]
    SequenceTooOld { seq: u64, acked: u64 },
    #[error("request {seq} is more than {inflight_max} ahead of acked {acked}")]
    TooManyInflight {
        seq: u64,
        acked: u64,
        inflight_max: u64,
    },
    #[error("name of {len} bytes is empty or longer than {max}")]
    BadName { len: usize, max: usize },
    #[error("ttl {ttl_ms} ms is outside {min_ms}..={max_ms} ms")]
    TtlOutOfRange {
        ttl_ms: u64,
        min_ms: u64,
        max_ms: u64,
    },
    #[error("semaphore limit must be at least 1")]
    ZeroLimit,
    #[error("the cluster holds its maximum of {0} sessions")]
    TooManySessions(usize),
    #[error("the session holds or awaits its maximum of {0} locks")]
    TooManyLocks(usize),
    #[error("the lock has its maximum of {0} waiters")]
    TooManyWaiters(usize),
    #[error("the lock is taken (try-lock does not wait)")]
    Busy,
    #[error("the lock is a semaphore of {held}; asked for {asked}")]
    LimitMismatch { held: u32, asked: u32 },
    /// The session holds (or awaits) the lock in another mode: upgrades and
    /// downgrades are refused, never granted beside other holders.
    #[error(
        "the session holds or awaits this lock as {held:?}; asked for {asked:?} (release it first)"
    )]
    ModeConflict { held: Mode, asked: Mode },
    #[error("the session does not hold this lock with that token")]
    NotHolder,
    #[error("no such lock (nobody holds or awaits it)")]
    UnknownLock,
    #[error("the session is not waiting for this lock")]
    NotWaiting,
    #[error("token {token} is not the current exclusive holder's of the guarding lock")]
    StaleToken { token: Token },
    #[error("the file would exceed {0} bytes")]
    FileTooLarge(usize),
    #[error("the cluster holds its maximum of {0} files")]
    TooManyFiles(usize),
    #[error("the fenced files hold their maximum of {0} bytes together")]
    FilesFull(usize),
    #[error("the lock tables hold their maximum of {0} holders and waiters")]
    LockTablesFull(usize),
    #[error("the command does not decode: {0}")]
    Malformed(String),
    /// The credential does not exist (revoked, or never created).
    #[error("unknown or revoked credential")]
    Unauthenticated,
    /// The credential exists but its policy does not allow this, or the
    /// session belongs to another credential.
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("a credential with this id exists")]
    CredentialExists,
    #[error("no such credential")]
    UnknownCredential,
    #[error("the cluster holds its maximum of {0} credentials")]
    TooManyCredentials(usize),
    #[error("bad policy: {0}")]
    BadPolicy(String),
    #[error("the credential holds its maximum of {0} sessions")]
    CredentialSessionsFull(usize),
    #[error("the credential's sessions hold or await their maximum of {0} locks")]
    CredentialLocksFull(usize),
}

/// A linearizable read, answered through ReadIndex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    Lock {
        name: String,
    },
    Session {
        session: SessionId,
    },
    /// The response to a request, if still kept: how a waiting client
    /// polls for its grant.
    Response {
        session: SessionId,
        seq: u64,
    },
    File {
        name: String,
    },
    /// Live sessions, in id order after `after`, at most `limit` (inside
    /// `As`, a non-admin credential sees its own only).
    Sessions {
        after: SessionId,
        limit: u32,
    },
    /// `query` (a postcard `Query`) on behalf of `credential` (see
    /// `Command::As`; bytes for the same reason).
    As {
        credential: CredentialId,
        #[serde(with = "serde_bytes")]
        query: Vec<u8>,
    },
    /// Every credential, without secrets (admin only inside `As`).
    Credentials,
    /// One credential's stored hash and whether it is an admin: for a node
    /// whose own table does not know the id yet (just created elsewhere).
    /// Never from a client door.
    Credential {
        id: CredentialId,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueryAnswer {
    Lock(LockInfo),
    Session(Option<SessionInfo>),
    Response(Option<Response>),
    File(Option<FileInfo>),
    Sessions(Vec<(SessionId, SessionInfo)>),
    Malformed(String),
    Credentials(Vec<CredentialInfo>),
    Credential(Option<(SecretHash, bool)>),
    /// The credential of a `Query::As` is unknown, or not allowed this.
    Refused(LockError),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub holders: Vec<HolderInfo>,
    /// In queue order.
    pub waiters: Vec<(SessionId, Mode)>,
    /// Freed by an expiry and in its lock-delay.
    pub delayed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderInfo {
    pub session: SessionId,
    pub mode: Mode,
    pub token: Token,
    /// How long, at most, the answering node will wait before expiring the
    /// holder's session if it is not renewed (its own clock, drift bound
    /// included); `None` while unknown (just restored from a snapshot).
    pub expires_in_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub ttl_ms: u64,
    pub held: Vec<(String, Token)>,
    pub waiting: Vec<String>,
    pub expires_in_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// The highest token that appended.
    pub token: Token,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// A grant, as it happened at log index `index`. `queued` grants were made
/// by another entry (a release, cancel or expiry) to a waiting acquire: the
/// node serving that client pushes them (the client also polls, see
/// `Query::Response`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub index: Index,
    /// The log index of the acquire this grant answers (`index` itself for
    /// an immediate grant): a waiter matches a grant to its own acquire by
    /// this, never by session and lock alone, which an older grant replayed
    /// by a lagging or restarted replica would also match.
    pub acquire: Index,
    pub session: SessionId,
    pub seq: u64,
    pub lock: String,
    pub mode: Mode,
    pub token: Token,
    pub queued: bool,
}

/// What applying an entry did, as a replica saw it: for drivers (push
/// queued grants to clients) and for the simulator's checkers. Kept per
/// replica, never replicated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    Granted(Grant),
    /// A request ran (a retry answered from the kept response does not).
    Executed {
        index: Index,
        session: SessionId,
        seq: u64,
    },
    /// A session ended: closed by its client, or expired by the leader.
    Ended {
        index: Index,
        session: SessionId,
        expired: bool,
        held: Vec<(String, Token)>,
    },
    Undelayed {
        index: Index,
        lock: String,
    },
    /// A holder gave the lock back (a session's end is `Ended`).
    Released {
        index: Index,
        session: SessionId,
        lock: String,
        token: Token,
    },
    /// The machine dropped this many events because nobody drained them
    /// (`Limits::events_pending_max`): a subscriber may have missed a grant
    /// and must look its waits up. Local, never replicated.
    Missed {
        count: u64,
    },
    /// A waiting acquire left the queue ungranted.
    Cancelled {
        index: Index,
        session: SessionId,
        lock: String,
    },
}
