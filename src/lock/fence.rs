//! The resource side of fencing (Kleppmann, "How to do distributed
//! locking"): a protected resource remembers the highest token it has seen
//! and refuses anything older, so a holder that paused past its lease
//! cannot overwrite its successor's work.

use super::command::Token;
use std::collections::BTreeMap;
use std::sync::Mutex;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FenceError {
    #[error("token {token} is older than {highest}, already seen for {resource}")]
    Stale {
        resource: String,
        token: Token,
        highest: Token,
    },
    #[error("the verifier tracks its maximum of {0} resources")]
    TooManyResources(usize),
}

/// Resources one verifier tracks by default.
pub const FENCE_RESOURCES_MAX_DEFAULT: usize = 100_000;

/// Thread-safe: the check, the operation and the record are one atomic
/// step under one mutex, so two writers cannot both pass with the same
/// "highest" and then apply out of order.
#[derive(Debug)]
pub struct FenceVerifier {
    highest: Mutex<BTreeMap<String, Token>>,
    resources_max: usize,
}

impl Default for FenceVerifier {
    fn default() -> Self {
        FenceVerifier::new(FENCE_RESOURCES_MAX_DEFAULT)
    }
}

impl FenceVerifier {
    pub fn new(resources_max: usize) -> Self {
        FenceVerifier {
            highest: Mutex::new(BTreeMap::new()),
            resources_max,
        }
    }

    /// Runs `operation` if `token` is at least the highest seen for
    /// `resource` (equal: the same holder writing again), and records it.
    pub fn guard<R>(
        &self,
        resource: &str,
        token: Token,
        operation: impl FnOnce() -> R,
    ) -> Result<R, FenceError> {
        let mut highest = self.highest.lock().unwrap_or_else(|e| e.into_inner());
        let full = highest.len() >= self.resources_max;
        match highest.get_mut(resource) {
            Some(h) if token < *h => Err(FenceError::Stale {
                resource: resource.to_string(),
                token,
                highest: *h,
            }),
            Some(h) => {
                *h = token;
                Ok(operation())
            }
            None if full => Err(FenceError::TooManyResources(self.resources_max)),
            None => {
                highest.insert(resource.to_string(), token);
                Ok(operation())
            }
        }
    }

    /// Just the check and record, for callers that apply on their own.
    pub fn check(&self, resource: &str, token: Token) -> Result<(), FenceError> {
        self.guard(resource, token, || ())
    }

    pub fn highest(&self, resource: &str) -> Option<Token> {
        let highest = self.highest.lock().unwrap_or_else(|e| e.into_inner());
        highest.get(resource).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_equal_and_newer_tokens_and_refuses_older_without_running_the_operation() {
        let v = FenceVerifier::default();
        let mut log = Vec::new();
        assert_eq!(v.guard("db", 5, || log.push(5)), Ok(()));
        assert_eq!(v.guard("db", 5, || log.push(55)), Ok(()));
        assert_eq!(v.guard("db", 9, || log.push(9)), Ok(()));
        assert_eq!(
            v.guard("db", 7, || log.push(7)),
            Err(FenceError::Stale {
                resource: "db".into(),
                token: 7,
                highest: 9
            })
        );
        assert_eq!(log, vec![5, 55, 9]);
        // Resources are independent.
        assert_eq!(v.check("other", 1), Ok(()));
        assert_eq!(v.highest("db"), Some(9));
    }

    #[test]
    fn the_table_is_bounded() {
        let v = FenceVerifier::new(1);
        assert_eq!(v.check("a", 1), Ok(()));
        assert_eq!(v.check("b", 1), Err(FenceError::TooManyResources(1)));
        assert_eq!(v.check("a", 2), Ok(()));
    }

    #[test]
    fn concurrent_writers_apply_in_token_order() {
        use std::sync::Arc;
        let v = Arc::new(FenceVerifier::default());
        let applied = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = (1..=8u64)
            .map(|t| {
                let (v, applied) = (v.clone(), applied.clone());
                std::thread::spawn(move || {
                    let _ = v.guard("r", t, || applied.lock().unwrap().push(t));
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let applied = applied.lock().unwrap().clone();
        assert!(applied.windows(2).all(|w| w[0] < w[1]), "{applied:?}");
        // The record is the newest operation that ran.
        assert_eq!(v.highest("r"), applied.last().copied());
    }
}
