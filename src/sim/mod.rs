//! `tributary sim`: a Stripe-compatible upstream with seeded data, live
//! traffic and fault injection, so the whole system runs on one machine.
//!
//! - `stripe`: Stripe's API, every served resource shaped by Stripe's own examples
//! - `shifts`: WhenIWork's shifts API (login, expiring tokens, RFC 2822 times, side-loads)
//! - `market`: a marketplace's seller events in pull queues with acknowledgement
//! - `faults`: what every upstream shares (latency, auth, rate limit, 500s, counts)
//! - `control`: the `/__sim` routes (ground truth, traffic, faults)
//! - `error`: the error envelope

pub mod control;
pub mod error;
pub mod faults;
pub mod market;
pub mod shifts;
pub mod stripe;
pub mod tracker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use axum::Router;
use axum::routing::{any, get, post};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use parking_lot::{Mutex, RwLock};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::num::NonZeroU32;
use tokio::sync::watch;

pub use faults::Faults;
use faults::Stats;
pub use market::Market;
pub use shifts::Shifts;
pub use stripe::World;

/// Options of `tributary sim`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Address to serve the API on
    #[arg(long, default_value = "127.0.0.1:12111")]
    pub listen: SocketAddr,
    /// Seed of the generated data (same seed, same data; its history ends at the start of the current UTC day)
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Number of customers; other types follow in proportion (about 4.8 objects per customer)
    #[arg(long, default_value_t = 1000)]
    pub scale: usize,
    /// Connected accounts (Stripe Connect), each with its own share of the data
    #[arg(long, default_value_t = 3)]
    pub accounts: usize,
    /// Live creates, updates and deletes per second (0: none)
    #[arg(long, default_value_t = 0.0)]
    pub mutations_per_sec: f64,
    /// Requests per second served before answering 429
    #[arg(long)]
    pub rate_limit: Option<u32>,
    /// Share of requests answered with a random 500 (0.0 to 1.0)
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Latency added to every response, in milliseconds
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Share of successful responses whose JSON body is cut short (0.0 to 1.0)
    #[arg(long, default_value_t = 0.0)]
    pub truncate_rate: f64,
    /// Share of successful writes (POST, DELETE) whose response is lost:
    /// the write is done, then the connection drops (0.0 to 1.0)
    #[arg(long, default_value_t = 0.0)]
    pub lose_responses: f64,
    /// Shifts in the window API, spread from 2 weeks before today to 4 weeks after
    #[arg(long, default_value_t = 500)]
    pub shifts: usize,
    /// Lifetime of an access token (the shifts API's /login, the marketplace's
    /// /sc/oauth2/token), in seconds
    #[arg(long, default_value_t = 604_800)]
    pub token_ttl_secs: u64,
    /// Sellers of the marketplace whose order and product events feed the event queues
    #[arg(long, default_value_t = 3)]
    pub sellers: usize,
    /// Issues in the issue tracker (GitHub-shaped lists for the rest kind), over 3 repositories
    #[arg(long, default_value_t = 300)]
    pub issues: usize,
    /// Share of event queue acknowledgements dropped, so batches come again (0.0 to 1.0)
    #[arg(long, default_value_t = 0.0)]
    pub lose_acks: f64,
    /// How long events stay listed at /v1/events (Stripe: 30 days); seeded objects created within it have their creation events
    #[arg(long, default_value_t = 2_592_000)]
    pub event_retention_secs: u64,
    /// Each new event shows in /v1/events after a random delay up to this many
    /// milliseconds, so newer events are often listed before older ones (Stripe's
    /// events list is eventually consistent)
    #[arg(long, default_value_t = 0)]
    pub event_visibility_delay_ms: u64,
    /// Share of new events that never show in /v1/events, though their objects
    /// change (0.0 to 1.0)
    #[arg(long, default_value_t = 0.0)]
    pub drop_events: f64,
}

impl SimArgs {
    /// The options `tributary sim` runs with when given none.
    pub fn defaults() -> SimArgs {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            args: SimArgs,
        }
        <Defaults as clap::Parser>::parse_from(["sim"]).args
    }

    pub fn build(&self) -> Arc<Sim> {
        // the seeded history ends at the start of the day: the same seed
        // gives the same data all day, and its recent part has events
        let today = chrono::Utc::now().date_naive().and_time(chrono::NaiveTime::MIN).and_utc().timestamp();
        let world = World::seeded(self.seed, self.scale, self.accounts, Duration::from_secs(self.event_retention_secs), today);
        let faults = Faults {
            rate_limit: self.rate_limit,
            fail_rate: self.fail_rate,
            latency_ms: self.latency_ms,
            truncate_rate: self.truncate_rate,
            lose_responses: self.lose_responses,
            write_answer_delay_ms: 0,
            unauthorized: false,
            lose_acks: self.lose_acks,
            broken_shift: false,
            broken_event: false,
            fail_order_lookups: false,
            restricted: Vec::new(),
            event_api_version: None,
            event_visibility_delay_ms: self.event_visibility_delay_ms,
            drop_events: self.drop_events,
        };
        let mut shifts = Shifts::seeded(self.seed, self.shifts, chrono::Utc::now().date_naive());
        shifts.token_ttl = Duration::from_secs(self.token_ttl_secs);
        let mut market = Market::seeded(self.seed, self.sellers);
        market.oauth.ttl = Duration::from_secs(self.token_ttl_secs);
        let tracker = tracker::Tracker::seeded(self.seed, self.issues);
        Sim::new(world, shifts, market, tracker, faults, self.mutations_per_sec, self.seed)
    }
}

pub struct Sim {
    pub world: Mutex<World>,
    /// The shift-planning window API's data.
    pub shifts: Mutex<Shifts>,
    /// The marketplace behind the event queues.
    pub market: Mutex<Market>,
    /// The issue tracker behind the `rest` kind's lists.
    pub tracker: Mutex<tracker::Tracker>,
    pub(crate) faults: RwLock<Faults>,
    pub(crate) limiter: RwLock<Option<Arc<DefaultDirectRateLimiter>>>,
    pub(crate) stats: Stats,
    rng: Mutex<StdRng>,
    /// Live mutations per second; the traffic task follows this value.
    pub traffic: watch::Sender<f64>,
}

impl Sim {
    pub fn new(
        world: World,
        shifts: Shifts,
        market: Market,
        tracker: tracker::Tracker,
        faults: Faults,
        mutations_per_sec: f64,
        seed: u64,
    ) -> Arc<Self> {
        let sim = Sim {
            world: Mutex::new(world),
            shifts: Mutex::new(shifts),
            market: Mutex::new(market),
            tracker: Mutex::new(tracker),
            faults: RwLock::new(Faults::default()),
            limiter: RwLock::new(None),
            stats: Stats::default(),
            rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0xfa17)),
            traffic: watch::Sender::new(mutations_per_sec),
        };
        sim.set_faults(faults);
        Arc::new(sim)
    }

    pub fn set_faults(&self, faults: Faults) {
        let mut world = self.world.lock();
        world.set_event_version(faults.event_api_version.clone());
        world.set_event_visibility(faults.event_visibility_delay_ms, faults.drop_events);
        drop(world);
        *self.limiter.write() = faults.rate_limit.and_then(NonZeroU32::new).map(|r| Arc::new(RateLimiter::direct(Quota::per_second(r))));
        *self.faults.write() = faults;
    }

    pub(crate) fn roll(&self, probability: f64) -> bool {
        probability > 0.0 && self.rng.lock().gen_bool(probability.min(1.0))
    }

    /// One tick of live traffic: a Stripe mutation, a shift edit and a
    /// marketplace event.
    pub fn random_mutation(&self) {
        self.world.lock().random_mutation();
        self.shifts.lock().random_mutation();
        self.market.lock().random_event();
        self.tracker.lock().random_mutation();
    }
}

/// Every upstream's routes and the control routes.
pub fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/v1/{*path}", any(stripe::routes::stripe_api))
        .route("/login", post(shifts::routes::login))
        .route("/2/shifts", get(shifts::routes::shifts))
        .route("/integration/v1/queues", get(market::routes::list_queues).post(market::routes::create_queue))
        .route("/integration/v1/queues/{code}/subscriptions", post(market::routes::subscribe).get(market::routes::list_subscriptions))
        .route("/integration/v1/queues/{code}/events/pull", post(market::routes::pull))
        .route("/integration/v1/queues/{code}/events/ack", post(market::routes::ack))
        .route("/integration/v2/orders/{code}", get(market::routes::order))
        .route("/sc/oauth2/token", post(market::routes::token))
        .route("/orgs/{org}/repos", get(tracker::routes::repos))
        .route("/repos/{owner}/{repo}/issues", get(tracker::routes::issues))
        .merge(control::routes())
        .with_state(sim)
}

/// Serve the simulator on `listener` with live traffic until `shutdown`.
pub async fn serve(sim: Arc<Sim>, listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    let traffic = tokio::spawn(run_traffic(sim.clone()));
    let result = axum::serve(listener, router(sim)).with_graceful_shutdown(shutdown).await;
    traffic.abort();
    result
}

/// Apply random mutations at the rate in `sim.traffic`, following changes.
async fn run_traffic(sim: Arc<Sim>) {
    let mut rate = sim.traffic.subscribe();
    loop {
        let per_sec = *rate.borrow_and_update();
        if per_sec <= 0.0 {
            if rate.changed().await.is_err() {
                return;
            }
            continue;
        }
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / per_sec));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => sim.random_mutation(),
                changed = rate.changed() => {
                    if changed.is_err() { return; }
                    break;
                }
            }
        }
    }
}
