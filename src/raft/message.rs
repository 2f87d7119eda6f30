//! Raft's wire types: log entries and the messages peers exchange.

use super::membership::Membership;
use crate::actor::NodeId;
use serde::{Deserialize, Serialize};

pub type Term = u64;
pub type Index = u64;

/// One log entry. `index` is redundant with the position but keeps records
/// self-describing, so recovery can check the log is contiguous.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub term: Term,
    pub index: Index,
    pub payload: Payload,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// Appended by every new leader at the start of its term (thesis 6.4):
    /// committing it commits everything before it.
    Noop,
    /// An opaque command for the state machine.
    Command(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A new configuration, in effect once in the log (thesis 4.1).
    Config(Membership),
}

/// A state-machine snapshot covering every entry up to `index` (paper 7).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub index: Index,
    pub term: Term,
    /// The configuration in effect at `index`.
    pub membership: Membership,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// One chunk of a snapshot, leader to follower (paper 7, figure 13).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallSnapshotRequest {
    pub term: Term,
    pub last_index: Index,
    pub last_term: Term,
    pub membership: Membership,
    pub offset: u64,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    pub done: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallSnapshotResponse {
    pub term: Term,
    pub last_index: Index,
    /// The offset the follower expects next (its received length).
    pub next_offset: u64,
    /// The follower holds the whole snapshot (installed, or already covered).
    pub done: bool,
}

/// RequestVote, used both for the PreVote round (thesis 9.6) and the real
/// election (paper 5.2). For a pre-vote `term` is the term the candidate
/// *would* use; nobody changes its own term because of a pre-vote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteRequest {
    pub term: Term,
    pub last_log_index: Index,
    pub last_log_term: Term,
    /// Set by a candidate started by `TimeoutNow` (thesis 3.10): voters
    /// then ignore that they still hear from the current leader.
    pub transfer: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteResponse {
    pub term: Term,
    pub granted: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendRequest {
    pub term: Term,
    pub prev_index: Index,
    pub prev_term: Term,
    pub entries: Vec<Entry>,
    pub leader_commit: Index,
    /// The leader's latest ReadIndex round, echoed in the response, so a
    /// majority of answers confirms leadership for reads (thesis 6.4).
    pub read_round: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendResult {
    /// The follower's log matches the leader's up to `match_index`.
    Success { match_index: Index },
    /// The consistency check failed at `prev_index`. The hint lets the leader
    /// skip a whole conflicting term per round trip (paper 5.3, "fast
    /// back-off"): `conflict_term` is the follower's term at `prev_index`
    /// (None if its log is shorter) and `first_index` the first index the
    /// leader should try.
    Conflict {
        prev_index: Index,
        conflict_term: Option<Term>,
        first_index: Index,
    },
    /// The request's term was stale; `term` in the response says the newer one.
    StaleTerm,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResponse {
    pub term: Term,
    pub result: AppendResult,
    /// `read_round` of the request this answers.
    pub read_round: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    PreVote(VoteRequest),
    PreVoteResponse(VoteResponse),
    Vote(VoteRequest),
    VoteResponse(VoteResponse),
    Append(AppendRequest),
    AppendResponse(AppendResponse),
    InstallSnapshot(InstallSnapshotRequest),
    InstallSnapshotResponse(InstallSnapshotResponse),
    /// A server asks to be added to the cluster (thesis 4.2.1); followers
    /// pass it on to the leader. Sent to any member; `to` may be 0.
    Join {
        id: NodeId,
        addr: String,
    },
    /// Leader to transfer target: start an election now (thesis 3.10).
    TimeoutNow {
        term: Term,
    },
    /// Follower to leader: what index may a read be served at? (thesis 6.4)
    ReadIndex {
        term: Term,
        id: u64,
    },
    /// Leader to follower: the read index, or None if it cannot confirm.
    ReadIndexResponse {
        term: Term,
        id: u64,
        index: Option<Index>,
    },
    /// Follower to leader: a client's proposal, to append.
    Forward {
        term: Term,
        id: u64,
        #[serde(with = "serde_bytes")]
        command: Vec<u8>,
    },
    /// Leader to follower: the index the forwarded command was appended at
    /// (in the leader's term), or None if it was not taken.
    ForwardResponse {
        term: Term,
        id: u64,
        at: Option<Index>,
    },
}

impl Message {
    pub fn term(&self) -> Term {
        match self {
            Message::PreVote(m) | Message::Vote(m) => m.term,
            Message::PreVoteResponse(m) | Message::VoteResponse(m) => m.term,
            Message::Append(m) => m.term,
            Message::AppendResponse(m) => m.term,
            Message::InstallSnapshot(m) => m.term,
            Message::InstallSnapshotResponse(m) => m.term,
            Message::TimeoutNow { term }
            | Message::ReadIndex { term, .. }
            | Message::ReadIndexResponse { term, .. }
            | Message::Forward { term, .. }
            | Message::ForwardResponse { term, .. } => *term,
            Message::Join { .. } => 0,
        }
    }

    /// Small messages that keep elections and a leader's authority going:
    /// (pre-)votes and their answers, bare heartbeats, the answers to
    /// appends, and `TimeoutNow`. A transport may send them ahead of queued
    /// bulk (appends with entries, snapshot chunks, forwards) and bound
    /// them apart, so that a queue full of bulk under overload does not
    /// drop the heartbeats and make followers call an election. Raft needs
    /// no order between messages, and a bare heartbeat names an index
    /// already known to match (`send_append`), so overtaking queued appends
    /// does not trip its consistency check; except, for a follower behind
    /// the snapshot point, the snapshot index, whose refusal the leader
    /// ignores while appends up to there are in flight.
    pub fn keeps_liveness(&self) -> bool {
        match self {
            Message::PreVote(_)
            | Message::PreVoteResponse(_)
            | Message::Vote(_)
            | Message::VoteResponse(_)
            | Message::AppendResponse(_)
            | Message::TimeoutNow { .. } => true,
            Message::Append(m) => m.entries.is_empty(),
            _ => false,
        }
    }

    /// About how many bytes the message takes: its variable parts plus a
    /// fixed allowance (for bounds on queues of messages, not for framing).
    pub fn approx_bytes(&self) -> usize {
        const FIXED_BYTES: usize = 64;
        let variable = match self {
            Message::Append(m) => m.entries.iter().map(super::log::payload_len).sum(),
            Message::InstallSnapshot(m) => m.data.len(),
            Message::Forward { command, .. } => command.len(),
            Message::Join { addr, .. } => addr.len(),
            _ => 0,
        };
        variable + FIXED_BYTES
    }
}

/// What travels between peers: a message with its sender and addressee.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub from: NodeId,
    pub to: NodeId,
    pub msg: Message,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `serde_bytes` changes how fast bytes are encoded, not what they
    /// encode to: journals and peers from before it still decode.
    #[test]
    fn byte_fields_keep_the_wire_format_of_a_plain_vec() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        enum Before {
            Noop,
            Command(Vec<u8>),
        }
        let data: Vec<u8> = (0..=255).cycle().take(1000).collect();
        let before = postcard::to_allocvec(&Before::Command(data.clone())).unwrap();
        let now = postcard::to_allocvec(&Payload::Command(data.clone())).unwrap();
        assert_eq!(before, now);
        assert_eq!(
            postcard::from_bytes::<Payload>(&before).unwrap(),
            Payload::Command(data)
        );
        assert_eq!(
            postcard::to_allocvec(&Before::Noop).unwrap(),
            postcard::to_allocvec(&Payload::Noop).unwrap()
        );
    }
}
