//! Arbitrary bytes as every native-protocol message: no panic, and what
//! decodes survives a round trip.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| raftlock::fuzz::check_client_frame(data));
