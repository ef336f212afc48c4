//! `orderflow check`: the guarantees checked across the three services' databases.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use storage::Db;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where `up` keeps its SQLite files (order.db, stock.db, payment.db).
    #[arg(long, env = "ORDERFLOW_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// The order service's database (postgres:// URL or SQLite path) [default: <data-dir>/order.db].
    #[arg(long)]
    order_db: Option<String>,
    /// The stock service's database [default: <data-dir>/stock.db].
    #[arg(long)]
    stock_db: Option<String>,
    /// The payment service's database [default: <data-dir>/payment.db].
    #[arg(long)]
    payment_db: Option<String>,
    /// An order still PENDING after this many seconds is a violation (the compensation
    /// job cancels at 600 s by default).
    #[arg(long, default_value_t = 900)]
    deadline_secs: u64,
    /// On a live system: leave orders changed in the last this-many seconds for later
    /// (their last events may be in flight).
    #[arg(long, default_value_t = 0)]
    grace_secs: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Opens `given`, else `<data-dir>/<name>.db`, which must exist (a check creates nothing).
async fn open(data_dir: &std::path::Path, given: Option<String>, name: &str) -> anyhow::Result<Db> {
    let location =
        given.unwrap_or_else(|| data_dir.join(format!("{name}.db")).display().to_string());
    if !location.contains("://") && !std::path::Path::new(&location).is_file() {
        anyhow::bail!("{location}: no such database (give --{name}-db or --data-dir)");
    }
    Db::open(&location).await.with_context(|| format!("{name} database {location}"))
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let o = open(&args.data_dir, args.order_db, "order").await?;
    let s = open(&args.data_dir, args.stock_db, "stock").await?;
    let p = open(&args.data_dir, args.payment_db, "payment").await?;
    let report = crate::check::check(
        &o,
        &s,
        &p,
        Duration::from_secs(args.deadline_secs),
        Duration::from_secs(args.grace_secs),
        events::now_millis(),
    )
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "checked {} orders and {} products: {} violations",
            report.orders,
            report.products,
            report.violations.len()
        );
        for v in &report.violations {
            println!("  {}: {}", v.subject, v.problem);
        }
    }
    if report.violations.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{} violations", report.violations.len())
    }
}
