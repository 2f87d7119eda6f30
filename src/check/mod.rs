//! Checkers for histories recorded against a running lock service: used by
//! the simulator, and by anyone testing raftlock as a black box.

pub mod linearizability;
