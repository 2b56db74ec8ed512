//! `tributary demo`: the simulator and the engine in one process on SQLite
//! (Stripe, the shifts window API and the marketplace queue as sources),
//! with a progress bar per resource during backfill, a live status line, and
//! a pull queue of live customer changes to try.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::engine::Engine;
use crate::queue;
use crate::sim::SimArgs;
use crate::source::{Phase, SourceStatus};
use crate::store::Store;
use crate::store::queues::{AppKind, PLATFORM};
use crate::telemetry;

const KEY_ENV: &str = "TRIBUTARY_DEMO_STRIPE_KEY";
/// The demo's admin token (for the console and the admin routes): set
/// here unless the environment has one.
const ADMIN_ENV: &str = "TRIBUTARY_DEMO_ADMIN_TOKEN";

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// SQLite file to mirror into (recreated at start)
    #[arg(long, default_value = "tributary-demo.db")]
    pub db: String,
    /// Customers in the simulated upstream (about 4.8 objects each)
    #[arg(long, default_value_t = 2000)]
    pub scale: usize,
    /// Live upstream mutations per second
    #[arg(long, default_value_t = 5.0)]
    pub mutations_per_sec: f64,
    /// Address of the engine's HTTP API (a free port is used if taken)
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub listen: SocketAddr,
    /// Stop after this many seconds (default: run until Ctrl-C)
    #[arg(long)]
    pub duration_secs: Option<u64>,
}

/// Runs before the async runtime starts (no other threads yet): the demo's
/// engine reads the simulator's key from the environment like any engine.
#[allow(unsafe_code)]
pub fn prepare_env(_args: &DemoArgs) {
    // the WhenIWork preset's login reads a developer key, an email and a
    // password; the Tiki preset an app's client id and secret, and each
    // seller's refresh token (the simulator's sellers authorized the app)
    let mut vars: Vec<(String, String)> = [
        (KEY_ENV, "sk_test_tributary_demo"),
        ("WHENIWORK_API_KEY", "demo-developer-key"),
        ("WHENIWORK_EMAIL", "manager@example.com"),
        ("WHENIWORK_PASSWORD", "demo"),
        ("TIKI_CLIENT_ID", "tributary-demo"),
        ("TIKI_CLIENT_SECRET", "demo-secret"),
    ]
    .iter()
    .map(|(var, value)| (var.to_string(), value.to_string()))
    .collect();
    for (n, (_, refresh_token)) in demo_sellers().into_iter().enumerate() {
        vars.push((seller_env(n), refresh_token));
    }
    vars.push((ADMIN_ENV.to_string(), crate::ids::random_id("adm_", 24)));
    for (var, value) in vars {
        if std::env::var_os(&var).is_none() {
            // SAFETY: called from `main` before any other thread exists
            unsafe { std::env::set_var(var, value) };
        }
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let terminal = std::io::stdout().is_terminal();
    telemetry::init_logging(if terminal { "warn" } else { "info" });
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", args.db));
    }

    let sim_args = SimArgs {
        listen: "127.0.0.1:0".parse()?,
        scale: args.scale,
        accounts: 3,
        mutations_per_sec: args.mutations_per_sec,
        ..SimArgs::defaults()
    };
    let sim_listener = TcpListener::bind(sim_args.listen).await?;
    let sim_addr = sim_listener.local_addr()?;
    let sim = sim_args.build();
    tokio::spawn(crate::sim::serve(sim, sim_listener, std::future::pending()));

    let config = demo_config(&args, sim_addr)?;
    let listener = match TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(_) => TcpListener::bind("127.0.0.1:0").await.context("cannot bind the api")?,
    };
    let engine = Engine::start_with_listener(config, listener).await?;
    let api = engine.api_addr;
    let status = engine.registry.get("stripe").context("demo source missing")?;
    println!(
        "tributary demo: simulated upstream (Stripe, shifts, marketplace) at http://{sim_addr}, engine API at http://{api}, mirroring into {}",
        args.db
    );
    let admin_token = std::env::var(ADMIN_ENV).unwrap_or_default();
    println!("console: http://{api}/#token={admin_token}  (opens signed in; the admin token is {admin_token})");

    let shutdown = async move {
        match args.duration_secs {
            Some(secs) => tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(secs)) => {}
                _ = crate::cli::shutdown_signal() => {}
            },
            None => crate::cli::shutdown_signal().await,
        }
    };
    let consumer = demo_queue(engine.store().as_ref()).await.context("cannot create the demo queue")?;
    let display = tokio::spawn(show_progress(status, terminal, args.db.clone(), api, consumer));
    let result = engine.serve(shutdown).await;
    display.abort();
    result?;
    println!("demo stopped; the mirror stays in {}", args.db);
    Ok(())
}

/// The simulated marketplace's sellers: each one's `sid` and the refresh
/// token its authorization of the app handed out.
fn demo_sellers() -> Vec<(String, String)> {
    let defaults = SimArgs::defaults();
    crate::sim::Market::seeded(defaults.seed, defaults.sellers).oauth.authorized
}

/// The env var holding the demo seller `n`'s refresh token.
fn seller_env(n: usize) -> String {
    format!("TRIBUTARY_DEMO_TIKI_SELLER_{}", n + 1)
}

/// The simulator's three APIs as sources: Stripe, WhenIWork's shifts and
/// Tiki's event queues (their presets). Like any config it takes `TRIBUTARY_…`
/// overrides from the environment.
fn demo_config(args: &DemoArgs, sim: SocketAddr) -> anyhow::Result<Config> {
    let quoted = |text: &str| toml::Value::String(text.to_string()).to_string();
    let text = format!(
        "[database]\nurl = {db}\n[api]\nlisten = {listen}\nadmin_token_env = \"{ADMIN_ENV}\"\n\
         [[sources]]\nname = \"stripe\"\nkind = \"stripe\"\nbase_url = \"http://{sim}\"\napi_key_env = \"{KEY_ENV}\"\nrate_limit_per_sec = 5000\n\
         [[sources]]\nname = \"shifts\"\npreset = \"wheniwork\"\nbase_url = \"http://{sim}\"\nauth = {{ url = \"http://{sim}/login\" }}\n\
         sleep_period_secs = 5\ndays_prior = 14\ndays_ahead = 28\n\
         [[sources]]\nname = \"market\"\npreset = \"tiki\"\nbase_url = \"http://{sim}\"\npoll_interval_secs = 2\n\
         auth = {{ token_url = \"http://{sim}/sc/oauth2/token\" }}\nseller_auth = {{ token_url = \"http://{sim}/sc/oauth2/token\" }}\n\
         {sellers}",
        db = quoted(&format!("sqlite://{}", args.db)),
        listen = quoted(&args.listen.to_string()),
        sellers = demo_sellers()
            .iter()
            .enumerate()
            .map(|(n, (sid, _))| format!("sellers.{} = {{ refresh_token_env = \"{}\" }}\n", quoted(sid), seller_env(n)))
            .collect::<String>(),
    );
    Ok(Config::parse_with(&text, "demo config", std::env::vars())?)
}

/// An app with a queue of every live change to the platform's customers,
/// to show a pull queue: (queue code, app token).
async fn demo_queue(store: &dyn Store) -> anyhow::Result<(String, String)> {
    let (app, token, hash) = queue::new_app("demo".into(), AppKind::Inhouse, Some(PLATFORM.into()))?;
    store.create_app(&app, &hash).await?;
    let code = crate::ids::random_id("q_", 16);
    store.create_queue(&app.id, &code, "demo customers", 1).await?;
    let subscription = queue::new_subscription("customer.*".into(), PLATFORM.into(), false, Duration::ZERO);
    store.subscribe(&app.id, &code, &subscription).await?;
    Ok((code, token))
}

/// Progress bars while backfilling, then hints and a live status line.
async fn show_progress(
    status: std::sync::Arc<SourceStatus>,
    terminal: bool,
    db: String,
    api: SocketAddr,
    (queue, token): (String, String),
) {
    // Stripe's lists give no totals: the bar counts objects and shows the
    // rate, and says how many of the resources are done
    let bar = ProgressBar::no_length();
    if !terminal {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template("{prefix:>8} {spinner} {pos:>8} objects {per_sec:>14} {elapsed:>4} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    bar.set_style(style);
    bar.set_prefix("stripe");
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        let (mut fetched, mut done, mut total, mut skipped) = (0, 0, 0, 0);
        for scope in status.scopes() {
            for progress in scope.resources().values() {
                fetched += progress.fetched;
                total += 1;
                done += u64::from(progress.done);
                skipped += u64::from(progress.skipped.is_some());
            }
        }
        bar.set_position(fetched);
        let skipped = if skipped > 0 { format!(", {skipped} skipped") } else { String::new() };
        bar.set_message(format!("{done} of {total} resource lists done{skipped}"));
        bar.tick();
        if status.phase() == Phase::Live {
            break;
        }
    }
    bar.finish();
    println!("\nbackfill complete; tailing events live. Try:");
    println!("  sqlite3 {db} \"select id, json_extract(data, '$.email') from stripe_customer limit 5\"");
    println!("  sqlite3 {db} \"select id, op, type, object_id from tributary_changes order by id desc limit 5\"");
    println!("  sqlite3 {db} \"select id, json_extract(data, '$.start_time'), json_extract(data, '$.notes') from shifts_shift limit 5\"");
    println!(
        "  sqlite3 {db} \"select id, account, json_extract(data, '$.status'), json_extract(data, '$.invoice.grand_total') from market_order limit 5\""
    );
    println!("  curl -s http://{api}/v1/sources");
    println!("  curl -s 'http://{api}/v1/sources/stripe/wait?timeout_ms=5000'");
    println!("  tributary queue pull {queue} --api http://{api} --token {token} --follow");
    let line = ProgressBar::new_spinner();
    if !terminal {
        line.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let lag = status.lag().map(|l| format!("{} ms", l.as_millis())).unwrap_or_else(|| "-".into());
        line.set_message(format!("live · lag {lag} · Ctrl-C to stop"));
        line.tick();
    }
}
