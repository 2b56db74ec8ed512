//! `tributary sim`: a Stripe-compatible upstream with seeded data, live
//! traffic and fault injection, so the whole system runs on one machine.
//!
//! - `data`: deterministic Stripe-shaped objects
//! - `state`: the ground truth and Stripe's list, event and idempotency semantics
//! - `shifts`: a shift-planning API queried by date window
//! - `market`: a marketplace's seller events in pull queues with acknowledgement
//! - `server`: the HTTP routes, auth and faults

pub mod data;
pub mod market;
pub mod server;
pub mod shifts;
pub mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

pub use market::Market;
pub use server::{Faults, Sim};
pub use shifts::Shifts;
pub use state::World;

/// Options of `tributary sim`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Address to serve the API on
    #[arg(long, default_value = "127.0.0.1:12111")]
    pub listen: SocketAddr,
    /// Seed of the generated data (same seed, same data)
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
    /// Sellers of the marketplace whose order and product events feed the event queues
    #[arg(long, default_value_t = 3)]
    pub sellers: usize,
    /// Share of event queue acknowledgements dropped, so batches come again (0.0 to 1.0)
    #[arg(long, default_value_t = 0.0)]
    pub lose_acks: f64,
    /// How long events stay listed at /v1/events (Stripe: 30 days)
    #[arg(long, default_value_t = 2_592_000)]
    pub event_retention_secs: u64,
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
        let world = World::seeded(self.seed, self.scale, self.accounts, Duration::from_secs(self.event_retention_secs));
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
            restricted: Vec::new(),
        };
        let shifts = Shifts::seeded(self.seed, self.shifts, chrono::Utc::now().date_naive());
        let market = Market::seeded(self.seed, self.sellers);
        Sim::new(world, shifts, market, faults, self.mutations_per_sec, self.seed)
    }
}

/// Serve the simulator on `listener` with live traffic until `shutdown`.
pub async fn serve(sim: Arc<Sim>, listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    let traffic = tokio::spawn(run_traffic(sim.clone()));
    let result = axum::serve(listener, server::router(sim)).with_graceful_shutdown(shutdown).await;
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
