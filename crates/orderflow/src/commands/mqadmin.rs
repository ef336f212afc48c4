//! `orderflow mqadmin`: RocketMQ's admin commands, under mqadmin's names and flags, asked of
//! the running services (so they work on either binder).

use super::ServiceAdmin;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    service: ServiceAdmin,
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
    let (urls, token) = args.service.urls_and_token()?;
    let out = match args.command {
        Command::ConsumerProgress { group } => {
            crate::mqadmin::consumer_progress(
                &urls,
                &token,
                group.as_deref(),
                args.service.json,
                events::now_millis(),
            )
            .await?
        }
    };
    println!("{out}");
    Ok(())
}
