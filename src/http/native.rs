//! The native protocol over HTTP (`/API/v1/native/*`, postcard bodies):
//! what the Rust client library's session actor sends. Exactly-once comes
//! from the session's own sequence numbers, not from here; what a call
//! does is the request layer's (`crate::gateway`).
//!
//! - `propose`: a postcard `Command`, proposed as is. Only client
//!   commands: an expiry or undelay rests on the leader's own clock
//!   (docs/SAFETY.md rule 1) and is refused with 403 before it reaches Raft
//!   (which refuses it too, whatever door it came through).
//! - `read`: a postcard `Query`, read through ReadIndex.
//! - `wait`: a postcard `session::WaitFor`, the long poll of a queued
//!   acquire for its grant.

use super::api::Gateway;
use super::auth::Caller;
use super::error::ApiError;
use super::peer::PeerSocket;
use crate::gateway::{node_reply, GatewayError, Request};
use crate::lock::{encode, LockError};
pub use crate::net::native::NativeReply;
use crate::session::{NodeReply, WaitFor};
use actix_web::{web, HttpRequest, HttpResponse};

/// Answers a native call: malformed or forbidden calls with a 4xx (the
/// node's final word), anything else with a `NativeReply`, mapped as the
/// simulator maps it (`gateway::node_reply`).
async fn native(
    gateway: Gateway,
    caller: Caller,
    request: Request,
    peer: Option<PeerSocket>,
) -> HttpResponse {
    let Some(result) = gateway.ask(caller.credential, request, peer).await else {
        return actix_web::ResponseError::error_response(&ApiError::ClientGone);
    };
    match native_reply(result) {
        Ok(reply) => HttpResponse::Ok()
            .content_type("application/octet-stream")
            .body(encode(&reply)),
        Err(e) => actix_web::ResponseError::error_response(&ApiError::from(e)),
    }
}

/// A call's outcome as the native protocol answers it, mapped as the
/// simulator maps it (`gateway::node_reply`); `Err` for what is the
/// caller's fault (malformed, forbidden), which HTTP answers with a 4xx
/// and the native stream with `Refused`.
pub(super) fn native_reply(
    result: Result<crate::gateway::Answer, GatewayError>,
) -> Result<NativeReply, GatewayError> {
    if let Err(
        e @ (GatewayError::BadRequest(_)
        | GatewayError::Forbidden(_)
        | GatewayError::Lock(LockError::Forbidden(_) | LockError::Unauthenticated)),
    ) = result
    {
        return Err(e);
    }
    let why = result.as_ref().err().map(ToString::to_string);
    Ok(match node_reply(result) {
        NodeReply::Output(o) => NativeReply::Output(o),
        NodeReply::NotLeader(l) => NativeReply::NotLeader(l),
        NodeReply::Refused(why) => NativeReply::Refused(why),
        NodeReply::Unavailable => NativeReply::Unavailable(why.unwrap_or_default()),
    })
}

#[utoipa::path(post, path = "/API/v1/native/propose", tag = "native", summary = "The client library's protocol: a postcard lock::Command (the caller's own session commands only)", request_body(content = Vec<u8>, content_type = "application/octet-stream"), responses((status = 200, description = "A postcard NativeReply", content_type = "application/octet-stream"), (status = 400, description = "Malformed input", body = super::error::ErrorBody), (status = 401, description = "No valid credential", body = super::error::ErrorBody), (status = 403, description = "Not allowed to this credential", body = super::error::ErrorBody), (status = 503, description = "No leader; retry", body = super::error::ErrorBody)))]
pub(super) async fn propose(gateway: Gateway, caller: Caller, body: web::Bytes) -> HttpResponse {
    native(gateway, caller, Request::Propose(body.to_vec()), None).await
}

#[utoipa::path(post, path = "/API/v1/native/read", tag = "native", summary = "The client library's protocol: a postcard lock::Query, linearizable", request_body(content = Vec<u8>, content_type = "application/octet-stream"), responses((status = 200, description = "A postcard NativeReply", content_type = "application/octet-stream"), (status = 400, description = "Malformed input", body = super::error::ErrorBody), (status = 401, description = "No valid credential", body = super::error::ErrorBody), (status = 403, description = "Not allowed to this credential", body = super::error::ErrorBody), (status = 503, description = "No leader; retry", body = super::error::ErrorBody)))]
pub(super) async fn read(gateway: Gateway, caller: Caller, body: web::Bytes) -> HttpResponse {
    native(gateway, caller, Request::Read(body.to_vec()), None).await
}

/// Holds a queued acquire's wait until its grant (the one carrying its
/// sequence number) or `timeout_ms`: `Response(Some(Granted))`, or
/// `Response(None)` for "not yet, ask again".
#[utoipa::path(post, path = "/API/v1/native/wait", tag = "native", summary = "The client library's protocol: long poll of a queued acquire for its grant (postcard session::WaitFor)", request_body(content = Vec<u8>, content_type = "application/octet-stream"), responses((status = 200, description = "A postcard NativeReply", content_type = "application/octet-stream"), (status = 400, description = "Malformed input", body = super::error::ErrorBody), (status = 401, description = "No valid credential", body = super::error::ErrorBody), (status = 403, description = "Not allowed to this credential", body = super::error::ErrorBody), (status = 503, description = "No leader; retry", body = super::error::ErrorBody)))]
pub(super) async fn wait(
    req: HttpRequest,
    gateway: Gateway,
    caller: Caller,
    body: web::Bytes,
) -> HttpResponse {
    match postcard::from_bytes::<WaitFor>(&body) {
        Ok(w) => native(gateway, caller, Request::Wait(w), PeerSocket::of(&req)).await,
        Err(e) => {
            let e = ApiError::BadRequest(format!("not a wait: {e}"));
            actix_web::ResponseError::error_response(&e)
        }
    }
}
