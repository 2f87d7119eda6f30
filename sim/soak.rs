//! Soak: every selected scenario, fresh seeds in turn, for a wall-clock
//! budget. `cargo sim --soak SECS [FILTER]` (or `cargo test --features sim
//! -- --soak SECS [FILTER]`). Prints the seeds run, the simulated hours
//! they covered, seeds per second, and every failing seed with the command
//! that replays it. A failure does not stop the soak: the other seeds and
//! scenarios keep running, so one report carries every finding.

use crate::scenario::Scenario;
use crate::seed::{repro, run_caught, write_trace};
use std::time::{Duration, Instant};

/// Failures recorded before the soak stops early (each is worth reading).
pub const SOAK_FAILURES_MAX: usize = 20;
/// How often progress is printed.
pub const SOAK_PROGRESS_S: u64 = 60;
/// Where fresh seeds start when `MADSIM_TEST_SEED` is not set: far above
/// the 1..200 that CI sweeps, shifted by the start time so that two soaks
/// cover different seeds.
const SOAK_SEED_BASE: u64 = 1_000_000;

struct Tally {
    name: String,
    scenario: Scenario,
    seeds: u64,
    simulated: Duration,
}

/// Runs the soak; returns false if any seed failed.
pub fn run(budget: Duration, scenarios: Vec<(String, Scenario)>) -> bool {
    let first = std::env::var("MADSIM_TEST_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            SOAK_SEED_BASE + (now % 100_000) * 1_000
        });
    let mut tallies: Vec<Tally> = scenarios
        .into_iter()
        .map(|(name, scenario)| Tally {
            name,
            scenario,
            seeds: 0,
            simulated: Duration::ZERO,
        })
        .collect();
    println!(
        "\nsoak: {} scenarios for {} s, seeds from {first} up",
        tallies.len(),
        budget.as_secs()
    );
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut failures: Vec<String> = Vec::new();
    let mut seed = first;
    'soak: while started.elapsed() < budget && !tallies.is_empty() {
        for t in tallies.iter_mut() {
            if started.elapsed() >= budget {
                break 'soak;
            }
            let failure = match run_caught(&t.scenario, seed) {
                Ok(outcome) => {
                    t.seeds += 1;
                    t.simulated += outcome.sim_time;
                    outcome.violation.map(|v| v.to_string())
                }
                Err(panic) => {
                    t.seeds += 1;
                    Some(panic)
                }
            };
            if let Some(why) = failure {
                let line = format!(
                    "{} seed {seed}: {why}\n    reproduce: {}\n    {}",
                    t.name,
                    repro(&t.name, seed),
                    write_trace(&t.name, &t.scenario, seed)
                );
                println!("FAILED {line}");
                failures.push(line);
                if failures.len() >= SOAK_FAILURES_MAX {
                    break 'soak;
                }
            }
            if last_progress.elapsed() >= Duration::from_secs(SOAK_PROGRESS_S) {
                last_progress = Instant::now();
                println!(
                    "  {:.0} s: seed {seed}, {} failures so far",
                    started.elapsed().as_secs_f64(),
                    failures.len()
                );
            }
        }
        seed += 1;
    }
    report(&tallies, started.elapsed(), &failures);
    failures.is_empty()
}

fn tallies_seeds(tallies: &[Tally]) -> u64 {
    tallies.iter().map(|t| t.seeds).sum()
}

fn report(tallies: &[Tally], wall: Duration, failures: &[String]) {
    let wall_s = wall.as_secs_f64().max(1e-9);
    println!(
        "\n{:<24} {:>8} {:>10} {:>12}",
        "scenario", "seeds", "seeds/s", "simulated h"
    );
    for t in tallies {
        println!(
            "{:<24} {:>8} {:>10.1} {:>12.2}",
            t.name,
            t.seeds,
            t.seeds as f64 / wall_s,
            t.simulated.as_secs_f64() / 3600.0
        );
    }
    let seeds = tallies_seeds(tallies);
    let hours: f64 = tallies
        .iter()
        .map(|t| t.simulated.as_secs_f64() / 3600.0)
        .sum();
    println!(
        "{:<24} {:>8} {:>10.1} {:>12.2}",
        "all",
        seeds,
        seeds as f64 / wall_s,
        hours
    );
    println!(
        "\nsoak: {seeds} seeds in {:.0} s wall, {hours:.2} simulated hours, {} failing seeds",
        wall.as_secs_f64(),
        failures.len()
    );
    for f in failures {
        println!("  {f}");
    }
}
