//! The retry policy every outbound call shares: capped exponential backoff
//! with equal jitter.

use std::time::Duration;

use rand::Rng;

/// Pause before retry number `attempt` (1-based): 100 ms doubling up to
/// `max`, half fixed and half random so retries spread out.
pub fn backoff(attempt: u32, max: Duration) -> Duration {
    let exp = Duration::from_millis(100).saturating_mul(1u32 << attempt.min(16));
    let capped = exp.min(max);
    capped / 2 + capped.mul_f64(rand::thread_rng().r#gen::<f64>() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
