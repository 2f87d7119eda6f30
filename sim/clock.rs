//! Per-node clocks. madsim has one global clock; each node sees it through
//! an offset and a drift rate, and the driver converts both ways: local
//! instants for the actor, global durations for madsim's timers.

use raftlock::actor::Instant;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Clock {
    /// Local time at global elapsed zero... as of the last rate change.
    base_local_us: f64,
    base_global_us: f64,
    /// Local seconds per global second (1 + drift).
    rate: f64,
}

impl Clock {
    pub fn new(offset_us: u64, rate: f64) -> Self {
        Clock {
            base_local_us: offset_us as f64,
            base_global_us: 0.0,
            rate,
        }
    }

    pub fn local(&self, global: Duration) -> Instant {
        let g = global.as_micros() as f64;
        Instant::from_micros((self.base_local_us + (g - self.base_global_us) * self.rate) as u64)
    }

    /// Global time to wait from `global` until the local clock reads `at`.
    pub fn global_until(&self, global: Duration, at: Instant) -> Duration {
        let now = self.local(global).as_micros();
        let local_wait = at.as_micros().saturating_sub(now) as f64;
        // Round up so a timer never fires before its local deadline.
        Duration::from_micros((local_wait / self.rate).ceil() as u64 + 1)
    }

    /// Changes the drift from now on, keeping local time continuous.
    pub fn set_rate(&mut self, global: Duration, rate: f64) {
        self.base_local_us = self.local(global).as_micros() as f64;
        self.base_global_us = global.as_micros() as f64;
        self.rate = rate;
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }
}

/// Self-test, run by the sim runner as `clock_model` (the sim target has no
/// libtest harness, so `#[test]` would not run here).
pub fn self_check() -> Result<String, String> {
    let mut c = Clock::new(5_000_000, 1.01);
    let g = Duration::from_secs(10);
    if c.local(g).as_micros() != 5_000_000 + 10_100_000 {
        return Err(format!("local time {:?} is off", c.local(g)));
    }
    let at = c.local(g) + Duration::from_millis(101);
    let wait = c.global_until(g, at);
    if c.local(g + wait) < at {
        return Err(format!(
            "a timer after {wait:?} fires before its local deadline"
        ));
    }
    c.set_rate(g, 0.99);
    if c.local(g).as_micros() != 15_100_000 || c.rate() != 0.99 {
        return Err("changing the drift made local time jump".into());
    }
    Ok("offset, drift and timer conversion agree".into())
}
