//! The retry policy every outbound call shares: which answers are worth
//! another try, and capped exponential backoff with equal jitter.

use std::time::Duration;

use rand::Rng;

/// Pause before retry number `attempt` (1-based): 100 ms doubling up to
/// `max`, half fixed and half random so retries spread out.
pub fn backoff(attempt: u32, max: Duration) -> Duration {
    let exp = Duration::from_millis(100).saturating_mul(1u32 << attempt.min(16));
    let capped = exp.min(max);
    capped / 2 + capped.mul_f64(rand::thread_rng().r#gen::<f64>() / 2.0)
}

/// Whether an answer is worth another try, decided as Stripe's own clients
/// decide it: the upstream's `Stripe-Should-Retry` header (`true` or
/// `false`) first, then the status: 409 (an idempotency key in use), 429
/// (`rate_limit`, and `lock_timeout` while another request holds the
/// object) and 5xx are retried; every other answer is final.
pub fn retryable(status: u16, should_retry: Option<&str>) -> bool {
    match should_retry.map(str::trim) {
        Some("true") => true,
        Some("false") => false,
        _ => status == 409 || status == 429 || status >= 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upstream_says_first_then_the_status() {
        for status in [409, 429, 500, 502, 503] {
            assert!(retryable(status, None), "{status}");
            assert!(!retryable(status, Some("false")), "{status} with Stripe-Should-Retry: false");
        }
        for status in [400, 401, 402, 403, 404, 422] {
            assert!(!retryable(status, None), "{status}");
            assert!(retryable(status, Some("true")), "{status} with Stripe-Should-Retry: true");
        }
        assert!(retryable(500, Some("maybe")), "an unknown hint leaves the status rule");
    }

    #[test]
    fn grows_and_stays_under_the_cap() {
        let max = Duration::from_secs(2);
        for attempt in 1..40 {
            let pause = backoff(attempt, max);
            assert!(pause <= max, "{attempt}: {pause:?}");
            assert!(pause >= Duration::from_millis(100).saturating_mul(1 << attempt.min(16)).min(max) / 2);
        }
    }
}
