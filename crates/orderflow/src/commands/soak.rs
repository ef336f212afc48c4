//! `orderflow soak`: the chaos scenario on a fresh system (embedded binder), reporting
//! orders, lost, double effects, invariant violations and time to quiesce; exits 1 unless
//! clean.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use storage::Db;

use crate::{App, AppConfig, BinderChoice, Storage, settings, soak};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Orders to place.
    #[arg(long, default_value_t = 2000)]
    orders: usize,
    /// Units of product 1002 on offer [default: two thirds of --orders, so a third are cancelled].
    #[arg(long)]
    units: Option<i64>,
    /// Faults to inject (see `up --chaos`).
    #[arg(
        long,
        default_value = "duplicate=1,reorder=0.1,delay=0.02,delay-ms=10,fail=0.1,crash=0.1,seed=1"
    )]
    chaos: String,
    /// Orders in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Give up waiting for the orders to settle after this many seconds.
    #[arg(long, default_value_t = 600)]
    settle_limit_secs: u64,
    /// Keep the SQLite files here [default: a temporary directory, removed after].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Run the services on PostgreSQL (three fresh databases on this server, dropped after).
    #[arg(long)]
    postgres: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Three fresh PostgreSQL databases on `server` for one run, named after the time.
struct RunDatabases {
    server: String,
    names: Vec<String>,
}

impl RunDatabases {
    async fn create(server: &str) -> anyhow::Result<(RunDatabases, Storage)> {
        let tag = format!("{:x}", events::now_millis());
        let mut dbs = RunDatabases { server: server.to_owned(), names: Vec::new() };
        let mut urls = Vec::new();
        for svc in ["order", "stock", "payment"] {
            let name = format!("orderflow_soak_{tag}_{svc}");
            let url = Db::create_postgres_database(server, &name)
                .await
                .with_context(|| format!("creating database {name}"))?;
            dbs.names.push(name);
            urls.push(url);
        }
        let [order, stock, payment] =
            <[String; 3]>::try_from(urls).map_err(|_| anyhow::anyhow!("three databases"))?;
        Ok((dbs, Storage::Postgres { order, stock, payment }))
    }

    async fn drop_all(&self) -> anyhow::Result<()> {
        for name in &self.names {
            Db::drop_postgres_database(&self.server, name).await?;
        }
        Ok(())
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let chaos: binding::chaos::ChaosConfig =
        args.chaos.parse().map_err(|e| anyhow::anyhow!("--chaos: {e}"))?;
    anyhow::ensure!(args.orders > 0, "--orders: must be at least 1");
    let temp = tempfile::tempdir().context("cannot create a temporary directory")?;
    let data_dir = args.data_dir.clone().unwrap_or_else(|| temp.path().to_owned());
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let mut streams = Vec::new();
    for (file, yaml) in settings::FILES {
        let mut s = settings::load_stream(None, file, yaml)?;
        soak::tune_for_chaos(&mut s);
        streams.push(s);
    }
    let [order_stream, stock_stream, payment_stream]: [binding::StreamConfig; 3] =
        streams.try_into().map_err(|_| anyhow::anyhow!("three service configurations"))?;
    let (databases, storage) = match &args.postgres {
        None => (None, Storage::Sqlite),
        Some(server) => {
            let (dbs, storage) = RunDatabases::create(server).await?;
            (Some(dbs), storage)
        }
    };
    let (admin_token, _) = settings::admin_token(None, &order_stream)?;
    let any: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
    let config = AppConfig {
        admin_token: admin_token.clone(),
        data_dir: data_dir.clone(),
        storage,
        binder: BinderChoice::Embedded,
        order_addr: any,
        stock_addr: any,
        payment_addr: any,
        payment: settings::payment(None, None, &payment_stream)?,
        order_stream,
        stock_stream,
        payment_stream,
        demo_products: true,
        console: None,
    };
    let load = soak::SoakLoad {
        orders: args.orders,
        units: args.units.unwrap_or((args.orders as i64 * 2) / 3),
        concurrency: args.concurrency,
        settle_limit: Duration::from_secs(args.settle_limit_secs),
    };
    eprintln!(
        "soak: {} orders, {} units, chaos {chaos:?}, data in {}",
        load.orders,
        load.units,
        data_dir.display()
    );
    let app = App::start_with(config, move |b| {
        std::sync::Arc::new(binding::chaos::ChaosBinder::new(b, chaos))
    })
    .await?;
    let result = soak::run(&app, &admin_token, &load, &|line| eprintln!("soak: {line}")).await;
    app.shutdown().await;
    if let Some(dbs) = &databases {
        dbs.drop_all().await?;
    }
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    anyhow::ensure!(
        report.clean(),
        "the soak run found {} lost, {} doubled, {} violations",
        report.lost,
        report.double_effects,
        report.violations.len()
    );
    Ok(())
}
