//! StatsD push: every counter, gauge and histogram that `/metrics` shows,
//! sent over UDP every `statsd_interval_ms`. Counters go as the increase
//! since the last push (`name:5|c`), gauges as their value (`|g`), histogram
//! samples as timings in milliseconds (`_seconds` names become `_ms`).
//! Labels are DogStatsD tags (`|#source:stripe`) or, with tags off, parts
//! of the name (`name.stripe`).

use std::collections::HashMap;
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};

/// Largest UDP payload sent (fits a typical MTU).
const MAX_PACKET: usize = 1_400;

/// Where and how to push.
#[derive(Debug, Clone)]
pub struct StatsdOptions {
    /// `host:port`.
    pub address: String,
    pub tags: bool,
    pub interval: Duration,
}

/// A recorder that keeps every metric for the pusher to read.
#[derive(Clone)]
pub struct StatsdRecorder {
    registry: Arc<Registry<Key, AtomicStorage>>,
}

impl Recorder for StatsdRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.registry.get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.registry.get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.registry.get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}

impl StatsdRecorder {
    /// A recorder and the thread that pushes what it records.
    pub fn start(options: StatsdOptions) -> std::io::Result<StatsdRecorder> {
        let recorder = StatsdRecorder { registry: Arc::new(Registry::atomic()) };
        let socket = UdpSocket::bind(("0.0.0.0", 0))?;
        let pusher = recorder.clone();
        std::thread::Builder::new().name("statsd".into()).spawn(move || {
            let mut sent: HashMap<Key, u64> = HashMap::new();
            loop {
                std::thread::sleep(options.interval);
                for packet in packets(&pusher.lines(&mut sent, options.tags)) {
                    if let Err(e) = socket.send_to(packet.as_bytes(), &options.address) {
                        tracing::warn!(address = %options.address, error = %e, "cannot push metrics to statsd; trying again next time");
                        break;
                    }
                }
            }
        })?;
        Ok(recorder)
    }

    /// The lines of one push; `sent` remembers counter values already pushed.
    fn lines(&self, sent: &mut HashMap<Key, u64>, tags: bool) -> Vec<String> {
        let mut lines = Vec::new();
        self.registry.visit_counters(|key, counter| {
            let value = counter.load(Ordering::Relaxed);
            let before = sent.insert(key.clone(), value).unwrap_or(0);
            if value > before {
                lines.push(line(key, key.name(), &(value - before).to_string(), "c", tags));
            }
        });
        self.registry.visit_gauges(|key, gauge| {
            let value = f64::from_bits(gauge.load(Ordering::Relaxed));
            lines.push(line(key, key.name(), &value.to_string(), "g", tags));
        });
        self.registry.visit_histograms(|key, histogram| {
            let (name, scale) = match key.name().strip_suffix("_seconds") {
                Some(stem) => (format!("{stem}_ms"), 1_000.0),
                None => (key.name().to_string(), 1.0),
            };
            histogram.clear_with(|samples| {
                for sample in samples {
                    lines.push(line(key, &name, &format!("{:.3}", sample * scale), "ms", tags));
                }
            });
        });
        lines
    }
}

/// StatsD treats `:`, `|`, `@`, `#` and `,` as syntax.
fn clean(text: &str) -> String {
    text.chars().map(|c| if matches!(c, ':' | '|' | '@' | '#' | ',' | '\n') { '_' } else { c }).collect()
}

fn line(key: &Key, name: &str, value: &str, kind: &str, tags: bool) -> String {
    let labels: Vec<(String, String)> = key.labels().map(|l| (clean(l.key()), clean(l.value()))).collect();
    if tags {
        let tags: Vec<String> = labels.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        let suffix = if tags.is_empty() { String::new() } else { format!("|#{}", tags.join(",")) };
        return format!("{}:{value}|{kind}{suffix}", clean(name));
    }
    let mut full = clean(name);
    for (_, value) in &labels {
        full.push('.');
        full.push_str(value);
    }
    format!("{full}:{value}|{kind}")
}

/// Lines joined into packets of at most [`MAX_PACKET`] bytes.
fn packets(lines: &[String]) -> Vec<String> {
    let mut packets: Vec<String> = Vec::new();
    for line in lines {
        match packets.last_mut() {
            Some(packet) if packet.len() + 1 + line.len() <= MAX_PACKET => {
                packet.push('\n');
                packet.push_str(line);
            }
            _ => packets.push(line.clone()),
        }
    }
    packets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_push_their_increase_and_labels_become_tags_or_names() {
        let recorder = StatsdRecorder { registry: Arc::new(Registry::atomic()) };
        let metadata = Metadata::new("t", metrics::Level::INFO, None);
        let key = Key::from_parts("tributary_items_fetched_total", vec![metrics::Label::new("source", "shifts")]);
        let counter = recorder.register_counter(&key, &metadata);
        counter.increment(5);
        let timing = recorder.register_histogram(&Key::from_name("tributary_sync_run_seconds"), &metadata);
        timing.record(0.25);
        let mut sent = HashMap::new();
        let first = recorder.lines(&mut sent, true);
        assert!(first.contains(&"tributary_items_fetched_total:5|c|#source:shifts".to_string()), "{first:?}");
        assert!(first.contains(&"tributary_sync_run_ms:250.000|ms".to_string()), "{first:?}");
        counter.increment(2);
        let second = recorder.lines(&mut sent, false);
        assert_eq!(second, vec!["tributary_items_fetched_total.shifts:2|c".to_string()], "only the increase; samples once");
        assert!(recorder.lines(&mut sent, true).is_empty(), "nothing new, nothing sent");
        let many: Vec<String> = (0..100).map(|i| format!("metric_{i}:1|c")).collect();
        assert!(packets(&many).iter().all(|p| p.len() <= MAX_PACKET));
        assert_eq!(packets(&many).iter().map(|p| p.lines().count()).sum::<usize>(), 100);
    }
}
