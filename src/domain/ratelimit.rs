//! Token buckets for the per-trigger `rateLimit` (DESIGN §2.1 step 6).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// One bucket: `burst` tokens at most, refilled at `per_second`.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(burst: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst),
            updated: now,
        }
    }

    /// Takes a token, or says how long until one is available.
    pub fn try_take(&mut self, per_second: f64, burst: u32, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(f64::from(burst));
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            // A tiny rate can make the wait overflow a Duration: saturate instead of panicking.
            Err(
                Duration::try_from_secs_f64((1.0 - self.tokens) / per_second)
                    .unwrap_or(Duration::MAX),
            )
        }
    }
}

/// Buckets by key (a trigger's token), created full on first use.
#[derive(Debug, Default)]
pub struct KeyedLimiter<K> {
    buckets: Mutex<HashMap<K, TokenBucket>>,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// An empty limiter.
    pub fn new() -> Self {
        Self {
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key`, or says how long until one is available.
    pub fn check(&self, key: &K, per_second: f64, burst: u32) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        buckets
            .entry(key.clone())
            .or_insert_with(|| TokenBucket::full(burst, now))
            .try_take(per_second, burst, now)
    }

    /// Forgets a key (its trigger was changed or deleted).
    pub fn forget(&self, key: &K) {
        self.buckets.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let start = Instant::now();
        let mut b = TokenBucket::full(2, start);
        assert!(b.try_take(1.0, 2, start).is_ok());
        assert!(b.try_take(1.0, 2, start).is_ok());
        let wait = b.try_take(1.0, 2, start).unwrap_err();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(b
            .try_take(1.0, 2, start + Duration::from_millis(1001))
            .is_ok());
    }

    #[test]
    fn a_bucket_never_holds_more_than_its_burst() {
        let start = Instant::now();
        let mut b = TokenBucket::full(1, start);
        let later = start + Duration::from_secs(3600);
        assert!(b.try_take(10.0, 1, later).is_ok());
        assert!(b.try_take(10.0, 1, later).is_err());
    }

    #[test]
    fn a_vanishingly_small_rate_saturates_instead_of_panicking() {
        let start = Instant::now();
        let mut b = TokenBucket::full(1, start);
        assert!(b.try_take(1e-300, 1, start).is_ok());
        assert_eq!(b.try_take(1e-300, 1, start), Err(Duration::MAX));
    }

    #[test]
    fn keys_have_separate_buckets() {
        let limiter = KeyedLimiter::new();
        assert!(limiter.check(&"a", 0.001, 1).is_ok());
        assert!(limiter.check(&"a", 0.001, 1).is_err());
        assert!(limiter.check(&"b", 0.001, 1).is_ok());
        limiter.forget(&"a");
        assert!(limiter.check(&"a", 0.001, 1).is_ok());
    }
}
