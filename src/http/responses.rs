//! The JSON success bodies of the HTTP API: the handlers serialize these
//! very types and the OpenAPI description's schemas are derived from them,
//! so the two cannot drift.
//!
//! Fields are declared in alphabetical order: the order the handlers' old
//! `json!` maps wrote them in, so the bytes on the wire did not change.
//! Ids and tokens are written `u64`, not `SessionId` or `Token`: utoipa
//! cannot see through an alias and would point at a schema that does not
//! exist. `Option` fields are always sent (as `null` when absent), hence
//! `required`.

use super::api::AllowName;
use crate::lock::auth::{CredentialInfo, Policy};
use crate::lock::{LockInfo, Mode, SessionInfo};
use crate::raft::Role;
use serde::Serialize;
use utoipa::ToSchema;

/// A lock's mode: `"exclusive"`, `"shared"` or `{"semaphore": limit}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum LockMode {
    /// One holder.
    Exclusive,
    /// Any number of holders, none exclusive.
    Shared,
    /// Up to this many holders, each with its own token.
    Semaphore(u32),
}

impl From<Mode> for LockMode {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::Exclusive => LockMode::Exclusive,
            Mode::Shared => LockMode::Shared,
            Mode::Semaphore(n) => LockMode::Semaphore(n),
        }
    }
}

/// A node's Raft role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub(super) enum RoleName {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

impl From<Role> for RoleName {
    fn from(role: Role) -> Self {
        match role {
            Role::Follower => RoleName::Follower,
            Role::PreCandidate => RoleName::PreCandidate,
            Role::Candidate => RoleName::Candidate,
            Role::Leader => RoleName::Leader,
        }
    }
}

// ---- ops and cluster ----

/// `ok` when this node knows a leader (200), else `no_leader` (503).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum HealthStatus {
    Ok,
    NoLeader,
}

/// `GET /health` (200 and 503 alike).
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Health {
    /// This node's id.
    pub id: u64,
    /// The leader this node knows, if any.
    #[schema(required = true)]
    pub leader: Option<u64>,
    pub role: RoleName,
    pub status: HealthStatus,
}

/// `GET /API/v1/cluster`: this node's view.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ClusterStatus {
    pub applied_index: u64,
    /// The cluster's name (`--cluster-name`).
    pub cluster: String,
    /// The cluster's id, 16 hex digits.
    pub cluster_id: String,
    pub commit_index: u64,
    /// This node's id.
    pub id: u64,
    /// Last index of this node's log.
    pub last_index: u64,
    #[schema(required = true)]
    pub leader: Option<u64>,
    /// The configuration in effect.
    pub members: Vec<MemberStatus>,
    /// The port this node serves the native protocol on (`--listen-native`,
    /// same host as this API), if it does: what the client library uses.
    #[schema(required = true)]
    pub native_port: Option<u16>,
    pub role: RoleName,
    pub term: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct MemberStatus {
    pub id: u64,
    /// Where peers reach it.
    pub peer_addr: String,
    /// False for a learner (not yet promoted).
    pub voter: bool,
}

/// `POST /API/v1/cluster/members` (202).
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct MemberJoining {
    pub id: u64,
    pub peer_addr: String,
    /// "joining as a learner; promoted to voter once caught up".
    pub status: String,
}

/// `DELETE /API/v1/cluster/members/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct MemberRemoved {
    /// Log index of the configuration that removed it.
    pub index: u64,
    /// The node removed.
    pub removed: u64,
}

/// `POST /API/v1/cluster/leader`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct LeaderHandedOver {
    /// "handed over".
    pub status: String,
    /// The new leader.
    pub to: u64,
}

// ---- locks ----

/// `POST /API/v1/locks/{name}`: the grant of this request.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct LockGranted {
    /// How much of the one-lock session's lease is certain to be left as
    /// the node answers; count it from when you sent the request. Null with
    /// an existing session (see GET /API/v1/sessions/{id}).
    #[schema(required = true)]
    pub lease_ms: Option<u64>,
    pub mode: LockMode,
    /// The lock.
    pub name: String,
    /// The session holding it (the one-lock session the node opened, or
    /// yours).
    pub session: u64,
    /// The fencing token: strictly increasing per lock, distinct per grant.
    pub token: u64,
    /// TTL of the one-lock session this call opened; null with an existing
    /// session.
    #[schema(required = true)]
    pub ttl_ms: Option<u64>,
}

/// `DELETE /API/v1/locks/{name}`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct LockReleased {
    pub name: String,
    /// Always true.
    pub released: bool,
    pub session: u64,
    pub token: u64,
}

/// `GET /API/v1/locks/{name}`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct LockStatus {
    /// Freed by an expiry and in its lock-delay.
    pub delayed: bool,
    pub holders: Vec<Holder>,
    pub name: String,
    /// In queue order.
    pub waiters: Vec<Waiter>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Holder {
    /// How long, at most, the answering node would wait before expiring
    /// the holder's session if it is not renewed; null while unknown (just
    /// restored from a snapshot).
    #[schema(required = true)]
    pub expires_in_ms: Option<u64>,
    pub mode: LockMode,
    pub session: u64,
    /// Its fencing token.
    pub token: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Waiter {
    pub mode: LockMode,
    pub session: u64,
}

impl LockStatus {
    pub fn new(name: &str, info: &LockInfo) -> Self {
        LockStatus {
            delayed: info.delayed,
            holders: info
                .holders
                .iter()
                .map(|h| Holder {
                    expires_in_ms: h.expires_in_ms,
                    mode: h.mode.into(),
                    session: h.session,
                    token: h.token,
                })
                .collect(),
            name: name.to_owned(),
            waiters: info
                .waiters
                .iter()
                .map(|&(session, mode)| Waiter {
                    mode: mode.into(),
                    session,
                })
                .collect(),
        }
    }
}

// ---- sessions ----

/// `POST /API/v1/sessions`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SessionOpened {
    pub session: u64,
    pub ttl_ms: u64,
}

/// `GET /API/v1/sessions/{id}`, and each of `GET /API/v1/sessions`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SessionStatus {
    /// How long, at most, the answering node would wait before expiring it
    /// if it is not renewed; null while unknown.
    #[schema(required = true)]
    pub expires_in_ms: Option<u64>,
    /// The locks it holds, with their tokens.
    pub held: Vec<HeldLock>,
    pub session: u64,
    pub ttl_ms: u64,
    /// The locks it waits for.
    pub waiting: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct HeldLock {
    pub lock: String,
    pub token: u64,
}

impl SessionStatus {
    pub fn new(session: u64, s: &SessionInfo) -> Self {
        SessionStatus {
            expires_in_ms: s.expires_in_ms,
            held: s
                .held
                .iter()
                .map(|(lock, token)| HeldLock {
                    lock: lock.clone(),
                    token: *token,
                })
                .collect(),
            session,
            ttl_ms: s.ttl_ms,
            waiting: s.waiting.clone(),
        }
    }
}

/// `GET /API/v1/sessions`: in id order.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SessionList {
    pub sessions: Vec<SessionStatus>,
}

/// `POST /API/v1/sessions/{id}/keepalive`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SessionRenewed {
    pub session: u64,
}

/// `DELETE /API/v1/sessions/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SessionClosed {
    /// Always true.
    pub closed: bool,
    pub session: u64,
}

// ---- fenced files ----

/// `POST /API/v1/files/{name}/append`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Appended {
    pub name: String,
    /// Where the data starts in the file.
    pub offset: u64,
    /// The token that appended.
    pub token: u64,
}

/// `GET /API/v1/files/{name}`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct FileContents {
    /// The file, as UTF-8 (invalid bytes replaced).
    pub data: String,
    pub name: String,
    /// The highest token that appended.
    pub token: u64,
}

// ---- credentials ----

/// A credential's rights.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct PolicyInfo {
    /// Everything: membership, leadership, credentials, every lock and
    /// session.
    pub admin: bool,
    pub rules: Vec<RuleInfo>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct RuleInfo {
    /// In the order acquire, status, append, read.
    pub allow: Vec<AllowName>,
    /// Names starting with this.
    pub prefix: String,
}

impl From<&Policy> for PolicyInfo {
    fn from(p: &Policy) -> Self {
        let rules = p
            .rules
            .iter()
            .map(|r| RuleInfo {
                allow: [
                    (r.allow.acquire, AllowName::Acquire),
                    (r.allow.status, AllowName::Status),
                    (r.allow.append, AllowName::Append),
                    (r.allow.read, AllowName::Read),
                ]
                .into_iter()
                .filter_map(|(on, name)| on.then_some(name))
                .collect(),
                prefix: r.prefix.clone(),
            })
            .collect();
        PolicyInfo {
            admin: p.admin,
            rules,
        }
    }
}

/// `POST /API/v1/credentials`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CreatedCredential {
    /// The bearer string (`rlk_<id>_<secret>`): in this answer only.
    pub credential: String,
    /// 16 hex digits.
    pub id: String,
    pub name: String,
    pub policy: PolicyInfo,
}

/// One of `GET /API/v1/credentials` (never its secret).
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CredentialSummary {
    /// Log index of the entry that created it.
    pub created_index: u64,
    /// 16 hex digits.
    pub id: String,
    pub name: String,
    pub policy: PolicyInfo,
}

impl From<&CredentialInfo> for CredentialSummary {
    fn from(c: &CredentialInfo) -> Self {
        CredentialSummary {
            created_index: c.created,
            id: format!("{:016x}", c.id),
            name: c.name.clone(),
            policy: (&c.policy).into(),
        }
    }
}

/// `GET /API/v1/credentials`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CredentialList {
    pub credentials: Vec<CredentialSummary>,
}

/// `DELETE /API/v1/credentials/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CredentialRevoked {
    /// 16 hex digits.
    pub id: String,
    /// Always true.
    pub revoked: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::auth::{Allow, Rule};
    use crate::lock::HolderInfo;

    fn json<T: Serialize>(t: &T) -> String {
        serde_json::to_string(t).unwrap()
    }

    // The bytes the handlers sent before these types (sorted keys, nulls
    // kept), pinned for the shapes with a twist.

    #[test]
    fn modes_are_a_string_or_a_semaphore_object() {
        assert_eq!(json(&LockMode::from(Mode::Exclusive)), r#""exclusive""#);
        assert_eq!(json(&LockMode::from(Mode::Shared)), r#""shared""#);
        assert_eq!(
            json(&LockMode::from(Mode::Semaphore(3))),
            r#"{"semaphore":3}"#
        );
    }

    #[test]
    fn a_grant_in_an_existing_session_has_null_ttl_and_lease() {
        let g = LockGranted {
            lease_ms: None,
            mode: LockMode::Semaphore(2),
            name: "orders".into(),
            session: 4,
            token: 7,
            ttl_ms: None,
        };
        assert_eq!(
            json(&g),
            r#"{"lease_ms":null,"mode":{"semaphore":2},"name":"orders","session":4,"token":7,"ttl_ms":null}"#
        );
    }

    #[test]
    fn health_and_lock_status_keep_their_shape() {
        let h = Health {
            id: 1,
            leader: None,
            role: Role::PreCandidate.into(),
            status: HealthStatus::NoLeader,
        };
        assert_eq!(
            json(&h),
            r#"{"id":1,"leader":null,"role":"PreCandidate","status":"no_leader"}"#
        );
        let info = LockInfo {
            holders: vec![HolderInfo {
                session: 2,
                mode: Mode::Shared,
                token: 9,
                expires_in_ms: None,
            }],
            waiters: vec![(3, Mode::Exclusive)],
            delayed: false,
        };
        assert_eq!(
            json(&LockStatus::new("a/b", &info)),
            r#"{"delayed":false,"holders":[{"expires_in_ms":null,"mode":"shared","session":2,"token":9}],"name":"a/b","waiters":[{"mode":"exclusive","session":3}]}"#
        );
    }

    #[test]
    fn a_credential_lists_its_rules_allowances_in_order() {
        let c = CredentialInfo {
            id: 0xab,
            name: "app".into(),
            policy: Policy {
                admin: false,
                rules: vec![Rule {
                    prefix: "orders/".into(),
                    allow: Allow {
                        acquire: false,
                        status: true,
                        append: false,
                        read: true,
                    },
                }],
            },
            created: 12,
        };
        assert_eq!(
            json(&CredentialSummary::from(&c)),
            r#"{"created_index":12,"id":"00000000000000ab","name":"app","policy":{"admin":false,"rules":[{"allow":["status","read"],"prefix":"orders/"}]}}"#
        );
    }
}
