//! `orderflow up`: the three services and the embedded binder in one process.
//!
//! [`App::start`] is the builder tests drive: it takes a data directory and listen addresses
//! (port 0 works), opens `broker.db` and one SQLite file per service in the data directory,
//! binds every consumer before any HTTP request can arrive, seeds the demo catalogue on first
//! start, and serves each service's API on its own address. [`App::shutdown`] stops taking
//! requests, lets in-flight batches settle, stops the relays and closes the databases;
//! everything committed is durable, so a new `App` on the same directory carries on with
//! whatever was in flight (outboxes are relayed, unacknowledged deliveries redelivered).

pub mod bench;
pub mod check;
pub mod dlq;
pub mod settings;
pub mod soak;

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context;
use axum::{Router, extract::DefaultBodyLimit};
use binding::{Binder, Metrics, StreamConfig};
use embedded::EmbeddedBinder;
use httpkit::{BODY_LIMIT, Ops};
use order::OrderService;
use payment::{PaymentService, PaymentSettings};
use rocketmq_binder::{RocketMqBinder, RocketMqSettings};
use rust_decimal::Decimal;
use stock::StockService;
use storage::Db;
use stream::ServiceHost;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Where the services keep their state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// `order.db`, `stock.db`, `payment.db` in the data directory.
    Sqlite,
    /// One PostgreSQL database URL per service.
    Postgres { order: String, stock: String, payment: String },
}

/// Which broker the services talk through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BinderChoice {
    /// `broker.db` in the data directory, in process.
    Embedded,
    /// A RocketMQ cluster, reached through its name server.
    RocketMq { name_server: String },
}

/// Everything `up` needs to know.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// What `/admin/...` and `/api/admin/...` requests must present (`Authorization: Bearer`).
    pub admin_token: String,
    pub binder: BinderChoice,
    /// Holds `broker.db` (the embedded binder) and, with [`Storage::Sqlite`], the services' files.
    pub data_dir: PathBuf,
    pub storage: Storage,
    pub order_addr: SocketAddr,
    pub stock_addr: SocketAddr,
    pub payment_addr: SocketAddr,
    pub order_stream: StreamConfig,
    pub stock_stream: StreamConfig,
    pub payment_stream: StreamConfig,
    pub payment: PaymentSettings,
    /// Create the demo catalogue (products 1001..=1004) when the catalogue is empty.
    pub demo_products: bool,
}

/// A product of the demo catalogue: id, name, price, units in stock.
pub const DEMO_PRODUCTS: &[(i64, &str, &str, i64)] = &[
    (1001, "Mechanical keyboard", "69.95", 100),
    (1002, "USB-C cable", "9.90", 500),
    (1003, "27-inch monitor", "199.00", 20),
    (1004, "Limited edition figure", "49.50", 3),
];

/// The background work of a running process and the order in which it stops.
struct Tasks {
    token: CancellationToken,
    /// Relays, payment completer.
    tracker: TaskTracker,
    /// HTTP servers.
    servers: TaskTracker,
}

impl Tasks {
    fn new() -> Tasks {
        Tasks {
            token: CancellationToken::new(),
            tracker: TaskTracker::new(),
            servers: TaskTracker::new(),
        }
    }

    /// HTTP first (no new requests), then the consumers (in-flight batches settle), then the
    /// relays and timers. Everything committed is durable, so nothing is lost.
    async fn stop(&self, binder: &dyn Binder) {
        self.token.cancel();
        self.servers.close();
        self.servers.wait().await;
        binder.shutdown().await;
        self.tracker.close();
        self.tracker.wait().await;
    }
}

pub struct App {
    pub order_url: String,
    pub stock_url: String,
    pub payment_url: String,
    /// The embedded binder itself, when it is the one in use (for inspection).
    pub broker: Option<EmbeddedBinder>,
    pub binder: Arc<dyn Binder>,
    pub metrics: Metrics,
    pub order: Arc<OrderService>,
    pub stock: Arc<StockService>,
    pub payment: Arc<PaymentService>,
    invariants: check::Gauges,
    tasks: Tasks,
}

impl App {
    pub async fn start(config: AppConfig) -> anyhow::Result<App> {
        Self::start_with(config, |b| b).await
    }

    /// Starts with the binder wrapped by `wrap` (fault injection in tests).
    pub async fn start_with(
        config: AppConfig,
        wrap: impl FnOnce(Arc<dyn Binder>) -> Arc<dyn Binder>,
    ) -> anyhow::Result<App> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create data directory {}", dir.display()))?;
        let metrics = Metrics::new();
        let embedded = usize::from(matches!(config.binder, BinderChoice::Embedded));
        Db::plan_sqlite_databases(
            embedded + if matches!(config.storage, Storage::Sqlite) { 3 } else { 0 },
        );
        let (broker, inner): (Option<EmbeddedBinder>, Arc<dyn Binder>) = match &config.binder {
            BinderChoice::Embedded => {
                let b = EmbeddedBinder::open(&dir.join("broker.db"), metrics.clone())
                    .await
                    .context("embedded binder")?;
                (Some(b.clone()), Arc::new(b))
            }
            BinderChoice::RocketMq { name_server } => {
                let streams = [&config.order_stream, &config.stock_stream, &config.payment_stream];
                let settings = RocketMqSettings {
                    name_server: name_server.clone(),
                    producer_group: "orderflow-producer-group".into(),
                    topics: events::EventType::ALL.iter().map(|t| t.topic().to_owned()).collect(),
                    max_consume_threads: streams
                        .iter()
                        .flat_map(|s| s.consumers.values())
                        .map(|b| b.concurrency)
                        .sum::<usize>()
                        + 8,
                };
                let b = RocketMqBinder::connect(settings, metrics.clone())
                    .await
                    .context("RocketMQ binder")?;
                (None, Arc::new(b))
            }
        };
        let binder = wrap(inner);
        let tasks = Tasks::new();
        let (token, tracker) = (&tasks.token, &tasks.tracker);

        let host = |name: &'static str,
                    migrations: &'static [&'static str],
                    stream: StreamConfig| {
            let (binder, metrics, tracker, token) =
                (binder.clone(), metrics.clone(), tracker.clone(), token.clone());
            let location = match &config.storage {
                Storage::Sqlite => dir.join(format!("{name}.db")).display().to_string(),
                Storage::Postgres { order, stock, payment } => match name {
                    order::SERVICE => order.clone(),
                    stock::SERVICE => stock.clone(),
                    _ => payment.clone(),
                },
            };
            async move {
                let db = Db::open(&location)
                    .await
                    .with_context(|| format!("{name} service database"))?;
                ServiceHost::open(name, db, migrations, stream, binder, metrics, &tracker, token)
                    .await
                    .map(Arc::new)
                    .with_context(|| format!("{name} service"))
            }
        };
        let order_host =
            host(order::SERVICE, order::store::MIGRATIONS, config.order_stream.clone()).await?;
        let stock_host =
            host(stock::SERVICE, stock::store::MIGRATIONS, config.stock_stream.clone()).await?;
        let payment_host =
            host(payment::SERVICE, payment::store::MIGRATIONS, config.payment_stream.clone())
                .await?;

        let stock = StockService::start(stock_host.clone(), tracker, token.clone())
            .await
            .context("stock service")?;
        let payment = PaymentService::start(
            payment_host.clone(),
            config.payment.clone(),
            tracker,
            token.clone(),
        )
        .await
        .context("payment service")?;
        let order = OrderService::start(order_host.clone(), tracker, token.clone())
            .await
            .context("order service")?;
        binder.start().await.context("starting the consumers")?;
        if config.demo_products {
            seed_catalogue(&order.host).await.context("demo catalogue")?;
            seed_stock(&stock.host).await.context("demo stock")?;
        }

        let cancel_after =
            order::compensation::CompensationSettings::from_config(&config.order_stream)?
                .cancel_after;
        let invariants = check::Gauges::new(
            [order.host.db.clone(), stock.host.db.clone(), payment.host.db.clone()],
            metrics.clone(),
            cancel_after + std::time::Duration::from_secs(60),
        );
        tracker.spawn(invariants.clone().run(token.clone()));

        let servers = &tasks.servers;
        let admin: Arc<str> = Arc::from(config.admin_token.as_str());
        let order_ops: Arc<dyn Ops> = Arc::new(OrderOps(order_host.clone()));
        let order_url = serve(
            servers,
            token,
            &admin,
            config.order_addr,
            order::http::routes(order.clone()),
            order_ops,
            order_host,
        )
        .await?;
        let stock_url = serve(
            servers,
            token,
            &admin,
            config.stock_addr,
            stock::http::routes(stock.clone()),
            Arc::new(HostOps(stock_host.clone())),
            stock_host,
        )
        .await?;
        let payment_url = serve(
            servers,
            token,
            &admin,
            config.payment_addr,
            payment::http::routes(payment.clone()),
            Arc::new(HostOps(payment_host.clone())),
            payment_host,
        )
        .await?;
        Ok(App {
            order_url,
            stock_url,
            payment_url,
            broker,
            binder,
            metrics,
            order,
            stock,
            payment,
            invariants,
            tasks,
        })
    }

    /// True when nothing is in flight: every outbox is empty, no payment waits for
    /// completion, every bound group has acknowledged (or dead-lettered) as many messages of
    /// its topic as were published — and no message moved while this was checked. Counts
    /// are this process's, so this holds for `up`, where every publisher is in process.
    pub async fn is_quiet(&self) -> anyhow::Result<bool> {
        use binding::metrics::{CONSUMED, DEAD_LETTERED, FAILED, PUBLISHED};
        let moved = || [PUBLISHED, CONSUMED, FAILED, DEAD_LETTERED].map(|n| self.metrics.total(n));
        let before = moved();
        let hosts = [&self.order.host, &self.stock.host, &self.payment.host];
        for host in hosts {
            if stream::outbox::Outbox::backlog(&host.db).await? > 0 {
                return Ok(false);
            }
        }
        if payment::store::pending(self.payment.host.db.reader()).await? > 0 {
            return Ok(false);
        }
        if let Some(broker) = &self.broker
            && broker.pending().await? > 0
        {
            return Ok(false);
        }
        for b in hosts.iter().flat_map(|h| h.bindings()) {
            let (topic, group) = (b.binding.destination.as_str(), b.binding.group.as_str());
            let labels = [("topic", topic), ("group", group)];
            let settled =
                self.metrics.get(CONSUMED, &labels) + self.metrics.get(DEAD_LETTERED, &labels);
            if settled < self.metrics.get(PUBLISHED, &[("topic", topic)]) {
                return Ok(false);
            }
        }
        Ok(moved() == before)
    }

    /// Runs the invariant checker as of `now_millis` and refreshes the
    /// `orderflow_invariant_*` gauges (done every [`check::GAUGE_INTERVAL`] anyway).
    pub async fn refresh_invariants(&self, now_millis: i64) -> anyhow::Result<check::Report> {
        self.invariants.refresh(now_millis).await
    }

    /// Stops gracefully (see [`Tasks::stop`]), then closes the databases.
    pub async fn shutdown(self) {
        self.tasks.stop(self.binder.as_ref()).await;
        for host in [&self.order.host, &self.stock.host, &self.payment.host] {
            host.db.close().await;
        }
    }
}

/// The demo prices, when the order service's catalogue is empty.
async fn seed_catalogue(host: &ServiceHost) -> anyhow::Result<()> {
    if !order::store::products(host.db.reader()).await?.is_empty() {
        return Ok(());
    }
    let mut tx = storage::Tx::begin(&host.db).await?;
    for &(id, name, price, _) in DEMO_PRODUCTS {
        let price: Decimal = price.parse().context("demo price")?;
        order::store::upsert_product(
            &mut tx,
            &order::store::Product { id, name: name.into(), price },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The demo units of the products stock does not know yet.
async fn seed_stock(host: &ServiceHost) -> anyhow::Result<()> {
    let mut tx = storage::Tx::begin(&host.db).await?;
    for &(id, _, _, units) in DEMO_PRODUCTS {
        if stock::store::product(host.db.reader(), id).await?.is_none() {
            stock::store::set_available(&mut tx, id, units).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Which service `orderflow serve` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceName {
    Order,
    Stock,
    Payment,
}

impl ServiceName {
    pub fn parse(s: &str) -> Option<ServiceName> {
        match s {
            "order" => Some(ServiceName::Order),
            "stock" => Some(ServiceName::Stock),
            "payment" => Some(ServiceName::Payment),
            _ => None,
        }
    }
}

/// One service in its own process, on RocketMQ (`orderflow serve`).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub service: ServiceName,
    /// The service's `application-rocketmq.yml`; its `name-server` says where RocketMQ is.
    pub stream: StreamConfig,
    /// A `postgres://` URL or a SQLite file path.
    pub database: String,
    pub http_addr: SocketAddr,
    pub payment: PaymentSettings,
    pub demo_products: bool,
    /// See [`AppConfig::admin_token`].
    pub admin_token: String,
}

/// A running `orderflow serve`.
pub struct Serving {
    pub url: String,
    pub metrics: Metrics,
    binder: Arc<dyn Binder>,
    host: Arc<ServiceHost>,
    tasks: Tasks,
}

impl Serving {
    pub async fn start(config: ServeConfig) -> anyhow::Result<Serving> {
        let stream = &config.stream;
        let name_server = stream.name_server.clone().context(
            "spring.cloud.stream.rocketmq.binder.name-server: missing (serve runs on RocketMQ)",
        )?;
        let producer_group = stream
            .producers
            .values()
            .find_map(|p| p.group.clone())
            .unwrap_or_else(|| "orderflow-producer-group".into());
        let metrics = Metrics::new();
        let settings = RocketMqSettings {
            name_server,
            producer_group,
            topics: events::EventType::ALL.iter().map(|t| t.topic().to_owned()).collect(),
            max_consume_threads: stream.consumers.values().map(|b| b.concurrency).sum::<usize>()
                + 8,
        };
        let binder: Arc<dyn Binder> = Arc::new(
            RocketMqBinder::connect(settings, metrics.clone()).await.context("RocketMQ binder")?,
        );
        let tasks = Tasks::new();
        let (token, tracker) = (&tasks.token, &tasks.tracker);
        let (name, migrations) = match config.service {
            ServiceName::Order => (order::SERVICE, order::store::MIGRATIONS),
            ServiceName::Stock => (stock::SERVICE, stock::store::MIGRATIONS),
            ServiceName::Payment => (payment::SERVICE, payment::store::MIGRATIONS),
        };
        Db::plan_sqlite_databases(1);
        let db =
            Db::open(&config.database).await.with_context(|| format!("{name} service database"))?;
        let host = Arc::new(
            ServiceHost::open(
                name,
                db,
                migrations,
                stream.clone(),
                binder.clone(),
                metrics.clone(),
                tracker,
                token.clone(),
            )
            .await
            .with_context(|| format!("{name} service"))?,
        );
        let (api, ops): (Router, Arc<dyn Ops>) = match config.service {
            ServiceName::Order => {
                let svc = OrderService::start(host.clone(), tracker, token.clone())
                    .await
                    .context("order service")?;
                if config.demo_products {
                    seed_catalogue(&host).await.context("demo catalogue")?;
                }
                (order::http::routes(svc), Arc::new(OrderOps(host.clone())))
            }
            ServiceName::Stock => {
                let svc = StockService::start(host.clone(), tracker, token.clone())
                    .await
                    .context("stock service")?;
                if config.demo_products {
                    seed_stock(&host).await.context("demo stock")?;
                }
                (stock::http::routes(svc), Arc::new(HostOps(host.clone())))
            }
            ServiceName::Payment => {
                let svc = PaymentService::start(
                    host.clone(),
                    config.payment.clone(),
                    tracker,
                    token.clone(),
                )
                .await
                .context("payment service")?;
                (payment::http::routes(svc), Arc::new(HostOps(host.clone())))
            }
        };
        binder.start().await.context("starting the consumers")?;
        let admin: Arc<str> = Arc::from(config.admin_token.as_str());
        let url =
            serve(&tasks.servers, token, &admin, config.http_addr, api, ops, host.clone()).await?;
        Ok(Serving { url, metrics, binder, host, tasks })
    }

    /// Stops gracefully (see [`Tasks::stop`]), then closes the database.
    pub async fn shutdown(self) {
        self.tasks.stop(self.binder.as_ref()).await;
        self.host.db.close().await;
    }
}

async fn serve(
    servers: &TaskTracker,
    token: &CancellationToken,
    admin_token: &Arc<str>,
    addr: SocketAddr,
    api: Router,
    ops: Arc<dyn Ops>,
    host: Arc<ServiceHost>,
) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let app = api
        .merge(httpkit::ops_routes(ops))
        .merge(httpkit::binding_routes(host.clone()))
        .merge(httpkit::dlq_routes(host))
        .layer(axum::middleware::from_fn_with_state(
            admin_token.clone(),
            httpkit::require_admin_token,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    let token = token.clone();
    servers.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, %local, "HTTP server failed");
        }
    });
    Ok(format!("http://{local}"))
}

/// Readiness and metrics of a service host.
struct HostOps(Arc<ServiceHost>);

impl Ops for HostOps {
    fn ready(&self) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(self.0.ready())
    }
    fn metrics(&self) -> std::pin::Pin<Box<dyn Future<Output = String> + Send + '_>> {
        Box::pin(self.0.render_metrics())
    }
}

/// The order service's ops add the orders-by-status gauge.
struct OrderOps(Arc<ServiceHost>);

impl Ops for OrderOps {
    fn ready(&self) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(self.0.ready())
    }
    fn metrics(&self) -> std::pin::Pin<Box<dyn Future<Output = String> + Send + '_>> {
        Box::pin(async move {
            if let Ok(counts) = order::store::count_by_status(self.0.db.reader()).await {
                for status in order::domain::OrderStatus::ALL {
                    let n = counts
                        .iter()
                        .find(|(s, _)| s == status.as_str())
                        .map(|(_, n)| *n)
                        .unwrap_or(0);
                    self.0.metrics.gauge(
                        "orderflow_orders",
                        "Orders by status.",
                        &[("status", status.as_str())],
                        n as f64,
                    );
                }
            }
            self.0.render_metrics().await
        })
    }
}
