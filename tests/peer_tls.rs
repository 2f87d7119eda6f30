#![cfg(not(madsim))]
//! Hostile peers against real `raftlock serve` processes whose peers talk
//! mutual TLS (issue 13). Each sends what would make a follower start an
//! election at once if it were heard (`TimeoutNow` for a term far ahead):
//! plain TCP, a certificate from another CA, the cluster's CA but another
//! node's name. None may move any node's term; the last case, a member
//! speaking as itself, shows that the probe would be noticed.

mod procs;

use procs::*;
use raftlock::net::encode_frame;
use raftlock::raft::{Envelope, Message};
use raftlock::tls::{self, PeerTls};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// How long a node is given to act on a probe before its term is read.
const SETTLE_MS: u64 = 1_500;

/// The probe: a "leader" telling node `to` to campaign in a term far
/// ahead, sent as `from`.
fn probe(cluster_id: u64, from: u64, to: u64, term: u64) -> Vec<u8> {
    let mut bytes = b"RLK\x01".to_vec();
    bytes.extend_from_slice(&cluster_id.to_le_bytes());
    let envelope = Envelope {
        from,
        to,
        msg: Message::TimeoutNow { term },
    };
    bytes.extend_from_slice(&encode_frame(&envelope).unwrap());
    bytes
}

/// Every node's (term, leader), once they agree on a leader.
fn terms(c: &Cluster) -> Vec<(u64, u64)> {
    wait_for("a leader all agree on", || {
        let mut seen = Vec::new();
        for p in &c.procs {
            let (status, s) = call(p.http, "GET", "/API/v1/cluster", "")?;
            if status != 200 {
                return None;
            }
            seen.push((s["term"].as_u64()?, s["leader"].as_u64()?));
        }
        seen.windows(2).all(|w| w[0].1 == w[1].1).then_some(seen)
    })
}

fn cluster_id(c: &Cluster) -> u64 {
    let (_, s) = call(c.procs[0].http, "GET", "/API/v1/cluster", "").unwrap();
    u64::from_str_radix(s["cluster_id"].as_str().unwrap(), 16).unwrap()
}

/// A client config that trusts `ca_dir`'s CA for the server and presents
/// `cert_dir`'s certificate of node `id`.
fn client_config(ca_dir: &Path, cert_dir: &Path, id: u64) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(tls::ca_cert_path(ca_dir)).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<_> = CertificateDer::pem_file_iter(tls::node_cert_path(cert_dir, id))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(tls::node_key_path(cert_dir, id)).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    Arc::new(config)
}

/// Sends `bytes` to `addr`: inside TLS with `config` (asking for node
/// `to`'s certificate), or plain. Whatever the node does with it.
fn send(addr: SocketAddr, to: u64, config: Option<Arc<rustls::ClientConfig>>, bytes: &[u8]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
            return;
        };
        let within = Duration::from_secs(5);
        match config {
            None => {
                let mut tcp = tcp;
                let _ = tokio::time::timeout(within, tcp.write_all(bytes)).await;
                let _ = tokio::time::timeout(within, tcp.flush()).await;
            }
            Some(config) => {
                let name = PeerTls::server_name(to).unwrap();
                let connect = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
                if let Ok(Ok(mut s)) = tokio::time::timeout(within, connect).await {
                    let _ = tokio::time::timeout(within, s.write_all(bytes)).await;
                    let _ = tokio::time::timeout(within, s.flush()).await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
}

#[test]
fn peers_without_the_clusters_certificate_for_their_name_are_not_heard() {
    let c = Cluster::start();
    let before = terms(&c);
    let leader = before[0].1;
    // A follower: a TimeoutNow would make it campaign at once.
    let target = c.procs.iter().find(|p| p.id != leader).unwrap();
    let (peer, to) = (target.peer, target.id);
    let far = before.iter().map(|t| t.0).max().unwrap() + 1_000;
    let id = cluster_id(&c);
    let other = tempfile::tempdir().unwrap();
    make_certs(other.path(), &[leader]);
    tls::create_node(&c.certs, 9, &[]).unwrap();

    let attempts: Vec<(&str, Option<Arc<rustls::ClientConfig>>)> = vec![
        ("plain TCP on the TLS port", None),
        (
            "a certificate for the leader's name from another CA",
            Some(client_config(&c.certs, other.path(), leader)),
        ),
        (
            "the cluster's CA, but node 9's certificate speaking as the leader",
            Some(client_config(&c.certs, &c.certs, 9)),
        ),
    ];
    for (what, config) in attempts {
        send(peer, to, config, &probe(id, leader, to, far));
        std::thread::sleep(Duration::from_millis(SETTLE_MS));
        let now = terms(&c);
        assert!(
            now.iter().all(|(term, _)| *term < far),
            "{what}: a node took the probe's term: {now:?} (before {before:?})"
        );
        assert_eq!(
            now.iter().map(|t| t.1).collect::<Vec<_>>(),
            before.iter().map(|t| t.1).collect::<Vec<_>>(),
            "{what}: leadership moved"
        );
    }

    // The control: the leader's own certificate, speaking as the leader,
    // is heard, so the probe above would have shown a hole.
    send(
        peer,
        to,
        Some(client_config(&c.certs, &c.certs, leader)),
        &probe(id, leader, to, far),
    );
    wait_for("the genuine probe to be heard", || {
        let now = terms(&c);
        now.iter().any(|(term, _)| *term >= far).then_some(())
    });
}

/// A node that joins through a follower: the follower passes the join on
/// to its leader as itself, which the leader must accept (the first cut
/// of peer TLS closed the follower's connection for it, every 500 ms).
#[test]
fn a_node_joins_through_a_follower_over_tls() {
    let c = Cluster::start();
    let leader = terms(&c)[0].1;
    let follower = c.procs.iter().find(|p| p.id != leader).unwrap();
    let out = std::process::Command::new(bin())
        .args(["certs", "create-node", "--id", "4", "--certs-dir"])
        .arg(&c.certs)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let dir = tempfile::tempdir().unwrap();
    let [peer, http, native] = free_addrs();
    let child = std::process::Command::new(bin())
        .args(["serve", "--id", "4", "--data-dir"])
        .arg(dir.path())
        .args(["--listen-peer", &peer.to_string()])
        .args(["--listen-http", &http.to_string()])
        .args(["--listen-native", &native.to_string()])
        .args(["--join", &follower.peer.to_string()])
        .arg("--certs-dir")
        .arg(&c.certs)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _child = KillOnDrop(child);
    wait_for("node 4 to become a voter", || {
        let (status, s) = call(c.procs[0].http, "GET", "/API/v1/cluster", "")?;
        let voter = s["members"]
            .as_array()?
            .iter()
            .any(|m| m["id"].as_u64() == Some(4) && m["voter"].as_bool() == Some(true));
        (status == 200 && voter).then_some(())
    });
}
