//! `orderflow bench`: drives a running system over HTTP and reports throughput, latency,
//! messages/s, CPU and memory against the raw binder and disk baselines.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;

use crate::bench::BenchConfig;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The order service.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    url: String,
    /// The stock service (its admin API tops up the product's stock first).
    #[arg(long, default_value = "http://127.0.0.1:8082")]
    stock_url: String,
    /// One URL per process to read /metrics from and measure (repeat; default: --url, right
    /// for `up`; give all three for the distributed topology).
    #[arg(long = "service-url")]
    service_urls: Vec<String>,
    #[arg(long, env = "ORDERFLOW_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Orders per second (open loop) [default: flat out].
    #[arg(long)]
    rate: Option<f64>,
    /// HTTP clients.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Orders to place [default: 2000 unless --duration-secs is given].
    #[arg(long)]
    count: Option<usize>,
    /// Place orders for this long instead of a count.
    #[arg(long)]
    duration_secs: Option<f64>,
    /// The product every order buys.
    #[arg(long, default_value_t = 1002)]
    product: i64,
    /// Where the baselines write: put it on the system's disk.
    #[arg(long, default_value = "./data")]
    scratch_dir: PathBuf,
    /// Messages for the raw binder round trip (0 skips the baselines).
    #[arg(long, default_value_t = 2000)]
    baseline_messages: usize,
    /// Measure the raw round trip on RocketMQ (this name server) instead of the embedded binder.
    #[arg(long)]
    raw_name_server: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(b: Args) -> anyhow::Result<()> {
    let duration = b.duration_secs.map(Duration::from_secs_f64);
    std::fs::create_dir_all(&b.scratch_dir)
        .with_context(|| format!("cannot create {}", b.scratch_dir.display()))?;
    let config = BenchConfig {
        service_urls: if b.service_urls.is_empty() { vec![b.url.clone()] } else { b.service_urls },
        order_url: b.url,
        stock_url: b.stock_url,
        admin_token: b.admin_token.context(
            "the admin token is needed (stock is topped up): --admin-token or ORDERFLOW_ADMIN_TOKEN",
        )?,
        rate: b.rate,
        concurrency: b.concurrency,
        count: b.count.or(if duration.is_none() { Some(2000) } else { None }),
        duration,
        product: b.product,
        scratch_dir: b.scratch_dir,
        baseline_messages: b.baseline_messages,
        raw_name_server: b.raw_name_server,
        settle_limit: Duration::from_secs(600),
    };
    let report = crate::bench::run(&config, &|line| eprintln!("bench: {line}")).await?;
    if b.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}
