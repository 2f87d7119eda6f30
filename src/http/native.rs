//! The native protocol over HTTP (`/API/v1/native/*`, postcard bodies):
//! what the Rust client library's session actor sends. Exactly-once comes
//! from the session's own sequence numbers, not from here.
//!
//! - `propose`: a postcard `Command`, proposed as is. Only client
//!   commands: an expiry or undelay rests on the leader's own clock
//!   (docs/SAFETY.md rule 1) and is refused with 403 before it reaches Raft
//!   (which refuses it too, whatever door it came through).
//! - `read`: a postcard `Query`, read through ReadIndex.
//! - `wait`: a postcard `session::WaitFor`, the long poll of a queued
//!   acquire for its grant.

use super::acquire::{held_token, wait_for_grant};
use super::api::{count, Shared};
use super::error::ApiError;
use super::waiters::{Waiters, HTTP_WAITS_MAX};
use crate::lock::{encode, Command, LockError, Query, QueryAnswer, Reply};
use crate::raft::{Applied, RequestError};
use crate::runtime::ClientError;
use crate::session::WaitFor;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Longest a node holds a native wait before answering "not yet".
pub const NATIVE_WAIT_MS_MAX: u64 = 30_000;

/// The native protocol's answer to one message (postcard): what the client
/// session actor needs to tell apart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NativeReply {
    /// The state machine's output: a `Response` or a `QueryAnswer`.
    Output(#[serde(with = "serde_bytes")] Vec<u8>),
    NotLeader(Option<u64>),
    /// Retry, maybe elsewhere; for a proposal the outcome is unknown.
    Unavailable(String),
    /// Refused for good, wherever it is sent (too large, not allowed):
    /// retrying cannot help, and nothing was appended.
    Refused(String),
}

fn reply(reply: NativeReply) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/octet-stream")
        .body(encode(&reply))
}

fn answered(result: Result<Applied, ClientError>) -> HttpResponse {
    reply(match result {
        Ok(applied) => NativeReply::Output(applied.output),
        Err(ClientError::Rejected(RequestError::NotLeader { leader })) => {
            NativeReply::NotLeader(leader)
        }
        Err(ClientError::Rejected(
            e @ (RequestError::TooLarge { .. } | RequestError::NotAllowed(_)),
        )) => NativeReply::Refused(e.to_string()),
        Err(e) => NativeReply::Unavailable(e.to_string()),
    })
}

pub(super) async fn propose(node: Shared, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let command = postcard::from_bytes::<Command>(&body)
        .map_err(|e| ApiError::BadRequest(format!("not a command: {e}")))?;
    if command.is_leader_only() {
        return Err(ApiError::Forbidden(format!(
            "{} is decided by the leader's own clock; clients cannot propose it",
            command.label()
        )));
    }
    let proposed = node.propose(body.to_vec()).await;
    count(&node, &command, &proposed);
    Ok(answered(proposed))
}

pub(super) async fn read(node: Shared, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    postcard::from_bytes::<Query>(&body)
        .map_err(|e| ApiError::BadRequest(format!("not a query: {e}")))?;
    Ok(answered(node.read(body.to_vec()).await))
}

/// Holds a queued acquire's wait until its grant (the one carrying its
/// sequence number) or `timeout_ms`: `Response(Some(Granted))`, or
/// `Response(None)` for "not yet, ask again". Registered before the
/// session is looked up, so a grant cannot slip between the two.
pub(super) async fn wait(
    req: actix_web::HttpRequest,
    node: Shared,
    waiters: web::Data<Arc<Waiters>>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let w = postcard::from_bytes::<WaitFor>(&body)
        .map_err(|e| ApiError::BadRequest(format!("not a wait: {e}")))?;
    super::api::check_name(&w.lock)?;
    let Some(mut ticket) = waiters.register(w.session, &w.lock) else {
        return Err(ApiError::TooMany(format!(
            "{HTTP_WAITS_MAX} requests already wait"
        )));
    };
    let timeout = Duration::from_millis(w.timeout_ms.min(NATIVE_WAIT_MS_MAX));
    let deadline = tokio::time::Instant::now() + timeout;
    // The acquire queued before this wait was sent: if the session holds
    // the lock now, it is this grant.
    let found = match held_token(&node, w.session, &w.lock).await {
        Ok(Some(token)) => Ok(Some(token)),
        Ok(None) => {
            let ours = |g: &crate::lock::Grant| g.seq == w.seq;
            let peer = super::peer::PeerSocket::of(&req);
            wait_for_grant(
                &node,
                &waiters,
                peer,
                &mut ticket,
                ours,
                deadline,
                &mut None,
            )
            .await
        }
        Err(e) => Err(e),
    };
    waiters.unregister(&ticket);
    let answer = match found {
        Ok(Some(token)) => QueryAnswer::Response(Some(Ok(Reply::Granted { token }))),
        Ok(None) => QueryAnswer::Response(None),
        Err(ApiError::Gone(session)) => {
            QueryAnswer::Response(Some(Err(LockError::SessionNotFound(session))))
        }
        Err(e) => return Ok(reply(NativeReply::Unavailable(e.to_string()))),
    };
    Ok(reply(NativeReply::Output(encode(&answer))))
}
