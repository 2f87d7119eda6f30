//! Who may do what: credentials and their policies, replicated with the
//! lock tables so that a revocation holds on every replica from the entry
//! that commits it (docs/SECURITY.md).
//!
//! A credential is stored as the SHA-256 of its secret; the node that
//! receives a call checks the secret against it (`http::auth`), and the
//! lock machine checks, when it applies the command or answers the query
//! the node wrapped in `Command::As` / `Query::As`, that the credential
//! still exists and that its policy allows the operation.

use serde::{Deserialize, Serialize};

/// A credential's public id, chosen at random by the node that creates it
/// (so the bootstrap credential's bearer string can be written to its file
/// before the entry that creates it commits).
pub type CredentialId = u64;
/// SHA-256 of a credential's secret.
pub type SecretHash = [u8; 32];

/// Credentials the cluster holds at most.
pub const CREDENTIALS_MAX: usize = 4096;
/// Prefix rules one policy holds at most.
pub const RULES_PER_POLICY_MAX: usize = 16;
/// Longest credential name (a label for operators).
pub const CREDENTIAL_NAME_BYTES_MAX: usize = 128;
/// Upper bound, in serialized bytes, of a credential without its rules'
/// prefixes (id, hash, name, flags): for `Limits::state_bytes_bound`.
pub const CREDENTIAL_BYTES_MAX: usize = 64 + CREDENTIAL_NAME_BYTES_MAX;

/// What a prefix rule allows on the locks (and fenced files) whose names
/// start with its prefix.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allow {
    /// Take, wait for, cancel and release locks (and open sessions).
    pub acquire: bool,
    /// Read a lock's status (holders, tokens, waiters).
    pub status: bool,
    /// Append to a fenced file.
    pub append: bool,
    /// Read a fenced file.
    pub read: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub prefix: String,
    pub allow: Allow,
}

/// A credential's rights: everything (`admin`: membership, leadership,
/// credentials, every lock and session), or the prefix rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub admin: bool,
    pub rules: Vec<Rule>,
}

/// One operation a policy is asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Acquire,
    Status,
    Append,
    Read,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Acquire => "acquire",
            Action::Status => "status",
            Action::Append => "append",
            Action::Read => "read",
        }
    }
}

impl Policy {
    pub fn admin() -> Policy {
        Policy {
            admin: true,
            rules: Vec::new(),
        }
    }

    /// Whether `action` on the lock or file `name` is allowed: by admin, or
    /// by any rule whose prefix `name` starts with.
    pub fn allows(&self, action: Action, name: &str) -> bool {
        self.admin
            || self.rules.iter().any(|r| {
                name.starts_with(r.prefix.as_str())
                    && match action {
                        Action::Acquire => r.allow.acquire,
                        Action::Status => r.allow.status,
                        Action::Append => r.allow.append,
                        Action::Read => r.allow.read,
                    }
            })
    }

    /// Whether the credential may hold sessions at all (to open one, it
    /// must be allowed to acquire something).
    pub fn may_open_sessions(&self) -> bool {
        self.admin || self.rules.iter().any(|r| r.allow.acquire)
    }

    /// The policy is within its bounds: at most `RULES_PER_POLICY_MAX`
    /// rules, each prefix at most `prefix_bytes_max` (the lock names' own
    /// bound), each rule allowing something.
    pub fn check(&self, prefix_bytes_max: usize) -> Result<(), String> {
        if self.rules.len() > RULES_PER_POLICY_MAX {
            return Err(format!(
                "{} rules; at most {RULES_PER_POLICY_MAX}",
                self.rules.len()
            ));
        }
        if !self.admin && self.rules.is_empty() {
            return Err("a policy needs \"admin\" or at least one rule".into());
        }
        for r in &self.rules {
            if r.prefix.len() > prefix_bytes_max {
                return Err(format!(
                    "prefix of {} bytes; at most {prefix_bytes_max}",
                    r.prefix.len()
                ));
            }
            if r.allow == Allow::default() {
                return Err(format!("the rule for prefix {:?} allows nothing", r.prefix));
            }
        }
        Ok(())
    }

    /// Serialized bytes of the policy at most, for the state bound.
    pub fn bytes_max(prefix_bytes_max: usize) -> usize {
        RULES_PER_POLICY_MAX.saturating_mul(prefix_bytes_max.saturating_add(8))
    }
}

/// What a credential list shows: never the hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialInfo {
    pub id: CredentialId,
    pub name: String,
    pub policy: Policy,
    /// The log index of the entry that created it.
    pub created: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(prefix: &str, allow: Allow) -> Rule {
        Rule {
            prefix: prefix.into(),
            allow,
        }
    }

    #[test]
    fn a_rule_allows_only_its_actions_under_its_prefix() {
        let p = Policy {
            admin: false,
            rules: vec![
                rule(
                    "orders/",
                    Allow {
                        acquire: true,
                        status: true,
                        ..Allow::default()
                    },
                ),
                rule(
                    "reports/",
                    Allow {
                        read: true,
                        ..Allow::default()
                    },
                ),
            ],
        };
        assert!(p.allows(Action::Acquire, "orders/1"));
        assert!(p.allows(Action::Status, "orders/"));
        assert!(!p.allows(Action::Append, "orders/1"));
        assert!(!p.allows(Action::Acquire, "order"));
        assert!(!p.allows(Action::Acquire, "reports/x"));
        assert!(p.allows(Action::Read, "reports/x"));
        assert!(!p.allows(Action::Read, "Reports/x"));
        assert!(p.may_open_sessions());
        assert!(Policy::admin().allows(Action::Append, "anything"));
        let readonly = Policy {
            admin: false,
            rules: vec![rule(
                "",
                Allow {
                    status: true,
                    ..Allow::default()
                },
            )],
        };
        assert!(!readonly.may_open_sessions());
        assert!(readonly.allows(Action::Status, "any"));
    }

    #[test]
    fn a_policy_out_of_bounds_is_refused() {
        let all = Allow {
            acquire: true,
            status: true,
            append: true,
            read: true,
        };
        assert!(Policy::default().check(256).is_err());
        let mut p = Policy {
            admin: false,
            rules: vec![rule("a", all); RULES_PER_POLICY_MAX],
        };
        assert_eq!(p.check(256), Ok(()));
        p.rules.push(rule("b", all));
        assert!(p.check(256).is_err());
        let long = Policy {
            admin: false,
            rules: vec![rule(&"x".repeat(257), all)],
        };
        assert!(long.check(256).is_err());
        let nothing = Policy {
            admin: false,
            rules: vec![rule("a", Allow::default())],
        };
        assert!(nothing.check(256).is_err());
    }
}
