//! A node id and arbitrary bytes as a peer's certificate, PEM or DER: never
//! a panic (`tls::check_peer_cert`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| raftlock::tls::check_peer_cert(data));
