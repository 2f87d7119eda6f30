//! The lock state machine fed arbitrary commands, expiries, ticks, queries
//! and snapshot round trips: no panic, invariants hold after every step.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    raftlock::fuzz::check_lock_machine(data);
});
