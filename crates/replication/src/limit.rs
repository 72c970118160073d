//! Bandwidth limits: one pacer per policy, shared by all its workers, so the
//! policy's total rate stays under its limit however many copies run.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Paces bytes to a rate: each caller reserves its bytes on a shared
/// timeline and sleeps until its slot (a virtual-clock token bucket).
#[derive(Debug)]
pub struct RateLimit {
    bytes_per_second: u64,
    /// When the bytes reserved so far will have been sent at the rate.
    next_free: Mutex<Instant>,
}

/// Credit a pacer may run ahead of the wall clock: smooths small bursts
/// without letting the measured rate drift above the limit.
const BURST: Duration = Duration::from_millis(50);

impl RateLimit {
    /// A pacer for `bytes_per_second` (at least 1).
    pub fn new(bytes_per_second: u64) -> RateLimit {
        RateLimit {
            bytes_per_second: bytes_per_second.max(1),
            next_free: Mutex::new(Instant::now()),
        }
    }

    /// Waits until `bytes` may go.
    pub async fn acquire(&self, bytes: usize) {
        let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_second as f64);
        let start = {
            let mut next = self.next_free.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            // Idle time does not accumulate into a burst beyond BURST.
            let start = (*next).max(now.checked_sub(BURST).unwrap_or(now));
            *next = start + cost;
            start
        };
        tokio::time::sleep_until(start + cost).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shared_pacer_holds_the_total_rate() {
        let limit = std::sync::Arc::new(RateLimit::new(4 << 20));
        let started = std::time::Instant::now();
        let mut workers = Vec::new();
        for _ in 0..4 {
            let limit = limit.clone();
            workers.push(tokio::spawn(async move {
                for _ in 0..16 {
                    limit.acquire(32 << 10).await;
                }
            }));
        }
        for w in workers {
            w.await.unwrap();
        }
        // 4 workers x 512 KiB = 2 MiB at 4 MiB/s: about half a second.
        let elapsed = started.elapsed().as_secs_f64();
        assert!((0.42..0.7).contains(&elapsed), "took {elapsed}s");
    }
}
