//! A token bucket for a node's P2P bytes in one direction.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Limits bytes per second, shared by every transfer of one direction on a
/// node. A transfer takes its bytes before moving them; when the bucket is
/// empty it waits until enough have accrued. The bucket holds at most one
/// second's worth, so an idle node cannot burst far above its rate.
///
/// ```
/// # async fn example() {
/// let bucket = wharf_p2p::peer::TokenBucket::new(1 << 20);
/// bucket.take(64 << 10).await; // at most 1 MiB/s through this bucket
/// # }
/// ```
#[derive(Debug)]
pub struct TokenBucket {
    rate: u64,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    /// Tokens available; negative when takers are queued for the future.
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A bucket of `rate` bytes per second; 0 means unlimited.
    pub fn new(rate: u64) -> TokenBucket {
        TokenBucket {
            rate,
            state: Mutex::new(BucketState {
                tokens: rate as f64,
                updated: Instant::now(),
            }),
        }
    }

    /// The rate in bytes per second (0 = unlimited).
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Waits until `bytes` may pass.
    pub async fn take(&self, bytes: u64) {
        if self.rate == 0 || bytes == 0 {
            return;
        }
        let wait = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let rate = self.rate as f64;
            let accrued = now.duration_since(state.updated).as_secs_f64() * rate;
            state.tokens = (state.tokens + accrued).min(rate);
            state.updated = now;
            // Taking into debt reserves the bytes in arrival order: later
            // takers wait behind earlier ones.
            state.tokens -= bytes as f64;
            if state.tokens >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-state.tokens / rate)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_bucket_holds_its_rate() {
        let bucket = TokenBucket::new(1 << 20);
        let started = std::time::Instant::now();
        // 1 MiB of burst, then 2 MiB at 1 MiB/s: about 2 s.
        for _ in 0..48 {
            bucket.take(64 << 10).await;
        }
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(1900), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    }

    #[tokio::test]
    async fn zero_is_unlimited() {
        let bucket = TokenBucket::new(0);
        let started = std::time::Instant::now();
        bucket.take(1 << 40).await;
        assert!(started.elapsed() < Duration::from_millis(100));
    }
}
