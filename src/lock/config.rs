//! The lock service's settings. Every replica must run with the same
//! `Limits` (they decide outcomes of replicated commands); `drift_ppm` and
//! `lock_delay` only steer what the leader proposes.

use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockConfig {
    /// The clock-rate bound ρ, in parts per million: every clock, node or
    /// client, runs within `1 ± ρ` of real time. Clients must use the same
    /// (or a larger) bound. See docs/SAFETY.md.
    pub drift_ppm: u32,
    /// After a lock is freed by its holder's session expiring (not by a
    /// clean release), nobody gets it for this long (Chubby, Consul).
    pub lock_delay: Duration,
    pub limits: Limits,
    /// Deliberate bugs for the simulator's negative controls; only built
    /// with the `sim` feature.
    #[cfg(feature = "sim")]
    pub bugs: LockBugs,
}

/// Rules a negative control may break to prove the lock checkers can fail.
#[cfg(feature = "sim")]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockBugs {
    /// Execute a retried request again instead of answering it from the
    /// kept response.
    pub skip_dedup: bool,
    /// Forget the token counter when restoring a snapshot.
    pub reset_tokens_on_restore: bool,
    /// Answer a re-acquire in another mode with the grant held (as before
    /// issue 11: a shared holder told it holds the lock exclusively).
    pub reacquire_ignores_mode: bool,
    /// Let any credential use any session (as before issue 13: a guessed
    /// session id was enough).
    pub skip_ownership: bool,
}

/// Every table and queue of the lock service has its bound here. The bounds
/// agree with each other and with Raft's (`LockConfig::validate`): the
/// largest state they allow fits a snapshot a follower accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub name_bytes_max: usize,
    pub sessions_max: usize,
    /// Locks one session holds plus awaits.
    pub locks_per_session_max: usize,
    pub waiters_per_lock_max: usize,
    /// Holders plus waiters over all locks: what bounds the lock tables.
    pub lock_entries_max: usize,
    /// Requests a session may have unanswered-and-unacknowledged; also the
    /// bound on responses kept per session for exactly-once.
    pub requests_inflight_max: u64,
    pub ttl_ms_min: u64,
    pub ttl_ms_max: u64,
    pub file_bytes_max: usize,
    pub files_max: usize,
    /// Bytes of all fenced files together.
    pub files_bytes_max: usize,
    /// Expiries and undelays a leader proposes per heartbeat.
    pub leader_commands_per_tick_max: usize,
    /// Events kept for the driver to drain; beyond, the oldest are dropped
    /// and reported (`Event::Missed`).
    pub events_pending_max: usize,
    /// Sessions one (non-admin) credential may hold open at once, so one
    /// misbehaving client cannot take the cluster's `sessions_max`.
    pub sessions_per_credential_max: usize,
    /// Locks one (non-admin) credential's sessions hold plus await.
    pub locks_per_credential_max: usize,
}

pub const NAME_BYTES_MAX_DEFAULT: usize = 256;
pub const SESSIONS_MAX_DEFAULT: usize = 100_000;
pub const LOCKS_PER_SESSION_MAX_DEFAULT: usize = 1024;
pub const WAITERS_PER_LOCK_MAX_DEFAULT: usize = 4096;
pub const LOCK_ENTRIES_MAX_DEFAULT: usize = 1_000_000;
pub const REQUESTS_INFLIGHT_MAX_DEFAULT: u64 = 128;
pub const TTL_MS_MIN_DEFAULT: u64 = 1_000;
pub const TTL_MS_MAX_DEFAULT: u64 = 3_600_000;
pub const FILE_BYTES_MAX_DEFAULT: usize = 1 << 20;
pub const FILES_MAX_DEFAULT: usize = 1024;
pub const FILES_BYTES_MAX_DEFAULT: usize = 256 << 20;
pub const LEADER_COMMANDS_PER_TICK_MAX_DEFAULT: usize = 256;
pub const EVENTS_PENDING_MAX_DEFAULT: usize = 4096;
pub const SESSIONS_PER_CREDENTIAL_MAX_DEFAULT: usize = 10_000;
pub const LOCKS_PER_CREDENTIAL_MAX_DEFAULT: usize = 100_000;

/// Upper bounds, in serialized bytes, of one item of each table: what
/// `Limits::state_bytes_bound` multiplies by the counts.
const SESSION_BYTES_MAX: usize = 96;
const RESPONSE_BYTES_MAX: usize = 96;
const ENTRY_OVERHEAD_BYTES_MAX: usize = 64;
const FILE_OVERHEAD_BYTES_MAX: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitsError {
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("ttl_ms_min {min} is above ttl_ms_max {max}")]
    TtlRange { min: u64, max: u64 },
    #[error("{small} ({small_value}) is above {large} ({large_value})")]
    Disagree {
        small: &'static str,
        small_value: usize,
        large: &'static str,
        large_value: usize,
    },
    #[error("the largest state these limits allow ({bound} bytes) is above the largest snapshot a follower accepts ({snapshot_bytes_max} bytes)")]
    StateTooLarge {
        bound: usize,
        snapshot_bytes_max: usize,
    },
}

/// Consul's default lock-delay.
pub const LOCK_DELAY_MS_DEFAULT: u64 = 15_000;
/// 1%: far above what NTP-disciplined clocks drift (tens of ppm), below
/// what would noticeably shorten leases.
pub const DRIFT_PPM_DEFAULT: u32 = 10_000;

impl Default for LockConfig {
    fn default() -> Self {
        LockConfig {
            drift_ppm: DRIFT_PPM_DEFAULT,
            lock_delay: Duration::from_millis(LOCK_DELAY_MS_DEFAULT),
            limits: Limits::default(),
            #[cfg(feature = "sim")]
            bugs: LockBugs::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            name_bytes_max: NAME_BYTES_MAX_DEFAULT,
            sessions_max: SESSIONS_MAX_DEFAULT,
            locks_per_session_max: LOCKS_PER_SESSION_MAX_DEFAULT,
            waiters_per_lock_max: WAITERS_PER_LOCK_MAX_DEFAULT,
            lock_entries_max: LOCK_ENTRIES_MAX_DEFAULT,
            requests_inflight_max: REQUESTS_INFLIGHT_MAX_DEFAULT,
            ttl_ms_min: TTL_MS_MIN_DEFAULT,
            ttl_ms_max: TTL_MS_MAX_DEFAULT,
            file_bytes_max: FILE_BYTES_MAX_DEFAULT,
            files_max: FILES_MAX_DEFAULT,
            files_bytes_max: FILES_BYTES_MAX_DEFAULT,
            leader_commands_per_tick_max: LEADER_COMMANDS_PER_TICK_MAX_DEFAULT,
            events_pending_max: EVENTS_PENDING_MAX_DEFAULT,
            sessions_per_credential_max: SESSIONS_PER_CREDENTIAL_MAX_DEFAULT,
            locks_per_credential_max: LOCKS_PER_CREDENTIAL_MAX_DEFAULT,
        }
    }
}

impl Limits {
    /// The largest state, in serialized bytes, these limits allow: what a
    /// snapshot may hold at most.
    pub fn state_bytes_bound(&self) -> usize {
        let per_session = SESSION_BYTES_MAX.saturating_add(
            (self.requests_inflight_max as usize).saturating_mul(RESPONSE_BYTES_MAX),
        );
        // A held or awaited lock is in its session's table and its lock's.
        let per_entry = self
            .name_bytes_max
            .saturating_mul(2)
            .saturating_add(ENTRY_OVERHEAD_BYTES_MAX);
        let per_file = self.name_bytes_max.saturating_add(FILE_OVERHEAD_BYTES_MAX);
        self.sessions_max
            .saturating_mul(per_session)
            .saturating_add(self.lock_entries_max.saturating_mul(per_entry))
            .saturating_add(self.files_max.saturating_mul(per_file))
            .saturating_add(self.files_bytes_max)
    }

    /// Every bound is positive and they agree with each other.
    pub fn validate(&self) -> Result<(), LimitsError> {
        for (name, v) in [
            ("name_bytes_max", self.name_bytes_max),
            ("sessions_max", self.sessions_max),
            ("locks_per_session_max", self.locks_per_session_max),
            ("waiters_per_lock_max", self.waiters_per_lock_max),
            ("lock_entries_max", self.lock_entries_max),
            ("requests_inflight_max", self.requests_inflight_max as usize),
            ("file_bytes_max", self.file_bytes_max),
            ("files_max", self.files_max),
            ("files_bytes_max", self.files_bytes_max),
            (
                "leader_commands_per_tick_max",
                self.leader_commands_per_tick_max,
            ),
            ("events_pending_max", self.events_pending_max),
            (
                "sessions_per_credential_max",
                self.sessions_per_credential_max,
            ),
            ("locks_per_credential_max", self.locks_per_credential_max),
        ] {
            if v == 0 {
                return Err(LimitsError::Zero(name));
            }
        }
        if self.ttl_ms_min > self.ttl_ms_max || self.ttl_ms_min == 0 {
            return Err(LimitsError::TtlRange {
                min: self.ttl_ms_min,
                max: self.ttl_ms_max,
            });
        }
        for (small, small_value, large, large_value) in [
            (
                "file_bytes_max",
                self.file_bytes_max,
                "files_bytes_max",
                self.files_bytes_max,
            ),
            (
                "locks_per_session_max",
                self.locks_per_session_max,
                "lock_entries_max",
                self.lock_entries_max,
            ),
            (
                "waiters_per_lock_max",
                self.waiters_per_lock_max,
                "lock_entries_max",
                self.lock_entries_max,
            ),
            (
                "sessions_per_credential_max",
                self.sessions_per_credential_max,
                "sessions_max",
                self.sessions_max,
            ),
            (
                "locks_per_credential_max",
                self.locks_per_credential_max,
                "lock_entries_max",
                self.lock_entries_max,
            ),
        ] {
            if small_value > large_value {
                return Err(LimitsError::Disagree {
                    small,
                    small_value,
                    large,
                    large_value,
                });
            }
        }
        Ok(())
    }
}

impl LockConfig {
    /// The limits agree with each other, and the largest state they allow
    /// fits the largest snapshot a follower accepts (Raft's
    /// `snapshot_bytes_max`), so a full cluster can still catch a follower
    /// up.
    pub fn validate(&self, snapshot_bytes_max: usize) -> Result<(), LimitsError> {
        self.limits.validate()?;
        let bound = self.limits.state_bytes_bound();
        if bound > snapshot_bytes_max {
            return Err(LimitsError::StateTooLarge {
                bound,
                snapshot_bytes_max,
            });
        }
        Ok(())
    }

    pub(crate) fn reset_tokens_on_restore(&self) -> bool {
        #[cfg(feature = "sim")]
        return self.bugs.reset_tokens_on_restore;
        #[cfg(not(feature = "sim"))]
        false
    }

    pub(crate) fn reacquire_ignores_mode(&self) -> bool {
        #[cfg(feature = "sim")]
        return self.bugs.reacquire_ignores_mode;
        #[cfg(not(feature = "sim"))]
        false
    }

    pub(crate) fn skip_dedup(&self) -> bool {
        #[cfg(feature = "sim")]
        return self.bugs.skip_dedup;
        #[cfg(not(feature = "sim"))]
        false
    }

    /// `d` stretched by the drift bound: a wait of `stretch(d)` on any
    /// clock within the bound lasts at least `d` of real time.
    pub fn stretch(&self, d: Duration) -> Duration {
        d + d * self.drift_ppm / 1_000_000
    }

    /// `d` shrunk by the drift bound: a wait of `shrink(d)` on any clock
    /// within the bound lasts at most `d` of real time.
    pub fn shrink(&self, d: Duration) -> Duration {
        d.saturating_sub(d * self.drift_ppm / 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11, item 10: the limits allowed 1 GiB of files (and more in
    /// sessions) while a snapshot could not exceed 64 MiB; now the largest
    /// state they allow must fit the largest snapshot.
    #[test]
    fn the_default_limits_agree_with_each_other_and_with_raft() {
        let c = LockConfig::default();
        let snapshot_bytes_max = crate::raft::config::SNAPSHOT_BYTES_MAX_DEFAULT;
        assert_eq!(c.validate(snapshot_bytes_max), Ok(()));
        assert!(
            c.limits.state_bytes_bound() > 64 << 20,
            "beyond one journal record"
        );
        let mut big = c.clone();
        big.limits.files_bytes_max = snapshot_bytes_max;
        assert!(matches!(
            big.validate(snapshot_bytes_max),
            Err(LimitsError::StateTooLarge { .. })
        ));
        let mut bad = c.clone();
        bad.limits.file_bytes_max = bad.limits.files_bytes_max + 1;
        assert!(matches!(
            bad.validate(usize::MAX),
            Err(LimitsError::Disagree { .. })
        ));
        let mut zero = c;
        zero.limits.lock_entries_max = 0;
        assert_eq!(
            zero.validate(usize::MAX),
            Err(LimitsError::Zero("lock_entries_max"))
        );
    }
}
