//! The production driver: the Raft actor run by the node *host* (an actix
//! `Actor` on tokio; in raftlock "actor" alone means a deterministic one),
//! with real timers, real fsync and a TCP transport between nodes.
//!
//! Not compiled under `--cfg madsim` (actix cannot run inside madsim); the
//! simulator has its own driver in `sim/cluster.rs` over the same actor.

mod error;
mod identity;
mod metrics;
mod node;
mod transport;
mod writer;

pub use error::{NodeError, RuntimeError};
pub use identity::{Cluster, CLUSTER_NAME_BYTES_MAX, CLUSTER_NAME_DEFAULT, IDENTITY_FILE};
pub use metrics::{Family, Histogram, Metrics, LATENCY_BUCKETS_S};
pub use node::{Node, NodeConfig, NodeMachine, NodeStatus, PeerQueue, EVENTS_CHANNEL_LEN_MAX};
pub use transport::{PEER_SEND_QUEUE_LEN_MAX, RECONNECT_BACKOFF_MS_MAX, RECONNECT_BACKOFF_MS_MIN};
