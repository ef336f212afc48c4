//! What hosting one service on a binder takes, written once for the three services: open
//! its database with the outbox and inbox tables, start its outbox relay, bind its message
//! handlers through the inbox, remove inbox records past their window, and answer readiness
//! and metrics.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use binding::{
    Binder, BinderError, BindingControl, ConfigError, ConsumerBinding, Lag, Metrics, Retention,
    StreamConfig, metrics,
};
use storage::{Db, DbError};

use crate::{
    InboxConsumer, OutboxRelay, TxHandler,
    idempotency::RedisIdempotency,
    inbox,
    outbox::{self, Outbox},
};

/// Why a service could not start on its host.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("binder: {0}")]
    Binder(#[from] BinderError),
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("orderflow.idempotency.redis: {0}")]
    Idempotency(String),
}

pub struct ServiceHost {
    pub name: &'static str,
    pub db: Db,
    pub binder: Arc<dyn Binder>,
    pub metrics: Metrics,
    pub relay: OutboxRelay,
    pub config: StreamConfig,
    /// The service's `orderflow.retention` (its inbox window is applied here).
    pub retention: Retention,
    /// The Redis fast path of every binding's inbox, when configured.
    fast: Option<RedisIdempotency>,
    bindings: Mutex<Vec<BindingControl>>,
}

impl ServiceHost {
    /// Applies the outbox and inbox migrations then the service's own to `db`, and starts
    /// the outbox relay and inbox retention (stopped by `token`, awaited through `tracker`).
    /// With `orderflow.idempotency.redis` in the configuration, connects the Redis fast
    /// path.
    #[allow(clippy::too_many_arguments)]
    pub async fn open(
        name: &'static str,
        db: Db,
        migrations: &[&'static str],
        config: StreamConfig,
        binder: Arc<dyn Binder>,
        metrics: Metrics,
        tracker: &TaskTracker,
        token: CancellationToken,
    ) -> Result<ServiceHost, StartError> {
        let retention = Retention::from_config(&config)?;
        let fast = match config.setting("idempotency.redis") {
            None => None,
            Some(url) => {
                let url = url
                    .as_str()
                    .ok_or_else(|| StartError::Idempotency("must be a redis:// URL".into()))?;
                Some(
                    RedisIdempotency::connect(url, metrics.clone())
                        .await
                        .map_err(StartError::Idempotency)?,
                )
            }
        };
        db.migrate("outbox", outbox::MIGRATIONS).await?;
        db.migrate("inbox", inbox::MIGRATIONS).await?;
        db.migrate("dead-letters", crate::dlq::MIGRATIONS).await?;
        db.migrate(name, migrations).await?;
        tracker.spawn(crate::retention::run_inbox(
            db.clone(),
            name,
            retention,
            metrics.clone(),
            token.clone(),
        ));
        let relay =
            OutboxRelay::spawn(db.clone(), binder.clone(), metrics.clone(), name, tracker, token);
        Ok(ServiceHost {
            name,
            db,
            binder,
            metrics,
            relay,
            config,
            retention,
            fast,
            bindings: Mutex::new(Vec::new()),
        })
    }

    /// Binds `handler` to `binding` through the inbox.
    pub async fn bind(
        &self,
        binding: ConsumerBinding,
        handler: Arc<dyn TxHandler>,
    ) -> Result<(), BinderError> {
        let consumer = InboxConsumer::new(
            self.db.clone(),
            &binding,
            handler,
            self.relay.clone(),
            self.metrics.clone(),
        )
        .with_fast_path(self.fast.clone())
        .traced_as(self.binder.system());
        let control = self.binder.bind_consumer(binding, Arc::new(consumer)).await?;
        self.bindings.lock().unwrap_or_else(|p| p.into_inner()).push(control);
        Ok(())
    }

    /// The service's bound consumers (for pause / resume).
    pub fn bindings(&self) -> Vec<BindingControl> {
        self.bindings.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn binding(&self, name: &str) -> Option<BindingControl> {
        self.bindings().into_iter().find(|b| b.binding.name == name)
    }

    pub async fn ready(&self) -> Result<(), String> {
        self.db.ping().await.map_err(|e| format!("database: {e}"))?;
        self.binder.check().await.map_err(|e| e.to_string())
    }

    /// Each consumer binding of this service with its lag, as the binder reports it now
    /// (the lag gauges and `GET /admin/consumer-progress` both read it here).
    pub async fn lags(&self) -> Vec<(ConsumerBinding, Result<Lag, BinderError>)> {
        let mut all = Vec::new();
        for c in self.bindings() {
            let lag = self.binder.lag(&c.binding.group, &c.binding.destination).await;
            all.push((c.binding, lag));
        }
        all
    }

    /// Sets the lag gauges of every binding of this service, as its binder reports them.
    pub async fn measure_lag(&self) {
        let now = events::now_millis();
        for (b, lag) in self.lags().await {
            let (group, topic) = (b.group.as_str(), b.destination.as_str());
            let lag = match lag {
                Ok(lag) => lag,
                Err(e) => {
                    tracing::warn!(group, topic, error = %e, "could not read consumer lag");
                    continue;
                }
            };
            let labels = [("group", group), ("topic", topic)];
            self.metrics.set(metrics::LAG_MESSAGES, &labels, lag.messages as f64);
            let oldest = lag.oldest_born_at.map_or(Duration::ZERO, |b| metrics::age(b, now));
            self.metrics.set(metrics::LAG_OLDEST, &labels, oldest.as_secs_f64());
            for q in &lag.queues {
                let queue = q.queue_id.to_string();
                let labels = [
                    ("group", group),
                    ("topic", topic),
                    ("broker", q.broker.as_str()),
                    ("queue", queue.as_str()),
                ];
                self.metrics.set(metrics::QUEUE_LAG, &labels, q.lag() as f64);
            }
        }
    }

    /// Refreshes the gauges that are a query: this service's outbox backlog, dead letters,
    /// consumer lag and database size, and the process's memory.
    pub async fn refresh_metrics(&self) {
        match self.db.size_bytes().await {
            Ok(n) => self.metrics.set(metrics::DATABASE_SIZE, &[("database", self.name)], n as f64),
            Err(e) => tracing::warn!(error = %e, "could not read the database size for /metrics"),
        }
        if let Ok(n) = Outbox::backlog(&self.db).await {
            self.metrics.set(metrics::OUTBOX_BACKLOG, &[("service", self.name)], n as f64);
        }
        if let Err(e) = self.count_dead_letters().await {
            tracing::warn!(error = %e, "could not count dead letters for /metrics");
        }
        self.measure_lag().await;
        metrics::set_resident_memory(&self.metrics);
        self.metrics.set(metrics::SQLITE_MEMORY, &[], storage::sqlite_memory_bytes() as f64);
    }
}
