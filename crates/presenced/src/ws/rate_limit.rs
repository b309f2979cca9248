//! The per-connection frame rate limit of SPEC §10: a token bucket of `frames_per_second`
//! with bursts of `frame_burst`; a dropped frame is answered with at most one `rate_limited`
//! error a second, and a client still over the limit 5 s after going over is closed (4008).

use std::time::Duration;

use tokio::time::Instant;

use crate::rate::TokenBucket;

/// What the rate limit says about a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Handle it.
    Take,
    /// Drop it (and answer `rate_limited` at most once a second).
    Drop,
    /// Close the connection (4008): still over the limit 5 s after it went over.
    Close,
}

/// Token bucket of SPEC §10: `rate` frames a second, bursts of `burst`.
pub(super) struct RateLimit {
    bucket: TokenBucket,
    /// The bucket counts milliseconds from here.
    origin: Instant,
    /// When the client went over the limit; cleared after a second with nothing dropped.
    over_since: Option<Instant>,
    last_drop: Option<Instant>,
    last_error: Option<Instant>,
}

impl RateLimit {
    /// A full bucket at `now`.
    pub(super) fn new(rate: u32, burst: u32, now: Instant) -> Self {
        Self {
            bucket: TokenBucket::new(rate, burst, 0),
            origin: now,
            over_since: None,
            last_drop: None,
            last_error: None,
        }
    }

    /// What to do with a frame arriving at `now`.
    pub(super) fn take(&mut self, now: Instant) -> Verdict {
        let ms = i64::try_from(now.duration_since(self.origin).as_millis()).unwrap_or(i64::MAX);
        if self.bucket.take(ms) {
            // A client that still gets frames dropped is still over the limit, even when the
            // bucket lets one through now and then.
            if self
                .last_drop
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
            {
                self.over_since = None;
            }
            return Verdict::Take;
        }
        self.last_drop = Some(now);
        let since = *self.over_since.get_or_insert(now);
        if now.duration_since(since) >= Duration::from_secs(5) {
            Verdict::Close
        } else {
            Verdict::Drop
        }
    }

    /// Charges `cost` more frames to a frame already let through (a `subscribe` costs one
    /// per scope and user it reads).
    pub(super) fn charge(&mut self, cost: u32) {
        self.bucket.charge(cost);
    }

    /// At most one `rate_limited` error a second.
    pub(super) fn may_answer(&mut self, now: Instant) -> bool {
        if self
            .last_error
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return false;
        }
        self.last_error = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_frames_drop_then_a_persistent_flood_closes() {
        let t0 = Instant::now();
        let mut l = RateLimit::new(5, 10, t0);
        for _ in 0..10 {
            assert_eq!(l.take(t0), Verdict::Take);
        }
        assert_eq!(l.take(t0), Verdict::Drop);
        assert!(l.may_answer(t0));
        assert!(
            !l.may_answer(t0 + Duration::from_millis(500)),
            "one error a second"
        );
        // Still flooding at 50 frames a second: some pass as tokens refill, most drop...
        let mut closed_at = None;
        for i in 1..=400u64 {
            let now = t0 + Duration::from_millis(20 * i);
            if l.take(now) == Verdict::Close {
                closed_at = Some(now.duration_since(t0));
                break;
            }
        }
        // ...and the connection closes once it has been over the limit for 5 s.
        let closed_at = closed_at.expect("closed");
        assert!(
            closed_at >= Duration::from_secs(5) && closed_at < Duration::from_millis(5100),
            "{closed_at:?}"
        );
    }

    #[test]
    fn a_client_back_under_the_limit_starts_over() {
        let t0 = Instant::now();
        let mut l = RateLimit::new(5, 5, t0);
        for _ in 0..6 {
            l.take(t0);
        }
        // Four seconds at the allowed rate, then a second with nothing dropped: forgiven.
        for i in 1..=25u64 {
            assert_eq!(l.take(t0 + Duration::from_millis(200 * i)), Verdict::Take);
        }
        for _ in 0..5 {
            l.take(t0 + Duration::from_secs(6));
        }
        assert_eq!(
            l.take(t0 + Duration::from_secs(6)),
            Verdict::Drop,
            "over again, but not for 5 s"
        );
    }
}
