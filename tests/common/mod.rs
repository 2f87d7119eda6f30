//! Helpers shared by the in-process cluster tests.

use std::time::{Duration, Instant};

/// Generous: the machine may be loaded; a healthy run takes well under this.
pub const WAIT_S_MAX: u64 = 30;
pub const POLL_MS: u64 = 20;

/// Polls until `f` returns Some, or panics after `WAIT_S_MAX` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(WAIT_S_MAX);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    }
}
