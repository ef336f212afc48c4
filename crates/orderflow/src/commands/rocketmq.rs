//! `orderflow rocketmq`: a local RocketMQ name server and broker, for `serve` on one machine.

use std::path::PathBuf;

use super::shutdown_signal;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where the broker keeps its store (kept across restarts).
    #[arg(long, default_value = "./data/rocketmq")]
    dir: PathBuf,
    /// Name server port (39876 is the services' YAML default, so `serve` finds it as is).
    #[arg(long, default_value_t = 39876)]
    namesrv_port: u16,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let cluster =
        rocketmq_binder::LocalCluster::start_on(&args.dir, Some(args.namesrv_port)).await?;
    println!("RocketMQ is up (store in {})", args.dir.display());
    println!("  name server {}", cluster.name_server());
    println!("  export ROCKETMQ_NAME_SERVER={}", cluster.name_server());
    println!("Press Ctrl-C to stop.");
    shutdown_signal().await;
    cluster.stop().await;
    println!("stopped.");
    Ok(())
}
