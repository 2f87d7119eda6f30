//! One seed of one scenario, as the sweep, the soak and the negative
//! controls run it: a panic anywhere becomes a failure, a failure gets the
//! command that replays it and a written trace.

use crate::scenario::{run_seed, Outcome, Scenario};
use std::panic::{catch_unwind, AssertUnwindSafe};

pub fn repro(name: &str, seed: u64) -> String {
    format!("MADSIM_TEST_SEED={seed} cargo test --features sim -- {name} --exact")
}

/// Replays a failing seed with the event trace on and writes it; returns
/// the line to print (where the trace is, or why there is none).
pub fn write_trace(name: &str, sc: &Scenario, seed: u64) -> String {
    let traced = catch_unwind(AssertUnwindSafe(|| {
        crate::scenario::run_seed_traced(sc, seed)
    }));
    match traced.map(|o| o.trace) {
        Ok(Some(trace)) => match trace.write(name, seed) {
            Ok(path) => format!("trace: {} ({} events)", path.display(), trace.lines().len()),
            Err(e) => format!("trace: not written: {e}"),
        },
        Ok(None) => "trace: none recorded".into(),
        Err(_) => "trace: none (the replay panicked; use SIM_TRACE=1)".into(),
    }
}

/// Runs one seed, turning a panic anywhere in the run into a failure.
pub fn run_caught(sc: &Scenario, seed: u64) -> Result<Outcome, String> {
    catch_unwind(AssertUnwindSafe(|| run_seed(sc, seed))).map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "non-string panic".into());
        format!("panic: {msg}")
    })
}
