//! The `orderflow` command line. Parsing only; the work is in the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use orderflow::{App, AppConfig, settings};

#[derive(Parser)]
#[command(
    name = "orderflow",
    version,
    about = "Order, stock and payment services over an event stream"
)]
struct Cli {
    /// Log format: text or json.
    #[arg(long, global = true, env = "ORDERFLOW_LOG_FORMAT", default_value = "text")]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the three services and the embedded binder in one process.
    Up(Up),
    /// Run one service in its own process, on RocketMQ (name server from the YAML's
    /// `spring.cloud.stream.rocketmq.binder.name-server`, e.g. via ROCKETMQ_NAME_SERVER).
    Serve(Serve),
    /// Run a local RocketMQ name server and broker (for `serve` on one machine; needs
    /// scripts/install-rocketmq). Prints the name server address.
    Rocketmq {
        /// Where the broker keeps its store (kept across restarts).
        #[arg(long, default_value = "./data/rocketmq")]
        dir: PathBuf,
        /// Name server port (39876 is the seed YAML's default, so `serve` finds it as is).
        #[arg(long, default_value_t = 39876)]
        namesrv_port: u16,
    },
    /// Check the guarantees across the three services' databases; prints violations by
    /// order and product, and exits non-zero when there are any.
    Check {
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
    },
    /// Run the chaos scenario on a fresh system (embedded binder) and report orders, lost,
    /// double effects, invariant violations and time to quiesce; exits 1 unless clean.
    Soak(Soak),
    /// Drive a running system with orders over HTTP and report throughput, latency,
    /// messages/s, CPU and memory, against the raw binder and disk baselines.
    Bench(Bench),
    /// Work with the dead letters of running services (through their admin API).
    Dlq(Dlq),
    /// Validate service YAML files (the seed's application-rocketmq.yml) and print their bindings.
    CheckConfig {
        /// Files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(clap::Args)]
struct Bench {
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

#[derive(clap::Args)]
struct Soak {
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

#[derive(clap::Args)]
struct Dlq {
    #[command(subcommand)]
    action: DlqCommand,
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

#[derive(Subcommand)]
enum DlqCommand {
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

/// Token for `/admin/...` and `/api/admin/...` (`Authorization: Bearer <token>`).
#[derive(clap::Args)]
struct AdminArgs {
    /// At least 16 characters [default: the YAML's orderflow.admin.token, else random, printed at start].
    #[arg(long, env = "ORDERFLOW_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

/// The simulated payment provider (payment service).
#[derive(clap::Args)]
struct PaymentArgs {
    /// Simulated payment outcome: success or fail [default: success].
    #[arg(long, env = "ORDERFLOW_PAYMENT_OUTCOME")]
    payment_outcome: Option<String>,
    /// Simulated payment time in milliseconds [default: 0].
    #[arg(long, env = "ORDERFLOW_PAYMENT_DELAY_MS")]
    payment_delay_ms: Option<u64>,
}

#[derive(clap::Args)]
struct Serve {
    /// order, stock or payment.
    service: String,
    /// The service's application-rocketmq.yml (the seed's file, unchanged, works).
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

#[derive(clap::Args)]
struct Up {
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
    /// Do not create the demo catalogue.
    #[arg(long)]
    no_demo: bool,
    /// Inject faults into the binder, e.g. "duplicate=0.1,reorder=0.1,delay=0.05,delay-ms=20,fail=0.1,crash=0.1,seed=7".
    #[arg(long, env = "ORDERFLOW_CHAOS")]
    chaos: Option<String>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // A soak run injects failures on purpose: only errors are worth a log line there; a
    // bench prints its own progress.
    let default_filter = match cli.command {
        Command::Soak(_) => "error",
        Command::Bench(_) => "warn",
        _ => "info,sqlx=warn",
    };
    init_logging(&cli.log_format, default_filter);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(format: &str, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ORDERFLOW_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format.eq_ignore_ascii_case("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Up(up) => run_up(up).await,
        Command::Serve(serve) => run_serve(serve).await,
        Command::Check {
            data_dir,
            order_db,
            stock_db,
            payment_db,
            deadline_secs,
            grace_secs,
            json,
        } => {
            let open = |given: Option<String>, name: &'static str| {
                let location = given
                    .unwrap_or_else(|| data_dir.join(format!("{name}.db")).display().to_string());
                async move {
                    if !location.contains("://") && !std::path::Path::new(&location).is_file() {
                        anyhow::bail!(
                            "{location}: no such database (give --{name}-db or --data-dir)"
                        );
                    }
                    storage::Db::open(&location)
                        .await
                        .with_context(|| format!("{name} database {location}"))
                }
            };
            let (o, s, p) = (
                open(order_db, "order").await?,
                open(stock_db, "stock").await?,
                open(payment_db, "payment").await?,
            );
            let report = orderflow::check::check(
                &o,
                &s,
                &p,
                std::time::Duration::from_secs(deadline_secs),
                std::time::Duration::from_secs(grace_secs),
                events::now_millis(),
            )
            .await?;
            if json {
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
        Command::Rocketmq { dir, namesrv_port } => {
            let cluster = rocketmq_binder::LocalCluster::start_on(&dir, Some(namesrv_port)).await?;
            println!("RocketMQ is up (store in {})", dir.display());
            println!("  name server {}", cluster.name_server());
            println!("  export ROCKETMQ_NAME_SERVER={}", cluster.name_server());
            println!("Press Ctrl-C to stop.");
            shutdown_signal().await;
            cluster.stop().await;
            println!("stopped.");
            Ok(())
        }
        Command::Soak(soak) => run_soak(soak).await,
        Command::Bench(b) => {
            let duration = b.duration_secs.map(std::time::Duration::from_secs_f64);
            std::fs::create_dir_all(&b.scratch_dir)
                .with_context(|| format!("cannot create {}", b.scratch_dir.display()))?;
            let config = orderflow::bench::BenchConfig {
                service_urls: if b.service_urls.is_empty() { vec![b.url.clone()] } else { b.service_urls },
                order_url: b.url,
                stock_url: b.stock_url,
                admin_token: b.admin_token.context("the admin token is needed (stock is topped up): --admin-token or ORDERFLOW_ADMIN_TOKEN")?,
                rate: b.rate,
                concurrency: b.concurrency,
                count: b.count.or(if duration.is_none() { Some(2000) } else { None }),
                duration,
                product: b.product,
                scratch_dir: b.scratch_dir,
                baseline_messages: b.baseline_messages,
                raw_name_server: b.raw_name_server,
                settle_limit: std::time::Duration::from_secs(600),
            };
            let report = orderflow::bench::run(&config, &|line| eprintln!("bench: {line}")).await?;
            if b.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
            Ok(())
        }
        Command::Dlq(dlq) => {
            use orderflow::dlq::DlqAction;
            let action = match dlq.action {
                DlqCommand::List { limit } => DlqAction::List { limit },
                DlqCommand::Show { id } => DlqAction::Show(id),
                DlqCommand::Replay { id } => DlqAction::Replay(id),
                DlqCommand::Purge { id: Some(id), .. } => DlqAction::Purge(id),
                DlqCommand::Purge { id: None, .. } => DlqAction::PurgeAll,
            };
            let urls = if dlq.urls.is_empty() {
                orderflow::dlq::DEFAULT_URLS.iter().map(|u| u.to_string()).collect()
            } else {
                dlq.urls
            };
            let token = dlq
                .admin_token
                .context("the admin token is needed: --admin-token or ORDERFLOW_ADMIN_TOKEN")?;
            println!("{}", orderflow::dlq::run(&action, &urls, &token, dlq.json).await?);
            Ok(())
        }
        Command::CheckConfig { files } => {
            for file in files {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let config = binding::StreamConfig::from_yaml(&text)
                    .with_context(|| format!("{}", file.display()))?;
                println!("{}: ok", file.display());
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
    }
}

async fn run_up(up: Up) -> anyhow::Result<()> {
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
        storage: orderflow::Storage::Sqlite,
        binder: orderflow::BinderChoice::Embedded,
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
            up.payment.payment_outcome.as_deref(),
            up.payment.payment_delay_ms,
            &payment_stream,
        )?,
        order_stream,
        stock_stream,
        payment_stream,
        demo_products: !up.no_demo,
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
    if generated {
        println!(
            "  admin token (for /api/admin/..., /admin/...): {admin_token}   (set ORDERFLOW_ADMIN_TOKEN to choose it)"
        );
    }
    if !up.no_demo {
        let ids: Vec<String> = orderflow::DEMO_PRODUCTS.iter().map(|p| p.0.to_string()).collect();
        println!("  demo products: {}", ids.join(", "));
    }
    println!("Press Ctrl-C to stop.");
    shutdown_signal().await;
    println!("stopping: finishing in-flight work...");
    app.shutdown().await;
    println!("stopped.");
    Ok(())
}

async fn run_soak(args: Soak) -> anyhow::Result<()> {
    use orderflow::soak;
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
    let mut databases = Vec::new();
    let storage = match &args.postgres {
        None => orderflow::Storage::Sqlite,
        Some(server) => {
            let tag = format!("{:x}", events::now_millis());
            let mut url = |svc: &str| {
                let name = format!("orderflow_soak_{tag}_{svc}");
                databases.push(name.clone());
                let server = server.clone();
                async move {
                    storage::Db::create_postgres_database(&server, &name)
                        .await
                        .with_context(|| format!("creating database {name}"))
                }
            };
            let (order, stock, payment) =
                (url("order").await?, url("stock").await?, url("payment").await?);
            orderflow::Storage::Postgres { order, stock, payment }
        }
    };
    let (admin_token, _) = settings::admin_token(None, &order_stream)?;
    let any: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
    let config = AppConfig {
        admin_token: admin_token.clone(),
        data_dir: data_dir.clone(),
        storage,
        binder: orderflow::BinderChoice::Embedded,
        order_addr: any,
        stock_addr: any,
        payment_addr: any,
        payment: settings::payment(None, None, &payment_stream)?,
        order_stream,
        stock_stream,
        payment_stream,
        demo_products: true,
    };
    let load = soak::SoakLoad {
        orders: args.orders,
        units: args.units.unwrap_or((args.orders as i64 * 2) / 3),
        concurrency: args.concurrency,
        settle_limit: std::time::Duration::from_secs(args.settle_limit_secs),
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
    if let Some(server) = &args.postgres {
        for name in &databases {
            storage::Db::drop_postgres_database(server, name).await?;
        }
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

async fn run_serve(args: Serve) -> anyhow::Result<()> {
    let service = orderflow::ServiceName::parse(&args.service)
        .with_context(|| format!("service {:?}: must be order, stock or payment", args.service))?;
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read {}", args.config.display()))?;
    let stream = binding::StreamConfig::from_yaml(&text)
        .with_context(|| format!("{}: invalid configuration", args.config.display()))?;
    let default_addr = match service {
        orderflow::ServiceName::Order => "127.0.0.1:8081",
        orderflow::ServiceName::Stock => "127.0.0.1:8082",
        orderflow::ServiceName::Payment => "127.0.0.1:8083",
    };
    let database = match args.database {
        Some(d) => d,
        None => {
            std::fs::create_dir_all(&args.data_dir).with_context(|| {
                format!("cannot create data directory {}", args.data_dir.display())
            })?;
            args.data_dir.join(format!("{}.db", args.service)).display().to_string()
        }
    };
    let (admin_token, generated) =
        settings::admin_token(args.admin.admin_token.as_deref(), &stream)?;
    let config = orderflow::ServeConfig {
        admin_token: admin_token.clone(),
        service,
        http_addr: settings::address(args.http_addr.as_deref(), &stream, default_addr, "http")?,
        payment: settings::payment(
            args.payment.payment_outcome.as_deref(),
            args.payment.payment_delay_ms,
            &stream,
        )?,
        stream,
        database,
        demo_products: !args.no_demo,
    };
    let serving = orderflow::Serving::start(config).await?;
    println!("{} service is up on RocketMQ", args.service);
    println!("  {} {}", args.service, serving.url);
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

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
