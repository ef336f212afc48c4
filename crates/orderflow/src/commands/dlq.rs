//! `orderflow dlq`: the dead letters of running services, through their admin API.

use super::ServiceAdmin;
use crate::dlq::DlqAction;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    action: Command,
    #[command(flatten)]
    service: ServiceAdmin,
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
    let (urls, token) = dlq.service.urls_and_token()?;
    println!("{}", crate::dlq::run(&action, &urls, &token, dlq.service.json).await?);
    Ok(())
}
