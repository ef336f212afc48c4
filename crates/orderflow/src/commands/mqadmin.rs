//! `orderflow mqadmin`: RocketMQ's admin commands, under mqadmin's names and flags, asked of
//! the running services (so they work on either binder).

use crate::admin_api;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
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
    /// Per consumer group, topic and queue: the broker's offset, the group's offset and the
    /// difference (messages not yet acknowledged); a Diff Total per group.
    #[command(name = "consumerProgress")]
    ConsumerProgress {
        /// The consumer group [default: every group the services consume as].
        #[arg(short = 'g', long = "consumerGroup")]
        group: Option<String>,
    },
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let urls = admin_api::urls_or_default(args.urls);
    let token = admin_api::token(args.admin_token)?;
    let out = match args.command {
        Command::ConsumerProgress { group } => {
            crate::mqadmin::consumer_progress(
                &urls,
                &token,
                group.as_deref(),
                args.json,
                events::now_millis(),
            )
            .await?
        }
    };
    println!("{out}");
    Ok(())
}
