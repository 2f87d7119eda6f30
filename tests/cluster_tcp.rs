#![cfg(not(madsim))]
//! Three real nodes in one process on 127.0.0.1: real TCP, real fsync.
//! Every wait polls with a deadline; nothing sleeps to synchronise.

use raftlock::raft::{self, ConfChange, RequestError, Role};
use raftlock::runtime::{Node, NodeConfig, NodeError, NodeStatus};
mod common;

use common::wait_for;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::net::TcpListener;

fn config() -> raft::Config {
    raft::Config {
        election_timeout_min: Duration::from_millis(150),
        election_timeout_max: Duration::from_millis(300),
        heartbeat_interval: Duration::from_millis(30),
        ..raft::Config::default()
    }
}

fn start(id: u64, dir: &Path, peers: &BTreeMap<u64, SocketAddr>, listener: TcpListener) -> Node {
    let cfg = NodeConfig {
        id,
        data_dir: dir.to_path_buf(),
        peers: peers.clone(),
        join: None,
        raft: config(),
        cluster: Default::default(),
        tls: None,
    };
    Node::start(cfg, listener).expect("node starts")
}

async fn statuses(nodes: &BTreeMap<u64, Node>) -> Vec<NodeStatus> {
    let mut out = Vec::new();
    for node in nodes.values() {
        if let Ok(s) = node.status().await {
            out.push(s);
        }
    }
    out
}

/// What each node applied, for the nodes that answer.
async fn applied_all(nodes: &BTreeMap<u64, Node>) -> Vec<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for node in nodes.values() {
        if let Ok(a) = node.applied().await {
            out.push(a);
        }
    }
    out
}

/// A leader that a majority of the given nodes follow in its term.
async fn leader(nodes: &BTreeMap<u64, Node>) -> Option<(u64, u64)> {
    let all = statuses(nodes).await;
    let l = all
        .iter()
        .filter(|s| s.role == Role::Leader)
        .max_by_key(|s| s.term)?;
    let followers = all
        .iter()
        .filter(|s| s.term == l.term && s.leader == Some(l.id))
        .count();
    (followers * 2 > 3).then_some((l.id, l.term))
}

/// Proposes through whichever node leads, retrying on leader changes.
async fn propose(nodes: &BTreeMap<u64, Node>, command: &[u8]) -> u64 {
    wait_for("a proposal to commit", || async {
        let (id, _) = leader(nodes).await?;
        match nodes[&id].propose(command.to_vec()).await {
            Ok(applied) => Some(applied.index),
            Err(NodeError::Rejected(RequestError::LeadershipLost)) => None,
            Err(NodeError::Rejected(RequestError::NotLeader { .. })) => None,
            Err(e) => panic!("proposal failed: {e}"),
        }
    })
    .await
}

#[actix_rt::test]
async fn three_nodes_elect_replicate_and_survive_losing_the_leader() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut nodes, peers) = three_node_cluster(&dirs).await;

    // One leader is elected.
    let (first_leader, first_term) = wait_for("a leader", || leader(&nodes)).await;
    let leaders_in_term = statuses(&nodes)
        .await
        .iter()
        .filter(|s| s.role == Role::Leader && s.term == first_term)
        .count();
    assert_eq!(leaders_in_term, 1);

    // Entries replicate to all three.
    let mut commands = Vec::new();
    for i in 0..20 {
        let c = format!("before-{i}").into_bytes();
        propose(&nodes, &c).await;
        commands.push(c);
    }
    wait_for("all three to apply every entry", || async {
        let all = applied_all(&nodes).await;
        let done = all.len() == 3
            && all.iter().all(|a| commands.iter().all(|c| a.contains(c)))
            && all.windows(2).all(|w| w[0] == w[1]);
        done.then_some(())
    })
    .await;

    // Stop the leader: a new one takes over and nothing committed is lost.
    nodes.remove(&first_leader).unwrap().stop();
    let (second_leader, second_term) = wait_for("a new leader", || leader(&nodes)).await;
    assert_ne!(second_leader, first_leader);
    assert!(second_term > first_term);
    for i in 0..5 {
        let c = format!("after-{i}").into_bytes();
        propose(&nodes, &c).await;
        commands.push(c);
    }
    wait_for("the survivors to hold every committed entry", || async {
        let all = applied_all(&nodes).await;
        let done = all.len() == 2 && all.iter().all(|a| commands.iter().all(|c| a.contains(c)));
        done.then_some(())
    })
    .await;

    // The old leader restarts from its data directory and catches up.
    let idx = (first_leader - 1) as usize;
    let l = TcpListener::bind(peers[&first_leader]).await.unwrap();
    nodes.insert(
        first_leader,
        start(first_leader, dirs[idx].path(), &peers, l),
    );
    wait_for("the restarted node to catch up", || async {
        let a = nodes[&first_leader].applied().await.ok()?;
        commands.iter().all(|c| a.contains(c)).then_some(())
    })
    .await;
    for (_, n) in std::mem::take(&mut nodes) {
        n.stop();
    }
}

#[actix_rt::test]
async fn a_node_outside_the_cluster_map_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peers = BTreeMap::from([(1, l.local_addr().unwrap())]);
    let cfg = NodeConfig {
        id: 2,
        data_dir: dir.path().to_path_buf(),
        peers,
        join: None,
        raft: config(),
        cluster: Default::default(),
        tls: None,
    };
    assert!(matches!(
        Node::start(cfg, l),
        Err(raftlock::runtime::RuntimeError::NotInCluster(2))
    ));
}

/// A log writer the test can read back.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[actix_rt::test]
async fn log_lines_carry_the_node_id_and_its_current_term() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let dir = tempfile::tempdir().unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peers = BTreeMap::from([(7, l.local_addr().unwrap())]);
    let node = start(7, dir.path(), &peers, l);
    let status = wait_for("a leader", || async {
        node.status().await.ok().filter(|s| s.role == Role::Leader)
    })
    .await;
    node.stop();
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("role change") && l.contains("role=Leader"))
        .unwrap_or_else(|| panic!("no leader line in:\n{text}"));
    assert!(
        line.contains(&format!("node{{id=7 term={}}}", status.term)),
        "{line}"
    );
    // One span per line, whatever the term: a span made on a term change
    // used to nest in the old one (node{term=0}:node{term=1}:...).
    for l in text.lines().filter(|l| l.contains("node{")) {
        assert_eq!(l.matches("node{").count(), 1, "{l}");
    }
}

/// Three nodes on ephemeral 127.0.0.1 ports, and their peer addresses.
async fn three_node_cluster(
    dirs: &[tempfile::TempDir],
) -> (BTreeMap<u64, Node>, BTreeMap<u64, SocketAddr>) {
    let mut listeners = Vec::new();
    let mut peers = BTreeMap::new();
    for id in 1..=3u64 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        peers.insert(id, l.local_addr().unwrap());
        listeners.push(l);
    }
    let mut nodes = BTreeMap::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        nodes.insert(id, start(id, dirs[i].path(), &peers, l));
    }
    (nodes, peers)
}

#[actix_rt::test]
async fn follower_reads_see_completed_writes_and_leadership_transfers() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (nodes, _) = three_node_cluster(&dirs).await;
    let (leader_id, term) = wait_for("a leader", || leader(&nodes)).await;
    let written = propose(&nodes, b"w1").await;

    // A linearizable read on every node, followers included, sees the write
    // (the Recorder answers with the index of its last applied command).
    for node in nodes.values() {
        let read = wait_for("a read to be served", || async {
            match node.read(Vec::new()).await {
                Ok(applied) => Some(applied),
                Err(NodeError::Rejected(_)) => None,
                Err(e) => panic!("read failed: {e}"),
            }
        })
        .await;
        let seen = u64::from_le_bytes(read.output.as_slice().try_into().unwrap());
        assert!(
            seen >= written,
            "node {} read index {seen} before write {written}",
            node.id()
        );
    }

    // Graceful hand-over: the chosen follower becomes leader in a new term.
    let target = if leader_id == 1 { 2 } else { 1 };
    nodes[&leader_id]
        .transfer_leadership(target)
        .await
        .expect("transfer starts");
    let (new_leader, new_term) = wait_for("the target to lead", || async {
        leader(&nodes).await.filter(|(id, _)| *id == target)
    })
    .await;
    assert_eq!(new_leader, target);
    assert!(new_term > term);
    propose(&nodes, b"w2").await;
    for (_, n) in nodes {
        n.stop();
    }
}

/// A leader among `nodes` (any size) that a majority of its voters follow.
async fn leader_of(nodes: &BTreeMap<u64, Node>) -> Option<(u64, NodeStatus)> {
    let all = statuses(nodes).await;
    let l = all
        .iter()
        .filter(|s| s.role == Role::Leader)
        .max_by_key(|s| s.term)?;
    let voters = l.membership.voter_count();
    let following = all
        .iter()
        .filter(|s| s.term == l.term && s.leader == Some(l.id) && l.membership.is_voter(s.id))
        .count();
    (following * 2 > voters).then(|| (l.id, l.clone()))
}

#[actix_rt::test]
async fn nodes_join_a_running_cluster_and_the_leader_can_be_removed() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("raftlock=info")
        .with_test_writer()
        .try_init();
    let dirs: Vec<tempfile::TempDir> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut nodes, _) = three_node_cluster(&dirs[..3]).await;
    wait_for("a leader", || async { leader_of(&nodes).await }).await;
    propose(&nodes, b"before-join").await;

    // Nodes 4 and 5 ask node 1 to let them in; each becomes a learner, then
    // a voter once caught up.
    let join_addr = {
        let s = nodes[&1].status().await.unwrap();
        s.membership.addr(1).unwrap().parse().unwrap()
    };
    for id in [4u64, 5] {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cfg = NodeConfig {
            id,
            data_dir: dirs[id as usize - 1].path().to_path_buf(),
            peers: BTreeMap::new(),
            join: Some(join_addr),
            raft: config(),
            cluster: Default::default(),
            tls: None,
        };
        nodes.insert(id, Node::start(cfg, l).expect("joining node starts"));
    }
    let (leader, status) = wait_for("five voters", || async {
        let (id, s) = leader_of(&nodes).await?;
        (s.membership.voter_count() == 5 && s.commit_index >= s.last_index).then_some((id, s))
    })
    .await;
    assert_eq!(
        status.membership.voters().collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    wait_for("the new nodes to apply the log", || async {
        let a4 = nodes[&4].applied().await.ok()?;
        let a5 = nodes[&5].applied().await.ok()?;
        (a4.contains(&b"before-join".to_vec()) && a5.contains(&b"before-join".to_vec()))
            .then_some(())
    })
    .await;

    // Remove the leader: it steps down once that commits, the rest elect a
    // new leader and keep committing.
    nodes[&leader]
        .change_membership(ConfChange::Remove { id: leader })
        .await
        .expect("removal commits");
    let removed = nodes.remove(&leader).unwrap();
    let (new_leader, s) = wait_for("a leader among the four", || async {
        leader_of(&nodes).await
    })
    .await;
    assert_ne!(new_leader, leader);
    assert!(!s.membership.contains(leader));
    assert_eq!(s.membership.voter_count(), 4);
    propose(&nodes, b"after-removal").await;
    let old = removed.status().await.unwrap();
    assert_ne!(old.role, Role::Leader, "the removed leader stepped down");
    removed.stop();
    for (_, n) in nodes {
        n.stop();
    }
}

#[actix_rt::test]
async fn a_leader_shutting_down_hands_over_leadership_first() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut nodes, _) = three_node_cluster(&dirs).await;
    let (leader, term) = wait_for("a leader", || leader(&nodes)).await;
    propose(&nodes, b"before").await;
    let handed_over = nodes.remove(&leader).unwrap().shutdown().await;
    assert!(handed_over, "leadership moved before the node stopped");
    // The two survivors are a majority of three: they keep committing.
    let (next, next_term) = wait_for("the successor to lead", || async {
        let all = statuses(&nodes).await;
        let l = all.iter().find(|s| s.role == Role::Leader)?;
        let followers = all
            .iter()
            .filter(|s| s.leader == Some(l.id) && s.term == l.term)
            .count();
        (followers == 2).then_some((l.id, l.term))
    })
    .await;
    assert_ne!(next, leader);
    assert!(next_term > term);
    propose(&nodes, b"after").await;
    for (_, n) in nodes {
        n.stop();
    }
}
