//! One service mounted in a process — written once, used by `up` (all three on one binder)
//! and `serve` (one on RocketMQ): its database opened and migrated, its host (outbox relay,
//! inbox bindings), its message handlers, its demo data when asked, and its HTTP routes.
//!
//! Consumers are bound here but start only when the caller calls `Binder::start`, after the
//! last service is mounted (RocketMQ wants a group's whole subscription set at once).

use std::{future::Future, pin::Pin, sync::Arc};

use anyhow::Context;
use axum::{Router, extract::DefaultBodyLimit};
use binding::{Binder, Metrics, StreamConfig};
use httpkit::{BODY_LIMIT, Ops};
use order::OrderService;
use payment::{PaymentService, PaymentSettings};
use stock::StockService;
use storage::Db;
use stream::ServiceHost;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// A product of the demo catalogue: id, name, price, units in stock.
pub const DEMO_PRODUCTS: &[(i64, &str, &str, i64)] = &[
    (1001, "Mechanical keyboard", "69.95", 100),
    (1002, "USB-C cable", "9.90", 500),
    (1003, "27-inch monitor", "199.00", 20),
    (1004, "Limited edition figure", "49.50", 3),
];

/// What the services of one process share: the binder, the metrics registry, and the
/// background work with the order in which it stops.
pub struct Process {
    pub binder: Arc<dyn Binder>,
    pub metrics: Metrics,
    pub token: CancellationToken,
    /// Relays, timers, the payment completer.
    pub tracker: TaskTracker,
    /// HTTP servers.
    servers: TaskTracker,
    /// The services mounted so far.
    hosts: Hosts,
}

type Hosts = Arc<std::sync::Mutex<Vec<Arc<ServiceHost>>>>;

impl Process {
    pub fn new(binder: Arc<dyn Binder>, metrics: Metrics) -> Process {
        Process {
            binder,
            metrics,
            token: CancellationToken::new(),
            tracker: TaskTracker::new(),
            servers: TaskTracker::new(),
            hosts: Hosts::default(),
        }
    }

    /// The ops routes' view of `host`: its readiness, the process's metrics.
    fn ops(&self, host: &Arc<ServiceHost>) -> Arc<dyn Ops> {
        Arc::new(ServiceOps { host: host.clone(), hosts: self.hosts.clone() })
    }

    /// Opens the service's database at `location`, applies its migrations and starts its
    /// host (outbox relay; bindings come with the service).
    async fn host(
        &self,
        name: &'static str,
        migrations: &'static [&'static str],
        location: &str,
        stream: StreamConfig,
    ) -> anyhow::Result<Arc<ServiceHost>> {
        let db = Db::open(location).await.with_context(|| format!("{name} service database"))?;
        let host = ServiceHost::open(
            name,
            db,
            migrations,
            stream,
            self.binder.clone(),
            self.metrics.clone(),
            &self.tracker,
            self.token.clone(),
        )
        .await
        .with_context(|| format!("{name} service"))?;
        let host = Arc::new(host);
        self.hosts.lock().unwrap_or_else(|p| p.into_inner()).push(host.clone());
        Ok(host)
    }

    /// Serves `mounted`'s API with the ops, binding and dead-letter routes on `addr`, admin
    /// routes behind `admin_token`; its base URL.
    pub async fn serve<S>(
        &self,
        mounted: &Mounted<S>,
        addr: std::net::SocketAddr,
        admin_token: &str,
    ) -> anyhow::Result<String> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        let admin: Arc<str> = Arc::from(admin_token);
        let app = mounted
            .api
            .clone()
            .merge(httpkit::ops_routes(mounted.ops.clone()))
            .merge(httpkit::binding_routes(mounted.host.clone()))
            .merge(httpkit::dlq_routes(mounted.host.clone()))
            .merge(httpkit::broker_routes(mounted.host.clone()))
            .layer(axum::middleware::from_fn_with_state(admin, httpkit::require_admin_token))
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .layer(axum::middleware::from_fn_with_state(
                httpkit::HttpMetrics { metrics: self.metrics.clone(), service: mounted.host.name },
                httpkit::record_http,
            ));
        let token = self.token.clone();
        self.servers.spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, %local, "HTTP server failed");
            }
        });
        Ok(format!("http://{local}"))
    }

    /// Serves the web console on `addr`; its URL.
    pub async fn serve_console(
        &self,
        config: console::ConsoleConfig,
        addr: std::net::SocketAddr,
    ) -> anyhow::Result<String> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {addr} for the console (choose another with --console-addr, or leave it out with --no-console)"
                )
            })?;
        let url = format!("http://{}", listener.local_addr()?);
        let token = self.token.clone();
        self.servers.spawn(async move {
            if let Err(e) = console::serve(listener, config, token).await {
                tracing::error!(error = %e, "console server failed");
            }
        });
        Ok(url)
    }

    /// HTTP first (no new requests), then the consumers (in-flight batches settle), then the
    /// relays and timers. Everything committed is durable, so nothing is lost.
    pub async fn stop(&self) {
        self.token.cancel();
        self.servers.close();
        self.servers.wait().await;
        self.binder.shutdown().await;
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// A mounted service: the service, its host, and its HTTP surface.
pub struct Mounted<S> {
    pub service: Arc<S>,
    pub host: Arc<ServiceHost>,
    api: Router,
    ops: Arc<dyn Ops>,
}

/// The order service on `p`, its database at `location`; the demo catalogue when `demo`
/// and the catalogue is empty.
pub async fn order(
    p: &Process,
    location: &str,
    stream: StreamConfig,
    demo: bool,
) -> anyhow::Result<Mounted<OrderService>> {
    let host = p.host(order::SERVICE, order::store::MIGRATIONS, location, stream).await?;
    let service = OrderService::start(host.clone(), &p.tracker, p.token.clone())
        .await
        .context("order service")?;
    if demo {
        seed_catalogue(&host).await.context("demo catalogue")?;
    }
    let api = order::http::routes(service.clone());
    Ok(Mounted { service, api, ops: p.ops(&host), host })
}

/// The stock service on `p`; the demo stock of the products it does not know when `demo`.
pub async fn stock(
    p: &Process,
    location: &str,
    stream: StreamConfig,
    demo: bool,
) -> anyhow::Result<Mounted<StockService>> {
    let host = p.host(stock::SERVICE, stock::store::MIGRATIONS, location, stream).await?;
    let service = StockService::start(host.clone(), &p.tracker, p.token.clone())
        .await
        .context("stock service")?;
    if demo {
        seed_stock(&host).await.context("demo stock")?;
    }
    let api = stock::http::routes(service.clone());
    Ok(Mounted { service, api, ops: p.ops(&host), host })
}

/// The payment service on `p`, with its simulated provider's `settings`.
pub async fn payment(
    p: &Process,
    location: &str,
    stream: StreamConfig,
    settings: PaymentSettings,
) -> anyhow::Result<Mounted<PaymentService>> {
    let host = p.host(payment::SERVICE, payment::store::MIGRATIONS, location, stream).await?;
    let service = PaymentService::start(host.clone(), settings, &p.tracker, p.token.clone())
        .await
        .context("payment service")?;
    let api = payment::http::routes(service.clone());
    Ok(Mounted { service, api, ops: p.ops(&host), host })
}

/// The demo prices, when the order service's catalogue is empty.
async fn seed_catalogue(host: &ServiceHost) -> anyhow::Result<()> {
    if !order::store::products(host.db.reader()).await?.is_empty() {
        return Ok(());
    }
    let mut tx = storage::Tx::begin(&host.db).await?;
    for &(id, name, price, _) in DEMO_PRODUCTS {
        let price: events::Money = price.parse().context("demo price")?;
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

type Ready<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
type Rendered<'a> = Pin<Box<dyn Future<Output = String> + Send + 'a>>;

/// Readiness of one service; the metrics of its whole process. Every service of the process
/// refreshes its gauges (lag, backlog, dead letters, orders by status) before the registry
/// they share is rendered, so under `up` any one port's `/metrics` tells everything.
struct ServiceOps {
    host: Arc<ServiceHost>,
    hosts: Hosts,
}

impl Ops for ServiceOps {
    fn ready(&self) -> Ready<'_> {
        Box::pin(self.host.ready())
    }
    fn metrics(&self) -> Rendered<'_> {
        Box::pin(async move {
            let hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner()).clone();
            for host in hosts {
                if host.name == order::SERVICE {
                    count_orders(&host).await;
                }
                host.refresh_metrics().await;
            }
            self.host.metrics.render()
        })
    }
}

/// Sets the orders-by-status gauge.
async fn count_orders(host: &ServiceHost) {
    let counts = match order::store::count_by_status(host.db.reader()).await {
        Ok(counts) => counts,
        Err(e) => return tracing::warn!(error = %e, "could not count orders for /metrics"),
    };
    for status in order::domain::OrderStatus::ALL {
        let n = counts.iter().find(|(s, _)| s == status.as_str()).map_or(0, |(_, n)| *n);
        host.metrics.set(binding::metrics::ORDERS, &[("status", status.as_str())], n as f64);
    }
}
