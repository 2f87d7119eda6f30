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
use crate::lock::auth::{CredentialId, SecretHash};
use crate::lock::{encode, Command, LockMachine, Query, QueryAnswer, Reply, Response};
use crate::runtime::Node;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use thiserror::Error;

/// What a bearer string starts with.
pub const BEARER_PREFIX: &str = "rlk_";
/// Bytes of a credential's secret (hex-encoded in the bearer string).
pub const SECRET_BYTES: usize = 32;
/// Longest `Authorization` header value looked at.
pub const BEARER_BYTES_MAX: usize = 128;
/// The environment variable the CLI and the client library read the
/// bearer string from (not `RAFTLOCK_TOKEN`: that is the fencing token
/// `raftlock lock` gives its command).
pub const CREDENTIAL_ENV: &str = "RAFTLOCK_CREDENTIAL";
/// Calls one (non-admin) credential may make per second through one node,
/// so one misbehaving client cannot starve the others; 0: no limit.
pub const CREDENTIAL_CALLS_PER_S_DEFAULT: u32 = 1_000;
/// A credential may save up this many seconds of calls for a burst.
pub const CREDENTIAL_BURST_S: u32 = 2;
/// Reads of the cluster's credential table one node makes at once for ids
/// its own table does not know; beyond, such a call is refused (401).
pub const FALLBACK_READS_MAX: usize = 16;
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
/// credential while the cluster has no leader, and how often.
pub const BOOTSTRAP_ATTEMPTS_MAX: u32 = 1_200;
pub const BOOTSTRAP_RETRY_MS: u64 = 500;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BearerError {
    #[error("a credential is {BEARER_PREFIX}<16 hex digits>_<64 hex digits>")]
    Malformed,
}

/// A credential as a caller presents it: its public id and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Bearer {
    pub id: CredentialId,
    secret: [u8; SECRET_BYTES],
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bearer({:016x}, <secret>)", self.id)
    }
}

impl Bearer {
    /// A new credential from the OS's randomness.
    pub fn generate() -> Result<Bearer, getrandom::Error> {
        let mut secret = [0u8; SECRET_BYTES];
        getrandom::getrandom(&mut secret)?;
        Ok(Bearer {
            id: crate::entropy::random_u64()?,
            secret,
        })
    }

    pub fn parse(s: &str) -> Result<Bearer, BearerError> {
        let rest = s
            .trim()
            .strip_prefix(BEARER_PREFIX)
            .ok_or(BearerError::Malformed)?;
        let (id, secret) = rest.split_once('_').ok_or(BearerError::Malformed)?;
        if id.len() != 16 || secret.len() != 2 * SECRET_BYTES {
            return Err(BearerError::Malformed);
        }
        let id = u64::from_str_radix(id, 16).map_err(|_| BearerError::Malformed)?;
        let mut bytes = [0u8; SECRET_BYTES];
        for (i, b) in bytes.iter_mut().enumerate() {
            let pair = secret.get(2 * i..2 * i + 2).ok_or(BearerError::Malformed)?;
            *b = u8::from_str_radix(pair, 16).map_err(|_| BearerError::Malformed)?;
        }
        Ok(Bearer { id, secret: bytes })
    }

    /// What the cluster stores: SHA-256 of the secret.
    pub fn hash(&self) -> SecretHash {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.secret);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        out
    }

    /// Whether the secret is the one whose hash is `stored`, in time that
    /// does not depend on where they differ.
    pub fn matches(&self, stored: &SecretHash) -> bool {
        self.hash().ct_eq(stored).into()
    }

    /// The bearer string: `rlk_<id>_<secret>`.
    pub fn encode(&self) -> String {
        let mut s = format!("{BEARER_PREFIX}{:016x}_", self.id);
        for b in self.secret {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

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
            if let (Some(id), Some(limiter), false) = (caller.credential, limiter, caller.admin) {
                if !limiter.admit(id, std::time::Instant::now()) {
                    return Err(ApiError::TooMany(format!(
                        "this credential's calls through this node are over {} per second",
                        limiter.per_s
                    )));
                }
            }
            Ok(caller)
        })
    }
}

/// A client certificate's credential: it must exist (not revoked).
async fn authenticate_cert(node: &Node<LockMachine>, id: CredentialId) -> Result<Caller, ApiError> {
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

/// Checks `Authorization` header value `header` against the node's table.
pub async fn authenticate(node: &Node<LockMachine>, header: &str) -> Result<Caller, ApiError> {
    if header.len() > BEARER_BYTES_MAX {
        return Err(ApiError::Unauthorized("credential too long".into()));
    }
    let token = header
        .strip_prefix("Bearer ")
        .ok_or_else(|| ApiError::Unauthorized("expected \"Bearer <credential>\"".into()))?;
    let bearer = Bearer::parse(token).map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    let id = bearer.id;
    let stored = stored_credential(node, id).await?;
    match stored {
        Some((hash, admin)) if bearer.matches(&hash) => Ok(Caller {
            credential: Some(id),
            admin,
        }),
        // One answer for "no such id" and "wrong secret".
        _ => Err(ApiError::Unauthorized(
            "unknown or revoked credential".into(),
        )),
    }
}

/// `id`'s stored hash and admin flag: from this node's table, or, when it
/// does not know the id (created through another node a moment ago), from
/// a linearizable read, within a bound: unknown ids cost whoever sends them
/// a refusal, not the leader a flood of ReadIndex rounds.
async fn stored_credential(
    node: &Node<LockMachine>,
    id: CredentialId,
) -> Result<Option<(SecretHash, bool)>, ApiError> {
    let stored = node.inspect(move |m| m.credential(id)).await?;
    if stored.is_some() {
        return Ok(stored);
    }
    match FALLBACK_READS.try_acquire() {
        Ok(_permit) => credential_read(node, id).await,
        Err(_) => Ok(None),
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
    fn a_bearer_round_trips_and_only_its_own_secret_matches() {
        let b = Bearer::generate().unwrap();
        let s = b.encode();
        assert!(s.starts_with(BEARER_PREFIX));
        assert_eq!(s.len(), 4 + 16 + 1 + 64);
        let parsed = Bearer::parse(&s).unwrap();
        assert_eq!(parsed, b);
        assert!(parsed.matches(&b.hash()));
        let other = Bearer::generate().unwrap();
        assert!(!other.matches(&b.hash()));
        assert!(
            !format!("{b:?}").contains(&s[21..]),
            "Debug hides the secret"
        );
    }

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
    fn refusals_say_how_to_authenticate_and_when_to_retry() {
        use actix_web::ResponseError;
        let limited = ApiError::TooMany("over".into()).error_response();
        assert_eq!(limited.status().as_u16(), 429);
        assert!(limited.headers().contains_key("retry-after"));
        let unauthorized = ApiError::Unauthorized("who".into()).error_response();
        assert_eq!(unauthorized.status().as_u16(), 401);
        assert!(unauthorized.headers().contains_key("www-authenticate"));
    }

    #[test]
    fn malformed_bearers_are_refused() {
        let good = Bearer::generate().unwrap().encode();
        for bad in [
            "",
            "rlk_",
            "rlk_0123",
            &good[1..],
            &good[..good.len() - 1],
            &format!("{good}0"),
            &good.replace("rlk_", "rlx_"),
            &format!("rlk_{}_{}", "g".repeat(16), "0".repeat(64)),
            &format!("rlk_{}_{}", "0".repeat(16), "é".repeat(32)),
        ] {
            assert_eq!(Bearer::parse(bad), Err(BearerError::Malformed), "{bad:?}");
        }
    }
}
