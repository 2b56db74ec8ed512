//! `tributary apps`: create, list, revoke and grant apps straight in the
//! database the config names, for operators without the admin token at hand.

use anyhow::Context;
use clap::Subcommand;

use super::ConfigArg;
use crate::queue;
use crate::store::queues::AppKind;

#[derive(Debug, Subcommand)]
pub enum AppsCommand {
    /// Create an app and print it with its bearer token (shown once)
    Create {
        #[command(flatten)]
        config: ConfigArg,
        /// A name for people
        #[arg(long)]
        name: String,
        /// `public` (accounts grant it access) or `inhouse` (bound to --account)
        #[arg(long, value_parser = parse_kind)]
        kind: AppKind,
        /// The one account of an in-house app
        #[arg(long)]
        account: Option<String>,
    },
    /// List every app, revoked ones included
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Revoke an app's token; its requests fail with 401 at once
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        /// The app's id (`app_…`)
        id: String,
    },
    /// Record that an account grants a public app access
    Grant {
        #[command(flatten)]
        config: ConfigArg,
        /// The app's id (`app_…`)
        id: String,
        /// The account granting access
        #[arg(long)]
        account: String,
    },
}

fn parse_kind(text: &str) -> Result<AppKind, String> {
    AppKind::parse(text).ok_or_else(|| format!("'{text}' is not an app kind: use public or inhouse"))
}

pub async fn run(command: AppsCommand) -> anyhow::Result<()> {
    let config = match &command {
        AppsCommand::Create { config, .. }
        | AppsCommand::List { config }
        | AppsCommand::Revoke { config, .. }
        | AppsCommand::Grant { config, .. } => config.load()?,
    };
    let store = crate::store::open(&config.database.options()).await.context("cannot open the database")?;
    match command {
        AppsCommand::Create { name, kind, account, .. } => {
            let (app, token, hash) = queue::new_app(name, kind, account)?;
            store.create_app(&app, &hash).await?;
            let mut view = serde_json::json!(app);
            view["token"] = serde_json::json!(token);
            println!("{view}");
            eprintln!("keep the token now: only its hash is stored");
        }
        AppsCommand::List { .. } => {
            for app in store.apps().await? {
                println!(
                    "{:<22} {:<8} {:<8} {:<20} {:<28} {}",
                    app.id,
                    app.kind.as_str(),
                    if app.revoked { "revoked" } else { "active" },
                    app.account.as_deref().unwrap_or("-"),
                    app.created_at,
                    app.name
                );
            }
        }
        AppsCommand::Revoke { id, .. } => {
            anyhow::ensure!(store.revoke_app(&id).await?, "no app '{id}'");
            println!("revoked {id}");
        }
        AppsCommand::Grant { id, account, .. } => {
            crate::ids::check_text("account", &account)?;
            anyhow::ensure!(store.grant(&id, &account).await?, "no app '{id}'");
            println!("account {account} granted {id} access");
        }
    }
    Ok(())
}
