//! `tributary sinks` and `tributary sources`: steer them straight in the
//! database the config names. A request is stored, and whichever engine
//! runs the sink or source applies it (within a second), so these work
//! beside running engines, one or several, and before one starts.

use anyhow::Context;
use clap::Subcommand;

use super::ConfigArg;
use crate::config::Config;
use crate::control::{self, RewindTo};
use crate::store::Store;
use crate::store::controls::Target;

#[derive(Debug, Subcommand)]
pub enum SinksCommand {
    /// Move a sink's cursor back: everything from a change (or a time) on is
    /// delivered again
    Rewind {
        #[command(flatten)]
        config: ConfigArg,
        /// The sink
        name: String,
        /// This change and every one after it is delivered again (chg_…)
        #[arg(long, conflicts_with = "to_time", required_unless_present = "to_time")]
        to_change: Option<String>,
        /// Every change committed at or after this RFC 3339 time is
        /// delivered again
        #[arg(long)]
        to_time: Option<String>,
    },
    /// List a sink's dead letters, oldest first (one JSON object per line:
    /// id, change_id, error, attempts, envelope, created_at)
    DeadLetters {
        #[command(flatten)]
        config: ConfigArg,
        /// The sink
        name: String,
    },
    /// Deliver dead letters again: those named, or with --all every one
    Redrive {
        #[command(flatten)]
        config: ConfigArg,
        /// The sink
        name: String,
        /// Dead letter ids (dl_…)
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Every dead letter of the sink
        #[arg(long)]
        all: bool,
    },
    /// Delete dead letters for good
    Discard {
        #[command(flatten)]
        config: ConfigArg,
        /// The sink
        name: String,
        /// Dead letter ids (dl_…)
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Hold a sink: nothing is delivered to it until it is resumed
    Pause(Named),
    /// Deliver to a paused sink again, from where it stopped
    Resume(Named),
}

#[derive(Debug, Subcommand)]
pub enum SourcesCommand {
    /// Stop syncing a source until it is resumed
    Pause(Named),
    /// Sync a paused source again, from its checkpoint
    Resume(Named),
}

/// A sink or source by name, in the config's database.
#[derive(Debug, clap::Args)]
pub struct Named {
    #[command(flatten)]
    config: ConfigArg,
    /// Its name in the config
    name: String,
}

async fn open(config: &ConfigArg) -> anyhow::Result<(Config, std::sync::Arc<dyn Store>)> {
    let config = config.load()?;
    let store = crate::store::open(&config.database.options()).await.context("cannot open the database")?;
    Ok((config, store))
}

fn check_sink(config: &Config, name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(config.sinks.iter().any(|s| s.name == name), "no sink named '{name}' in the config");
    Ok(())
}

pub async fn run(command: SinksCommand) -> anyhow::Result<()> {
    match command {
        SinksCommand::Rewind { config, name, to_change, to_time } => {
            let (config, store) = open(&config).await?;
            check_sink(&config, &name)?;
            let to = match (to_change, to_time) {
                (Some(change), _) => RewindTo::Change(change),
                (None, Some(time)) => RewindTo::Time(time),
                (None, None) => anyhow::bail!("give --to-change or --to-time"),
            };
            let rewound = control::rewind(store.as_ref(), &name, &to).await?;
            println!("{}", serde_json::to_string(&rewound)?);
            match &rewound.first_change {
                Some(first) => eprintln!("sink '{name}' rewinds to {first}: the engine that runs it delivers everything from there again"),
                None => eprintln!("sink '{name}' has delivered nothing since then: nothing to deliver again"),
            }
        }
        SinksCommand::DeadLetters { config, name } => {
            let (config, store) = open(&config).await?;
            check_sink(&config, &name)?;
            let mut after = 0;
            loop {
                let page = store.dead_letters(&name, after, 500).await?;
                let Some(last) = page.last() else { break };
                after = last.row;
                for letter in &page {
                    println!("{}", serde_json::to_string(letter)?);
                }
            }
        }
        SinksCommand::Redrive { config, name, ids, all } => {
            let (config, store) = open(&config).await?;
            check_sink(&config, &name)?;
            let marked = control::redrive(store.as_ref(), &name, (!all).then_some(ids.as_slice())).await?;
            println!("{}", serde_json::json!({ "sink": name, "marked": marked }));
            eprintln!("{marked} dead letter(s) marked: the engine that runs sink '{name}' delivers each once");
            anyhow::ensure!(
                all || marked == ids.len() as u64,
                "{} of the ids named are not dead letters of sink '{name}'",
                ids.len() as u64 - marked
            );
        }
        SinksCommand::Discard { config, name, ids } => {
            let (config, store) = open(&config).await?;
            check_sink(&config, &name)?;
            for id in &ids {
                control::discard(store.as_ref(), &name, id).await?;
                println!("{}", serde_json::json!({ "id": id, "deleted": true }));
            }
        }
        SinksCommand::Pause(named) => pause(&named, Target::Sink, true).await?,
        SinksCommand::Resume(named) => pause(&named, Target::Sink, false).await?,
    }
    Ok(())
}

pub async fn run_sources(command: SourcesCommand) -> anyhow::Result<()> {
    match command {
        SourcesCommand::Pause(named) => pause(&named, Target::Source, true).await,
        SourcesCommand::Resume(named) => pause(&named, Target::Source, false).await,
    }
}

async fn pause(named: &Named, target: Target, paused: bool) -> anyhow::Result<()> {
    let name = named.name.as_str();
    let (config, store) = open(&named.config).await?;
    match target {
        Target::Sink => check_sink(&config, name)?,
        Target::Source => anyhow::ensure!(config.sources.iter().any(|s| s.name() == name), "no source named '{name}' in the config"),
    }
    control::set_paused(store.as_ref(), target, name, paused).await?;
    println!("{}", serde_json::json!({ "name": name, "target": target, "paused": paused }));
    Ok(())
}
