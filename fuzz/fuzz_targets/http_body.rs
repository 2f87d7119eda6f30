//! Arbitrary bytes as every HTTP request body and lock name: no panic, and
//! every refusal is a 400 with a JSON `{"code", "message"}` body.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| raftlock::http::check_request_body(data));
