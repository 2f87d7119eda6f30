//! Arbitrary bytes as a stream of native-protocol frames, read by a node
//! (`ClientFrame`) and by a client (`ServerFrame`): no panic, and every
//! frame decoded survives a round trip.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| raftlock::net::native::check_native_frames(data));
