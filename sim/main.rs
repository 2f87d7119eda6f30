//! The simulation test target (`cargo test --features sim`).
//!
//! Built without `--cfg madsim`, this binary only re-runs cargo with the cfg
//! set, into `target/sim`, and passes the result through (see `rerun.rs`).
//! Built with it, it runs the scenarios over many seeds (`runner.rs`).
//! It has its own small runner instead of libtest so one test can sweep
//! hundreds of seeds and report each failure with its reproduction command.

#[cfg(madsim)]
mod checker;
#[cfg(madsim)]
mod clock;
#[cfg(madsim)]
mod cluster;
#[cfg(madsim)]
mod credentials;
#[cfg(madsim)]
mod http_client;
#[cfg(madsim)]
mod intruder;
#[cfg(madsim)]
mod library_client;
#[cfg(madsim)]
mod lock_client;
#[cfg(madsim)]
mod runner;
#[cfg(madsim)]
mod scenario;
#[cfg(madsim)]
mod seed;
#[cfg(madsim)]
mod shared;
#[cfg(madsim)]
mod soak;
#[cfg(madsim)]
mod timeline;
#[cfg(madsim)]
mod trace;

#[cfg(not(madsim))]
mod rerun;

fn main() {
    #[cfg(madsim)]
    runner::main();
    #[cfg(not(madsim))]
    rerun::main();
}
