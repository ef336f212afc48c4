//! `orderflow check-config`: validates service YAML files and prints their bindings.

use std::path::PathBuf;

use anyhow::Context;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Files to check.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    for file in args.files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let config = binding::StreamConfig::from_yaml(&text)
            .with_context(|| format!("{}", file.display()))?;
        let retention = binding::Retention::from_config(&config)
            .with_context(|| format!("{}", file.display()))?;
        println!("{}: ok", file.display());
        let dead_letters = retention
            .dead_letters
            .map_or("until purged".to_owned(), |d| humantime::format_duration(d).to_string());
        println!(
            "  retention messages={} dead-letters={} inbox={}",
            humantime::format_duration(retention.messages),
            dead_letters,
            humantime::format_duration(retention.inbox)
        );
        for b in config.consumers.values() {
            println!(
                "  in   {:<32} {} <- {} [{}] orderly={} max-attempts={} concurrency={} batch-size={}",
                b.name,
                b.group,
                b.destination,
                b.subscription,
                b.orderly,
                b.max_attempts,
                b.concurrency,
                b.batch_size
            );
        }
        for p in config.producers.values() {
            println!(
                "  out  {:<32} -> {} (group {})",
                p.name,
                p.destination,
                p.group.as_deref().unwrap_or("-")
            );
        }
    }
    Ok(())
}
