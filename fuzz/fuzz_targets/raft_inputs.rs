//! A Raft replica fed arbitrary messages, timers, proposals, reads and
//! durability reports: no panic, its postconditions hold after every step.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    raftlock::fuzz::check_raft_inputs(data);
});
