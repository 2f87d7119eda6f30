//! Credentials as callers present them (`Authorization: Bearer rlk_...`),
//! and the door's check of one against the credential table a node's lock
//! machine holds. Compiled for both drivers: the simulator's nodes check
//! their clients' credentials with this same code (docs/SECURITY.md).

use crate::lock::auth::{CredentialId, SecretHash};
use subtle::ConstantTimeEq;
use thiserror::Error;

/// What a bearer string starts with.
pub const BEARER_PREFIX: &str = "rlk_";
/// Bytes of a credential's secret (hex-encoded in the bearer string).
pub const SECRET_BYTES: usize = 32;
/// Longest `Authorization` header value looked at.
pub const BEARER_BYTES_MAX: usize = 128;
/// Reads of the cluster's credential table one node makes at once for ids
/// its own table does not know (created through another node a moment
/// ago); beyond, such a call is refused (401): unknown ids cost whoever
/// sends them a refusal, not the leader a flood of ReadIndex rounds.
pub const FALLBACK_READS_MAX: usize = 16;
/// How often the bootstrapping node proposes the first admin credential
/// until it lands.
pub const BOOTSTRAP_RETRY_MS: u64 = 500;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BearerError {
    #[error("a credential is {BEARER_PREFIX}<16 hex digits>_<64 hex digits>")]
    Malformed,
}

/// Why the door refuses a presented credential (all answered 401).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DoorError {
    #[error("credential too long")]
    TooLong,
    #[error("expected \"Bearer <credential>\"")]
    NotBearer,
    #[error(transparent)]
    Malformed(#[from] BearerError),
    /// One answer for "no such id" and "wrong secret".
    #[error("unknown or revoked credential")]
    Unknown,
    /// Not a refusal of the credential (503, not 401): the node cannot
    /// check it now. A well-behaved client retries, or tries another node.
    #[error("this node is already reading {FALLBACK_READS_MAX} credentials its own table does not know (it may lag the cluster); retry, or try another node")]
    Busy,
}

/// Where the door finds what the cluster stores for a presented id.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// In this node's own table.
    Local((SecretHash, bool)),
    /// Not in this node's table, which may lag the cluster's (the
    /// credential was created through another node a moment ago): read the
    /// cluster's, linearizably.
    ReadCluster,
}

/// The door's first step, given what this node's table holds for the id
/// and how many reads of the cluster's table the node has in progress.
pub fn lookup(
    local: Option<(SecretHash, bool)>,
    reads_in_progress: usize,
) -> Result<Lookup, DoorError> {
    match local {
        Some(stored) => Ok(Lookup::Local(stored)),
        None if reads_in_progress < FALLBACK_READS_MAX => Ok(Lookup::ReadCluster),
        None => Err(DoorError::Busy),
    }
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
    /// A credential from its parts (the simulator draws them from its seed).
    pub fn from_parts(id: CredentialId, secret: [u8; SECRET_BYTES]) -> Bearer {
        Bearer { id, secret }
    }

    /// A new credential from the OS's randomness.
    #[cfg(not(madsim))]
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

/// The bearer an `Authorization` header value presents.
pub fn parse_authorization(header: &str) -> Result<Bearer, DoorError> {
    if header.len() > BEARER_BYTES_MAX {
        return Err(DoorError::TooLong);
    }
    let token = header.strip_prefix("Bearer ").ok_or(DoorError::NotBearer)?;
    Ok(Bearer::parse(token)?)
}

/// Checks `bearer` against what the table stores for its id (hash and
/// admin flag, `LockMachine::credential`); whether it is an admin's.
pub fn verify(bearer: &Bearer, stored: Option<(SecretHash, bool)>) -> Result<bool, DoorError> {
    match stored {
        Some((hash, admin)) if bearer.matches(&hash) => Ok(admin),
        _ => Err(DoorError::Unknown),
    }
}

#[cfg(test)]
#[cfg(not(madsim))]
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

    #[test]
    fn the_door_takes_only_a_bearer_header_whose_secret_is_stored() {
        let b = Bearer::from_parts(7, [3; SECRET_BYTES]);
        let header = format!("Bearer {}", b.encode());
        assert_eq!(parse_authorization(&header), Ok(b.clone()));
        assert_eq!(parse_authorization(&b.encode()), Err(DoorError::NotBearer));
        assert_eq!(
            parse_authorization(&format!("{header}{}", "0".repeat(BEARER_BYTES_MAX))),
            Err(DoorError::TooLong)
        );
        assert_eq!(verify(&b, Some((b.hash(), true))), Ok(true));
        assert_eq!(verify(&b, Some((b.hash(), false))), Ok(false));
        let other = Bearer::from_parts(7, [4; SECRET_BYTES]);
        assert_eq!(
            verify(&b, Some((other.hash(), true))),
            Err(DoorError::Unknown)
        );
        assert_eq!(verify(&b, None), Err(DoorError::Unknown));
    }

    #[test]
    fn an_id_the_table_lacks_is_read_from_the_cluster_or_the_node_is_busy_never_unknown() {
        let stored = ([1; 32], false);
        assert_eq!(
            lookup(Some(stored), FALLBACK_READS_MAX),
            Ok(Lookup::Local(stored))
        );
        assert_eq!(lookup(None, 0), Ok(Lookup::ReadCluster));
        assert_eq!(
            lookup(None, FALLBACK_READS_MAX - 1),
            Ok(Lookup::ReadCluster)
        );
        // A node whose reads are stuck (cut off, or lagging) must not tell
        // a valid credential it is unknown: its client would give up.
        assert_eq!(lookup(None, FALLBACK_READS_MAX), Err(DoorError::Busy));
    }
}
