//! The HTTP layer's errors: every one becomes `{"code", "message"}` with a
//! status that says who should act (400 the caller's input, 404/409/410 the
//! state of the lock or session, 503 the cluster, retry later).

use crate::lock::LockError;
use crate::raft::RequestError;
use crate::runtime::NodeError;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// No credential, a malformed one, or one the cluster does not know
    /// (revoked, or wrong secret).
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
    /// Never allowed from this caller (leader-only commands).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("session {0} does not exist (closed or expired)")]
    Gone(u64),
    #[error("{0}")]
    TooMany(String),
    #[error("{0}")]
    TooLarge(String),
    /// No leader, leadership lost mid-request, overloaded, or stopping.
    #[error("{0}")]
    Unavailable(String),
    /// The client closed its connection while its request waited; nobody
    /// reads this answer.
    #[error("the client went away")]
    ClientGone,
    /// Admin requests go to the leader; this node is not it.
    #[error("this node is not the leader; the leader is node {0:?}")]
    NotLeader(Option<u64>),
}

/// Every error's body.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    /// Machine-readable: bad_request, unauthorized, forbidden, not_found,
    /// conflict, session_expired, too_large, not_leader, limit_reached,
    /// unavailable.
    code: &'a str,
    message: String,
}

/// Seconds a client should wait before retrying a 503.
pub const RETRY_AFTER_S: u64 = 1;

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::NotFound(_) => "not_found",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Conflict(_) => "conflict",
            ApiError::Gone(_) => "session_expired",
            ApiError::TooMany(_) => "limit_reached",
            ApiError::TooLarge(_) => "too_large",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::ClientGone => "client_gone",
            ApiError::NotLeader(_) => "not_leader",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            // nginx's "client closed request": never seen by that client.
            ApiError::ClientGone => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            ApiError::NotLeader(_) => StatusCode::MISDIRECTED_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, ApiError::Unavailable(_) | ApiError::TooMany(_)) {
            response.insert_header(("Retry-After", RETRY_AFTER_S.to_string()));
        }
        if matches!(self, ApiError::Unauthorized(_)) {
            response.insert_header(("WWW-Authenticate", "Bearer realm=\"raftlock\""));
        }
        response.json(self.body())
    }
}

impl ApiError {
    /// The JSON body of the error response.
    pub(crate) fn body(&self) -> serde_json::Value {
        serde_json::json!(ErrorBody {
            code: self.code(),
            message: self.to_string(),
        })
    }
}

impl From<LockError> for ApiError {
    fn from(e: LockError) -> Self {
        let m = e.to_string();
        match e {
            LockError::SessionNotFound(id) => ApiError::Gone(id),
            LockError::BadName { .. }
            | LockError::TtlOutOfRange { .. }
            | LockError::ZeroLimit
            | LockError::Malformed(_)
            | LockError::SequenceTooOld { .. } => ApiError::BadRequest(m),
            LockError::TooManySessions(_)
            | LockError::TooManyLocks(_)
            | LockError::TooManyWaiters(_)
            | LockError::TooManyFiles(_)
            | LockError::FilesFull(_)
            | LockError::LockTablesFull(_)
            | LockError::TooManyInflight { .. } => ApiError::TooMany(m),
            LockError::Busy
            | LockError::LimitMismatch { .. }
            | LockError::ModeConflict { .. }
            | LockError::NotHolder
            | LockError::NotWaiting
            | LockError::StaleToken { .. } => ApiError::Conflict(m),
            LockError::UnknownLock => ApiError::NotFound(m),
            LockError::FileTooLarge(_) => ApiError::TooLarge(m),
            LockError::Unauthenticated => ApiError::Unauthorized(m),
            LockError::Forbidden(_) => ApiError::Forbidden(m),
            LockError::CredentialExists => ApiError::Conflict(m),
            LockError::UnknownCredential => ApiError::NotFound(m),
            LockError::TooManyCredentials(_)
            | LockError::CredentialSessionsFull(_)
            | LockError::CredentialLocksFull(_) => ApiError::TooMany(m),
            LockError::BadPolicy(_) => ApiError::BadRequest(m),
        }
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::Rejected(RequestError::NotLeader { leader: None }) => {
                ApiError::Unavailable("no leader at the moment; retry".into())
            }
            NodeError::Rejected(RequestError::NotAllowed(why)) => ApiError::Forbidden(why),
            NodeError::Rejected(RequestError::LeadershipLost) => ApiError::Unavailable(
                "leadership changed while the request was in flight; its outcome is unknown".into(),
            ),
            other => ApiError::Unavailable(other.to_string()),
        }
    }
}

impl From<crate::gateway::GatewayError> for ApiError {
    fn from(e: crate::gateway::GatewayError) -> Self {
        use crate::gateway::GatewayError;
        match e {
            GatewayError::BadRequest(m) => ApiError::BadRequest(m),
            GatewayError::Forbidden(m) => ApiError::Forbidden(m),
            GatewayError::TooMany(m) => ApiError::TooMany(m),
            e @ GatewayError::TimedOut { .. } => ApiError::Conflict(e.to_string()),
            GatewayError::Lock(e) => e.into(),
            GatewayError::Raft(e) => NodeError::Rejected(e).into(),
            e @ (GatewayError::Stopped | GatewayError::Undecodable(_)) => {
                ApiError::Unavailable(e.to_string())
            }
        }
    }
}
