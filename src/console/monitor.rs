//! The console's figures over time. Every second while someone follows the
//! live stream (else every ten), the engine's sources and sinks are read as
//! `/v1/sources` and `/v1/sinks` show them into an [`Overview`]; every ten
//! seconds each series keeps a [`Point`], an hour of them, in memory.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;
use utoipa::ToSchema;

use crate::api::AppState;
use crate::api::views::{SinkView, SourceView};
use crate::source::Phase;
use crate::store::Role;

/// How often the overview is read.
const SAMPLE: Duration = Duration::from_secs(1);
/// A point of every series each this many samples.
const SAMPLES_PER_POINT: u64 = 10;
/// Points kept per series: an hour.
const POINTS: usize = 360;
/// Samples a rate is measured over.
const RATE_WINDOW: usize = 10;

/// A source as the overview shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SourceTile {
    pub name: String,
    pub kind: &'static str,
    pub role: Role,
    pub phase: Phase,
    pub paused: bool,
    pub lag_ms: Option<u64>,
    /// Mirror rows, every object type.
    pub objects: u64,
    /// Mirror rows added per second, lately.
    pub objects_per_sec: f64,
    /// Backfill lists done, of all (every account's).
    pub lists_done: u64,
    pub lists: u64,
    /// Objects the backfill fetched so far.
    pub fetched: u64,
    pub parked_events: u64,
    pub last_error: Option<String>,
}

/// A sink (or the queue fan-out) as the overview shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SinkTile {
    pub name: String,
    pub kind: &'static str,
    pub role: Role,
    pub paused: bool,
    pub disabled: bool,
    pub rewind_pending: bool,
    pub cursor: Option<String>,
    pub lag_changes: Option<u64>,
    pub lag_ms: Option<u64>,
    /// Delivered by this process since it started.
    pub delivered: u64,
    /// Delivered per second, lately.
    pub delivered_per_sec: f64,
    pub dead_letters: u64,
    pub last_error: Option<String>,
}

/// One point of a series: lag and throughput at a time.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct Point {
    /// Unix seconds.
    pub at: i64,
    pub lag_ms: Option<u64>,
    /// Changes behind (sinks).
    pub backlog: Option<u64>,
    /// Delivered (sinks) or mirrored (sources) per second.
    pub per_sec: f64,
}

/// Everything the overview shows, as of `at`.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Overview {
    /// RFC 3339.
    pub at: String,
    pub sources: Vec<SourceTile>,
    pub sinks: Vec<SinkTile>,
    /// Points added by this sample, by series (`source:NAME`, `sink:NAME`);
    /// empty between points.
    pub points: BTreeMap<String, Point>,
}

/// The live overview and the last hour of every series.
#[derive(Default)]
pub struct Monitor {
    live: watch::Sender<Arc<Overview>>,
    history: Mutex<HashMap<String, VecDeque<Point>>>,
}

/// Recent (time, count) samples of a counter, for its rate.
#[derive(Default)]
struct Rates {
    samples: HashMap<String, VecDeque<(Instant, u64)>>,
}

impl Rates {
    /// Record `count` for `key`; its rate over the window.
    fn rate(&mut self, key: &str, now: Instant, count: u64) -> f64 {
        let samples = self.samples.entry(key.to_string()).or_default();
        if samples.back().is_some_and(|(_, last)| count < *last) {
            // the counter started again (a restarted runtime)
            samples.clear();
        }
        samples.push_back((now, count));
        while samples.len() > RATE_WINDOW {
            samples.pop_front();
        }
        let (Some((t0, c0)), Some((t1, c1))) = (samples.front(), samples.back()) else { return 0.0 };
        let secs = t1.duration_since(*t0).as_secs_f64();
        if secs <= 0.0 { 0.0 } else { (c1 - c0) as f64 / secs }
    }
}

impl Monitor {
    pub fn new() -> Arc<Monitor> {
        Arc::new(Monitor::default())
    }

    /// The latest overview.
    pub fn overview(&self) -> Arc<Overview> {
        self.live.borrow().clone()
    }

    /// Every overview from now on (while one is held, the overview is read
    /// every second).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Overview>> {
        self.live.subscribe()
    }

    /// The last hour of every series, oldest point first.
    pub fn history(&self) -> BTreeMap<String, Vec<Point>> {
        self.history.lock().iter().map(|(key, points)| (key.clone(), points.iter().copied().collect())).collect()
    }

    /// Sample the engine every second until stopped.
    pub async fn run(self: Arc<Self>, state: AppState) {
        let mut rates = Rates::default();
        let mut ticker = tokio::time::interval(SAMPLE);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for sample in 0u64.. {
            ticker.tick().await;
            let point_due = sample % SAMPLES_PER_POINT == 0;
            // nobody watches live: read only when a point is due
            if !point_due && self.live.receiver_count() == 0 {
                continue;
            }
            let views = async {
                Ok::<_, crate::store::StoreError>((crate::api::source_views(&state).await?, crate::api::sink_views(&state).await?))
            };
            match views.await {
                Ok((sources, sinks)) => self.record(&mut rates, sources, sinks, point_due),
                Err(e) => tracing::warn!(kind = "console_sample_failed", error = %e, "cannot read the sources and sinks for the console"),
            }
        }
    }

    fn record(&self, rates: &mut Rates, sources: Vec<SourceView>, sinks: Vec<SinkView>, with_points: bool) {
        let now = Instant::now();
        let at = chrono::Utc::now();
        let sources: Vec<SourceTile> = sources.into_iter().map(|s| source_tile(s, rates, now)).collect();
        let sinks: Vec<SinkTile> = sinks.into_iter().map(|s| sink_tile(s, rates, now)).collect();
        let mut points = BTreeMap::new();
        if with_points {
            for s in &sources {
                points.insert(
                    format!("source:{}", s.name),
                    Point { at: at.timestamp(), lag_ms: s.lag_ms, backlog: None, per_sec: s.objects_per_sec },
                );
            }
            for s in &sinks {
                let point = Point { at: at.timestamp(), lag_ms: s.lag_ms, backlog: s.lag_changes, per_sec: s.delivered_per_sec };
                points.insert(format!("sink:{}", s.name), point);
            }
            let mut history = self.history.lock();
            for (key, point) in &points {
                let series = history.entry(key.clone()).or_default();
                if series.len() == POINTS {
                    series.pop_front();
                }
                series.push_back(*point);
            }
        }
        self.live.send_replace(Arc::new(Overview { at: crate::store::timestamp(at), sources, sinks, points }));
    }
}

fn source_tile(view: SourceView, rates: &mut Rates, now: Instant) -> SourceTile {
    let objects: u64 = view.objects.values().sum();
    let lists = view.accounts.iter().flat_map(|a| a.backfill.values());
    let (mut lists_done, mut list_count, mut fetched) = (0, 0, 0);
    for list in lists {
        list_count += 1;
        lists_done += u64::from(list.done || list.skipped.is_some());
        fetched += list.fetched;
    }
    SourceTile {
        objects_per_sec: rates.rate(&format!("source:{}", view.name), now, objects),
        name: view.name,
        kind: view.kind,
        role: view.role,
        phase: view.phase,
        paused: view.paused,
        lag_ms: view.lag_ms,
        objects,
        lists_done,
        lists: list_count,
        fetched,
        parked_events: view.parked_events,
        last_error: view.last_error,
    }
}

fn sink_tile(view: SinkView, rates: &mut Rates, now: Instant) -> SinkTile {
    let status = view.status;
    SinkTile {
        delivered_per_sec: rates.rate(&format!("sink:{}", status.name), now, status.delivered),
        name: status.name,
        kind: status.kind,
        role: status.role,
        paused: view.paused,
        disabled: status.disabled,
        rewind_pending: view.rewind_pending,
        cursor: status.cursor,
        lag_changes: view.lag_changes,
        lag_ms: view.lag_ms,
        delivered: status.delivered,
        dead_letters: view.dead_letters,
        last_error: status.last_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_measured_over_the_window_and_restart_with_the_counter() {
        let mut rates = Rates::default();
        let t0 = Instant::now();
        assert_eq!(rates.rate("sink:a", t0, 100), 0.0);
        assert_eq!(rates.rate("sink:a", t0 + Duration::from_secs(2), 300), 100.0);
        // a counter that went down started again: no negative rate
        assert_eq!(rates.rate("sink:a", t0 + Duration::from_secs(3), 10), 0.0);
        assert_eq!(rates.rate("sink:a", t0 + Duration::from_secs(4), 60), 50.0);
        for n in 0..20 {
            rates.rate("sink:b", t0 + Duration::from_secs(n), n * 7);
        }
        assert_eq!(rates.rate("sink:b", t0 + Duration::from_secs(20), 20 * 7), 7.0);
    }
}
