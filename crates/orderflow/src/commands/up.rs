//! `orderflow up`: the three services and the embedded binder in one process.

use std::path::PathBuf;

use crate::{App, AppConfig, BinderChoice, Storage, mount::DEMO_PRODUCTS, settings};

use super::{AdminArgs, ConsoleArgs, PaymentArgs, shutdown_signal};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where the SQLite files live (broker.db, order.db, stock.db, payment.db).
    #[arg(long, env = "ORDERFLOW_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Directory with order-service.yml, stock-service.yml, payment-service.yml (default: built in).
    #[arg(long, env = "ORDERFLOW_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// Order service HTTP address [default: 127.0.0.1:8081].
    #[arg(long, env = "ORDERFLOW_ORDER_ADDR")]
    order_addr: Option<String>,
    /// Stock service HTTP address [default: 127.0.0.1:8082].
    #[arg(long, env = "ORDERFLOW_STOCK_ADDR")]
    stock_addr: Option<String>,
    /// Payment service HTTP address [default: 127.0.0.1:8083].
    #[arg(long, env = "ORDERFLOW_PAYMENT_ADDR")]
    payment_addr: Option<String>,
    #[command(flatten)]
    payment: PaymentArgs,
    #[command(flatten)]
    admin: AdminArgs,
    #[command(flatten)]
    console: ConsoleArgs,
    /// Do not serve the web console.
    #[arg(long)]
    no_console: bool,
    /// Do not create the demo catalogue.
    #[arg(long)]
    no_demo: bool,
    /// Inject faults into the binder, e.g. "duplicate=0.1,reorder=0.1,delay=0.05,delay-ms=20,fail=0.1,crash=0.1,seed=7".
    #[arg(long, env = "ORDERFLOW_CHAOS")]
    chaos: Option<String>,
}

pub async fn run(up: Args) -> anyhow::Result<()> {
    let dir = up.config_dir.as_deref();
    let [(of, oy), (sf, sy), (pf, py)] = settings::FILES;
    let order_stream = settings::load_stream(dir, of, oy)?;
    let stock_stream = settings::load_stream(dir, sf, sy)?;
    let payment_stream = settings::load_stream(dir, pf, py)?;
    let (admin_token, generated) =
        settings::admin_token(up.admin.admin_token.as_deref(), &order_stream)?;
    let config = AppConfig {
        admin_token: admin_token.clone(),
        data_dir: up.data_dir.clone(),
        storage: Storage::Sqlite,
        binder: BinderChoice::Embedded,
        order_addr: settings::address(
            up.order_addr.as_deref(),
            &order_stream,
            "127.0.0.1:8081",
            "order",
        )?,
        stock_addr: settings::address(
            up.stock_addr.as_deref(),
            &stock_stream,
            "127.0.0.1:8082",
            "stock",
        )?,
        payment_addr: settings::address(
            up.payment_addr.as_deref(),
            &payment_stream,
            "127.0.0.1:8083",
            "payment",
        )?,
        payment: settings::payment(
            up.payment.payment_outcome,
            up.payment.payment_delay_ms,
            &payment_stream,
        )?,
        order_stream,
        stock_stream,
        payment_stream,
        demo_products: !up.no_demo,
        console: match up.no_console {
            true => None,
            false => Some(up.console.settings(&admin_token)?),
        },
    };
    let chaos = match up.chaos.as_deref() {
        Some(text) => Some(
            text.parse::<binding::chaos::ChaosConfig>()
                .map_err(|e| anyhow::anyhow!("--chaos: {e}"))?,
        ),
        None => None,
    };
    let app = match chaos.clone() {
        Some(c) => {
            App::start_with(config, move |b| {
                std::sync::Arc::new(binding::chaos::ChaosBinder::new(b, c))
            })
            .await?
        }
        None => App::start(config).await?,
    };
    println!("orderflow is up (embedded binder, data in {})", up.data_dir.display());
    if let Some(c) = &chaos {
        println!("  CHAOS: {c:?}");
    }
    println!(
        "  order    {}   POST /api/orders, GET /api/orders/{{orderNo}}, GET /api/products",
        app.order_url
    );
    println!(
        "  stock    {}   GET /api/stock/{{productId}}, PUT /api/admin/stock/{{productId}}",
        app.stock_url
    );
    println!("  payment  {}   GET /api/payments?orderNo=", app.payment_url);
    println!("  each also serves /health, /ready, /metrics, /admin/bindings and /admin/dlq");
    if let Some(url) = &app.console_url {
        println!("  console  {url}/   (sign in with the admin token)");
    }
    if generated {
        println!(
            "  admin token (for /api/admin/..., /admin/...): {admin_token}   (set ORDERFLOW_ADMIN_TOKEN to choose it)"
        );
    }
    if !up.no_demo {
        let ids: Vec<String> = DEMO_PRODUCTS.iter().map(|p| p.0.to_string()).collect();
        println!("  demo products: {}", ids.join(", "));
    }
    println!("Press Ctrl-C to stop.");
    shutdown_signal().await;
    println!("stopping: finishing in-flight work...");
    app.shutdown().await;
    println!("stopped.");
    Ok(())
}
