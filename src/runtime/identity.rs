//! Which node and which cluster a data dir belongs to.
//!
//! Starting node 2 on node 1's data (a wrong `--id` or `--data-dir`) would
//! make it vote and acknowledge as someone it is not; starting a node on a
//! data dir of another cluster would mix two logs. The data dir holds a
//! small text file naming both, written and fsynced on first start and
//! checked on every start after. Peers exchange the cluster's id when they
//! connect (`transport`), so a node of another cluster is refused on the
//! wire too.

use super::error::RuntimeError;
use crate::actor::NodeId;
use std::io::Write;
use std::path::{Path, PathBuf};

/// File in the data dir naming the node and cluster it belongs to.
pub const IDENTITY_FILE: &str = "raftlock.node";
/// The cluster name used when none is given.
pub const CLUSTER_NAME_DEFAULT: &str = "raftlock";
/// Longest cluster name accepted.
pub const CLUSTER_NAME_BYTES_MAX: usize = 64;

/// A cluster's name and the id peers compare when they connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    name: String,
}

impl Cluster {
    /// A cluster name: 1 to `CLUSTER_NAME_BYTES_MAX` bytes of ASCII letters,
    /// digits, `.`, `_` and `-` (it is written into files and logs as is).
    pub fn new(name: &str) -> Result<Cluster, String> {
        let ok = !name.is_empty()
            && name.len() <= CLUSTER_NAME_BYTES_MAX
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if ok {
            Ok(Cluster { name: name.into() })
        } else {
            Err(format!(
                "cluster name {name:?}: expected 1 to {CLUSTER_NAME_BYTES_MAX} of A-Z a-z 0-9 . _ -"
            ))
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// 64-bit FNV-1a of the name: what peers send when they connect. A
    /// collision between two names only weakens a guard against operator
    /// error; it cannot make Raft unsafe.
    pub fn id(&self) -> u64 {
        self.name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }
}

impl Default for Cluster {
    fn default() -> Cluster {
        Cluster {
            name: CLUSTER_NAME_DEFAULT.into(),
        }
    }
}

/// Checks that `dir` belongs to node `id` of `cluster`, or records that it
/// does if the dir is new. A file from before cluster names existed (only
/// `node_id`) is taken to be of `cluster` and completed.
pub fn check(dir: &Path, id: NodeId, cluster: &Cluster) -> Result<(), RuntimeError> {
    let path = dir.join(IDENTITY_FILE);
    let bad = |detail: String| RuntimeError::Identity {
        path: path.clone(),
        detail,
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return write(dir, &path, id, cluster).map_err(|e| bad(e.to_string()));
        }
        Err(e) => return Err(bad(e.to_string())),
    };
    let mut node = None;
    let mut name = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.split_once('=') {
            Some(("node_id", n)) => {
                let n = n.parse::<NodeId>();
                node = Some(n.map_err(|_| bad(format!("bad node_id in {line:?}")))?);
            }
            Some(("cluster", c)) => name = Some(c.to_string()),
            _ => return Err(bad(format!("unexpected line {line:?}"))),
        }
    }
    let found = node.ok_or_else(|| bad("no node_id=N line".into()))?;
    if found != id {
        return Err(RuntimeError::WrongNode {
            path: dir.to_path_buf(),
            found,
            expected: id,
        });
    }
    match name {
        Some(found) if found != cluster.name() => Err(RuntimeError::WrongCluster {
            path: dir.to_path_buf(),
            found,
            expected: cluster.name().into(),
        }),
        Some(_) => Ok(()),
        None => write(dir, &path, id, cluster).map_err(|e| bad(e.to_string())),
    }
}

/// Writes the file through a temporary one and a rename, fsyncing both it
/// and the directory, so a crash leaves either the old file or the new.
fn write(dir: &Path, path: &PathBuf, id: NodeId, cluster: &Cluster) -> std::io::Result<()> {
    let tmp = dir.join(format!("{IDENTITY_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(format!("node_id={id}\ncluster={}\n", cluster.name()).as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(name: &str) -> Cluster {
        Cluster::new(name).unwrap()
    }

    #[test]
    fn a_new_dir_records_node_and_cluster_and_is_accepted_again() {
        let dir = tempfile::tempdir().unwrap();
        check(dir.path(), 3, &cluster("prod-eu")).unwrap();
        let text = std::fs::read_to_string(dir.path().join(IDENTITY_FILE)).unwrap();
        assert_eq!(text, "node_id=3\ncluster=prod-eu\n");
        check(dir.path(), 3, &cluster("prod-eu")).unwrap();
    }

    #[test]
    fn another_node_or_cluster_is_refused_and_the_file_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        check(dir.path(), 3, &cluster("prod-eu")).unwrap();
        let err = check(dir.path(), 4, &cluster("prod-eu")).unwrap_err();
        assert!(matches!(
            err,
            RuntimeError::WrongNode {
                found: 3,
                expected: 4,
                ..
            }
        ));
        let err = check(dir.path(), 3, &cluster("prod-us")).unwrap_err();
        assert!(
            err.to_string()
                .contains("belongs to cluster \"prod-eu\", not \"prod-us\""),
            "{err}"
        );
        let text = std::fs::read_to_string(dir.path().join(IDENTITY_FILE)).unwrap();
        assert_eq!(text, "node_id=3\ncluster=prod-eu\n");
    }

    #[test]
    fn a_file_without_a_cluster_is_completed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(IDENTITY_FILE), "node_id=2\n").unwrap();
        check(dir.path(), 2, &cluster("raftlock")).unwrap();
        let text = std::fs::read_to_string(dir.path().join(IDENTITY_FILE)).unwrap();
        assert_eq!(text, "node_id=2\ncluster=raftlock\n");
    }

    #[test]
    fn a_garbled_file_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(IDENTITY_FILE), "node_id=x\n").unwrap();
        let err = check(dir.path(), 2, &Cluster::default()).unwrap_err();
        assert!(matches!(err, RuntimeError::Identity { .. }), "{err}");
        std::fs::write(dir.path().join(IDENTITY_FILE), "hello\n").unwrap();
        assert!(check(dir.path(), 2, &Cluster::default()).is_err());
    }

    #[test]
    fn names_are_validated_and_ids_differ() {
        assert!(Cluster::new("").is_err());
        assert!(Cluster::new("a b").is_err());
        assert!(Cluster::new("x\ncluster=y").is_err());
        assert!(Cluster::new(&"a".repeat(CLUSTER_NAME_BYTES_MAX + 1)).is_err());
        assert_ne!(cluster("a").id(), cluster("b").id());
        assert_eq!(cluster("raftlock").id(), Cluster::default().id());
    }
}
