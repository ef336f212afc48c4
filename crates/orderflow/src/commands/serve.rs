//! `orderflow serve`: one service in its own process, on RocketMQ.

use std::path::PathBuf;

use anyhow::Context;

use crate::{ServeConfig, ServiceName, Serving, settings};

use super::{AdminArgs, PaymentArgs, shutdown_signal};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The service to run.
    #[arg(value_enum)]
    pub service: ServiceName,
    /// The service's application-rocketmq.yml (the Java service's file, unchanged, works).
    #[arg(long, env = "ORDERFLOW_CONFIG")]
    config: PathBuf,
    /// A postgres:// URL or a SQLite file path [default: <data-dir>/<service>.db].
    #[arg(long, env = "ORDERFLOW_DATABASE")]
    database: Option<String>,
    /// Where the default SQLite file goes.
    #[arg(long, env = "ORDERFLOW_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// HTTP address [default: the YAML's orderflow.http.address, else 127.0.0.1:8081/8082/8083].
    #[arg(long, env = "ORDERFLOW_HTTP_ADDR")]
    http_addr: Option<String>,
    #[command(flatten)]
    payment: PaymentArgs,
    #[command(flatten)]
    admin: AdminArgs,
    /// Do not create the demo catalogue (order) or demo stock (stock).
    #[arg(long)]
    no_demo: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let service = args.service;
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read {}", args.config.display()))?;
    let stream = binding::StreamConfig::from_yaml(&text)
        .with_context(|| format!("{}: invalid configuration", args.config.display()))?;
    let database = match args.database {
        Some(d) => d,
        None => {
            std::fs::create_dir_all(&args.data_dir).with_context(|| {
                format!("cannot create data directory {}", args.data_dir.display())
            })?;
            args.data_dir.join(format!("{}.db", service.as_str())).display().to_string()
        }
    };
    let (admin_token, generated) =
        settings::admin_token(args.admin.admin_token.as_deref(), &stream)?;
    let config = ServeConfig {
        admin_token: admin_token.clone(),
        service,
        http_addr: settings::address(
            args.http_addr.as_deref(),
            &stream,
            service.default_address(),
            "http",
        )?,
        payment: settings::payment(
            args.payment.payment_outcome,
            args.payment.payment_delay_ms,
            &stream,
        )?,
        stream,
        database,
        demo_products: !args.no_demo,
    };
    let serving = Serving::start(config).await?;
    println!("{} service is up on RocketMQ", service.as_str());
    println!("  {} {}", service.as_str(), serving.url);
    if generated {
        println!("  admin token: {admin_token}   (set ORDERFLOW_ADMIN_TOKEN to choose it)");
    }
    println!("Press Ctrl-C to stop.");
    shutdown_signal().await;
    println!("stopping: finishing in-flight work...");
    serving.shutdown().await;
    println!("stopped.");
    Ok(())
}
