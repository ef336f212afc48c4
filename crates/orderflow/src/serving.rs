//! `orderflow serve`: one service in its own process, on RocketMQ.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use binding::{Binder, Metrics, StreamConfig};
use payment::PaymentSettings;
use rocketmq_binder::{RocketMqBinder, RocketMqSettings};
use storage::Db;
use stream::ServiceHost;

use crate::{ServiceName, mount, mount::Process};

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
    /// What `/admin/...` and `/api/admin/...` requests must present.
    pub admin_token: String,
}

/// A running `orderflow serve`.
pub struct Serving {
    pub url: String,
    pub metrics: Metrics,
    host: Arc<ServiceHost>,
    process: Process,
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
        let process = Process::new(binder, metrics.clone());
        Db::plan_sqlite_databases(1);
        let (db, stream, demo, addr) =
            (&config.database, stream.clone(), config.demo_products, config.http_addr);
        let token = &config.admin_token;
        let (url, host) = match config.service {
            ServiceName::Order => {
                let m = mount::order(&process, db, stream, demo).await?;
                (start_and_serve(&process, &m, addr, token).await?, m.host)
            }
            ServiceName::Stock => {
                let m = mount::stock(&process, db, stream, demo).await?;
                (start_and_serve(&process, &m, addr, token).await?, m.host)
            }
            ServiceName::Payment => {
                let m = mount::payment(&process, db, stream, config.payment.clone()).await?;
                (start_and_serve(&process, &m, addr, token).await?, m.host)
            }
        };
        Ok(Serving { url, metrics, host, process })
    }

    /// Stops gracefully (see [`Process::stop`]), then closes the database.
    pub async fn shutdown(self) {
        self.process.stop().await;
        self.host.db.close().await;
    }
}

/// Starts the consumers (all bound by now), then serves HTTP.
async fn start_and_serve<S>(
    process: &Process,
    mounted: &mount::Mounted<S>,
    addr: SocketAddr,
    admin_token: &str,
) -> anyhow::Result<String> {
    process.binder.start().await.context("starting the consumers")?;
    process.serve(mounted, addr, admin_token).await
}
