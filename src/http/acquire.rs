//! `POST /API/v1/locks/{name}`: a try-lock, or a wait in the lock's FIFO
//! queue, within the caller's session or a one-lock session the node opens.
//!
//! What a wait promises (docs/API.md):
//! - the grant it returns answers *this* acquire: a grant is matched by the
//!   log index of the acquire it answers, never by session and lock alone
//!   (a lagging or restarted node replays older grants of both);
//! - a one-lock session is kept alive by the node while the request waits,
//!   so a wait may be longer than the TTL; the answer says how much of the
//!   lease is left (`lease_ms`);
//! - a request that ends without an answer (the client went away) leaves
//!   nothing queued: its wait is cancelled, and a one-lock session closed.

use super::api::{
    check_name, mode_json, mode_of, parse_body, propose_at, request, HttpConfig, Shared,
};
use super::error::ApiError;
use super::peer::{PeerSocket, PEER_CHECK_MS};
use super::waiters::{Signal, Ticket, Waiters, HTTP_WAITS_MAX};
use crate::lock::{
    Command, Grant, LockMachine, Mode, Op, Query, QueryAnswer, Reply, SessionId, Token,
};
use crate::runtime::Node;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// TTL of a session the node opens for a session-less acquire.
pub const TTL_MS_DEFAULT: u64 = 10_000;
/// Longest an acquire may wait in the queue over HTTP.
pub const WAIT_MS_MAX: u64 = 300_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AcquireBody {
    pub ttl_ms: Option<u64>,
    pub wait_ms: Option<u64>,
    pub mode: Option<super::api::ModeName>,
    pub limit: Option<u32>,
    pub session: Option<SessionId>,
}

/// A one-lock session this request opened and keeps alive.
pub(super) struct Owned {
    ttl: Duration,
    /// When the latest renewal (the open, or a keepalive) was sent: the
    /// lease counts from there (docs/SAFETY.md rule 2).
    renewed_at: Instant,
}

pub(super) async fn acquire(
    req: HttpRequest,
    node: Shared,
    settings: web::Data<HttpConfig>,
    waiters: web::Data<Arc<Waiters>>,
    name: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let peer = PeerSocket::of(&req);
    let name = name.into_inner();
    check_name(&name)?;
    let args: AcquireBody = parse_body(&body)?;
    let mode = mode_of(args.mode, args.limit)?;
    let wait_ms = args.wait_ms.unwrap_or(0);
    if wait_ms > WAIT_MS_MAX {
        return Err(ApiError::BadRequest(format!(
            "wait_ms is at most {WAIT_MS_MAX}"
        )));
    }
    let node: Arc<Node<LockMachine>> = node.get_ref().clone();
    let (session, mut owned) = match args.session {
        Some(s) => (s, None),
        None => {
            let ttl_ms = args.ttl_ms.unwrap_or(TTL_MS_DEFAULT);
            let renewed_at = Instant::now();
            let session = super::api::open(&node, ttl_ms).await?;
            let ttl = Duration::from_millis(ttl_ms);
            (session, Some(Owned { ttl, renewed_at }))
        }
    };
    // From here, a request dropped before its answer (the client went
    // away) undoes what it started.
    let mut undo = Undo {
        node: node.clone(),
        session,
        lock: name.clone(),
        close: owned.is_some(),
        cancel: wait_ms > 0,
        armed: true,
    };
    let outcome = acquire_in(
        &node, &waiters, peer, session, &name, mode, wait_ms, &mut owned,
    )
    .await;
    let lease_ms = owned.as_ref().map(|o| lease_left_ms(settings.drift_ppm, o));
    match outcome {
        Ok(token) => {
            undo.armed = false;
            Ok(HttpResponse::Ok().json(serde_json::json!({
                "name": name,
                "token": token,
                "session": session,
                "mode": mode_json(mode),
                // The TTL of a session this call opened, and how much of its
                // lease is left as the node answers; an existing session's
                // are in GET /API/v1/sessions/{id}.
                "ttl_ms": owned.as_ref().map(|o| o.ttl.as_millis() as u64),
                "lease_ms": lease_ms,
            })))
        }
        Err(e) => {
            // A one-lock session that served nothing is closed now, not left
            // to expire. A timed-out wait was cancelled already; one whose
            // client went away, or whose outcome is unknown (leadership
            // changed), may still be queued.
            let gone = matches!(e, ApiError::Gone(_));
            undo.close = owned.is_some() && !gone;
            let unknown = matches!(e, ApiError::Unavailable(_) | ApiError::ClientGone);
            undo.cancel = wait_ms > 0 && unknown;
            if matches!(e, ApiError::ClientGone) {
                node.metrics().operation("wait", "abandoned");
            }
            undo.run_now().await;
            Err(e)
        }
    }
}

/// The part of an owned session's lease that is certain to remain, in ms:
/// the client trusts `TTL * (1 - ρ)` from the renewal's send.
fn lease_left_ms(drift_ppm: u32, owned: &Owned) -> u64 {
    let trusted = owned.ttl.saturating_sub(owned.ttl * drift_ppm / 1_000_000);
    trusted
        .saturating_sub(owned.renewed_at.elapsed())
        .as_millis() as u64
}

/// Proposes the acquire and, if it queues, waits for its grant.
#[allow(clippy::too_many_arguments)]
async fn acquire_in(
    node: &Node<LockMachine>,
    waiters: &Waiters,
    peer: Option<PeerSocket>,
    session: SessionId,
    lock: &str,
    mode: Mode,
    wait_ms: u64,
    owned: &mut Option<Owned>,
) -> Result<Token, ApiError> {
    // A waiting acquire registers before asking, so a grant cannot slip
    // between the two; a try-lock needs no events.
    let mut ticket =
        match wait_ms {
            0 => None,
            _ => Some(waiters.register(session, lock).ok_or_else(|| {
                ApiError::TooMany(format!("{HTTP_WAITS_MAX} requests already wait"))
            })?),
        };
    let op = Op::Acquire {
        lock: lock.to_string(),
        mode,
        wait: wait_ms > 0,
    };
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    let proposed = propose_at(node, &Command::Unsequenced { session, op }).await;
    let result = match (proposed, ticket.as_mut()) {
        (Ok((Reply::Granted { token }, _)), _) => Ok(token),
        (Ok((Reply::Queued { .. }, acquire)), Some(ticket)) => {
            let ours = |g: &Grant| g.acquire == acquire;
            let waited =
                match wait_for_grant(node, waiters, peer, ticket, ours, deadline, owned).await {
                    Ok(Some(token)) => Ok(token),
                    // The wait is over: cancel, which also says whether the
                    // grant won the race.
                    Ok(None) => {
                        let cancel = Op::Cancel {
                            lock: lock.to_string(),
                        };
                        match request(node, session, cancel).await {
                            Ok(Reply::Granted { token }) => Ok(token),
                            Ok(_) => Err(ApiError::Conflict(format!(
                                "lock {lock} not granted within {wait_ms} ms"
                            ))),
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                };
            let result = match &waited {
                Ok(_) => "granted",
                Err(ApiError::Conflict(_)) => "timed_out",
                Err(_) => "error",
            };
            node.metrics().operation("wait", result);
            waited
        }
        (Ok((other, _)), _) => Err(super::api::unexpected(other)),
        (Err(e), _) => Err(e),
    };
    if let Some(ticket) = &ticket {
        waiters.unregister(ticket);
    }
    result
}

/// Waits until `ticket`'s session is granted its lock by the grant `ours`
/// accepts (the one answering its own acquire), renewing an owned session
/// every TTL/3; `None` at `deadline`. Used by HTTP acquires and by the
/// native protocol's waits.
pub(super) async fn wait_for_grant(
    node: &Node<LockMachine>,
    waiters: &Waiters,
    peer: Option<PeerSocket>,
    ticket: &mut Ticket,
    ours: impl Fn(&Grant) -> bool,
    deadline: Instant,
    owned: &mut Option<Owned>,
) -> Result<Option<Token>, ApiError> {
    let (session, lock) = ticket.key();
    let lock = lock.to_string();
    let mut renew_at = owned.as_ref().map(|o| o.renewed_at + o.ttl / 3);
    let mut peer_check = tokio::time::interval(Duration::from_millis(PEER_CHECK_MS));
    loop {
        let renew = async {
            match renew_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            signal = &mut ticket.signal => {
                if let Ok(Signal::Granted(g)) = signal {
                    if ours(&g) {
                        return Ok(Some(g.token));
                    }
                }
                // Not ours (an older grant replayed), or events were
                // missed: register again, then look it up, in that order
                // so a grant applied in between is not missed either.
                waiters.unregister(ticket);
                *ticket = waiters.register(session, &lock).ok_or_else(|| {
                    ApiError::TooMany(format!("{HTTP_WAITS_MAX} requests already wait"))
                })?;
                if let Some(token) = held_token(node, session, &lock).await? {
                    return Ok(Some(token));
                }
            }
            _ = tokio::time::sleep_until(deadline) => return Ok(None),
            // actix-web keeps running a handler whose client went away.
            _ = peer_check.tick(), if peer.is_some() => {
                if peer.is_some_and(|p| p.gone()) {
                    return Err(ApiError::ClientGone);
                }
            }
            _ = renew => {
                let Some(o) = owned.as_mut() else { continue };
                let sent = Instant::now();
                renew_at = match request(node, session, Op::KeepAlive).await {
                    Ok(_) => {
                        o.renewed_at = sent;
                        Some(sent + o.ttl / 3)
                    }
                    // Expired under us (a partition delayed the renewals):
                    // the wait is over.
                    Err(e @ ApiError::Gone(_)) => return Err(e),
                    // Unavailable for a moment: try again soon.
                    Err(_) => Some(Instant::now() + o.ttl / 12),
                };
            }
        }
    }
}

/// The token `session` holds `lock` with, if it does (a linearizable read:
/// after the acquire queued, only its grant can make the session hold it).
pub(super) async fn held_token(
    node: &Node<LockMachine>,
    session: SessionId,
    lock: &str,
) -> Result<Option<Token>, ApiError> {
    match super::api::query(node, &Query::Session { session }).await? {
        QueryAnswer::Session(Some(info)) => {
            Ok(info.held.iter().find(|(l, _)| l == lock).map(|(_, t)| *t))
        }
        QueryAnswer::Session(None) => Err(ApiError::Gone(session)),
        other => Err(ApiError::Unavailable(format!(
            "unexpected answer {other:?}"
        ))),
    }
}

/// What an acquire request leaves behind if it ends without an answer:
/// the client disconnected while it waited (seen by `PeerSocket`, or the
/// handler dropped), or it failed. Cancels the wait, and closes a one-lock session the request
/// opened (which also releases a grant nobody was told of). A grant made
/// in the caller's own session just before it went away stays there, as
/// GET /API/v1/sessions/{id} shows: it cannot be told from an older one.
struct Undo {
    node: Arc<Node<LockMachine>>,
    session: SessionId,
    lock: String,
    close: bool,
    cancel: bool,
    armed: bool,
}

impl Undo {
    async fn run_now(&mut self) {
        self.armed = false;
        undo(
            self.node.clone(),
            self.session,
            self.lock.clone(),
            self.close,
            self.cancel,
        )
        .await;
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if !self.armed || !(self.close || self.cancel) {
            return;
        }
        // A handler is dropped on its worker's thread; during shutdown there
        // may be no runtime left to run the undo (the session then expires).
        if actix_rt::Arbiter::try_current().is_none() {
            return;
        }
        let (node, session, lock) = (self.node.clone(), self.session, self.lock.clone());
        let (close, cancel) = (self.close, self.cancel);
        actix_rt::spawn(async move {
            node.metrics().operation("wait", "abandoned");
            undo(node, session, lock, close, cancel).await;
        });
    }
}

async fn undo(
    node: Arc<Node<LockMachine>>,
    session: SessionId,
    lock: String,
    close: bool,
    cancel: bool,
) {
    if close {
        let _ = request(&node, session, Op::Close).await;
    } else if cancel {
        let _ = request(&node, session, Op::Cancel { lock }).await;
    }
}
