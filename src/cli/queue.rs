//! `tributary queue pull`: a consumer of one built-in pull queue that prints
//! events as JSON lines and acknowledges each batch with the next pull.
//! Without `--follow` it drains what is there and exits; with it, it long
//! polls until interrupted and acknowledges what it printed before leaving.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Pull events as JSON lines, one per line, acknowledging as it goes
    Pull(PullArgs),
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The queue's code (`q_…`)
    code: String,
    /// The app's bearer token
    #[arg(long, env = "TRIBUTARY_APP_TOKEN", hide_env_values = true)]
    token: String,
    /// Base URL of the engine's API
    #[arg(long, default_value = "http://127.0.0.1:7400")]
    api: String,
    /// Events per pull (1 to 1000)
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
    limit: u16,
    /// Keep waiting for new events until interrupted
    #[arg(long)]
    follow: bool,
}

/// How long one long poll waits for an event when following.
const FOLLOW_WAIT_MS: u64 = 25_000;
/// Consecutive failed requests a follower rides out before giving up.
const MAX_FAILURES: u32 = 8;

pub async fn run(command: QueueCommand) -> anyhow::Result<()> {
    let QueueCommand::Pull(args) = command;
    let url = format!("{}/v1/queues/{}/events/pull", args.api.trim_end_matches('/'), args.code);
    let client = reqwest::Client::builder().timeout(Duration::from_millis(FOLLOW_WAIT_MS + 10_000)).build()?;
    let wait_ms = if args.follow { FOLLOW_WAIT_MS } else { 0 };
    let mut ack: Option<String> = None;
    let mut stdout = std::io::stdout().lock();
    let shutdown = super::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let carried = ack.clone();
        let request = pull(&client, &url, &args.token, ack.take(), args.limit, wait_ms, args.follow);
        let batch = tokio::select! {
            batch = request => batch?,
            _ = &mut shutdown => {
                // interrupted mid-poll: make sure the batch printed last is
                // acknowledged (sending the same ack_id again is harmless)
                if carried.is_some() {
                    pull(&client, &url, &args.token, carried, 1, 0, false).await?;
                }
                return Ok(());
            }
        };
        if let Some(dropped) = batch["dropped"].as_i64().filter(|n| *n > 0) {
            eprintln!("warning: {dropped} unacknowledged event(s) passed retention and were deleted");
        }
        let events = batch["events"].as_array().map(Vec::as_slice).unwrap_or_default();
        for event in events {
            writeln!(stdout, "{event}").context("cannot write to stdout")?;
        }
        stdout.flush().context("cannot write to stdout")?;
        ack = batch["ack_id"].as_str().map(str::to_string);
        if events.is_empty() && !args.follow {
            // this pull acknowledged the last batch and handed out nothing
            return Ok(());
        }
    }
}

/// One pull; a follower retries connection failures and 429/5xx answers.
async fn pull(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    ack_id: Option<String>,
    limit: u16,
    wait_ms: u64,
    patient: bool,
) -> anyhow::Result<Value> {
    let body = json!({"ack_id": ack_id, "limit": limit, "wait_ms": wait_ms});
    let mut failures = 0;
    loop {
        let pause = match client.post(url).bearer_auth(token).json(&body).send().await {
            Ok(response) if response.status().is_success() => {
                return response.json().await.with_context(|| format!("bad response from {url}"));
            }
            Ok(response) => {
                let status = response.status();
                let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok());
                let error: Value = response.json().await.unwrap_or_default();
                let message = error["error"]["message"].as_str().unwrap_or("no reason given").to_string();
                let retryable = status.as_u16() == 429 || status.is_server_error();
                if !patient || !retryable || failures >= MAX_FAILURES {
                    bail!("pull failed with {status}: {message}");
                }
                eprintln!("pull answered {status} ({message}); retrying");
                retry_after.map(Duration::from_secs)
            }
            Err(e) if patient && failures < MAX_FAILURES => {
                eprintln!("cannot reach {url} ({e}); retrying");
                None
            }
            Err(e) => return Err(e).with_context(|| format!("cannot reach {url}")),
        };
        failures += 1;
        tokio::time::sleep(pause.unwrap_or_else(|| crate::retry::backoff(failures, Duration::from_secs(10)))).await;
    }
}
