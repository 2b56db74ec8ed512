//! `tributary changes`: read the change log straight from the database,
//! narrowed by filters; with `--object-id`, one object's history, oldest
//! first.

use std::collections::HashMap;

use anyhow::Context;

use super::ConfigArg;

#[derive(Debug, clap::Args)]
pub struct ChangesArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Only this source
    #[arg(long)]
    source: Option<String>,
    /// Only this object type (customer, shift, …)
    #[arg(long)]
    object: Option<String>,
    /// One object's history, oldest first, each step with the fields it
    /// changed (previous_attributes)
    #[arg(long)]
    object_id: Option<String>,
    /// read, insert, update or delete
    #[arg(long)]
    op: Option<String>,
    /// The event type (customer.updated, …)
    #[arg(long = "type")]
    kind: Option<String>,
    /// Committed at or after this RFC 3339 time
    #[arg(long)]
    since: Option<String>,
    /// Committed before this RFC 3339 time
    #[arg(long)]
    until: Option<String>,
    /// Changes printed at most (the newest)
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

/// Print matching changes as JSON lines (the envelope sinks receive).
pub async fn run(args: ChangesArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    let query: HashMap<String, String> = [
        ("source", args.source),
        ("object", args.object),
        ("object_id", args.object_id.clone()),
        ("op", args.op),
        ("type", args.kind),
        ("since", args.since),
        ("until", args.until),
    ]
    .into_iter()
    .filter_map(|(key, value)| Some((key.to_string(), value?)))
    .collect();
    let filter = crate::api::change_filter(&query).map_err(anyhow::Error::msg)?;
    let store = crate::store::open(&config.database.options()).await.context("cannot open the database")?;
    let mut changes = store.find_changes(&filter, args.limit.clamp(1, 10_000)).await?;
    // a history reads oldest first
    if args.object_id.is_some() {
        changes.reverse();
    }
    for change in &changes {
        println!("{}", serde_json::to_string(change)?);
    }
    if changes.is_empty() {
        eprintln!("no change matches");
    }
    Ok(())
}
