//! Who is calling: bearer credentials (`Authorization: Bearer rlk_...`),
//! checked by the node that receives the call against the credential table
//! its lock machine holds (docs/SECURITY.md).
//!
//! This check is the door: a call without a valid credential is refused
//! with 401 before it costs a log entry. It reads the local table, which
//! may lag the cluster's by a few entries; the lock machine checks again,
//! authoritatively, when it applies the command or answers the query the
//! node sends on the credential's behalf (`Command::As`), so a revocation
//! holds everywhere from the entry that commits it.

use super::api::Shared;
use super::error::ApiError;
use super::HttpConfig;
use crate::credential::{
    lookup, parse_authorization, verify, DoorError, Lookup, BOOTSTRAP_RETRY_MS, FALLBACK_READS_MAX,
};
pub use crate::credential::{Bearer, BEARER_PREFIX};
use crate::lock::auth::{CredentialId, SecretHash};
use crate::lock::{encode, Command, LockMachine, Query, QueryAnswer, Reply, Response};
use crate::runtime::Node;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The environment variable the CLI and the client library read the
/// bearer string from (not `RAFTLOCK_TOKEN`: that is the fencing token
/// `raftlock lock` gives its command).
pub const CREDENTIAL_ENV: &str = "RAFTLOCK_CREDENTIAL";
/// Calls one (non-admin) credential may make per second through one node,
/// so one misbehaving client cannot starve the others; 0: no limit.
pub const CREDENTIAL_CALLS_PER_S_DEFAULT: u32 = 1_000;
/// A credential may save up this many seconds of calls for a burst.
pub const CREDENTIAL_BURST_S: u32 = 2;
static FALLBACK_READS: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(FALLBACK_READS_MAX);

/// Credentials whose call rate one node tracks at once; past it, the
/// buckets idle longest are dropped (a dropped bucket starts full).
pub const RATE_BUCKETS_MAX: usize = 2 * crate::lock::auth::CREDENTIALS_MAX;

/// Per-credential token buckets of one node.
pub struct RateLimiter {
    per_s: u32,
    buckets: std::sync::Mutex<std::collections::HashMap<CredentialId, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: std::time::Instant,
}

impl RateLimiter {
    pub fn new(per_s: u32) -> RateLimiter {
        RateLimiter {
            per_s,
            buckets: Default::default(),
        }
    }

    /// Takes one call from `caller`'s bucket now, if it has one (admin and
    /// anonymous callers do not): 429 when it is empty.
    pub fn admit_caller(&self, caller: &Caller) -> Result<(), ApiError> {
        match (caller.credential, caller.admin) {
            (Some(id), false) if !self.admit(id, std::time::Instant::now()) => {
                Err(ApiError::TooMany(format!(
                    "this credential's calls through this node are over {} per second",
                    self.per_s
                )))
            }
            _ => Ok(()),
        }
    }

    /// Takes one call from `id`'s bucket at `now`; refused when it is
    /// empty.
    pub fn admit(&self, id: CredentialId, now: std::time::Instant) -> bool {
        if self.per_s == 0 {
            return true;
        }
        let capacity = f64::from(self.per_s) * f64::from(CREDENTIAL_BURST_S);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= RATE_BUCKETS_MAX && !buckets.contains_key(&id) {
            let mut ages: Vec<std::time::Instant> = buckets.values().map(|b| b.at).collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() / 2];
            buckets.retain(|_, b| b.at > cutoff);
        }
        let bucket = buckets.entry(id).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * f64::from(self.per_s);
        bucket.tokens = (bucket.tokens + refill).min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// How long the bootstrapping node keeps proposing the first admin
/// credential while the cluster has no leader (times `BOOTSTRAP_RETRY_MS`).
pub const BOOTSTRAP_ATTEMPTS_MAX: u32 = 1_200;

/// The caller of an API request, as authenticated at the door.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// None: no credential, on a node that does not require one
    /// (`--insecure`).
    pub credential: Option<CredentialId>,
    pub admin: bool,
}

impl Caller {
    /// Membership, leadership and credentials: an admin credential, or an
    /// insecure node's anonymous caller.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match (self.credential, self.admin) {
            (None, _) | (Some(_), true) => Ok(()),
            (Some(_), false) => Err(ApiError::Forbidden("this needs an admin credential".into())),
        }
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let header = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .map(|v| v.to_str().map(str::to_owned));
        let required = req
            .app_data::<web::Data<HttpConfig>>()
            .is_none_or(|c| c.auth_required);
        let cert = req.conn_data::<super::peer::ClientCert>().copied();
        let node = req.app_data::<Shared>().cloned();
        let limiter = req.app_data::<web::Data<RateLimiter>>().cloned();
        Box::pin(async move {
            let node = node.ok_or_else(|| ApiError::Unavailable("no node".into()))?;
            let header = match header {
                None if cert.is_some() => None,
                None if !required => {
                    return Ok(Caller {
                        credential: None,
                        admin: false,
                    })
                }
                None => {
                    return Err(ApiError::Unauthorized(format!(
                        "this node requires a credential: Authorization: Bearer {BEARER_PREFIX}..."
                    )))
                }
                Some(Err(_)) => {
                    return Err(ApiError::Unauthorized(
                        "the Authorization header is not text".into(),
                    ))
                }
                Some(Ok(h)) => Some(h),
            };
            let caller = match (header, cert) {
                (Some(header), _) => authenticate(&node, &header).await?,
                (None, Some(cert)) => authenticate_cert(&node, cert.0).await?,
                (None, None) => return Err(ApiError::Unauthorized("no credential".into())),
            };
            if let Some(limiter) = limiter {
                limiter.admit_caller(&caller)?;
            }
            Ok(caller)
        })
    }
}

/// A client certificate's credential: it must exist (not revoked).
pub(super) async fn authenticate_cert(
    node: &Node<LockMachine>,
    id: CredentialId,
) -> Result<Caller, ApiError> {
    match stored_credential(node, id).await? {
        Some((_, admin)) => Ok(Caller {
            credential: Some(id),
            admin,
        }),
        None => Err(ApiError::Unauthorized(
            "the client certificate's credential is unknown or revoked".into(),
        )),
    }
}

/// The door's refusal as an HTTP error: 401, except when the node could
/// not check the credential (503: retry).
pub(super) fn door_error(e: DoorError) -> ApiError {
    match e {
        DoorError::Busy => ApiError::Unavailable(e.to_string()),
        _ => ApiError::Unauthorized(e.to_string()),
    }
}

/// Checks `Authorization` header value `header` against the node's table.
pub async fn authenticate(node: &Node<LockMachine>, header: &str) -> Result<Caller, ApiError> {
    let bearer = parse_authorization(header).map_err(door_error)?;
    authenticate_bearer(node, &bearer).await
}

/// Checks a bearer credential against the node's table.
pub(super) async fn authenticate_bearer(
    node: &Node<LockMachine>,
    bearer: &Bearer,
) -> Result<Caller, ApiError> {
    let stored = stored_credential(node, bearer.id).await?;
    let admin = verify(bearer, stored).map_err(door_error)?;
    Ok(Caller {
        credential: Some(bearer.id),
        admin,
    })
}

/// `id`'s stored hash and admin flag: from this node's table, or, when it
/// does not know the id, from a linearizable read (`credential::lookup`).
async fn stored_credential(
    node: &Node<LockMachine>,
    id: CredentialId,
) -> Result<Option<(SecretHash, bool)>, ApiError> {
    let local = node.inspect(move |m| m.credential(id)).await?;
    let in_progress = FALLBACK_READS_MAX - FALLBACK_READS.available_permits();
    match lookup(local, in_progress).map_err(door_error)? {
        Lookup::Local(stored) => Ok(Some(stored)),
        Lookup::ReadCluster => match FALLBACK_READS.try_acquire() {
            Ok(_permit) => credential_read(node, id).await,
            Err(_) => Err(door_error(DoorError::Busy)),
        },
    }
}

/// `id`'s stored hash and admin flag, read through ReadIndex.
async fn credential_read(
    node: &Node<LockMachine>,
    id: CredentialId,
) -> Result<Option<(SecretHash, bool)>, ApiError> {
    let applied = node.read(encode(&Query::Credential { id })).await?;
    match postcard::from_bytes::<QueryAnswer>(&applied.output) {
        Ok(QueryAnswer::Credential(stored)) => Ok(stored),
        other => Err(ApiError::Unavailable(format!(
            "unexpected answer {other:?}"
        ))),
    }
}

/// Reads a bearer string from `path` (what `raftlock dev` and the
/// bootstrapping node write).
pub fn read_bearer(path: &Path) -> Result<Bearer, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Bearer::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes a new admin credential to `path` (0600, never over an existing
/// file) for the operator.
pub fn write_new_bearer(path: &Path) -> Result<Bearer, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let bearer = Bearer::generate().map_err(|e| format!("no randomness: {e}"))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(format!("{}\n", bearer.encode()).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(bearer)
}

/// For a data dir that predates credentials (not fresh, no credential
/// file): once the cluster answers a linearizable read, if it never had a
/// credential, writes a new admin one to `path` and bootstraps it.
pub fn bootstrap_if_never(node: Arc<Node<LockMachine>>, path: PathBuf) {
    actix_rt::spawn(async move {
        for _ in 0..BOOTSTRAP_ATTEMPTS_MAX {
            // A barrier: the local table is then as new as the cluster's.
            if node.read(encode(&Query::Credentials)).await.is_ok() {
                match node.inspect(|m| m.bootstrapped()).await {
                    Ok(false) => match write_new_bearer(&path) {
                        Ok(bearer) => {
                            tracing::info!(file = %path.display(), "this cluster had no credential: wrote its first admin credential");
                            return bootstrap(node, path, bearer);
                        }
                        Err(e) => {
                            tracing::error!("cannot write the first admin credential: {e}");
                            return;
                        }
                    },
                    _ => return,
                }
            }
            tokio::time::sleep(Duration::from_millis(BOOTSTRAP_RETRY_MS)).await;
        }
    });
}

/// The bootstrapping node's task: proposes the first admin credential,
/// the one in `path`, until the cluster has applied it (or had one
/// already). Gives up after `BOOTSTRAP_ATTEMPTS_MAX` tries.
pub fn bootstrap(node: Arc<Node<LockMachine>>, path: PathBuf, bearer: Bearer) {
    actix_rt::spawn(async move {
        let command = encode(&Command::Bootstrap {
            id: bearer.id,
            hash: bearer.hash(),
        });
        for _ in 0..BOOTSTRAP_ATTEMPTS_MAX {
            if let Ok(applied) = node.propose(command.clone()).await {
                match postcard::from_bytes::<Response>(&applied.output) {
                    Ok(Ok(Reply::Internal { effective: true })) => {
                        tracing::info!(file = %path.display(), "the first admin credential is in place");
                    }
                    _ => {
                        let id = bearer.id;
                        if node
                            .inspect(move |m| m.credential(id))
                            .await
                            .ok()
                            .flatten()
                            .is_none()
                        {
                            tracing::warn!(file = %path.display(), "the cluster has credentials already; this file's is not one of them");
                        }
                    }
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(BOOTSTRAP_RETRY_MS)).await;
        }
        tracing::error!(file = %path.display(), "gave up proposing the first admin credential: no leader");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_gets_its_rate_and_burst_and_no_more() {
        let limiter = RateLimiter::new(10);
        let t0 = std::time::Instant::now();
        let admitted = (0..100).filter(|_| limiter.admit(1, t0)).count();
        assert_eq!(admitted, 20, "a burst of two seconds' calls");
        // Another credential has its own bucket.
        assert!(limiter.admit(2, t0));
        // Half a second later: five more.
        let t1 = t0 + std::time::Duration::from_millis(500);
        assert_eq!((0..100).filter(|_| limiter.admit(1, t1)).count(), 5);
        assert!((0..100).all(|_| RateLimiter::new(0).admit(1, t0)));
    }

    #[test]
    fn a_node_that_cannot_check_a_credential_says_retry_not_unauthorized() {
        use actix_web::ResponseError;
        let busy = door_error(DoorError::Busy).error_response();
        assert_eq!(busy.status().as_u16(), 503);
        assert!(busy.headers().contains_key("retry-after"));
        for e in [DoorError::Unknown, DoorError::NotBearer, DoorError::TooLong] {
            assert_eq!(door_error(e).error_response().status().as_u16(), 401);
        }
    }

    #[test]
    fn refusals_say_how_to_authenticate_and_when_to_retry() {
        use actix_web::ResponseError;
        let limited = ApiError::TooMany("over".into()).error_response();
        assert_eq!(limited.status().as_u16(), 429);
        assert!(limited.headers().contains_key("retry-after"));
        let unauthorized = ApiError::Unauthorized("who".into()).error_response();
        assert_eq!(unauthorized.status().as_u16(), 401);
        assert!(unauthorized.headers().contains_key("www-authenticate"));
    }
}
