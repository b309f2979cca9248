//! What an attempt's outcome means (deliver, retry, or give up at once) and how long to wait
//! before the next attempt.

use std::time::Duration;

/// What one attempt's outcome calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A 2xx: delivered.
    Delivered,
    /// Worth another attempt: a network error or timeout, 408, 429 or 5xx. `after`: what the
    /// receiver asked for (`Retry-After` in seconds), if anything.
    Retry {
        /// The failure, as `/metrics` labels it.
        kind: &'static str,
        /// The receiver's `Retry-After`.
        after: Option<Duration>,
    },
    /// Any other answer (4xx, 3xx: redirects are not followed, 1xx): final; the event is
    /// given up on.
    Final {
        /// The failure, as `/metrics` labels it.
        kind: &'static str,
    },
}

/// The verdict on an HTTP answer with `status` and, if any, a `Retry-After` header.
pub fn classify_status(status: u16, retry_after: Option<&str>) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        408 => Verdict::Retry {
            kind: "http_408",
            after: None,
        },
        429 => Verdict::Retry {
            kind: "http_429",
            // Seconds only; an HTTP date is rare from a webhook receiver and falls back to
            // the backoff.
            after: retry_after
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs),
        },
        500..=599 => Verdict::Retry {
            kind: "http_5xx",
            after: None,
        },
        400..=499 => Verdict::Final { kind: "http_4xx" },
        _ => Verdict::Final { kind: "http_other" },
    }
}

/// The verdict on a request that got no answer: always worth another attempt.
pub fn classify_error(e: &reqwest::Error) -> Verdict {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "network"
    };
    Verdict::Retry { kind, after: None }
}

/// Exponential backoff with jitter: attempt `n` (from 1) waits a random time between half and
/// all of `initial × 2^(n-1)`, that ceiling capped at `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The first ceiling.
    pub initial: Duration,
    /// The largest ceiling.
    pub max: Duration,
}

impl Backoff {
    /// The ceiling of the wait after failed attempt `attempt` (from 1).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The wait after failed attempt `attempt`: jittered in [ceiling/2, ceiling], so nodes and
    /// endpoints that failed together do not retry together. A receiver's `Retry-After` is
    /// honoured up to `max`.
    pub fn delay(&self, attempt: u32, asked: Option<Duration>) -> Duration {
        if let Some(a) = asked {
            return a.min(self.max);
        }
        let ceiling = self.ceiling(attempt);
        let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        let jittered = rand::Rng::random_range(&mut rand::rng(), ms / 2..=ms);
        Duration::from_millis(jittered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_network_errors_408_429_and_5xx_and_nothing_else() {
        assert_eq!(classify_status(200, None), Verdict::Delivered);
        assert_eq!(classify_status(204, None), Verdict::Delivered);
        for s in [408, 429, 500, 502, 503, 599] {
            assert!(
                matches!(classify_status(s, None), Verdict::Retry { .. }),
                "{s}"
            );
        }
        for s in [400, 401, 403, 404, 410, 422, 301, 302, 100] {
            assert!(
                matches!(classify_status(s, None), Verdict::Final { .. }),
                "{s}"
            );
        }
        assert_eq!(
            classify_status(429, Some("7")),
            Verdict::Retry {
                kind: "http_429",
                after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(
            classify_status(429, Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            Verdict::Retry {
                kind: "http_429",
                after: None
            }
        );
    }

    #[test]
    fn backoff_doubles_within_its_bounds_and_never_overflows() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
        };
        assert_eq!(b.ceiling(1), Duration::from_secs(1));
        assert_eq!(b.ceiling(2), Duration::from_secs(2));
        assert_eq!(b.ceiling(5), Duration::from_secs(16));
        assert_eq!(b.ceiling(9), Duration::from_secs(256));
        assert_eq!(b.ceiling(10), Duration::from_secs(300));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(300));
        for attempt in 1..80 {
            let c = b.ceiling(attempt);
            for _ in 0..20 {
                let d = b.delay(attempt, None);
                assert!(d >= c / 2 && d <= c, "attempt {attempt}: {d:?} vs {c:?}");
            }
        }
        assert_eq!(
            b.delay(3, Some(Duration::from_secs(3600))),
            Duration::from_secs(300),
            "Retry-After is capped"
        );
        assert_eq!(
            b.delay(3, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
    }
}
