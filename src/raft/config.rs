//! Tunables of the Raft replica. Every bound is a named constant with its
//! unit last, so limits are easy to find and to grep.

use std::time::Duration;
use thiserror::Error;

/// Lower bound of the randomized election timeout.
pub const ELECTION_TIMEOUT_MS_MIN_DEFAULT: u64 = 300;
/// Upper bound (exclusive) of the randomized election timeout.
pub const ELECTION_TIMEOUT_MS_MAX_DEFAULT: u64 = 600;
/// Leader heartbeat period; well under the election timeout (paper 5.6).
pub const HEARTBEAT_INTERVAL_MS_DEFAULT: u64 = 50;
/// Entries per AppendEntries message.
pub const APPEND_ENTRIES_MAX_DEFAULT: usize = 256;
/// Command bytes per AppendEntries message beyond its first entry: a burst
/// of large entries goes in several messages, each well inside a frame.
pub const APPEND_BYTES_MAX_DEFAULT: usize = 1024 * 1024;
/// Largest command a client may propose; larger ones are refused
/// (`RequestError::TooLarge`) before anything is appended.
pub const ENTRY_BYTES_MAX_DEFAULT: usize = 4 * 1024 * 1024;
/// What a peer frame carries besides command or snapshot bytes (envelope,
/// entry headers, a membership list), at most.
pub const FRAME_OVERHEAD_BYTES_MAX: usize = 256 * 1024;
/// AppendEntries messages carrying entries in flight per follower.
pub const INFLIGHT_APPENDS_MAX_DEFAULT: usize = 32;
/// Command bytes in flight per follower: a follower is never sent more
/// than its disk can take in about one fsync.
pub const INFLIGHT_BYTES_MAX_DEFAULT: usize = 8 * 1024 * 1024;
/// Client proposals awaiting commit on a leader; more get `Busy`.
pub const PENDING_PROPOSALS_MAX_DEFAULT: usize = 4096;
/// Proposals a follower has forwarded to its leader and not yet heard
/// where they went; more get `Busy`. Each is one message each way, so
/// they must fit the peer send queue (`PEER_SEND_QUEUE_LEN_MAX`, checked
/// where it is defined) with room for appends and heartbeats: a burst of
/// writes through a follower is refused at the door, not dropped on the
/// wire and left to time out with an unknown outcome.
pub const FORWARDS_IN_FLIGHT_MAX: usize = 256;
/// Command bytes of those forwards, at most: 256 forwards of a 4 MiB
/// command would be 1 GiB, and the peer send queue holds 64 MiB
/// (`PEER_SEND_QUEUE_BYTES_MAX`, checked where it is defined).
pub const FORWARDS_IN_FLIGHT_BYTES_MAX: usize = 16 * 1024 * 1024;
// A single command of the largest size is always forwarded when nothing
// else is in flight.
const _: () = assert!(ENTRY_BYTES_MAX_DEFAULT <= FORWARDS_IN_FLIGHT_BYTES_MAX);
/// Applied entries kept in the log before a snapshot replaces them.
pub const SNAPSHOT_THRESHOLD_ENTRIES_DEFAULT: u64 = 10_000;
/// Command bytes kept in the log before a snapshot replaces them.
pub const SNAPSHOT_THRESHOLD_BYTES_DEFAULT: usize = 64 * 1024 * 1024;
/// Command bytes the log may hold in memory; past this a leader answers
/// new proposals `Busy` (commits or compaction are not keeping up).
pub const LOG_BYTES_MAX_DEFAULT: usize = 2 * SNAPSHOT_THRESHOLD_BYTES_DEFAULT;
/// Bytes of snapshot per InstallSnapshot message.
pub const SNAPSHOT_CHUNK_BYTES_DEFAULT: usize = 256 * 1024;
/// Largest snapshot a follower accepts from a leader: at least the largest
/// state the lock service's limits allow (`LockConfig::validate`).
pub const SNAPSHOT_BYTES_MAX_DEFAULT: usize = 4 * 1024 * 1024 * 1024;
/// Linearizable reads waiting for confirmation or apply; more get `Busy`.
pub const PENDING_READS_MAX_DEFAULT: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    pub heartbeat_interval: Duration,
    pub append_entries_max: usize,
    /// See `APPEND_BYTES_MAX_DEFAULT`.
    pub append_bytes_max: usize,
    /// See `ENTRY_BYTES_MAX_DEFAULT`.
    pub entry_bytes_max: usize,
    pub inflight_appends_max: usize,
    /// See `INFLIGHT_BYTES_MAX_DEFAULT`.
    pub inflight_bytes_max: usize,
    pub pending_proposals_max: usize,
    pub pending_reads_max: usize,
    /// A replica snapshots once its log holds this many applied entries,
    /// or this many bytes of commands, whichever comes first.
    pub snapshot_threshold_entries: u64,
    pub snapshot_threshold_bytes: usize,
    /// See `LOG_BYTES_MAX_DEFAULT`.
    pub log_bytes_max: usize,
    pub snapshot_chunk_bytes: usize,
    pub snapshot_bytes_max: usize,
    /// Deliberate bugs for the simulator's negative controls. Only built with
    /// the `sim` feature, so a production binary cannot switch them on.
    #[cfg(feature = "sim")]
    pub bugs: Bugs,
}

/// Rules a negative control may break to prove the checkers can fail.
#[cfg(feature = "sim")]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    /// Grant a vote even when already voted for another candidate this term.
    pub vote_twice_per_term: bool,
    /// Persist votes and entries without fsync before answering for them.
    pub skip_fsync: bool,
    /// Accept AppendEntries whose prevLogTerm does not match (skipping the
    /// consistency check of paper 5.3).
    pub skip_consistency_check: bool,
    /// Answer reads from local state without confirming leadership or
    /// asking the leader (a stale read).
    pub stale_reads: bool,
    /// Count learners' acknowledgements toward commit (thesis 4.2.1 says
    /// they are not part of majorities).
    pub count_learners: bool,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("election timeout range is empty: min {min:?} must be below max {max:?}")]
    EmptyElectionRange { min: Duration, max: Duration },
    #[error(
        "heartbeat interval {heartbeat:?} must be under half the minimum election timeout {min:?}"
    )]
    HeartbeatTooSlow { heartbeat: Duration, min: Duration },
    #[error("{0} must be at least 1")]
    ZeroBound(&'static str),
    #[error("log_bytes_max {log_bytes_max} is below snapshot_threshold_bytes + entry_bytes_max ({needs})")]
    LogTooSmall { log_bytes_max: usize, needs: usize },
    /// A message built within these bounds could exceed a peer frame.
    #[error("{what} of {bytes} bytes, plus {FRAME_OVERHEAD_BYTES_MAX} bytes of overhead, does not fit a peer frame of {frame_max} bytes")]
    FrameTooSmall {
        what: &'static str,
        bytes: usize,
        frame_max: usize,
    },
}

impl Default for Config {
    fn default() -> Self {
        Config {
            election_timeout_min: Duration::from_millis(ELECTION_TIMEOUT_MS_MIN_DEFAULT),
            election_timeout_max: Duration::from_millis(ELECTION_TIMEOUT_MS_MAX_DEFAULT),
            heartbeat_interval: Duration::from_millis(HEARTBEAT_INTERVAL_MS_DEFAULT),
            append_entries_max: APPEND_ENTRIES_MAX_DEFAULT,
            append_bytes_max: APPEND_BYTES_MAX_DEFAULT,
            entry_bytes_max: ENTRY_BYTES_MAX_DEFAULT,
            inflight_appends_max: INFLIGHT_APPENDS_MAX_DEFAULT,
            inflight_bytes_max: INFLIGHT_BYTES_MAX_DEFAULT,
            pending_proposals_max: PENDING_PROPOSALS_MAX_DEFAULT,
            pending_reads_max: PENDING_READS_MAX_DEFAULT,
            snapshot_threshold_entries: SNAPSHOT_THRESHOLD_ENTRIES_DEFAULT,
            snapshot_threshold_bytes: SNAPSHOT_THRESHOLD_BYTES_DEFAULT,
            log_bytes_max: LOG_BYTES_MAX_DEFAULT,
            snapshot_chunk_bytes: SNAPSHOT_CHUNK_BYTES_DEFAULT,
            snapshot_bytes_max: SNAPSHOT_BYTES_MAX_DEFAULT,
            #[cfg(feature = "sim")]
            bugs: Bugs::default(),
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.election_timeout_min >= self.election_timeout_max {
            return Err(ConfigError::EmptyElectionRange {
                min: self.election_timeout_min,
                max: self.election_timeout_max,
            });
        }
        if self.heartbeat_interval * 2 > self.election_timeout_min {
            return Err(ConfigError::HeartbeatTooSlow {
                heartbeat: self.heartbeat_interval,
                min: self.election_timeout_min,
            });
        }
        // The bounds agree: an AppendEntries stops adding entries once past
        // `append_bytes_max`, so its last entry may take it over by up to
        // `entry_bytes_max`; a snapshot chunk goes alone.
        let frame_max = crate::net::FRAME_BYTES_MAX;
        for (what, bytes) in [
            (
                "append_bytes_max + entry_bytes_max",
                self.append_bytes_max.saturating_add(self.entry_bytes_max),
            ),
            ("snapshot_chunk_bytes", self.snapshot_chunk_bytes),
        ] {
            if bytes.saturating_add(FRAME_OVERHEAD_BYTES_MAX) > frame_max {
                return Err(ConfigError::FrameTooSmall {
                    what,
                    bytes,
                    frame_max,
                });
            }
        }
        // The log must be able to reach the snapshot threshold, and take one
        // more entry.
        let log_needs = self
            .snapshot_threshold_bytes
            .saturating_add(self.entry_bytes_max);
        if self.log_bytes_max < log_needs {
            return Err(ConfigError::LogTooSmall {
                log_bytes_max: self.log_bytes_max,
                needs: log_needs,
            });
        }
        for (name, v) in [
            ("append_entries_max", self.append_entries_max),
            ("append_bytes_max", self.append_bytes_max),
            ("entry_bytes_max", self.entry_bytes_max),
            ("inflight_appends_max", self.inflight_appends_max),
            ("inflight_bytes_max", self.inflight_bytes_max),
            ("pending_proposals_max", self.pending_proposals_max),
            ("pending_reads_max", self.pending_reads_max),
            (
                "snapshot_threshold_entries",
                self.snapshot_threshold_entries as usize,
            ),
            ("snapshot_threshold_bytes", self.snapshot_threshold_bytes),
            ("snapshot_chunk_bytes", self.snapshot_chunk_bytes),
            ("snapshot_bytes_max", self.snapshot_bytes_max),
        ] {
            if v == 0 {
                return Err(ConfigError::ZeroBound(name));
            }
        }
        Ok(())
    }

    pub(crate) fn vote_twice_per_term(&self) -> bool {
        #[cfg(feature = "sim")]
        return self.bugs.vote_twice_per_term;
        #[cfg(not(feature = "sim"))]
        false
    }

    pub(crate) fn skip_consistency_check(&self) -> bool {
        #[cfg(feature = "sim")]
        return self.bugs.skip_consistency_check;
        #[cfg(not(feature = "sim"))]
        false
    }

    pub(crate) fn stale_reads(&self) -> bool {
        #[cfg(feature = "sim")]
        return self.bugs.stale_reads;
        #[cfg(not(feature = "sim"))]
        false
    }

    pub(crate) fn count_learners(&self) -> bool {
        #[cfg(feature = "sim")]
        return self.bugs.count_learners;
        #[cfg(not(feature = "sim"))]
        false
    }

    pub(crate) fn skip_fsync(&self) -> bool {
        #[cfg(feature = "sim")]
        return self.bugs.skip_fsync;
        #[cfg(not(feature = "sim"))]
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bad_ranges_are_named() {
        assert_eq!(Config::default().validate(), Ok(()));
        let c = Config {
            election_timeout_max: Duration::from_millis(100),
            ..Config::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::EmptyElectionRange { .. })
        ));
        let c = Config {
            heartbeat_interval: Duration::from_millis(200),
            ..Config::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::HeartbeatTooSlow { .. })
        ));
        let c = Config {
            inflight_appends_max: 0,
            ..Config::default()
        };
        assert_eq!(
            c.validate(),
            Err(ConfigError::ZeroBound("inflight_appends_max"))
        );
        let c = Config {
            entry_bytes_max: crate::net::FRAME_BYTES_MAX,
            ..Config::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::FrameTooSmall { .. })
        ));
        let c = Config {
            snapshot_chunk_bytes: crate::net::FRAME_BYTES_MAX,
            ..Config::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::FrameTooSmall { .. })
        ));
    }
}
