//! `orderflow dlq`: the dead letters of running services, through their admin API.

use crate::admin_api;
use crate::dlq::DlqAction;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    action: Command,
    /// Service base URLs to ask (repeat the flag) [default: the three of `orderflow up`].
    #[arg(long = "url", global = true)]
    urls: Vec<String>,
    /// The services' admin token.
    #[arg(long, env = "ORDERFLOW_ADMIN_TOKEN", hide_env_values = true, global = true)]
    admin_token: Option<String>,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// List the dead letters not purged (id, group, topic, key, attempts, replays, error).
    List {
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one: payload, headers, error, attempts.
    Show { id: String },
    /// Deliver it to its consumer group again (the inbox makes a repeat harmless).
    Replay { id: String },
    /// Remove one from the list, or every one with --all.
    Purge {
        #[arg(required_unless_present = "all")]
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
}

pub async fn run(dlq: Args) -> anyhow::Result<()> {
    let action = match dlq.action {
        Command::List { limit } => DlqAction::List { limit },
        Command::Show { id } => DlqAction::Show(id),
        Command::Replay { id } => DlqAction::Replay(id),
        Command::Purge { id: Some(id), .. } => DlqAction::Purge(id),
        Command::Purge { id: None, .. } => DlqAction::PurgeAll,
    };
    let urls = admin_api::urls_or_default(dlq.urls);
    let token = admin_api::token(dlq.admin_token)?;
    println!("{}", crate::dlq::run(&action, &urls, &token, dlq.json).await?);
    Ok(())
}
