//! Unit tests of the replica: each drives one replica with exact inputs and
//! asserts its exact effects, and names the section of the Raft paper
//! ("paper") or Ongaro's thesis ("thesis") it checks.

use super::message::{
    AppendRequest, AppendResponse, AppendResult, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use super::*;
use crate::actor::Instant;
use std::sync::Arc;
use std::time::Duration;

const MIN_MS: u64 = 100;
const HB_MS: u64 = 10;

/// Election timeouts are exactly `MIN_MS`: the random range is 1 µs wide,
/// so effect lists can be compared whole.
fn config() -> Config {
    Config {
        election_timeout_min: Duration::from_millis(MIN_MS),
        election_timeout_max: Duration::from_millis(MIN_MS) + Duration::from_micros(1),
        heartbeat_interval: Duration::from_millis(HB_MS),
        pending_proposals_max: 2,
        ..Config::default()
    }
}

fn members(ids: &[u64]) -> Membership {
    Membership::voters_at(ids.iter().map(|&id| (id, format!("n{id}"))))
}

fn ms(t: u64) -> Instant {
    Instant::from_micros(t * 1000)
}

fn entry(index: Index, term: Term) -> Entry {
    Entry {
        index,
        term,
        payload: Payload::Command(vec![index as u8]),
    }
}

fn noop(index: Index, term: Term) -> Entry {
    Entry {
        index,
        term,
        payload: Payload::Noop,
    }
}

fn replica(id: u64, term: Term, entries: Vec<Entry>) -> Raft<Recorder> {
    let recovered = Recovered {
        snapshot: None,
        hard_state: HardState {
            term,
            voted_for: None,
        },
        entries,
    };
    let mut r = Raft::new(
        id,
        members(&[1, 2, 3]),
        config(),
        recovered,
        Recorder::new(),
        7,
    )
    .unwrap();
    r.handle(ms(0), Input::Start);
    r
}

fn msg<S: StateMachine>(r: &mut Raft<S>, now: u64, from: u64, msg: Message) -> Vec<Effect> {
    let effects = r.handle(ms(now), Input::Message { from, msg });
    built_at_once(r, now, effects)
}

/// What a driver that serializes snapshots at once does: each
/// `BuildSnapshot` is run and its result stepped, its effects in its place.
fn built_at_once<S: StateMachine>(r: &mut Raft<S>, now: u64, effects: Vec<Effect>) -> Vec<Effect> {
    let mut out = Vec::new();
    for effect in effects {
        match effect {
            Effect::BuildSnapshot(job) => {
                let more = r.handle(ms(now), job.run());
                out.extend(built_at_once(r, now, more));
            }
            other => out.push(other),
        }
    }
    out
}

fn timer(at: u64) -> Effect {
    Effect::SetTimer {
        timer: Timer::Election,
        at: ms(at),
    }
}

fn hs(term: Term, voted_for: Option<u64>) -> Effect {
    Effect::Persist {
        op: PersistOp::HardState(HardState { term, voted_for }),
        sync: true,
    }
}

/// An AppendEntries request outside any ReadIndex round.
fn append_req(
    term: Term,
    prev_index: Index,
    prev_term: Term,
    entries: Vec<Entry>,
    leader_commit: Index,
) -> AppendRequest {
    AppendRequest {
        term,
        prev_index,
        prev_term,
        entries,
        leader_commit,
        read_round: 0,
    }
}

/// The reply refusing request `id` with `error`.
fn refused(id: RequestId, error: RequestError) -> Effect {
    Effect::Reply {
        id,
        result: Err(error),
    }
}

fn send(to: u64, msg: Message) -> Effect {
    Effect::Send { to, msg }
}

fn vote_req(term: Term, last_log_index: Index, last_log_term: Term) -> VoteRequest {
    VoteRequest {
        term,
        last_log_index,
        last_log_term,
        transfer: false,
    }
}

fn granted(term: Term, granted: bool) -> VoteResponse {
    VoteResponse { term, granted }
}

/// What a driver does after an fsync: report the log durable to its end.
fn durable<S: StateMachine>(r: &mut Raft<S>, now: u64) -> Vec<Effect> {
    let index = r.log().last_index();
    let term = r.log().last_term();
    let effects = r.handle(ms(now), Input::Persisted { index, term });
    built_at_once(r, now, effects)
}

/// Starts `r` and wins the election for `term` with node 2's votes.
fn elect<S: StateMachine>(r: &mut Raft<S>, term: Term) {
    r.handle(ms(0), Input::Start);
    r.handle(ms(MIN_MS), Input::Timer(Timer::Election));
    msg(r, MIN_MS, 2, Message::PreVoteResponse(granted(term, true)));
    msg(r, MIN_MS, 2, Message::VoteResponse(granted(term, true)));
}

/// Node 1 of three as leader of term 1 under `cfg`, its no-op durable.
fn leader_with(cfg: Config) -> Raft<Recorder> {
    leader_of(cfg, Recorder::new())
}

/// Node 1 of three applying `sm`, leader of term 1, its no-op durable.
fn leader_of<S: StateMachine>(cfg: Config, sm: S) -> Raft<S> {
    let mut r = Raft::new(1, members(&[1, 2, 3]), cfg, Recovered::default(), sm, 7).unwrap();
    elect(&mut r, 1);
    assert_eq!(r.role(), Role::Leader);
    durable(&mut r, MIN_MS);
    r
}

/// Makes node 1 leader of term 1 over an empty log, via PreVote and Vote,
/// with its no-op durable.
fn leader() -> Raft<Recorder> {
    let mut r = replica(1, 0, vec![]);
    r.handle(ms(MIN_MS), Input::Timer(Timer::Election));
    msg(
        &mut r,
        MIN_MS + 1,
        2,
        Message::PreVoteResponse(granted(1, true)),
    );
    msg(
        &mut r,
        MIN_MS + 2,
        2,
        Message::VoteResponse(granted(1, true)),
    );
    assert_eq!(r.role(), Role::Leader);
    durable(&mut r, MIN_MS + 2);
    r
}

fn success(term: Term, match_index: Index) -> Message {
    Message::AppendResponse(AppendResponse {
        term,
        result: AppendResult::Success { match_index },
        read_round: 0,
    })
}

#[test]
fn start_arms_the_election_timer() {
    // Paper 5.2: servers start as followers with a randomized timeout.
    let recovered = Recovered::default();
    let mut r = Raft::new(
        1,
        members(&[1, 2, 3]),
        config(),
        recovered,
        Recorder::new(),
        7,
    )
    .unwrap();
    assert_eq!(r.handle(ms(5), Input::Start), vec![timer(5 + MIN_MS)]);
    assert_eq!(r.role(), Role::Follower);
}

#[test]
fn election_timeout_starts_a_pre_vote_without_touching_the_term() {
    // Thesis 9.6: PreVote asks for votes for term+1 but changes no term and
    // persists nothing, so a partitioned node cannot inflate terms.
    let mut r = replica(1, 4, vec![entry(1, 3)]);
    let effects = r.handle(ms(MIN_MS), Input::Timer(Timer::Election));
    let req = Message::PreVote(vote_req(5, 1, 3));
    assert_eq!(
        effects,
        vec![send(2, req.clone()), send(3, req), timer(2 * MIN_MS)]
    );
    assert_eq!((r.term(), r.role()), (4, Role::PreCandidate));
}

#[test]
fn pre_vote_majority_starts_the_real_election_and_persists_first() {
    // Paper 5.2 and figure 2: the candidate increments its term and votes for
    // itself; both are durable before any RequestVote leaves.
    let mut r = replica(1, 4, vec![entry(1, 3)]);
    r.handle(ms(MIN_MS), Input::Timer(Timer::Election));
    let effects = msg(
        &mut r,
        MIN_MS + 1,
        3,
        Message::PreVoteResponse(granted(5, true)),
    );
    let req = Message::Vote(vote_req(5, 1, 3));
    assert_eq!(
        effects,
        vec![
            hs(5, Some(1)),
            send(2, req.clone()),
            send(3, req),
            timer(2 * MIN_MS + 1)
        ]
    );
    assert_eq!(r.role(), Role::Candidate);
}

#[test]
fn a_vote_is_persisted_before_it_is_granted_and_given_once_per_term() {
    // Paper 5.2: at most one vote per term, first come first served; figure 2
    // requires votedFor to be on stable storage before responding.
    let mut r = replica(2, 1, vec![]);
    let effects = msg(&mut r, 10, 1, Message::Vote(vote_req(2, 0, 0)));
    assert_eq!(
        effects,
        vec![
            hs(2, None),
            hs(2, Some(1)),
            send(1, Message::VoteResponse(granted(2, true))),
            timer(10 + MIN_MS)
        ]
    );
    let effects = msg(&mut r, 11, 3, Message::Vote(vote_req(2, 0, 0)));
    assert_eq!(
        effects,
        vec![send(3, Message::VoteResponse(granted(2, false)))]
    );
}

#[test]
fn vote_is_denied_to_a_candidate_with_a_less_up_to_date_log() {
    // Paper 5.4.1: the election restriction.
    let mut r = replica(2, 2, vec![entry(1, 1), entry(2, 2)]);
    let effects = msg(&mut r, 10, 1, Message::Vote(vote_req(3, 5, 1)));
    assert_eq!(
        effects,
        vec![
            hs(3, None),
            send(1, Message::VoteResponse(granted(3, false))),
            timer(10 + MIN_MS)
        ]
    );
    assert_eq!(r.voted_for(), None);
}

#[test]
fn pre_vote_is_refused_while_a_leader_is_heard_and_changes_no_term() {
    // Thesis 9.6 with 4.2.3: a node hearing from a leader refuses to help
    // depose it, and a pre-vote never changes the receiver's term.
    let mut r = replica(2, 1, vec![]);
    let hb = append_req(1, 0, 0, vec![], 0);
    msg(&mut r, 10, 1, Message::Append(hb));
    let effects = msg(&mut r, 20, 3, Message::PreVote(vote_req(2, 0, 0)));
    assert_eq!(
        effects,
        vec![send(3, Message::PreVoteResponse(granted(1, false)))]
    );
    // After the leader goes quiet for an election timeout, it is granted.
    let effects = msg(&mut r, 10 + MIN_MS, 3, Message::PreVote(vote_req(2, 0, 0)));
    assert_eq!(
        effects,
        vec![send(3, Message::PreVoteResponse(granted(2, true)))]
    );
    assert_eq!(r.term(), 1);
}

#[test]
fn vote_requests_with_higher_terms_are_ignored_while_a_leader_is_heard() {
    // Thesis 4.2.3: disruptive servers cannot force a new term.
    let mut r = replica(2, 1, vec![]);
    let hb = append_req(1, 0, 0, vec![], 0);
    msg(&mut r, 10, 1, Message::Append(hb));
    let effects = msg(&mut r, 20, 3, Message::Vote(vote_req(9, 0, 0)));
    assert_eq!(
        effects,
        vec![send(3, Message::VoteResponse(granted(1, false)))]
    );
    assert_eq!(r.term(), 1);
}

#[test]
fn a_new_leader_appends_a_noop_and_replicates_it() {
    // Thesis 6.4: the no-op of the new term; paper 5.3: AppendEntries carry
    // the consistency-check pair (prevLogIndex, prevLogTerm).
    let mut r = replica(1, 0, vec![]);
    r.handle(ms(MIN_MS), Input::Timer(Timer::Election));
    msg(
        &mut r,
        MIN_MS + 1,
        2,
        Message::PreVoteResponse(granted(1, true)),
    );
    let effects = msg(
        &mut r,
        MIN_MS + 2,
        2,
        Message::VoteResponse(granted(1, true)),
    );
    let ae = append_req(1, 0, 0, vec![noop(1, 1)], 0);
    assert_eq!(
        effects,
        vec![
            Effect::Persist {
                op: PersistOp::Append(vec![noop(1, 1)]),
                sync: true
            },
            send(2, Message::Append(ae.clone())),
            send(3, Message::Append(ae)),
            timer(2 * MIN_MS + 2),
            Effect::SetTimer {
                timer: Timer::Heartbeat,
                at: ms(MIN_MS + 2 + HB_MS)
            },
        ]
    );
}

#[test]
fn consistency_check_failure_returns_a_fast_backoff_hint() {
    // Paper 5.3 ("the follower can include the term of the conflicting
    // entry and the first index it stores for that term").
    let mut r = replica(
        2,
        3,
        vec![entry(1, 1), entry(2, 2), entry(3, 2), entry(4, 2)],
    );
    let req = append_req(3, 4, 3, vec![], 0);
    let effects = msg(&mut r, 10, 1, Message::Append(req));
    let result = AppendResult::Conflict {
        prev_index: 4,
        conflict_term: Some(2),
        first_index: 2,
    };
    assert_eq!(
        effects,
        vec![
            send(
                1,
                Message::AppendResponse(AppendResponse {
                    term: 3,
                    result,
                    read_round: 0
                })
            ),
            timer(10 + MIN_MS)
        ]
    );
    // A log that is too short says where it ends.
    let req = append_req(3, 9, 3, vec![], 0);
    let effects = msg(&mut r, 11, 1, Message::Append(req));
    let result = AppendResult::Conflict {
        prev_index: 9,
        conflict_term: None,
        first_index: 5,
    };
    assert_eq!(
        effects[0],
        send(
            1,
            Message::AppendResponse(AppendResponse {
                term: 3,
                result,
                read_round: 0
            })
        )
    );
}

#[test]
fn conflicting_entries_are_truncated_then_replaced_durably_before_the_ack() {
    // Paper 5.3: "If an existing entry conflicts with a new one, delete the
    // existing entry and all that follow it"; figure 2: persist, then reply.
    let mut r = replica(2, 3, vec![entry(1, 1), entry(2, 2), entry(3, 2)]);
    let new = vec![entry(2, 3), entry(3, 3)];
    let req = append_req(3, 1, 1, new.clone(), 2);
    let effects = msg(&mut r, 10, 1, Message::Append(req));
    assert_eq!(
        effects,
        vec![
            Effect::Persist {
                op: PersistOp::TruncateFrom(2),
                sync: true
            },
            Effect::Persist {
                op: PersistOp::Append(new),
                sync: true
            },
            send(
                1,
                Message::AppendResponse(AppendResponse {
                    term: 3,
                    result: AppendResult::Success { match_index: 3 },
                    read_round: 0,
                })
            ),
            timer(10 + MIN_MS),
        ]
    );
    assert_eq!(r.log().term_at(3), Some(3));
    // Paper 5.3: commitIndex = min(leaderCommit, index of last new entry).
    assert_eq!((r.commit_index(), r.applied_index()), (2, 2));
}

#[test]
fn a_leader_commits_by_counting_only_current_term_entries() {
    // Paper 5.4.2 (figure 8): an entry of an earlier term is not committed by
    // being on a majority; the current term's no-op commits it.
    let recovered = Recovered {
        snapshot: None,
        hard_state: HardState {
            term: 2,
            voted_for: None,
        },
        entries: vec![entry(1, 2)],
    };
    let mut r = Raft::new(
        1,
        members(&[1, 2, 3]),
        config(),
        recovered,
        Recorder::new(),
        7,
    )
    .unwrap();
    elect(&mut r, 3);
    assert_eq!(
        (r.role(), r.term(), r.log().last_index()),
        (Role::Leader, 3, 2)
    );
    msg(&mut r, MIN_MS + 1, 2, success(3, 1));
    assert_eq!(
        r.commit_index(),
        0,
        "index 1 is from term 2: not committed by counting"
    );
    durable(&mut r, MIN_MS + 2);
    msg(&mut r, MIN_MS + 2, 2, success(3, 2));
    assert_eq!(r.commit_index(), 2);
    let applied: Vec<_> = r.state_machine().applied().cloned().collect();
    assert_eq!(applied, [(1, vec![1])]);
}

#[test]
fn a_batch_of_proposals_leaves_in_one_append_entries_per_follower() {
    // Same log as proposing one at a time (paper 5.3), fewer messages: the
    // driver hands over what arrived together.
    let mut r = leader();
    msg(&mut r, 200, 2, success(1, 1));
    msg(&mut r, 200, 3, success(1, 1));
    let effects = r.handle(
        ms(201),
        Input::ProposeBatch(vec![(42, b"x".to_vec()), (43, b"y".to_vec())]),
    );
    let e = |index, c: &[u8]| Entry {
        term: 1,
        index,
        payload: Payload::Command(c.to_vec()),
    };
    let both = vec![e(2, b"x"), e(3, b"y")];
    assert_eq!(
        effects,
        vec![
            Effect::Persist {
                op: PersistOp::Append(vec![e(2, b"x")]),
                sync: true
            },
            Effect::Persist {
                op: PersistOp::Append(vec![e(3, b"y")]),
                sync: true
            },
            send(2, Message::Append(append_req(1, 1, 1, both.clone(), 1))),
            send(3, Message::Append(append_req(1, 1, 1, both, 1))),
        ]
    );
    durable(&mut r, 202);
    let effects = msg(&mut r, 202, 3, success(1, 3));
    let replies: Vec<_> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Reply { id, result } => Some((*id, result.as_ref().map(|a| a.index))),
            _ => None,
        })
        .collect();
    assert_eq!(replies, vec![(42, Ok(2)), (43, Ok(3))]);
}

#[test]
fn a_proposal_is_answered_after_a_majority_stores_it() {
    // Paper 5.3: the leader applies an entry once committed, then replies.
    let mut r = leader();
    msg(&mut r, 200, 2, success(1, 1));
    let effects = r.handle(
        ms(201),
        Input::Propose {
            id: 42,
            command: b"x".to_vec(),
        },
    );
    let e2 = Entry {
        term: 1,
        index: 2,
        payload: Payload::Command(b"x".to_vec()),
    };
    assert_eq!(
        effects,
        vec![
            Effect::Persist {
                op: PersistOp::Append(vec![e2.clone()]),
                sync: true
            },
            send(2, Message::Append(append_req(1, 1, 1, vec![e2], 1))),
        ],
        "node 3 is still probing with its first AppendEntries in flight, so nothing goes to it yet"
    );
    assert_eq!(
        durable(&mut r, 202),
        vec![],
        "the leader alone is no majority"
    );
    let effects = msg(&mut r, 202, 2, success(1, 2));
    assert_eq!(
        effects,
        vec![Effect::Reply {
            id: 42,
            result: Ok(Applied {
                index: 2,
                output: 2u64.to_le_bytes().to_vec()
            })
        }]
    );
}

#[test]
fn proposals_are_refused_with_the_leader_hint_or_busy() {
    // No leader known: nowhere to forward to.
    let mut r = replica(2, 1, vec![]);
    let effects = r.handle(
        ms(11),
        Input::Propose {
            id: 1,
            command: vec![],
        },
    );
    assert_eq!(
        effects,
        vec![refused(1, RequestError::NotLeader { leader: None })]
    );
    // The leader does not take a forwarded proposal: the client is told
    // who leads, to go there.
    let hb = append_req(1, 0, 0, vec![], 0);
    msg(&mut r, 10, 1, Message::Append(hb));
    r.handle(
        ms(11),
        Input::Propose {
            id: 2,
            command: vec![],
        },
    );
    let effects = msg(
        &mut r,
        12,
        1,
        Message::ForwardResponse {
            term: 1,
            id: 1,
            at: None,
        },
    );
    assert_eq!(
        effects,
        vec![refused(2, RequestError::NotLeader { leader: Some(1) })]
    );

    let mut l = leader();
    l.handle(
        ms(200),
        Input::Propose {
            id: 1,
            command: vec![],
        },
    );
    l.handle(
        ms(200),
        Input::Propose {
            id: 2,
            command: vec![],
        },
    );
    let effects = l.handle(
        ms(200),
        Input::Propose {
            id: 3,
            command: vec![],
        },
    );
    assert_eq!(effects, vec![refused(3, RequestError::Busy)]);
}

#[test]
fn leader_backs_off_a_whole_term_per_rejection() {
    // Paper 5.3 fast back-off: with the follower's conflict term unknown to
    // the leader, nextIndex jumps to the follower's first index of it.
    let mut r = leader();
    let result = AppendResult::Conflict {
        prev_index: 0,
        conflict_term: None,
        first_index: 1,
    };
    msg(
        &mut r,
        200,
        3,
        Message::AppendResponse(AppendResponse {
            term: 1,
            result,
            read_round: 0,
        }),
    );
    for i in 0..3 {
        r.handle(
            ms(201 + i),
            Input::Propose {
                id: i,
                command: vec![],
            },
        );
        msg(&mut r, 201 + i, 2, success(1, 2 + i));
    }
    // Node 3 claims an old term-0-ish history ending at 1: resend from 1.
    let result = AppendResult::Conflict {
        prev_index: 3,
        conflict_term: Some(7),
        first_index: 2,
    };
    let effects = msg(
        &mut r,
        210,
        3,
        Message::AppendResponse(AppendResponse {
            term: 1,
            result,
            read_round: 0,
        }),
    );
    match &effects[..] {
        [Effect::Send {
            to: 3,
            msg: Message::Append(req),
        }] => {
            assert_eq!(
                (req.prev_index, req.entries.first().map(|e| e.index)),
                (1, Some(2))
            );
        }
        other => panic!("unexpected effects {other:?}"),
    }
}

#[test]
fn check_quorum_makes_an_isolated_leader_step_down() {
    // Thesis 6.2: a leader steps down if an election timeout passes without
    // hearing from a majority.
    let mut r = leader();
    let effects = r.handle(ms(MIN_MS + 2 + MIN_MS), Input::Timer(Timer::Election));
    assert_eq!(
        effects,
        vec![timer(3 * MIN_MS + 2), Effect::CancelTimer(Timer::Heartbeat)]
    );
    assert_eq!((r.role(), r.term()), (Role::Follower, 1));

    // A leader that did hear from a majority stays.
    let mut r = leader();
    msg(&mut r, 150, 3, success(1, 1));
    r.handle(ms(MIN_MS + 2 + MIN_MS), Input::Timer(Timer::Election));
    assert_eq!(r.role(), Role::Leader);
}

#[test]
fn stepping_down_fails_pending_proposals_as_ambiguous() {
    // A deposed leader cannot know whether its entries will commit.
    let mut r = leader();
    r.handle(
        ms(200),
        Input::Propose {
            id: 9,
            command: vec![],
        },
    );
    let hb = append_req(2, 0, 0, vec![], 0);
    let effects = msg(&mut r, 201, 2, Message::Append(hb));
    assert!(effects.contains(&refused(9, RequestError::LeadershipLost)));
    assert_eq!(r.role(), Role::Follower);
}

#[test]
fn restart_keeps_the_vote_of_the_term() {
    // Figure 2: currentTerm and votedFor survive restarts, so a node cannot
    // vote twice in a term by crashing in between.
    let recovered = Recovered {
        snapshot: None,
        hard_state: HardState {
            term: 5,
            voted_for: Some(1),
        },
        entries: vec![],
    };
    let mut r = Raft::new(
        2,
        members(&[1, 2, 3]),
        config(),
        recovered,
        Recorder::new(),
        7,
    )
    .unwrap();
    r.handle(ms(0), Input::Start);
    let effects = msg(&mut r, 1, 3, Message::Vote(vote_req(5, 0, 0)));
    assert_eq!(
        effects,
        vec![send(3, Message::VoteResponse(granted(5, false)))]
    );
}

#[test]
fn a_single_node_cluster_elects_itself_and_commits_alone() {
    let mut r = Raft::new(
        1,
        members(&[1]),
        config(),
        Recovered::default(),
        Recorder::new(),
        1,
    )
    .unwrap();
    r.handle(ms(0), Input::Start);
    r.handle(ms(MIN_MS), Input::Timer(Timer::Election));
    assert_eq!(r.role(), Role::Leader);
    r.handle(
        ms(MIN_MS + 1),
        Input::Propose {
            id: 1,
            command: b"a".to_vec(),
        },
    );
    let effects = durable(&mut r, MIN_MS + 1);
    assert!(matches!(
        effects.last(),
        Some(Effect::Reply {
            id: 1,
            result: Ok(Applied { index: 2, .. })
        })
    ));
}

#[test]
fn construction_rejects_bad_membership_and_gapped_logs() {
    let bad = |id, voters: Vec<u64>, entries| {
        Raft::new(
            id,
            members(&voters),
            config(),
            Recovered {
                snapshot: None,
                hard_state: HardState::default(),
                entries,
            },
            Recorder::new(),
            0,
        )
        .err()
    };
    assert_eq!(
        bad(4, vec![1, 2, 3], vec![]),
        Some(RaftError::NotAVoter(4, vec![1, 2, 3]))
    );
    assert_eq!(bad(0, vec![0, 1], vec![]), Some(RaftError::ZeroId));
    assert_eq!(
        bad(1, vec![1], vec![entry(2, 1)]),
        Some(RaftError::GappedLog(0))
    );
}

#[test]
fn messages_from_strangers_are_ignored() {
    let mut r = replica(1, 1, vec![]);
    assert_eq!(msg(&mut r, 1, 9, Message::Vote(vote_req(5, 0, 0))), vec![]);
    assert_eq!(r.term(), 1);
}

#[test]
fn a_pre_candidate_may_still_vote_in_its_term() {
    // Paper 5.2: one vote per term; a pre-candidate has cast none (thesis 9.6
    // leaves its term and vote untouched), so it can grant, and stops
    // campaigning when it does.
    let mut r = replica(2, 3, vec![]);
    r.handle(ms(MIN_MS), Input::Timer(Timer::Election));
    assert_eq!(r.role(), Role::PreCandidate);
    let effects = msg(&mut r, MIN_MS + 1, 1, Message::Vote(vote_req(3, 0, 0)));
    assert_eq!(
        effects,
        vec![
            hs(3, Some(1)),
            send(1, Message::VoteResponse(granted(3, true))),
            timer(2 * MIN_MS + 1)
        ]
    );
    assert_eq!(r.role(), Role::Follower);
}

#[test]
fn malformed_append_entries_are_dropped_without_effects() {
    // Entries that do not follow prevLogIndex, or carry a term above the
    // request's, cannot come from a correct leader (paper 5.3, figure 2).
    let mut r = replica(2, 1, vec![]);
    let gap = append_req(1, 0, 0, vec![entry(2, 1)], 0);
    assert_eq!(msg(&mut r, 1, 1, Message::Append(gap)), vec![]);
    let future = append_req(1, 0, 0, vec![entry(1, 5)], 0);
    assert_eq!(msg(&mut r, 2, 1, Message::Append(future)), vec![]);
    let backwards = append_req(3, 0, 0, vec![entry(1, 2), entry(2, 1)], 0);
    assert_eq!(msg(&mut r, 3, 1, Message::Append(backwards)), vec![]);
    assert_eq!((r.term(), r.log().last_index()), (1, 0));
}

/// Found by the widened `raft_inputs` fuzz generator: a snapshot whose last
/// entry is from a term after its sender's left the log's last term above
/// the node's own term (a postcondition every step asserts).
#[test]
fn a_snapshot_from_a_term_after_its_senders_is_dropped_without_effects() {
    let mut r = replica(2, 1, vec![]);
    let mut donor = Recorder::new();
    donor.apply(1, Instant::ZERO, b"a");
    let install = Message::InstallSnapshot(InstallSnapshotRequest {
        membership: members(&[1, 2, 3]),
        term: 1,
        last_index: 5,
        last_term: 3,
        offset: 0,
        data: donor.snapshot().unwrap(),
        done: true,
    });
    assert_eq!(msg(&mut r, 1, 1, install), vec![]);
    assert_eq!(
        (r.term(), r.log().last_index(), r.applied_index()),
        (1, 0, 0)
    );
}

fn ack(term: Term, match_index: Index, read_round: u64) -> Message {
    Message::AppendResponse(AppendResponse {
        term,
        result: AppendResult::Success { match_index },
        read_round,
    })
}

fn heartbeat_to(leader: &Raft<Recorder>, prev_index: Index, read_round: u64) -> AppendRequest {
    AppendRequest {
        term: leader.term(),
        prev_index,
        prev_term: leader.log().term_at(prev_index).unwrap(),
        entries: vec![],
        leader_commit: leader.commit_index(),
        read_round,
    }
}

#[test]
fn a_leader_read_waits_for_a_majority_to_confirm_its_round_and_for_its_noop() {
    // Thesis 6.4: the read index is the commit index once the leader's
    // no-op commits; a round of heartbeats answered by a majority proves the
    // leader was still leader when the read arrived.
    let mut r = leader();
    let effects = r.handle(
        ms(200),
        Input::Read {
            id: 5,
            query: vec![],
        },
    );
    let hb = heartbeat_to(&r, 0, 1);
    assert_eq!(
        effects,
        vec![
            send(2, Message::Append(hb.clone())),
            send(3, Message::Append(hb))
        ]
    );
    // An answer to an older round (or an unrelated ack) does not confirm it.
    assert_eq!(msg(&mut r, 201, 2, ack(1, 1, 0)), vec![]);
    assert_eq!(
        r.commit_index(),
        1,
        "the no-op committed, but the round is unconfirmed"
    );
    let effects = msg(&mut r, 202, 3, ack(1, 1, 1));
    let output = 0u64.to_le_bytes().to_vec();
    assert_eq!(
        effects,
        vec![Effect::Reply {
            id: 5,
            result: Ok(Applied { index: 1, output })
        }]
    );
}

#[test]
fn a_follower_read_asks_the_leader_and_waits_until_applied() {
    // Thesis 6.4: followers serve reads at the leader's read index, once
    // they have applied up to it.
    let mut r = replica(2, 1, vec![entry(1, 1)]);
    let hb = append_req(1, 1, 1, vec![], 0);
    msg(&mut r, 10, 1, Message::Append(hb));
    let effects = r.handle(
        ms(11),
        Input::Read {
            id: 8,
            query: vec![],
        },
    );
    assert_eq!(
        effects,
        vec![send(1, Message::ReadIndex { term: 1, id: 1 })]
    );
    let effects = msg(
        &mut r,
        12,
        1,
        Message::ReadIndexResponse {
            term: 1,
            id: 1,
            index: Some(1),
        },
    );
    assert_eq!(effects, vec![], "index 1 is not applied here yet");
    let hb = append_req(1, 1, 1, vec![], 1);
    let effects = msg(&mut r, 13, 1, Message::Append(hb));
    let output = 1u64.to_le_bytes().to_vec();
    assert!(effects.contains(&Effect::Reply {
        id: 8,
        result: Ok(Applied { index: 1, output })
    }));
}

#[test]
fn pending_reads_fail_when_leadership_is_lost() {
    let mut r = leader();
    r.handle(
        ms(200),
        Input::Read {
            id: 5,
            query: vec![],
        },
    );
    let hb = append_req(2, 0, 0, vec![], 0);
    let effects = msg(&mut r, 201, 2, Message::Append(hb));
    assert!(effects.contains(&refused(5, RequestError::LeadershipLost)));
}

#[test]
fn transfer_sends_timeout_now_once_the_target_is_up_to_date() {
    // Thesis 3.10: catch the target up, then TimeoutNow; no new proposals
    // are taken meanwhile.
    let mut r = leader();
    let effects = r.handle(ms(200), Input::TransferLeadership { id: 3, to: 2 });
    assert_eq!(
        effects,
        vec![send(2, Message::Append(heartbeat_to(&r, 0, 0)))],
        "node 2 has not acked the no-op yet"
    );
    let effects = r.handle(
        ms(201),
        Input::Propose {
            id: 4,
            command: vec![],
        },
    );
    assert_eq!(effects, vec![refused(4, RequestError::Busy)]);
    let effects = msg(&mut r, 202, 2, ack(1, 1, 0));
    let done = Effect::Reply {
        id: 3,
        result: Ok(Applied {
            index: 1,
            output: vec![],
        }),
    };
    assert_eq!(
        effects,
        vec![send(2, Message::TimeoutNow { term: 1 }), done]
    );
}

#[test]
fn timeout_now_starts_an_election_that_voters_honour_despite_a_live_leader() {
    // Thesis 3.10: the target skips PreVote, and its RequestVote carries the
    // transfer flag so voters ignore their leader lease (thesis 4.2.3).
    let mut target = replica(2, 1, vec![]);
    let hb = append_req(1, 0, 0, vec![], 0);
    msg(&mut target, 10, 1, Message::Append(hb.clone()));
    let effects = msg(&mut target, 11, 1, Message::TimeoutNow { term: 1 });
    let req = VoteRequest {
        term: 2,
        last_log_index: 0,
        last_log_term: 0,
        transfer: true,
    };
    assert_eq!(
        effects,
        vec![
            hs(2, Some(2)),
            send(1, Message::Vote(req.clone())),
            send(3, Message::Vote(req.clone())),
            timer(11 + MIN_MS)
        ]
    );

    let mut voter = replica(3, 1, vec![]);
    msg(&mut voter, 10, 1, Message::Append(hb));
    let effects = msg(&mut voter, 12, 2, Message::Vote(req));
    assert!(effects.contains(&send(2, Message::VoteResponse(granted(2, true)))));
}

#[test]
fn a_transfer_that_does_not_complete_in_an_election_timeout_is_abandoned() {
    let mut r = leader();
    r.handle(ms(200), Input::TransferLeadership { id: 3, to: 2 });
    let effects = r.handle(ms(200 + MIN_MS), Input::Timer(Timer::Heartbeat));
    assert!(effects.contains(&refused(3, RequestError::TransferFailed)));
    let effects = r.handle(
        ms(201 + MIN_MS),
        Input::Propose {
            id: 4,
            command: vec![],
        },
    );
    assert!(
        !effects.contains(&refused(4, RequestError::Busy)),
        "proposals resume"
    );
    assert_eq!(
        r.handle(ms(202 + MIN_MS), Input::TransferLeadership { id: 5, to: 9 }),
        vec![refused(5, RequestError::UnknownNode(9))]
    );
}

#[test]
fn a_follower_ahead_of_the_leaders_probe_checks_from_its_own_snapshot() {
    // Paper 7: replicas snapshot independently. Entries inside a follower's
    // snapshot are committed, hence equal to the leader's (paper 5.4.3), so
    // a probe from before the snapshot is checked from the snapshot point on
    // instead of failing forever (found by the simulator, chaos_5 seed 12).
    let mut cfg = config();
    cfg.snapshot_threshold_entries = 2;
    let recovered = Recovered {
        snapshot: None,
        hard_state: HardState {
            term: 1,
            voted_for: None,
        },
        entries: vec![entry(1, 1), entry(2, 1), entry(3, 1)],
    };
    let mut r = Raft::new(2, members(&[1, 2, 3]), cfg, recovered, Recorder::new(), 7).unwrap();
    r.handle(ms(0), Input::Start);
    let hb = append_req(1, 3, 1, vec![], 3);
    msg(&mut r, 1, 1, Message::Append(hb));
    assert_eq!(
        r.log().snapshot_index(),
        3,
        "applied 3 entries, threshold 2: compacted"
    );
    let probe = append_req(1, 1, 1, vec![entry(2, 1), entry(3, 1), entry(4, 1)], 3);
    let effects = msg(&mut r, 2, 1, Message::Append(probe));
    let ok = AppendResponse {
        term: 1,
        result: AppendResult::Success { match_index: 4 },
        read_round: 0,
    };
    assert!(
        effects.contains(&send(1, Message::AppendResponse(ok))),
        "{effects:?}"
    );
    assert_eq!(r.log().last_index(), 4);
}

fn snapshot_config(threshold: u64, chunk: usize) -> Config {
    Config {
        snapshot_threshold_entries: threshold,
        snapshot_chunk_bytes: chunk,
        ..config()
    }
}

#[test]
fn restart_from_a_snapshot_restores_the_state_machine_and_the_commit_point() {
    // Paper 7: a server restarts from its snapshot plus the log after it.
    let mut donor = Recorder::new();
    donor.apply(1, Instant::ZERO, b"a");
    donor.apply(2, Instant::ZERO, b"b");
    let snapshot = Snapshot {
        membership: members(&[1, 2, 3]),
        index: 2,
        term: 1,
        data: donor.snapshot().unwrap(),
    };
    let recovered = Recovered {
        hard_state: HardState {
            term: 1,
            voted_for: None,
        },
        snapshot: Some(snapshot),
        entries: vec![entry(3, 1)],
    };
    let r = Raft::new(
        1,
        members(&[1, 2, 3]),
        config(),
        recovered,
        Recorder::new(),
        7,
    )
    .unwrap();
    assert_eq!(
        (r.commit_index(), r.applied_index(), r.log().last_index()),
        (2, 2, 3)
    );
    assert_eq!(r.state_machine().digest(), donor.digest());
    let bad = Recovered {
        snapshot: Some(Snapshot {
            membership: members(&[1, 2, 3]),
            index: 2,
            term: 1,
            data: vec![0xff; 3],
        }),
        ..Recovered::default()
    };
    assert!(matches!(
        Raft::new(1, members(&[1]), config(), bad, Recorder::new(), 7),
        Err(RaftError::Restore(_))
    ));
}

/// A large state is not snapshotted every `snapshot_threshold_entries`
/// entries: only once the log it replaces holds a quarter of the last
/// snapshot's bytes (`SNAPSHOT_BYTES_PER_LOG_BYTE_MAX`). Before, a million
/// sessions were rewritten to disk by every node every 10,000 entries.
#[test]
fn a_large_state_is_snapshotted_no_more_often_than_its_log_pays_for() {
    use crate::raft::replica::SNAPSHOT_BYTES_PER_LOG_BYTE_MAX;
    let mut big = Recorder::new();
    for i in 0..400u64 {
        big.apply(i + 1, Instant::ZERO, &[7; 10]);
    }
    let state_bytes = big.snapshot().unwrap().len();
    let mut r = leader_of(snapshot_config(2, 1 << 20), big);
    let mut snapshots = Vec::new();
    let command = [1u8; 10];
    for id in 1..=200u64 {
        r.handle(
            ms(200 + id),
            Input::Propose {
                id,
                command: command.to_vec(),
            },
        );
        durable(&mut r, 200 + id);
        let last = r.log().last_index();
        for e in msg(&mut r, 200 + id, 2, success(1, last)) {
            if let Effect::Persist {
                op: PersistOp::Snapshot { snapshot, .. },
                ..
            } = e
            {
                snapshots.push((snapshot.index, snapshot.data.len()));
            }
        }
    }
    // The first snapshot has no predecessor to pay for; each later one
    // waits until the log holds a quarter of the one before.
    assert!(snapshots.len() >= 2, "{snapshots:?}");
    for pair in snapshots.windows(2) {
        let ((from, before), (to, _)) = (pair[0], pair[1]);
        let log_bytes = (to - from) as usize * command.len();
        assert!(
            log_bytes * SNAPSHOT_BYTES_PER_LOG_BYTE_MAX >= before,
            "a snapshot of {before} bytes followed by one after {log_bytes} bytes of log: {snapshots:?}"
        );
    }
    assert!(
        snapshots.len() < 200 / 2,
        "every 2 entries, as if the state were small ({state_bytes} bytes): {snapshots:?}"
    );
}

/// The snapshot jobs among `effects`.
fn jobs(effects: &[Effect]) -> Vec<SnapshotJob> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::BuildSnapshot(job) => Some(job.clone()),
            _ => None,
        })
        .collect()
}

/// The snapshot persisted among `effects`: its index and the tail's.
fn persisted_snapshot(effects: &[Effect]) -> Option<(Index, Vec<Index>)> {
    effects.iter().find_map(|e| match e {
        Effect::Persist {
            op: PersistOp::Snapshot { snapshot, tail, .. },
            sync: true,
        } => Some((snapshot.index, tail.iter().map(|e| e.index).collect())),
        _ => None,
    })
}

/// A leader of term 1 (threshold 2 entries) that has committed and applied
/// entries 1..=`last` (its no-op and commands), with nothing built yet:
/// steps taken as a driver would, without `built_at_once`.
fn leader_applying_to(last: Index) -> (Raft<Recorder>, Vec<Effect>) {
    let mut cfg = snapshot_config(2, 1 << 20);
    cfg.pending_proposals_max = 16;
    let mut r = Raft::new(
        1,
        members(&[1, 2, 3]),
        cfg,
        Recovered::default(),
        Recorder::new(),
        7,
    )
    .unwrap();
    elect(&mut r, 1);
    let mut effects = Vec::new();
    for id in 2..=last {
        r.handle(
            ms(200 + id),
            Input::Propose {
                id,
                command: vec![id as u8],
            },
        );
    }
    effects.extend(r.handle(
        ms(300),
        Input::Persisted {
            index: last,
            term: 1,
        },
    ));
    effects.extend(r.handle(
        ms(300),
        Input::Message {
            from: 2,
            msg: success(1, last),
        },
    ));
    (r, effects)
}

/// Issue 14: a snapshot is serialized off the replica's thread. The replica
/// freezes its state and asks for it (`BuildSnapshot`); it goes on applying
/// meanwhile, asks for no second one, and compacts only once the bytes come
/// back: the state as it was at the freeze, the entries applied since kept
/// in the log.
#[test]
fn a_snapshot_is_built_off_the_replica_and_compacts_only_when_it_comes_back() {
    let (mut r, effects) = leader_applying_to(2);
    let asked = jobs(&effects);
    assert_eq!(asked.iter().map(|j| j.index).collect::<Vec<_>>(), vec![2]);
    assert_eq!(persisted_snapshot(&effects), None, "nothing compacted yet");
    assert_eq!(r.log().snapshot_index(), 0);
    // Entries 3 and 4 are applied while it is being built: no second job.
    for id in 3..=4 {
        r.handle(
            ms(400),
            Input::Propose {
                id,
                command: vec![id as u8],
            },
        );
    }
    let mut later = r.handle(ms(401), Input::Persisted { index: 4, term: 1 });
    later.extend(msg_raw(&mut r, 401, 2, success(1, 4)));
    assert_eq!(r.applied_index(), 4);
    assert!(jobs(&later).is_empty(), "one at a time: {later:?}");
    let built = r.handle(ms(402), asked[0].run());
    assert_eq!(persisted_snapshot(&built), Some((2, vec![3, 4])));
    assert_eq!(r.log().snapshot_index(), 2);
    // The bytes are the state at the freeze: command 2 only, not 3 and 4.
    let Input::SnapshotBuilt {
        result: Ok(data), ..
    } = asked[0].run()
    else {
        panic!("a recorder serializes");
    };
    let mut restored = Recorder::new();
    restored.restore(&data).unwrap();
    let commands: Vec<Index> = restored.applied().map(|(i, _)| *i).collect();
    assert_eq!(commands, vec![2]);
}

/// A build that panics (production's thread) still answers, with an
/// error: the replica keeps its log and asks again later, instead of
/// waiting for that build forever.
#[test]
fn a_snapshot_build_that_panics_answers_with_an_error() {
    struct Broken;
    impl FrozenState for Broken {
        fn serialize(&self) -> Result<Vec<u8>, SnapshotError> {
            panic!("a bug in serialization")
        }
    }
    let job = SnapshotJob {
        index: 7,
        state: Arc::new(Broken),
    };
    match job.run_catching_panics() {
        Input::SnapshotBuilt {
            index: 7,
            result: Err(_),
        } => {}
        other => panic!("{other:?}"),
    }
}

/// Node 1's snapshot of `donor` at `last_index` (term 1), in one chunk.
fn whole_snapshot(last_index: Index, donor: &Recorder) -> Message {
    Message::InstallSnapshot(InstallSnapshotRequest {
        membership: members(&[1, 2, 3]),
        term: 1,
        last_index,
        last_term: 1,
        offset: 0,
        data: donor.snapshot().unwrap(),
        done: true,
    })
}

/// Steps a peer message without `built_at_once`.
fn msg_raw(r: &mut Raft<Recorder>, now: u64, from: u64, msg: Message) -> Vec<Effect> {
    r.handle(ms(now), Input::Message { from, msg })
}

/// A driver's report the replica did not ask for (another index, a job
/// from before a failure) changes nothing; a failed build keeps the log and
/// lets the next apply ask again.
#[test]
fn a_snapshot_result_not_asked_for_or_failed_changes_nothing() {
    let (mut r, effects) = leader_applying_to(2);
    let first = jobs(&effects).remove(0);
    let stray = Input::SnapshotBuilt {
        index: 9,
        result: Ok(vec![1, 2, 3]),
    };
    assert_eq!(r.handle(ms(400), stray), vec![]);
    let failed = Input::SnapshotBuilt {
        index: 2,
        result: Err(SnapshotError("disk full".into())),
    };
    assert_eq!(r.handle(ms(400), failed), vec![]);
    assert_eq!(r.log().snapshot_index(), 0, "the log is kept");
    r.handle(
        ms(401),
        Input::Propose {
            id: 3,
            command: vec![3],
        },
    );
    let mut effects = r.handle(ms(402), Input::Persisted { index: 3, term: 1 });
    effects.extend(msg_raw(&mut r, 402, 2, success(1, 3)));
    let second = jobs(&effects);
    assert_eq!(second.iter().map(|j| j.index).collect::<Vec<_>>(), vec![3]);
    // The first job, late: not the one being built now.
    assert_eq!(r.handle(ms(403), first.run()), vec![]);
    assert_eq!(r.log().snapshot_index(), 0);
    let built = r.handle(ms(404), second[0].run());
    assert_eq!(persisted_snapshot(&built), Some((3, vec![])));
}

/// A follower whose own snapshot is being built installs a newer one from
/// its leader: its own, when it comes back, is older than what it has and
/// is dropped.
#[test]
fn a_snapshot_built_after_a_newer_one_was_installed_is_dropped() {
    let recovered = Recovered {
        hard_state: HardState {
            term: 1,
            voted_for: None,
        },
        ..Recovered::default()
    };
    let cfg = snapshot_config(2, 1 << 20);
    let mut r = Raft::new(2, members(&[1, 2, 3]), cfg, recovered, Recorder::new(), 7).unwrap();
    r.handle(ms(0), Input::Start);
    let entries = vec![entry(1, 1), entry(2, 1), entry(3, 1)];
    let effects = msg_raw(
        &mut r,
        10,
        1,
        Message::Append(append_req(1, 0, 0, entries, 3)),
    );
    let own = jobs(&effects);
    assert_eq!(own.iter().map(|j| j.index).collect::<Vec<_>>(), vec![3]);
    let mut donor = Recorder::new();
    for i in 1..=5 {
        donor.apply(i, Instant::ZERO, &[i as u8]);
    }
    let install = whole_snapshot(5, &donor);
    let installed = msg_raw(&mut r, 11, 1, install);
    assert_eq!(persisted_snapshot(&installed).map(|(i, _)| i), Some(5));
    assert_eq!(r.handle(ms(12), own[0].run()), vec![]);
    assert_eq!(r.log().snapshot_index(), 5);
    assert_eq!(r.state_machine().digest(), donor.digest());
}

/// A bare heartbeat to a follower behind the snapshot point names the
/// snapshot index, and may overtake the appends that would bring the
/// follower there (the transport sends heartbeats first). Its refusal is
/// ignored while those appends are in flight: no back-off, no snapshot
/// transfer; their own answer moves the follower on.
#[test]
fn a_heartbeat_refused_ahead_of_appends_in_flight_starts_no_snapshot() {
    let mut cfg = snapshot_config(4, 1 << 20);
    cfg.pending_proposals_max = 16;
    let mut r = leader_with(cfg);
    msg(&mut r, 200, 2, success(1, 1));
    for id in 2..=5 {
        r.handle(
            ms(201),
            Input::Propose {
                id,
                command: vec![id as u8],
            },
        );
    }
    durable(&mut r, 202);
    msg(&mut r, 203, 3, success(1, 5));
    assert_eq!(r.log().snapshot_index(), 5, "compacted past node 2");
    let refused = Message::AppendResponse(AppendResponse {
        term: 1,
        result: AppendResult::Conflict {
            prev_index: 5,
            conflict_term: None,
            first_index: 2,
        },
        read_round: 0,
    });
    let effects = msg(&mut r, 204, 2, refused);
    let sends: Vec<&Effect> = effects
        .iter()
        .filter(|e| matches!(e, Effect::Send { .. }))
        .collect();
    assert!(sends.is_empty(), "no back-off, no snapshot: {sends:?}");
    // The appends in flight arrive and are acknowledged: caught up.
    msg(&mut r, 205, 2, success(1, 5));
    let effects = r.handle(ms(MIN_MS + HB_MS + 206), Input::Timer(Timer::Heartbeat));
    assert!(
        !effects.iter().any(|e| matches!(
            e,
            Effect::Send {
                to: 2,
                msg: Message::InstallSnapshot(_)
            }
        )),
        "{effects:?}"
    );
}

#[test]
fn a_leader_compacts_and_sends_its_snapshot_in_chunks_to_a_follower_behind_it() {
    // Paper 7: the leader sends InstallSnapshot when the follower's next
    // entry was discarded; chunks follow the follower's reported offset.
    let mut cfg = snapshot_config(2, 4);
    cfg.pending_proposals_max = 16;
    let mut r = leader_with(cfg);
    r.handle(
        ms(200),
        Input::Propose {
            id: 1,
            command: b"x".to_vec(),
        },
    );
    durable(&mut r, 200);
    let effects = msg(&mut r, 201, 2, success(1, 2));
    assert!(
        effects.iter().any(|e| matches!(e, Effect::Persist { op: PersistOp::Snapshot { snapshot, .. }, sync: true } if snapshot.index == 2)),
        "two applied entries reach the threshold: {effects:?}"
    );
    assert_eq!(r.log().snapshot_index(), 2);
    // Node 3 never answered: it needs index 1, which is gone.
    let effects = r.handle(ms(MIN_MS + HB_MS + 2), Input::Timer(Timer::Heartbeat));
    let chunk = effects.iter().find_map(|e| match e {
        Effect::Send {
            to: 3,
            msg: Message::InstallSnapshot(req),
        } => Some(req.clone()),
        _ => None,
    });
    let chunk = chunk.expect("a snapshot chunk for node 3");
    assert_eq!(
        (chunk.last_index, chunk.offset, chunk.data.len()),
        (2, 0, 4)
    );
    let resp = InstallSnapshotResponse {
        term: 1,
        last_index: 2,
        next_offset: 4,
        done: false,
    };
    let effects = msg(&mut r, 203, 3, Message::InstallSnapshotResponse(resp));
    match &effects[..] {
        [Effect::Send {
            to: 3,
            msg: Message::InstallSnapshot(next),
        }] => assert_eq!(next.offset, 4),
        other => panic!("expected the next chunk, got {other:?}"),
    }
}

/// Soak seed 9300032 of `locks_limits_3`: a leader that restarted a
/// transfer with each newer snapshot it took never finished one where
/// compaction outpaced the transfer, and the follower never caught up. It
/// now finishes the snapshot it started.
#[test]
fn a_snapshot_transfer_finishes_the_snapshot_it_started() {
    let mut cfg = snapshot_config(2, 4);
    cfg.pending_proposals_max = 16;
    let mut r = leader_with(cfg);
    let propose = |r: &mut Raft<Recorder>, at: u64, id: u64| {
        r.handle(
            ms(at),
            Input::Propose {
                id,
                command: b"x".to_vec(),
            },
        );
        durable(r, at);
    };
    propose(&mut r, 200, 1);
    msg(&mut r, 201, 2, success(1, 2));
    assert_eq!(r.log().snapshot_index(), 2);
    // Node 3 is sent the first chunk of the snapshot at 2, and asks for more.
    let effects = r.handle(ms(MIN_MS + HB_MS + 2), Input::Timer(Timer::Heartbeat));
    let first = effects.iter().find_map(|e| match e {
        Effect::Send {
            to: 3,
            msg: Message::InstallSnapshot(req),
        } => Some(req.clone()),
        _ => None,
    });
    assert_eq!(first.map(|c| (c.last_index, c.offset)), Some((2, 0)));
    // Meanwhile the leader commits more: it holds off compacting while
    // node 3 installs (so that the entries after the snapshot are there
    // when it is done), but only so long.
    let cap = 2 * COMPACTION_DEFER_THRESHOLDS;
    for i in 0..cap {
        propose(&mut r, 300 + i, 2 + i);
        msg(&mut r, 300 + i, 2, success(1, 3 + i));
        if i + 3 < 2 + cap {
            assert_eq!(r.log().snapshot_index(), 2, "deferred at {}", i + 3);
        }
    }
    let newer = r.log().snapshot_index();
    assert!(newer > 2, "compacted once the deferral's bound was reached");
    let resp = InstallSnapshotResponse {
        term: 1,
        last_index: 2,
        next_offset: 4,
        done: false,
    };
    let effects = msg(&mut r, 400, 3, Message::InstallSnapshotResponse(resp));
    let next = effects.iter().find_map(|e| match e {
        Effect::Send {
            to: 3,
            msg: Message::InstallSnapshot(req),
        } => Some(req.clone()),
        _ => None,
    });
    assert_eq!(
        next.map(|c| (c.last_index, c.offset)),
        Some((2, 4)),
        "the transfer goes on with the snapshot it started: {effects:?}"
    );
}

#[test]
fn a_follower_installs_a_chunked_snapshot_and_persists_it_before_answering() {
    // Paper 7 (figure 13): chunks are accepted at the expected offset only;
    // the last one replaces the state machine and the log.
    let mut donor = Recorder::new();
    donor.apply(1, Instant::ZERO, b"a");
    let data = donor.snapshot().unwrap();
    let mut r = replica(2, 1, vec![]);
    let chunk = |offset: usize, end: usize| {
        Message::InstallSnapshot(InstallSnapshotRequest {
            membership: members(&[1, 2, 3]),
            term: 1,
            last_index: 5,
            last_term: 1,
            offset: offset as u64,
            data: data[offset..end].to_vec(),
            done: end == data.len(),
        })
    };
    let half = data.len() / 2;
    let effects = msg(&mut r, 10, 1, chunk(half, data.len()));
    let expect = |next_offset, done| {
        send(
            1,
            Message::InstallSnapshotResponse(InstallSnapshotResponse {
                term: 1,
                last_index: 5,
                next_offset,
                done,
            }),
        )
    };
    assert_eq!(effects[0], expect(0, false), "out of order: start over");
    let effects = msg(&mut r, 11, 1, chunk(0, half));
    assert_eq!(effects[0], expect(half as u64, false));
    let effects = msg(&mut r, 12, 1, chunk(half, data.len()));
    let snapshot = Snapshot {
        membership: members(&[1, 2, 3]),
        index: 5,
        term: 1,
        data: data.clone(),
    };
    let hard_state = HardState {
        term: 1,
        voted_for: None,
    };
    assert_eq!(
        &effects[..2],
        &[
            Effect::Persist {
                op: PersistOp::Snapshot {
                    snapshot: Arc::new(snapshot),
                    hard_state,
                    tail: vec![]
                },
                sync: true
            },
            expect(data.len() as u64, true),
        ]
    );
    assert_eq!(
        (r.commit_index(), r.applied_index(), r.log().last_index()),
        (5, 5, 5)
    );
    assert_eq!(r.state_machine().digest(), donor.digest());
}

fn change(r: &mut Raft<Recorder>, now: u64, id: u64, change: ConfChange) -> Vec<Effect> {
    r.handle(ms(now), Input::ChangeMembership { id, change })
}

#[test]
fn a_new_leader_changes_membership_only_after_committing_in_its_term() {
    // Thesis 4.1 (and its errata): a leader may not start a configuration
    // change until an entry of its own term has committed.
    let mut r = leader();
    let add = ConfChange::AddLearner {
        id: 4,
        addr: "n4".into(),
    };
    assert_eq!(
        change(&mut r, 200, 1, add.clone()),
        vec![refused(1, RequestError::Busy)]
    );
    msg(&mut r, 201, 2, success(1, 1));
    let effects = change(&mut r, 202, 2, add);
    let next = members(&[1, 2, 3])
        .apply(&ConfChange::AddLearner {
            id: 4,
            addr: "n4".into(),
        })
        .unwrap();
    let entry = Entry {
        term: 1,
        index: 2,
        payload: Payload::Config(next.clone()),
    };
    assert_eq!(
        effects[0],
        Effect::Persist {
            op: PersistOp::Append(vec![entry]),
            sync: true
        }
    );
    assert_eq!(
        r.membership(),
        &next,
        "in effect as soon as it is in the log (thesis 4.1)"
    );
    assert!(
        effects.iter().any(|e| matches!(
            e,
            Effect::Send {
                to: 4,
                msg: Message::Append(_)
            }
        )),
        "the learner is replicated to"
    );
    // One change at a time.
    let promote = change(&mut r, 203, 3, ConfChange::Promote { id: 4 });
    assert_eq!(promote, vec![refused(3, RequestError::Busy)]);
}

#[test]
fn a_learner_does_not_count_towards_commit_and_never_campaigns() {
    // Thesis 4.2.1: non-voting members receive the log but are not part of
    // majorities, and do not start elections.
    let mut r = leader();
    msg(&mut r, 201, 2, success(1, 1));
    change(
        &mut r,
        202,
        2,
        ConfChange::AddLearner {
            id: 4,
            addr: "n4".into(),
        },
    );
    durable(&mut r, 202);
    msg(&mut r, 203, 4, success(1, 2));
    assert_eq!(
        r.commit_index(),
        1,
        "the learner's ack alone is no majority"
    );
    msg(&mut r, 204, 3, success(1, 2));
    assert_eq!(r.commit_index(), 2);

    let mut learner = Raft::new(
        4,
        Membership::default(),
        config(),
        Recovered::default(),
        Recorder::new(),
        7,
    )
    .unwrap();
    learner.handle(ms(0), Input::Start);
    let effects = learner.handle(ms(MIN_MS), Input::Timer(Timer::Election));
    assert_eq!(
        effects,
        vec![timer(2 * MIN_MS)],
        "no pre-vote from a non-voter"
    );
    assert_eq!(learner.role(), Role::Follower);
}

#[test]
fn promoting_a_learner_that_lags_is_refused() {
    // Thesis 4.2.1: a server joins the majority only once caught up.
    let mut cfg = config();
    cfg.append_entries_max = 1;
    cfg.pending_proposals_max = 16;
    let mut r = leader_with(cfg);
    msg(&mut r, 201, 2, success(1, 1));
    change(
        &mut r,
        202,
        1,
        ConfChange::AddLearner {
            id: 4,
            addr: "n4".into(),
        },
    );
    durable(&mut r, 202);
    msg(&mut r, 203, 2, success(1, 2));
    for i in 0..3 {
        r.handle(
            ms(204 + i),
            Input::Propose {
                id: 10 + i,
                command: vec![],
            },
        );
        durable(&mut r, 204 + i);
        msg(&mut r, 204 + i, 2, success(1, 3 + i));
    }
    let effects = change(&mut r, 210, 2, ConfChange::Promote { id: 4 });
    assert_eq!(effects, vec![refused(2, RequestError::NotCaughtUp(4))]);
}

#[test]
fn a_removed_leader_steps_down_once_its_removal_commits() {
    // Thesis 4.2.2: the leader keeps managing the cluster without counting
    // itself until the new configuration commits, then steps down.
    let mut r = leader();
    msg(&mut r, 201, 2, success(1, 1));
    change(&mut r, 202, 7, ConfChange::Remove { id: 1 });
    assert_eq!(r.role(), Role::Leader);
    msg(&mut r, 203, 2, success(1, 2));
    assert_eq!(
        (r.role(), r.commit_index()),
        (Role::Leader, 1),
        "needs both remaining voters"
    );
    let effects = msg(&mut r, 204, 3, success(1, 2));
    assert!(effects.contains(&Effect::Reply {
        id: 7,
        result: Ok(Applied {
            index: 2,
            output: vec![]
        })
    }));
    assert_eq!((r.role(), r.commit_index()), (Role::Follower, 2));
}

#[test]
fn a_join_request_reaching_a_follower_goes_to_the_leader() {
    let mut r = replica(2, 1, vec![]);
    let hb = append_req(1, 0, 0, vec![], 0);
    msg(&mut r, 10, 1, Message::Append(hb));
    let join = Message::Join {
        id: 9,
        addr: "n9".into(),
    };
    assert_eq!(msg(&mut r, 11, 9, join.clone()), vec![send(1, join)]);
}

#[test]
fn the_leader_counts_itself_only_once_its_own_log_is_durable() {
    // Thesis 10.2.1: the leader may replicate before its own fsync, but its
    // log counts toward a majority only once durable; two followers make a
    // majority without it.
    let mut r = leader();
    msg(&mut r, 200, 2, success(1, 1));
    msg(&mut r, 200, 3, success(1, 1));
    r.handle(
        ms(201),
        Input::Propose {
            id: 7,
            command: b"p".to_vec(),
        },
    );
    assert_eq!(
        msg(&mut r, 202, 2, success(1, 2)),
        vec![],
        "not durable on the leader yet"
    );
    let effects = durable(&mut r, 203);
    assert!(
        matches!(
            &effects[..],
            [Effect::Reply {
                id: 7,
                result: Ok(Applied { index: 2, .. })
            }]
        ),
        "{effects:?}"
    );

    r.handle(
        ms(204),
        Input::Propose {
            id: 8,
            command: b"q".to_vec(),
        },
    );
    msg(&mut r, 205, 2, success(1, 3));
    let effects = msg(&mut r, 206, 3, success(1, 3));
    assert!(
        matches!(
            &effects[..],
            [Effect::Reply {
                id: 8,
                result: Ok(Applied { index: 3, .. })
            }]
        ),
        "two followers suffice: {effects:?}"
    );
    // A durability report for an entry that was since replaced proves nothing.
    let stale = r.handle(ms(207), Input::Persisted { index: 3, term: 9 });
    assert_eq!(stale, vec![]);
}

#[test]
fn a_byte_threshold_triggers_a_snapshot_before_the_entry_count_does() {
    // Paper 7: compaction when the log grows too large, here by bytes.
    let mut cfg = snapshot_config(1_000, 1024);
    cfg.snapshot_threshold_bytes = 100;
    let mut r = Raft::new(
        1,
        members(&[1]),
        cfg,
        Recovered::default(),
        Recorder::new(),
        1,
    )
    .unwrap();
    r.handle(ms(0), Input::Start);
    r.handle(ms(MIN_MS), Input::Timer(Timer::Election));
    durable(&mut r, MIN_MS);
    r.handle(
        ms(MIN_MS + 1),
        Input::Propose {
            id: 1,
            command: vec![7; 60],
        },
    );
    let effects = durable(&mut r, MIN_MS + 1);
    assert!(!effects.iter().any(|e| matches!(
        e,
        Effect::Persist {
            op: PersistOp::Snapshot { .. },
            ..
        }
    )));
    r.handle(
        ms(MIN_MS + 2),
        Input::Propose {
            id: 2,
            command: vec![7; 60],
        },
    );
    let effects = durable(&mut r, MIN_MS + 2);
    assert!(
        effects.iter().any(|e| matches!(e, Effect::Persist { op: PersistOp::Snapshot { snapshot, .. }, .. } if snapshot.index == 3)),
        "120 bytes of commands pass the 100-byte threshold: {effects:?}"
    );
    assert_eq!(r.log().payload_bytes(), 0);
}

/// Node 2 of three, a follower of node 1 in term 1, which may hold
/// `pending_proposals_max` proposals.
fn follower_of_leader_1(pending_proposals_max: usize) -> Raft<Recorder> {
    let recovered = Recovered {
        hard_state: HardState {
            term: 1,
            voted_for: None,
        },
        ..Recovered::default()
    };
    let cfg = Config {
        pending_proposals_max,
        ..config()
    };
    let mut f = Raft::new(2, members(&[1, 2, 3]), cfg, recovered, Recorder::new(), 7).unwrap();
    f.handle(ms(0), Input::Start);
    msg(
        &mut f,
        10,
        1,
        Message::Append(append_req(1, 0, 0, vec![], 0)),
    );
    f
}

/// A burst of writes through a follower (a native client with hundreds of
/// calls in flight) is bounded at the follower: past
/// `FORWARDS_IN_FLIGHT_MAX` unanswered forwards it answers `Busy` at once,
/// rather than overflow the peer send queue, where forwards and their
/// answers were dropped and the writes timed out with an unknown outcome.
#[test]
fn a_follower_refuses_forwards_past_what_the_peer_queue_holds() {
    use crate::raft::config::FORWARDS_IN_FLIGHT_MAX;
    let mut f = follower_of_leader_1(4 * FORWARDS_IN_FLIGHT_MAX);
    for id in 0..FORWARDS_IN_FLIGHT_MAX as u64 {
        let effects = f.handle(
            ms(11),
            Input::Propose {
                id,
                command: b"x".to_vec(),
            },
        );
        assert!(
            matches!(effects.as_slice(), [Effect::Send { to: 1, .. }]),
            "forward {id}: {effects:?}"
        );
    }
    let id = FORWARDS_IN_FLIGHT_MAX as u64;
    let effects = f.handle(
        ms(11),
        Input::Propose {
            id,
            command: b"x".to_vec(),
        },
    );
    assert_eq!(effects, vec![refused(id, RequestError::Busy)]);
    // A forward settled (here: the leader did not take it) frees a place.
    msg(
        &mut f,
        12,
        1,
        Message::ForwardResponse {
            term: 1,
            id: 1,
            at: None,
        },
    );
    let effects = f.handle(
        ms(13),
        Input::Propose {
            id: id + 1,
            command: b"x".to_vec(),
        },
    );
    assert!(matches!(effects.as_slice(), [Effect::Send { to: 1, .. }]));
}

/// The same bound in bytes: large commands are refused `Busy` once their
/// bytes in flight would pass `FORWARDS_IN_FLIGHT_BYTES_MAX`, long before
/// the count bound (64 forwards of 4 MiB would overflow the peer queue).
#[test]
fn a_follower_refuses_forwards_past_their_byte_bound() {
    use crate::raft::config::FORWARDS_IN_FLIGHT_BYTES_MAX;
    let mut f = follower_of_leader_1(1024);
    let big = vec![7u8; 1 << 20];
    let fit = FORWARDS_IN_FLIGHT_BYTES_MAX / big.len();
    let propose = |f: &mut Raft<Recorder>, id: u64, command: Vec<u8>| {
        f.handle(ms(11), Input::Propose { id, command })
    };
    for id in 0..fit as u64 {
        let effects = propose(&mut f, id, big.clone());
        assert!(
            matches!(effects.as_slice(), [Effect::Send { to: 1, .. }]),
            "forward {id}: {effects:?}"
        );
    }
    let id = fit as u64;
    assert_eq!(
        propose(&mut f, id, big.clone()),
        vec![refused(id, RequestError::Busy)]
    );
    // Settling one frees its bytes.
    let settled = Message::ForwardResponse {
        term: 1,
        id: 1,
        at: None,
    };
    msg(&mut f, 12, 1, settled);
    let effects = propose(&mut f, id + 1, big);
    assert!(
        matches!(effects.as_slice(), [Effect::Send { to: 1, .. }]),
        "{effects:?}"
    );
}

/// Proposals on a follower are forwarded to the leader (as etcd does): the
/// leader appends and says where; the follower answers once it applied that
/// index, with its own state machine's output.
#[test]
fn a_follower_forwards_a_proposal_and_answers_once_it_applies_it() {
    let mut f = replica(2, 1, vec![]);
    msg(
        &mut f,
        10,
        1,
        Message::Append(append_req(1, 0, 0, vec![], 0)),
    );
    let effects = f.handle(
        ms(11),
        Input::Propose {
            id: 7,
            command: b"x".to_vec(),
        },
    );
    let forward = Message::Forward {
        term: 1,
        id: 1,
        command: b"x".to_vec(),
    };
    assert_eq!(effects, vec![send(1, forward.clone())]);

    // The leader appends it like its own proposal and says where.
    let mut l = leader();
    let effects = msg(&mut l, 200, 2, forward);
    assert!(effects.contains(&send(
        2,
        Message::ForwardResponse {
            term: 1,
            id: 1,
            at: Some(2)
        }
    )));
    assert_eq!(l.log().last_index(), 2);

    // The answer, then the entry committed: the follower replies.
    assert!(msg(
        &mut f,
        12,
        1,
        Message::ForwardResponse {
            term: 1,
            id: 1,
            at: Some(1)
        }
    )
    .is_empty());
    let e = Entry {
        index: 1,
        term: 1,
        payload: Payload::Command(b"x".to_vec()),
    };
    msg(
        &mut f,
        13,
        1,
        Message::Append(append_req(1, 0, 0, vec![e], 0)),
    );
    let effects = msg(
        &mut f,
        14,
        1,
        Message::Append(append_req(1, 1, 1, vec![], 1)),
    );
    let replies: Vec<&Effect> = effects
        .iter()
        .filter(|e| matches!(e, Effect::Reply { .. }))
        .collect();
    assert_eq!(
        replies,
        vec![&Effect::Reply {
            id: 7,
            result: Ok(Applied {
                index: 1,
                output: 1u64.to_le_bytes().to_vec()
            })
        }]
    );
}

#[test]
fn a_forwarded_proposal_whose_index_another_entry_took_has_an_unknown_outcome() {
    let mut f = replica(2, 1, vec![]);
    msg(
        &mut f,
        10,
        1,
        Message::Append(append_req(1, 0, 0, vec![], 0)),
    );
    f.handle(
        ms(11),
        Input::Propose {
            id: 7,
            command: b"x".to_vec(),
        },
    );
    msg(
        &mut f,
        12,
        1,
        Message::ForwardResponse {
            term: 1,
            id: 1,
            at: Some(1),
        },
    );
    // A new leader of term 2 commits something else at index 1.
    let other = Entry {
        index: 1,
        term: 2,
        payload: Payload::Command(b"y".to_vec()),
    };
    msg(
        &mut f,
        20,
        3,
        Message::Append(append_req(2, 0, 0, vec![other], 0)),
    );
    let effects = msg(
        &mut f,
        21,
        3,
        Message::Append(append_req(2, 1, 2, vec![], 1)),
    );
    assert!(effects.contains(&refused(7, RequestError::LeadershipLost)));
}

/// Messages reorder: the follower may apply the forwarded entry before the
/// leader's answer arrives; it keeps the output and answers then.
#[test]
fn a_forwarded_proposal_applied_before_the_answer_still_gets_its_output() {
    let mut f = replica(2, 1, vec![]);
    msg(
        &mut f,
        10,
        1,
        Message::Append(append_req(1, 0, 0, vec![], 0)),
    );
    f.handle(
        ms(11),
        Input::Propose {
            id: 7,
            command: b"x".to_vec(),
        },
    );
    let e = Entry {
        index: 1,
        term: 1,
        payload: Payload::Command(b"x".to_vec()),
    };
    msg(
        &mut f,
        12,
        1,
        Message::Append(append_req(1, 0, 0, vec![e], 1)),
    );
    assert_eq!(f.applied_index(), 1);
    let effects = msg(
        &mut f,
        13,
        1,
        Message::ForwardResponse {
            term: 1,
            id: 1,
            at: Some(1),
        },
    );
    assert_eq!(
        effects,
        vec![Effect::Reply {
            id: 7,
            result: Ok(Applied {
                index: 1,
                output: 1u64.to_le_bytes().to_vec()
            })
        }]
    );
}

/// A state machine that refuses, from clients, commands starting with 0xFF
/// (as the lock service refuses expiries).
struct Strict(Recorder);

impl StateMachine for Strict {
    type Event = ();
    fn take_events(&mut self) -> Vec<()> {
        Vec::new()
    }
    fn apply(&mut self, index: Index, now: Instant, command: &[u8]) -> Vec<u8> {
        self.0.apply(index, now, command)
    }
    fn query(&self, now: Instant, query: &[u8]) -> Vec<u8> {
        self.0.query(now, query)
    }
    fn freeze(&self) -> Arc<dyn FrozenState> {
        self.0.freeze()
    }
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
        self.0.restore(snapshot)
    }
    fn admits_from_client(&self, command: &[u8]) -> Result<(), String> {
        match command.first() {
            Some(0xFF) => Err("leader only".into()),
            _ => Ok(()),
        }
    }
}

/// Issue 11, hole 2: a command the state machine keeps for its leader is
/// refused from every client door (a proposal on the leader, on a
/// follower, or a forward from a hostile follower), and nothing is
/// appended.
#[test]
fn commands_the_machine_keeps_for_its_leader_are_refused_from_clients() {
    let mut l = leader_of(config(), Strict(Recorder::new()));
    let last = l.log().last_index();
    let effects = l.handle(
        ms(200),
        Input::Propose {
            id: 1,
            command: vec![0xFF, 1],
        },
    );
    assert_eq!(
        effects,
        vec![refused(1, RequestError::NotAllowed("leader only".into()))]
    );
    let effects = l.handle(
        ms(200),
        Input::ProposeBatch(vec![(2, vec![0xFF]), (3, vec![7])]),
    );
    assert_eq!(
        effects[0],
        refused(2, RequestError::NotAllowed("leader only".into()))
    );
    assert_eq!(l.log().last_index(), last + 1, "only command 3 appended");
    let effects = msg(
        &mut l,
        201,
        2,
        Message::Forward {
            term: 1,
            id: 9,
            command: vec![0xFF],
        },
    );
    assert_eq!(
        effects,
        vec![send(
            2,
            Message::ForwardResponse {
                term: 1,
                id: 9,
                at: None
            }
        )]
    );
    assert_eq!(l.log().last_index(), last + 1);

    // A follower refuses it before forwarding.
    let recovered = Recovered {
        hard_state: HardState {
            term: 1,
            voted_for: None,
        },
        ..Recovered::default()
    };
    let mut f = Raft::new(
        2,
        members(&[1, 2, 3]),
        config(),
        recovered,
        Strict(Recorder::new()),
        7,
    )
    .unwrap();
    f.handle(ms(0), Input::Start);
    msg(
        &mut f,
        10,
        1,
        Message::Append(append_req(1, 0, 0, vec![], 0)),
    );
    let effects = f.handle(
        ms(11),
        Input::Propose {
            id: 4,
            command: vec![0xFF],
        },
    );
    assert_eq!(
        effects,
        vec![refused(4, RequestError::NotAllowed("leader only".into()))]
    );
}

/// A machine that asks its leader to propose one command per tick (as the
/// lock service proposes expiries).
struct Ticking(Recorder);

impl StateMachine for Ticking {
    type Event = ();
    fn take_events(&mut self) -> Vec<()> {
        Vec::new()
    }
    fn apply(&mut self, index: Index, now: Instant, command: &[u8]) -> Vec<u8> {
        self.0.apply(index, now, command)
    }
    fn query(&self, now: Instant, query: &[u8]) -> Vec<u8> {
        self.0.query(now, query)
    }
    fn freeze(&self) -> Arc<dyn FrozenState> {
        self.0.freeze()
    }
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
        self.0.restore(snapshot)
    }
    fn leader_tick(&mut self, _now: Instant, _term: Term) -> Vec<Vec<u8>> {
        vec![b"expire".to_vec()]
    }
}

/// Issue 11, item 6: the machine counts what it returns from `leader_tick`
/// as proposed; with the client table full, those commands were dropped
/// and never proposed again in that term (a dead client's locks stayed).
#[test]
fn the_leaders_own_commands_are_appended_even_when_clients_fill_the_table() {
    let mut l = leader_of(config(), Ticking(Recorder::new()));
    for id in 1..=2 {
        l.handle(
            ms(200),
            Input::Propose {
                id,
                command: vec![1],
            },
        );
    }
    let busy = l.handle(
        ms(200),
        Input::Propose {
            id: 3,
            command: vec![1],
        },
    );
    assert_eq!(
        busy,
        vec![refused(3, RequestError::Busy)],
        "the table is full"
    );
    let last = l.log().last_index();
    l.handle(ms(200 + HB_MS), Input::Timer(Timer::Heartbeat));
    assert_eq!(l.log().last_index(), last + 1);
    let entry = l.log().get(last + 1).unwrap();
    assert_eq!(entry.payload, Payload::Command(b"expire".to_vec()));
    // And a membership change waits its turn instead of overfilling it.
    let effects = l.handle(
        ms(201 + HB_MS),
        Input::ChangeMembership {
            id: 4,
            change: ConfChange::Remove { id: 3 },
        },
    );
    assert_eq!(effects, vec![refused(4, RequestError::Busy)]);
}

/// Issue 11, item 7: a follower that installs a snapshot skips the applied
/// index past forwards it had placed; they used to wait forever and fill
/// the table.
#[test]
fn forwards_placed_below_an_installed_snapshot_are_answered() {
    let mut f = replica(2, 1, vec![]);
    msg(
        &mut f,
        10,
        1,
        Message::Append(append_req(1, 0, 0, vec![], 0)),
    );
    f.handle(
        ms(11),
        Input::Propose {
            id: 7,
            command: b"x".to_vec(),
        },
    );
    let placed = Message::ForwardResponse {
        term: 1,
        id: 1,
        at: Some(3),
    };
    assert!(msg(&mut f, 12, 1, placed).is_empty());
    let mut donor = Recorder::new();
    donor.apply(1, Instant::ZERO, b"a");
    let effects = msg(&mut f, 13, 1, whole_snapshot(5, &donor));
    assert!(
        effects.contains(&refused(7, RequestError::AppliedBySnapshot)),
        "{effects:?}"
    );
    assert_eq!(f.applied_index(), 5);
}

/// Issue 11, item 11: an InstallSnapshot reply naming an index past the
/// leader's snapshot (a broken or hostile peer) moved `matched` past the
/// log, which could commit entries nobody has; it is ignored.
#[test]
fn a_snapshot_reply_past_the_leaders_snapshot_is_ignored() {
    let mut cfg = snapshot_config(2, 4);
    cfg.pending_proposals_max = 16;
    let mut r = leader_with(cfg);
    r.handle(
        ms(200),
        Input::Propose {
            id: 1,
            command: b"x".to_vec(),
        },
    );
    durable(&mut r, 200);
    msg(&mut r, 201, 2, success(1, 2));
    assert_eq!(r.log().snapshot_index(), 2);
    let commit = r.commit_index();
    let hostile = InstallSnapshotResponse {
        term: 1,
        last_index: 1_000_000,
        next_offset: 0,
        done: true,
    };
    let effects = msg(&mut r, 202, 3, Message::InstallSnapshotResponse(hostile));
    assert_eq!(effects, vec![]);
    assert_eq!(r.commit_index(), commit);
}

/// Issue 11, item 12: a write through a follower took a heartbeat interval
/// (51 ms) more than through the leader, because the follower learned the
/// commit index only at the next heartbeat. A follower that forwarded a
/// proposal is told of its commit as soon as it can use it.
#[test]
fn a_follower_waiting_for_its_forward_learns_the_commit_at_once() {
    let mut l = leader();
    msg(&mut l, 200, 2, success(1, 1));
    msg(&mut l, 200, 3, success(1, 1));
    assert_eq!(l.commit_index(), 1);
    let effects = msg(
        &mut l,
        201,
        2,
        Message::Forward {
            term: 1,
            id: 5,
            command: b"w".to_vec(),
        },
    );
    assert!(effects.contains(&send(
        2,
        Message::ForwardResponse {
            term: 1,
            id: 5,
            at: Some(2)
        }
    )));
    durable(&mut l, 201);
    // Node 3 acknowledges first: committed, but node 2 does not hold it
    // yet, so a commit index of 2 is no use to it.
    let effects = msg(&mut l, 202, 3, success(1, 2));
    assert_eq!(l.commit_index(), 2);
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Send { .. })),
        "{effects:?}"
    );
    // Node 2 acknowledges: it is told the commit at once.
    let effects = msg(&mut l, 203, 2, success(1, 2));
    assert_eq!(
        effects,
        vec![send(2, Message::Append(append_req(1, 2, 1, vec![], 2)))]
    );
    // Node 3 forwarded nothing and waits for nothing: no extra message.
    let effects = msg(&mut l, 204, 3, success(1, 2));
    assert_eq!(effects, vec![]);
}

/// Issue 11, item 9: an AppendEntries is bounded in bytes, and so is what
/// is in flight to a follower, so a burst of large entries reaches it in
/// portions its disk can take, each message well within a frame.
#[test]
fn appends_and_what_is_in_flight_are_bounded_in_bytes() {
    let mut cfg = config();
    cfg.pending_proposals_max = 64;
    cfg.append_bytes_max = 500;
    cfg.inflight_bytes_max = 1_000;
    let mut l = leader_with(cfg);
    msg(&mut l, 200, 2, success(1, 1));
    let sent_to_2 = |effects: &[Effect]| -> Vec<usize> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Send {
                    to: 2,
                    msg: Message::Append(a),
                } => Some(a.entries.iter().map(crate::raft::payload_len).sum()),
                _ => None,
            })
            .collect()
    };
    let mut sent = Vec::new();
    for round in 0..3u64 {
        let batch: Vec<(RequestId, Vec<u8>)> =
            (0..4).map(|i| (round * 4 + i, vec![7u8; 400])).collect();
        sent.extend(sent_to_2(&l.handle(ms(201), Input::ProposeBatch(batch))));
    }
    // 400 + 400 per message (past 500 after the second entry); a third
    // would put more than 1 000 bytes in flight.
    assert_eq!(sent, vec![800, 800]);
    // Acknowledged: the next portion goes.
    let effects = msg(&mut l, 202, 2, success(1, 3));
    assert_eq!(sent_to_2(&effects), vec![800]);
}

/// Issue 11, item 9: the leader's log is bounded in bytes too: past
/// `log_bytes_max` new proposals are `Busy`, so a burst cannot fill memory
/// faster than commits and compaction drain it.
#[test]
fn a_leader_whose_log_holds_its_byte_bound_answers_busy() {
    let mut cfg = config();
    cfg.pending_proposals_max = 64;
    cfg.snapshot_threshold_bytes = 1_000;
    cfg.entry_bytes_max = 400;
    cfg.append_bytes_max = 400;
    cfg.log_bytes_max = 1_400;
    let mut l = leader_with(cfg);
    for id in 1..=3 {
        let effects = l.handle(
            ms(200),
            Input::Propose {
                id,
                command: vec![1; 400],
            },
        );
        assert!(!effects.contains(&refused(id, RequestError::Busy)));
    }
    let effects = l.handle(
        ms(200),
        Input::Propose {
            id: 4,
            command: vec![1; 400],
        },
    );
    assert_eq!(effects, vec![refused(4, RequestError::Busy)]);
    let too_big = l.handle(
        ms(200),
        Input::Propose {
            id: 5,
            command: vec![1; 401],
        },
    );
    assert_eq!(
        too_big,
        vec![refused(
            5,
            RequestError::TooLarge {
                bytes: 401,
                max: 400
            }
        )]
    );
}
