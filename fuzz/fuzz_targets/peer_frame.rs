//! Arbitrary bytes into the peer-frame decoder: never a panic, and whatever
//! decodes re-encodes to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| raftlock::net::codec::check_peer_frame_bytes(data));
