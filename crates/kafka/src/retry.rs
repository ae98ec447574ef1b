//! The one retry policy of the platform: the seed's `RetryHandler` (exponential
//! backoff with jitter), with a cap on the delay.

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Exponential backoff with jitter: attempt `n` (0-based) waits
/// `min(base_delay * 2^n, max_delay) + uniform(0, base_delay)`.
///
/// With the defaults this is the seed's `RetryHandler(max_retries=3,
/// base_delay=1.0)`: `1 s * 2^n + uniform(0, 1 s)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryPolicy {
    /// First delay, milliseconds. Default 1000 (the seed's `base_delay=1.0`).
    pub base_delay_ms: u64,
    /// Largest delay before jitter, milliseconds. Default 30000.
    pub max_delay_ms: u64,
    /// Retries after the first attempt (the seed's `max_retries`). Default 3.
    ///
    /// [`RetryPolicy::retry`] gives up after them. The consume loop never gives
    /// up on a retryable error (nothing is dead-lettered because a dependency
    /// is down); past this many retries it reports the partition as stuck on
    /// `/readyz` and keeps retrying at `max_delay_ms`.
    pub max_retries: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base_delay_ms: 1000,
            max_delay_ms: 30_000,
            max_retries: 3,
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `attempt` (0 = the first retry), jitter included.
    pub fn delay(&self, attempt: u32) -> Duration {
        let jitter = if self.base_delay_ms == 0 {
            0
        } else {
            rand::random_range(0..=self.base_delay_ms)
        };
        self.delay_without_jitter(attempt) + Duration::from_millis(jitter)
    }

    /// The delay before retry number `attempt` without jitter.
    pub fn delay_without_jitter(&self, attempt: u32) -> Duration {
        let factor = 1u64.checked_shl(attempt.min(63)).unwrap_or(u64::MAX);
        Duration::from_millis(
            self.base_delay_ms
                .saturating_mul(factor)
                .min(self.max_delay_ms),
        )
    }

    /// Runs `op` until it succeeds, `retryable` says an error is final, or
    /// `max_retries` retries were spent; returns the last result.
    pub async fn retry<T, E, F, Fut>(
        &self,
        mut op: F,
        retryable: impl Fn(&E) -> bool,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if attempt >= self.max_retries || !retryable(&e) => return Err(e),
                Err(_) => {
                    tokio::time::sleep(self.delay(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_bounded_jitter() {
        let p = RetryPolicy {
            base_delay_ms: 100,
            max_delay_ms: 1000,
            max_retries: 3,
        };
        assert_eq!(p.delay_without_jitter(0), Duration::from_millis(100));
        assert_eq!(p.delay_without_jitter(3), Duration::from_millis(800));
        assert_eq!(p.delay_without_jitter(4), Duration::from_millis(1000));
        assert_eq!(p.delay_without_jitter(200), Duration::from_millis(1000));
        for _ in 0..100 {
            let d = p.delay(1);
            assert!(
                d >= Duration::from_millis(200) && d <= Duration::from_millis(300),
                "{d:?}"
            );
        }
    }

    #[tokio::test]
    async fn retry_stops_after_max_retries_or_on_a_final_error() {
        let p = RetryPolicy {
            base_delay_ms: 0,
            max_delay_ms: 0,
            max_retries: 2,
        };
        let mut calls = 0;
        let r: Result<(), &str> = p
            .retry(
                || {
                    calls += 1;
                    async { Err("down") }
                },
                |_| true,
            )
            .await;
        assert_eq!((r, calls), (Err("down"), 3));
        let mut calls = 0;
        let r: Result<(), &str> = p
            .retry(
                || {
                    calls += 1;
                    async { Err("bad") }
                },
                |_| false,
            )
            .await;
        assert_eq!((r, calls), (Err("bad"), 1));
        let mut calls = 0;
        let r = p
            .retry(
                || {
                    calls += 1;
                    let ok = calls == 2;
                    async move {
                        if ok {
                            Ok(7)
                        } else {
                            Err("down")
                        }
                    }
                },
                |_| true,
            )
            .await;
        assert_eq!((r, calls), (Ok(7), 2));
    }
}
