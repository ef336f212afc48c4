//! `orderflow up`: the three services and the embedded binder in one process.
//!
//! [`App::start`] is the builder tests drive: it takes a data directory and listen addresses
//! (port 0 works), opens `broker.db` and one SQLite file per service in the data directory,
//! binds every consumer before any HTTP request can arrive, seeds the demo catalogue on first
//! start, and serves each service's API on its own address. [`App::shutdown`] stops taking
//! requests, lets in-flight batches settle, stops the relays and closes the databases;
//! everything committed is durable, so a new `App` on the same directory carries on with
//! whatever was in flight (outboxes are relayed, unacknowledged deliveries redelivered).

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context;
use binding::{Binder, Metrics, Retention, StreamConfig};
use embedded::EmbeddedBinder;
use order::OrderService;
use payment::{PaymentService, PaymentSettings};
use rocketmq_binder::{RocketMqBinder, RocketMqSettings};
use stock::StockService;
use storage::Db;

use crate::{check, mount, mount::Process};

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
    /// Serve the web console too (`up`).
    pub console: Option<ConsoleSettings>,
}

/// Where the console listens and who besides the admin may sign in.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    pub addr: SocketAddr,
    pub read_only_token: Option<String>,
    pub trace_url: Option<String>,
}

impl ConsoleSettings {
    /// The console's configuration against these services' base URLs.
    pub fn against(
        &self,
        [order_url, stock_url, payment_url]: [String; 3],
        admin_token: &str,
    ) -> console::ConsoleConfig {
        console::ConsoleConfig {
            order_url,
            stock_url,
            payment_url,
            admin_token: admin_token.to_owned(),
            read_only_token: self.read_only_token.clone(),
            trace_url: self.trace_url.clone(),
        }
    }
}

impl AppConfig {
    /// Where service `name`'s database is.
    fn location(&self, name: &str) -> String {
        match &self.storage {
            Storage::Sqlite => self.data_dir.join(format!("{name}.db")).display().to_string(),
            Storage::Postgres { order, stock, payment } => match name {
                order::SERVICE => order.clone(),
                stock::SERVICE => stock.clone(),
                _ => payment.clone(),
            },
        }
    }
}

pub struct App {
    pub order_url: String,
    pub stock_url: String,
    pub payment_url: String,
    /// The web console's URL, when it is served.
    pub console_url: Option<String>,
    /// The embedded binder itself, when it is the one in use (for inspection).
    pub broker: Option<EmbeddedBinder>,
    pub binder: Arc<dyn Binder>,
    pub metrics: Metrics,
    pub order: Arc<OrderService>,
    pub stock: Arc<StockService>,
    pub payment: Arc<PaymentService>,
    invariants: check::Gauges,
    process: Process,
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
        // The broker keeps messages as the order service's YAML says (RocketMQ: its own
        // commit log, which the setting describes); every service's inbox must outlast it.
        let retention = Retention::from_config(&config.order_stream)
            .context("order service's orderflow.retention")?;
        for (name, stream) in
            [(stock::SERVICE, &config.stock_stream), (payment::SERVICE, &config.payment_stream)]
        {
            Retention::from_config(stream)
                .and_then(|r| r.check_inbox(retention))
                .with_context(|| format!("{name} service's orderflow.retention"))?;
        }
        let (broker, inner): (Option<EmbeddedBinder>, Arc<dyn Binder>) = match &config.binder {
            BinderChoice::Embedded => {
                let b = EmbeddedBinder::open(&dir.join("broker.db"), metrics.clone())
                    .await
                    .context("embedded binder")?;
                b.retain(retention);
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
        let process = Process::new(wrap(inner), metrics.clone());
        let demo = config.demo_products;
        let stock = mount::stock(
            &process,
            &config.location(stock::SERVICE),
            config.stock_stream.clone(),
            demo,
        )
        .await?;
        let payment = mount::payment(
            &process,
            &config.location(payment::SERVICE),
            config.payment_stream.clone(),
            config.payment.clone(),
        )
        .await?;
        let order = mount::order(
            &process,
            &config.location(order::SERVICE),
            config.order_stream.clone(),
            demo,
        )
        .await?;
        process.binder.start().await.context("starting the consumers")?;

        let cancel_after =
            order::compensation::CompensationSettings::from_config(&config.order_stream)?
                .cancel_after;
        let invariants = check::Gauges::new(
            [order.host.db.clone(), stock.host.db.clone(), payment.host.db.clone()],
            metrics.clone(),
            cancel_after + std::time::Duration::from_secs(60),
        );
        process.tracker.spawn(invariants.clone().run(process.token.clone()));

        let admin = &config.admin_token;
        let order_url = process.serve(&order, config.order_addr, admin).await?;
        let stock_url = process.serve(&stock, config.stock_addr, admin).await?;
        let payment_url = process.serve(&payment, config.payment_addr, admin).await?;
        let console_url = match &config.console {
            Some(c) => {
                let urls = [order_url.clone(), stock_url.clone(), payment_url.clone()];
                Some(process.serve_console(c.against(urls, admin), c.addr).await?)
            }
            None => None,
        };
        Ok(App {
            order_url,
            stock_url,
            payment_url,
            console_url,
            broker,
            binder: process.binder.clone(),
            metrics,
            order: order.service,
            stock: stock.service,
            payment: payment.service,
            invariants,
            process,
        })
    }

    /// True when nothing is in flight: every outbox is empty, no payment waits for
    /// completion, every bound group has acknowledged (or dead-lettered) as many messages of
    /// its topic as were published — and no message moved while this was checked. Counts
    /// are this process's, so this holds for `up`, where every publisher is in process.
    pub async fn is_quiet(&self) -> anyhow::Result<bool> {
        use binding::metrics::{CONSUMED, DEAD_LETTERED, FAILED, PUBLISHED, SKIPPED};
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
            let settled = [CONSUMED, DEAD_LETTERED, SKIPPED]
                .map(|n| self.metrics.get(n, &labels))
                .iter()
                .sum::<f64>();
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

    /// Stops gracefully (see [`Process::stop`]), then closes the databases.
    pub async fn shutdown(self) {
        self.process.stop().await;
        for host in [&self.order.host, &self.stock.host, &self.payment.host] {
            host.db.close().await;
        }
    }
}
