//! `cargo test --features sim` without `--cfg madsim`: re-run cargo with the
//! cfg set, in a separate target dir so the production build is untouched,
//! forwarding the test filters, and pass the exit status through.
//!
//! Why not a `build.rs` or `[target.'cfg(feature)'] rustflags`: the madsim
//! crate itself must see the cfg, which only RUSTFLAGS (or build.rustflags)
//! give it; see docs/SIMULATION.md.

use std::path::PathBuf;
use std::process::{exit, Command};

pub fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        // `cargo test -- --list` asks every target; there is nothing to list
        // until the simulated build exists.
        return;
    }
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir.join("target"))
        .join("sim");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&manifest_dir)
        .args(["test", "--features", "sim", "--test", "sim", "--target-dir"])
        .arg(&target_dir)
        .arg("--")
        .args(&args)
        .env("RUSTFLAGS", "--cfg madsim")
        .env("RUSTDOCFLAGS", "--cfg madsim");
    eprintln!(
        "sim: re-running under --cfg madsim into {}",
        target_dir.display()
    );
    match cmd.status() {
        Ok(status) => exit(status.code().unwrap_or(1)),
        Err(e) => {
            eprintln!("sim: cannot run cargo: {e}");
            exit(1)
        }
    }
}
