//! librdkafka's own log, through `tracing`: at the level it deserves (a
//! broker that cannot be reached is a warning the sink retries past, not an
//! error), and each repeated message said once per [`REPEAT_WINDOW`] with a
//! count of the repeats left out — an unreachable broker otherwise writes
//! a line per connection attempt.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;

/// A repeated message is logged at most once per window.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(60);

/// Per message key: when it was last logged, and repeats since. One for
/// the process: a sink rebuilds its clients before every retry, and its
/// producer and admin client say the same things.
static SEEN: LazyLock<Mutex<Seen>> = LazyLock::new(Default::default);

type Seen = HashMap<String, (Instant, u64)>;

/// The context of the sink's producer and admin client.
pub struct KafkaLog;

/// `Some(repeats left out)` when `key` may be logged now.
fn admit(seen: &mut Seen, key: &str, now: Instant) -> Option<u64> {
    if seen.len() > 1_000 {
        seen.retain(|_, (at, _)| now.duration_since(*at) < REPEAT_WINDOW);
    }
    match seen.get_mut(key) {
        Some((at, repeats)) if now.duration_since(*at) < REPEAT_WINDOW => {
            *repeats += 1;
            None
        }
        Some((at, repeats)) => {
            *at = now;
            Some(std::mem::take(repeats))
        }
        None => {
            seen.insert(key.to_string(), (now, 0));
            Some(0)
        }
    }
}

/// Messages differ by the broker address and counters in them, and by
/// librdkafka's own "(after 3ms in state CONNECT, 4 identical error(s)
/// suppressed)"; the key keeps the words before that, so repeats of one
/// kind of trouble fold together.
fn repeat_key(facility: &str, message: &str) -> String {
    let head = message.split(" (").next().unwrap_or(message);
    let words: String = head.chars().filter(|c| !c.is_ascii_digit()).take(120).collect();
    format!("{facility} {words}")
}

impl ClientContext for KafkaLog {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let Some(repeats) = admit(&mut SEEN.lock(), &repeat_key(facility, message), Instant::now()) else { return };
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                tracing::warn!(kind = "kafka_client", facility, repeats, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(kind = "kafka_client", facility, repeats, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(kind = "kafka_client", facility, repeats, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let Some(repeats) = admit(&mut SEEN.lock(), &repeat_key("error", &error.to_string()), Instant::now()) else { return };
        tracing::warn!(kind = "kafka_client", repeats, "librdkafka: {error}: {reason}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_folded_within_the_window() {
        let mut log = Seen::new();
        let start = Instant::now();
        let key = repeat_key(
            "FAIL",
            "127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: Connection refused (after 0ms in state CONNECT)",
        );
        let again = repeat_key(
            "FAIL",
            "127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: Connection refused (after 1ms in state CONNECT, 4 identical error(s) suppressed)",
        );
        assert_eq!(key, again, "counters and addresses fold together");
        assert_eq!(admit(&mut log, &key, start), Some(0));
        for _ in 0..50 {
            assert_eq!(admit(&mut log, &key, start + Duration::from_secs(1)), None);
        }
        assert_eq!(admit(&mut log, &repeat_key("REQTMOUT", "timed out"), start), Some(0), "other messages are not held back");
        assert_eq!(admit(&mut log, &key, start + REPEAT_WINDOW), Some(50), "the next line says how many were left out");
    }
}
