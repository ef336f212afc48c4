//! Helpers shared by the stream crate's test binaries.

use std::time::{Duration, Instant};

/// Waits until the async condition holds: checked every 5 ms, failing the test after 15 s.
pub async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
