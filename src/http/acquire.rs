//! `POST /API/v1/locks/{name}`: a try-lock, or a wait in the lock's FIFO
//! queue, within the caller's session or a one-lock session the node opens.
//! What the wait does and promises is the request layer's
//! (`crate::gateway`, docs/API.md); this handler parses the body, makes the
//! call and renders the answer.

use super::api::{mode_of, parse_body, Gateway};
use super::error::ApiError;
use super::peer::PeerSocket;
use super::responses::LockGranted;
use crate::gateway::{AcquireArgs, Answer, Request, SessionChoice, TTL_MS_DEFAULT};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AcquireBody {
    /// TTL of the one-lock session the node opens (without `session`).
    pub ttl_ms: Option<u64>,
    /// How long to wait in the lock's FIFO queue (0: try once).
    pub wait_ms: Option<u64>,
    pub mode: Option<super::api::ModeName>,
    /// The semaphore's limit (with mode "semaphore").
    pub limit: Option<u32>,
    /// Acquire in this session (yours) instead of a one-lock session.
    // `u64`, not `SessionId`: utoipa cannot see through an alias.
    pub session: Option<u64>,
}

#[utoipa::path(post, path = "/API/v1/locks/{name}", tag = "locks", summary = "Acquire a lock, or wait for it in its FIFO queue; the answer carries the fencing token", params(("name" = String, Path, description = "Lock name, 1 to 256 bytes; may contain /")), request_body(content = Option<AcquireBody>, description = "All optional"), responses((status = 200, description = "Granted", body = LockGranted), (status = 409, description = "Not granted (taken, or the wait ran out)", body = super::error::ErrorBody), (status = 410, description = "Session expired", body = super::error::ErrorBody), (status = 429, description = "Limits", body = super::error::ErrorBody), (status = 400, description = "Malformed input", body = super::error::ErrorBody), (status = 401, description = "No valid credential", body = super::error::ErrorBody), (status = 403, description = "Not allowed to this credential", body = super::error::ErrorBody), (status = 503, description = "No leader; retry", body = super::error::ErrorBody)))]
pub(super) async fn acquire(
    req: HttpRequest,
    gateway: Gateway,
    caller: super::auth::Caller,
    name: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let args: AcquireBody = parse_body(&body)?;
    let mode = mode_of(args.mode, args.limit)?;
    let session =
        match (args.session, args.ttl_ms) {
            (Some(s), None) => SessionChoice::Existing(s),
            (Some(_), Some(_)) => return Err(ApiError::BadRequest(
                "\"ttl_ms\" is for the session the node opens; an existing session keeps its own"
                    .into(),
            )),
            (None, ttl_ms) => SessionChoice::OneLock {
                ttl_ms: ttl_ms.unwrap_or(TTL_MS_DEFAULT),
                // Makes a retried open return the same session: from the OS's
                // randomness, so two callers (or two nodes) never share one.
                nonce: crate::entropy::random_u64().map_err(|e| {
                    ApiError::Unavailable(format!("no randomness for a session nonce: {e}"))
                })?,
            },
        };
    let request = Request::Acquire(AcquireArgs {
        lock: name.into_inner(),
        mode,
        wait_ms: args.wait_ms.unwrap_or(0),
        session,
    });
    match gateway
        .call(caller.credential, request, PeerSocket::of(&req))
        .await?
    {
        Answer::Acquired(a) => Ok(HttpResponse::Ok().json(LockGranted {
            lease_ms: a.lease_ms,
            mode: a.mode.into(),
            name: a.lock,
            session: a.session,
            token: a.token,
            ttl_ms: a.ttl_ms,
        })),
        other => Err(ApiError::Unavailable(format!(
            "unexpected answer {other:?}"
        ))),
    }
}
