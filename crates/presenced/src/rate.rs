//! Rate limits (SPEC §10): a token bucket, and the per-subject REST limiter built on it. The
//! per-connection frame limit (`ws::rate_limit`) uses the same bucket.

use std::collections::HashMap;
use std::sync::Mutex;

use presence_core::{Millis, SharedClock, UserId};

use crate::error::ApiError;

/// `rate` tokens a second, at most `burst` saved up; each request takes one.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_per_ms: f64,
    burst: f64,
    tokens: f64,
    at: Millis,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(rate: u32, burst: u32, now: Millis) -> Self {
        Self {
            rate_per_ms: f64::from(rate) / 1000.0,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            at: now,
        }
    }

    fn refill(&mut self, now: Millis) {
        let elapsed = now.saturating_sub(self.at).max(0) as f64;
        self.tokens = (self.tokens + elapsed * self.rate_per_ms).min(self.burst);
        self.at = self.at.max(now);
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, now: Millis) -> bool {
        self.take_n(now, 1)
    }

    /// Lets a request costing `cost` tokens through if at least one is left, and charges it
    /// all: the bucket may go below zero, and later requests wait until it refills. An
    /// expensive request is allowed, and paid for.
    pub fn take_n(&mut self, now: Millis, cost: u32) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= f64::from(cost.max(1));
            true
        } else {
            false
        }
    }

    /// Charges `cost` more tokens to a request already let through.
    pub fn charge(&mut self, cost: u32) {
        self.tokens -= f64::from(cost);
    }

    /// Whether the bucket has refilled completely: it then says nothing a new one would not.
    pub fn is_full(&mut self, now: Millis) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// Subjects held before idle (full) buckets are dropped.
const PRUNE_ABOVE: usize = 10_000;

/// `rest_per_second` / `rest_burst` per token subject, for REST requests and WebSocket
/// connects; a request that makes the store do more (an SSE resume over many scopes) costs
/// more. Service and admin tokens are the product's own backends and are not limited. Only subjects that used their bucket
/// recently are held: a full bucket is dropped when the map grows.
#[derive(Debug)]
pub struct RestLimiter {
    rate: u32,
    burst: u32,
    clock: SharedClock,
    buckets: Mutex<HashMap<UserId, TokenBucket>>,
}

impl RestLimiter {
    /// A limiter reading time from `clock`.
    pub fn new(rate: u32, burst: u32, clock: SharedClock) -> Self {
        Self {
            rate,
            burst,
            clock,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Lets one request of `subject` costing `cost` through, or answers 429.
    pub fn check(&self, subject: &UserId, privileged: bool, cost: u32) -> Result<(), ApiError> {
        if privileged {
            return Ok(());
        }
        let now = self.clock.now_ms();
        // std Mutex: a map update, never held across an await.
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= PRUNE_ABOVE {
            buckets.retain(|_, b| !b.is_full(now));
        }
        let bucket = buckets
            .entry(subject.clone())
            .or_insert_with(|| TokenBucket::new(self.rate, self.burst, now));
        if bucket.take_n(now, cost) {
            Ok(())
        } else {
            metrics::counter!("presenced_refusals_total", "reason" => "rest_rate_limited")
                .increment(1);
            Err(ApiError::rate_limited(format!(
                "more than {} requests a second from this token; slow down",
                self.rate
            )))
        }
    }

    /// Charges `cost` more to a request of `subject` already let through.
    pub fn charge(&self, subject: &UserId, privileged: bool, cost: u32) {
        if privileged || cost == 0 {
            return;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = buckets.get_mut(subject) {
            b.charge(cost);
        }
    }

    /// Subjects held now.
    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Open things per subject, shared by the counter and its guards.
type OpenCounts = std::sync::Arc<Mutex<HashMap<UserId, usize>>>;

/// At most `max` of something open at once per user-token subject (SSE streams: a token
/// cannot take a node's connection slots for itself). Service and admin tokens are not
/// limited. Only subjects with something open are held.
#[derive(Debug)]
pub struct OpenPerSubject {
    max: usize,
    open: OpenCounts,
}

/// One open thing; dropping it closes it.
#[derive(Debug)]
pub struct OpenGuard {
    open: Option<(OpenCounts, UserId)>,
}

impl OpenPerSubject {
    /// At most `max` per subject.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            open: Default::default(),
        }
    }

    /// Opens one more for `subject`, or answers 429 when it has `max` open.
    pub fn open(&self, subject: &UserId, privileged: bool) -> Result<OpenGuard, ApiError> {
        if privileged {
            return Ok(OpenGuard { open: None });
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(subject.clone()).or_default();
        if *n >= self.max {
            metrics::counter!("presenced_refusals_total", "reason" => "streams_per_subject")
                .increment(1);
            return Err(ApiError::rate_limited(format!(
                "this token already has {} streams open",
                self.max
            )));
        }
        *n += 1;
        Ok(OpenGuard {
            open: Some((self.open.clone(), subject.clone())),
        })
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if let Some((open, subject)) = self.open.take() {
            let mut open = open.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = open.get_mut(&subject) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&subject);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use presence_core::ManualClock;

    use super::*;

    #[test]
    fn streams_per_subject_are_capped_and_given_back() {
        let streams = OpenPerSubject::new(2);
        let a = UserId::new("a").unwrap();
        let one = streams.open(&a, false).unwrap();
        let _two = streams.open(&a, false).unwrap();
        assert_eq!(streams.open(&a, false).unwrap_err().code, "rate_limited");
        assert!(streams.open(&a, true).is_ok(), "backends are not capped");
        drop(one);
        assert!(
            streams.open(&a, false).is_ok(),
            "a closed stream frees its place"
        );
    }

    #[test]
    fn a_costly_request_is_let_through_and_paid_for() {
        let mut b = TokenBucket::new(10, 20, 0);
        assert!(b.take_n(0, 50), "allowed while a token is left");
        assert!(!b.take(0), "and paid for: the bucket is below zero");
        assert!(!b.take(3000), "-30 + 30 = 0 after 3 s");
        assert!(b.take(3100));
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let mut b = TokenBucket::new(10, 20, 0);
        assert_eq!((0..25).filter(|_| b.take(0)).count(), 20);
        assert!(!b.take(50), "half a token after 50 ms");
        assert!(b.take(100), "one token after 100 ms");
        assert!(b.is_full(10_000));
    }

    #[test]
    fn rest_requests_are_limited_per_subject_and_idle_subjects_are_forgotten() {
        let clock = ManualClock::new(0);
        let limiter = RestLimiter::new(5, 10, Arc::new(clock.clone()));
        let (a, b) = (UserId::new("a").unwrap(), UserId::new("b").unwrap());
        for _ in 0..10 {
            limiter.check(&a, false, 1).unwrap();
        }
        assert_eq!(
            limiter.check(&a, false, 1).unwrap_err().code,
            "rate_limited"
        );
        assert!(
            limiter.check(&b, false, 1).is_ok(),
            "another subject has its own bucket"
        );
        assert!(
            limiter.check(&a, true, 1).is_ok(),
            "service tokens are not limited"
        );
        clock.advance(Duration::from_millis(200));
        assert!(
            limiter.check(&a, false, 1).is_ok(),
            "refilled at 5 a second"
        );
        // Thousands of subjects, then quiet: the map is pruned of full buckets.
        for i in 0..PRUNE_ABOVE {
            limiter
                .check(&UserId::new(format!("u{i}")).unwrap(), false, 1)
                .unwrap();
        }
        clock.advance(Duration::from_secs(10));
        limiter.check(&a, false, 1).unwrap();
        assert_eq!(limiter.len(), 1, "only the subject active now is held");
    }
}
