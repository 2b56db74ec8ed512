//! The command line: `demo`, `run`, `sim`, `resources`, `status`, `check`,
//! `verify`, `apps`, `queue`, `sinks`, `sources`, `changes`, `parked`. Errors end the process with exit code 1 and a one-line reason.

pub mod apps;
pub mod changes;
pub mod demo;
pub mod queue;
pub mod sinks;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::engine::Engine;
use crate::sim::{self, SimArgs};
use crate::source::drift::ResourceDrift;
use crate::telemetry;

#[derive(Debug, Parser)]
#[command(name = "tributary", version, about = "Mirror third-party APIs into your database and deliver every change")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the simulator and the engine together on SQLite, with live progress
    Demo(demo::DemoArgs),
    /// Run the engine: sync every configured source and serve the HTTP API
    Run {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Serve the Stripe-compatible simulator
    Sim(SimArgs),
    /// List the Stripe resources a `stripe` source can mirror (its `resources`
    /// names): how each is scoped and followed, and why some are not mirrored
    Resources,
    /// Show the sources of a running engine
    Status {
        /// Base URL of the engine's API
        #[arg(long, default_value = "http://127.0.0.1:7400")]
        api: String,
    },
    /// Create, list, revoke and grant apps of the built-in pull queues
    #[command(subcommand)]
    Apps(apps::AppsCommand),
    /// Consume a built-in pull queue from the command line
    #[command(subcommand)]
    Queue(queue::QueueCommand),
    /// Rewind, pause and resume sinks; list, redrive and discard their dead letters
    #[command(subcommand)]
    Sinks(sinks::SinksCommand),
    /// Pause and resume sources
    #[command(subcommand)]
    Sources(sinks::SourcesCommand),
    /// Read the change log (newest first), or one object's history (--object-id)
    Changes(changes::ChangesArgs),
    /// Validate a config file and the secrets it names, without starting anything.
    ///
    /// Any field may be overridden from the environment: TRIBUTARY_ then the
    /// field's path joined by __, e.g. TRIBUTARY_DATABASE__URL or
    /// TRIBUTARY_SOURCES__STRIPE__RATE_LIMIT_PER_SEC (an entry by name or index).
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Compare the mirror with the upstream now, writing nothing.
    ///
    /// Lists every resource of each stripe source (the platform and every
    /// connected account), or the window of each window source, compares
    /// each object with its mirror row and prints per resource the objects
    /// checked, missing (upstream only), extra (mirror only) and differing,
    /// with the first ids and the fields that differ. Objects a running
    /// engine changes meanwhile are not counted. Exits 1 when anything
    /// differs, 0 when nothing does.
    Verify {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this source (default: every stripe and window source)
        #[arg(long)]
        source: Option<String>,
        /// Only this resource, by its path (`customers`, `invoices`, …)
        #[arg(long)]
        resource: Option<String>,
        /// Ids named per resource at most
        #[arg(long, default_value_t = 10)]
        limit_ids: usize,
    },
    /// List the upstream events a source parked because it could not store
    /// them (one JSON object per line: key, event_id, event_type, reason,
    /// body, parked_at), oldest first; with --redrive, store them again
    Parked {
        #[command(flatten)]
        config: ConfigArg,
        /// The source
        #[arg(long)]
        source: String,
        /// Store the parked events again with the config as it is now (each
        /// read at its paths, its object fetched again): one JSON line per
        /// event with its outcome (stored, already_stored, parked and why).
        /// Safe beside a running engine; exits 1 if any stays parked
        #[arg(long)]
        redrive: bool,
    },
}

/// Where the config comes from: a file, or (without one) the environment
/// alone.
#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// Path to tributary.toml; absent: every field from TRIBUTARY_… variables
    #[arg(long, short, env = "TRIBUTARY_CONFIG")]
    config: Option<PathBuf>,
}

impl ConfigArg {
    pub fn load(&self) -> Result<Config, crate::config::ConfigError> {
        match &self.config {
            Some(path) => Config::load(path),
            None => Config::parse_with("", "(environment)", std::env::vars()),
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Demo(args) = &cli.command {
        demo::prepare_env(args);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        // `verify` found drift: its report is the answer, not a failure
        Err(e) if e.downcast_ref::<Drift>().is_some() => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            let reason = telemetry::error_chain(e.as_ref()).replace('\n', " ");
            tracing::error!(kind = "fatal", error = %reason, "tributary stopped");
            eprintln!("error: {reason}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Demo(args) => demo::run(args).await,
        Command::Run { config } => {
            telemetry::init_logging("info");
            let config = config.load()?;
            let engine = Engine::start(config).await?;
            engine.serve(shutdown_signal()).await?;
            Ok(())
        }
        Command::Sim(args) => {
            telemetry::init_logging("info");
            let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
            let sim = args.build();
            tracing::info!(kind = "sim_listening", addr = %listener.local_addr()?, seed = args.seed, scale = args.scale,
                accounts = args.accounts, "simulator listening");
            sim::serve(sim, listener, shutdown_signal()).await?;
            Ok(())
        }
        Command::Resources => {
            resources();
            Ok(())
        }
        Command::Status { api } => status(&api).await,
        Command::Apps(command) => apps::run(command).await,
        Command::Queue(command) => queue::run(command).await,
        Command::Sinks(command) => sinks::run(command).await,
        Command::Sources(command) => sinks::run_sources(command).await,
        Command::Changes(args) => changes::run(args).await,
        Command::Check { config } => {
            let config = config.load()?;
            config.check_env()?;
            crate::store::check(&config.database.options()).await?;
            println!("config ok: {} source(s); database reachable", config.sources.len());
            Ok(())
        }
        Command::Verify { config, source, resource, limit_ids } => verify(config, source, resource, limit_ids).await,
        Command::Parked { config, source, redrive } => {
            let config = config.load()?;
            let Some(found) = config.sources.iter().find(|s| s.name() == source) else {
                anyhow::bail!("no source named '{source}' in the config");
            };
            let store = crate::store::open(&config.database.options()).await?;
            if redrive {
                let crate::config::SourceConfig::EventQueue(queue) = found else {
                    anyhow::bail!("source '{source}' is not an event_queue source: it parks nothing");
                };
                queue.check_env()?;
                let runner = crate::source::event_queue::Runner::new(queue.clone(), store)?;
                let report = runner.redrive().await?;
                for line in &report {
                    println!("{}", serde_json::to_string(line)?);
                }
                let still = report.iter().filter(|r| r.outcome == "parked").count();
                eprintln!("redrove {} parked event(s): {} stored again, {still} still parked", report.len(), report.len() - still);
                if still > 0 {
                    anyhow::bail!("{still} event(s) still parked (each line says why)");
                }
                return Ok(());
            }
            for parked in store.parked(&source).await? {
                println!("{}", serde_json::to_string(&parked)?);
            }
            Ok(())
        }
    }
}

/// One resource's findings, and the first objects that differ.
fn print_drift(source: &str, found: &ResourceDrift) {
    let t = &found.tally;
    println!(
        "{source:<12} {:<22} {:<40} checked {:>7}  missing {:>5}  extra {:>5}  differing {:>5}",
        found.account.as_deref().unwrap_or("platform"),
        found.resource,
        t.checked,
        t.missing,
        t.extra,
        t.differed
    );
    for d in &found.sample {
        let fields = if d.fields.is_empty() { String::new() } else { format!(": {}", d.fields.join(", ")) };
        println!("    {:<8} {} {}{fields}", d.how, d.object, d.id);
    }
}

/// What `verify` found differs (exit code 1).
#[derive(Debug, thiserror::Error)]
#[error("drift: {0}")]
struct Drift(String);

/// `tributary verify`: exit 1 on drift.
async fn verify(config: ConfigArg, only: Option<String>, resource: Option<String>, limit_ids: usize) -> anyhow::Result<()> {
    telemetry::init_logging("warn");
    let config = config.load()?;
    let store = crate::store::open(&config.database.options()).await?;
    let chosen: Vec<&crate::config::SourceConfig> =
        config.sources.iter().filter(|s| only.as_ref().is_none_or(|name| s.name() == name)).collect();
    if let Some(name) = &only
        && chosen.is_empty()
    {
        anyhow::bail!("no source named '{name}' in the config");
    }
    let (mut checked, mut drift, mut drifting) = (0u64, 0u64, 0usize);
    let mut tally = |found: &ResourceDrift| {
        checked += found.tally.checked;
        drift += found.tally.drift();
        drifting += usize::from(found.tally.drift() > 0);
    };
    for source in chosen {
        let name = source.name().to_string();
        match source {
            crate::config::SourceConfig::Stripe(stripe) => {
                if let Some(wanted) = &resource
                    && !stripe.resources().iter().any(|r| r.path == wanted)
                {
                    anyhow::bail!("source '{name}' does not mirror a resource '{wanted}'");
                }
                let print = |found: &ResourceDrift| print_drift(&name, found);
                let found =
                    crate::source::stripe::verify(stripe, stripe.api_key()?, store.clone(), resource.as_deref(), limit_ids, print).await?;
                found.iter().for_each(&mut tally);
            }
            crate::config::SourceConfig::Window(window) => {
                let runner = crate::source::window::Runner::new(window.clone(), store.clone()).await?;
                let found = runner.verify(chrono::Utc::now(), limit_ids).await?;
                print_drift(&name, &found);
                tally(&found);
            }
            other => println!("{name}: a {} source; verify compares stripe and window sources", other.kind()),
        }
    }
    if drift > 0 {
        return Err(Drift(format!(
            "{drift} objects differ between the mirror and the upstream, in {drifting} resource(s) ({checked} checked)"
        ))
        .into());
    }
    println!("no drift: {checked} objects checked, the mirror matches the upstream");
    Ok(())
}

/// The catalogue as a table: name, objects, parent, how it is followed.
fn resources() {
    println!("{:<46} {:<36} {:<30} follow", "resource", "objects", "listed per");
    for resource in crate::stripe_api::catalogue() {
        let parent = resource.scope.parent.unwrap_or("-");
        let follow = match resource.note {
            Some(note) => format!("not mirrored: {note}"),
            None => resource.follow.name().to_string(),
        };
        println!("{:<46} {:<36} {:<30} {follow}", resource.path, resource.objects.join("|"), parent);
    }
}

async fn status(api: &str) -> anyhow::Result<()> {
    let url = format!("{}/v1/sources", api.trim_end_matches('/'));
    let body: serde_json::Value = reqwest::get(&url)
        .await
        .with_context(|| format!("cannot reach {url}"))?
        .json()
        .await
        .with_context(|| format!("bad response from {url}"))?;
    for source in body["sources"].as_array().into_iter().flatten() {
        let lag = source["lag_ms"].as_u64().map(|l| format!("{l} ms")).unwrap_or_else(|| "-".into());
        let rows: u64 = source["objects"].as_object().into_iter().flatten().filter_map(|(_, n)| n.as_u64()).sum();
        println!(
            "{:<16} {:<8} {:<12} lag {:<10} rows {}",
            source["name"].as_str().unwrap_or("?"),
            source["kind"].as_str().unwrap_or("?"),
            source["phase"].as_str().unwrap_or("?"),
            lag,
            rows
        );
        if let Some(error) = source["last_error"].as_str() {
            println!("  last error: {error}");
        }
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
