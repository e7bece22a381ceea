//! Per-key rate limits: one token bucket per key and kind of work. A key that exhausts its bucket
//! is answered 429 with `Retry-After`; other keys are not affected (each has its own bucket).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a request spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Spend {
    /// Events ingested.
    Ingest,
    /// Read requests (search, get, aggregate, stream, export, proofs).
    Query,
    /// Failed authentications written to the self-audit log (one server-wide bucket).
    RecordedAuthFailure,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// The buckets of every key. Memory is bounded by the number of keys (and the two kinds).
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<(String, Spend), Bucket>>,
}

/// Seconds a bucket may save up: a client may burst to twice its rate.
const BURST_SECONDS: f64 = 2.0;

impl RateLimiter {
    /// Takes `cost` tokens from the key's bucket refilled at `per_second`, or says how long to wait.
    /// A cost larger than the whole bucket passes when the bucket is full (and leaves it in debt),
    /// so a legitimate large batch is slowed down, never refused forever.
    pub fn take(
        &self,
        key_id: &str,
        spend: Spend,
        per_second: u32,
        cost: u64,
        now: Instant,
    ) -> Result<(), Duration> {
        let rate = f64::from(per_second.max(1));
        let capacity = rate * BURST_SECONDS;
        let cost = cost as f64;
        let mut buckets = self.buckets.lock().expect("rate limiter lock poisoned");
        let bucket = buckets
            .entry((key_id.to_string(), spend))
            .or_insert(Bucket {
                tokens: capacity,
                updated: now,
            });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= cost.min(capacity) {
            bucket.tokens -= cost;
            Ok(())
        } else {
            let missing = cost.min(capacity) - bucket.tokens;
            Err(Duration::from_secs_f64(missing / rate))
        }
    }

    /// Takes `cost` tokens without checking (the bucket may go into debt): the part of a request's
    /// cost known only after it was admitted.
    pub fn charge(&self, key_id: &str, spend: Spend, cost: u64) {
        if cost == 0 {
            return;
        }
        let mut buckets = self.buckets.lock().expect("rate limiter lock poisoned");
        if let Some(bucket) = buckets.get_mut(&(key_id.to_string(), spend)) {
            bucket.tokens -= cost as f64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..20 {
            limiter.take("k", Spend::Query, 10, 1, t0).unwrap();
        }
        let wait = limiter.take("k", Spend::Query, 10, 1, t0).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100));
        // Another key and another kind have their own buckets.
        limiter.take("other", Spend::Query, 10, 1, t0).unwrap();
        limiter.take("k", Spend::Ingest, 10, 1, t0).unwrap();
        // Half a second later five tokens are back.
        let later = t0 + Duration::from_millis(500);
        for _ in 0..5 {
            limiter.take("k", Spend::Query, 10, 1, later).unwrap();
        }
        assert!(limiter.take("k", Spend::Query, 10, 1, later).is_err());
    }

    #[test]
    fn a_batch_larger_than_the_bucket_passes_when_full_and_leaves_debt() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        limiter.take("k", Spend::Ingest, 100, 1_000, t0).unwrap();
        let wait = limiter.take("k", Spend::Ingest, 100, 1, t0).unwrap_err();
        assert!(wait >= Duration::from_secs(8), "{wait:?}");
    }
}
