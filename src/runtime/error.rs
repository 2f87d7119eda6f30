use crate::raft::{RaftError, RequestError};
use crate::storage::StoreError;
use std::io;
use std::path::PathBuf;
use thiserror::Error;

/// Errors starting or running a node.
#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("cannot use data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot recover the Raft log: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Raft(#[from] RaftError),
    #[error("node {0} is not in the cluster map")]
    NotInCluster(u64),
    #[error(
        "data dir {path} belongs to node {found}, not node {expected}: wrong --id or --data-dir"
    )]
    WrongNode {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    #[error(
        "data dir {path} belongs to cluster {found:?}, not {expected:?}: wrong --data-dir or --cluster-name"
    )]
    WrongCluster {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("cannot read the node identity file {path}: {detail}")]
    Identity { path: PathBuf, detail: String },
    #[error("network: {0}")]
    Io(#[from] io::Error),
}

/// Errors a caller of a running node sees.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum NodeError {
    #[error(transparent)]
    Rejected(#[from] RequestError),
    #[error("the node has stopped")]
    Stopped,
}
