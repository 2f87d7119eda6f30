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
}

/// Every table and queue of the lock service has its bound here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub name_bytes_max: usize,
    pub sessions_max: usize,
    /// Locks one session holds plus awaits.
    pub locks_per_session_max: usize,
    pub waiters_per_lock_max: usize,
    /// Requests a session may have unanswered-and-unacknowledged; also the
    /// bound on responses kept per session for exactly-once.
    pub requests_inflight_max: u64,
    pub ttl_ms_min: u64,
    pub ttl_ms_max: u64,
    pub file_bytes_max: usize,
    pub files_max: usize,
    /// Expiries and undelays a leader proposes per heartbeat.
    pub leader_commands_per_tick_max: usize,
    /// Events kept for the driver to drain; older ones are dropped (clients
    /// also poll for their grants).
    pub events_pending_max: usize,
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
            name_bytes_max: 256,
            sessions_max: 100_000,
            locks_per_session_max: 1024,
            waiters_per_lock_max: 4096,
            requests_inflight_max: 128,
            ttl_ms_min: 1_000,
            ttl_ms_max: 3_600_000,
            file_bytes_max: 1 << 20,
            files_max: 1024,
            leader_commands_per_tick_max: 256,
            events_pending_max: 4096,
        }
    }
}

impl LockConfig {
    pub(crate) fn reset_tokens_on_restore(&self) -> bool {
        #[cfg(feature = "sim")]
        return self.bugs.reset_tokens_on_restore;
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
