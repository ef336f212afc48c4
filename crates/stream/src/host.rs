//! What hosting one service on a binder takes, written once for the three services: open
//! its database with the outbox and inbox tables, start its outbox relay, bind its message
//! handlers through the inbox, and answer readiness and metrics.

use std::sync::{Arc, Mutex};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use binding::{
    Binder, BinderError, BindingControl, ConfigError, ConsumerBinding, Metrics, StreamConfig,
    metrics,
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
    /// The Redis fast path of every binding's inbox, when configured.
    fast: Option<RedisIdempotency>,
    bindings: Mutex<Vec<BindingControl>>,
}

impl ServiceHost {
    /// Applies the outbox and inbox migrations then the service's own to `db`, and starts
    /// the outbox relay (stopped by `token`, awaited through `tracker`). With
    /// `orderflow.idempotency.redis` in the configuration, connects the Redis fast path.
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
        let relay =
            OutboxRelay::spawn(db.clone(), binder.clone(), metrics.clone(), name, tracker, token);
        Ok(ServiceHost {
            name,
            db,
            binder,
            metrics,
            relay,
            config,
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
        .with_fast_path(self.fast.clone());
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

    /// Prometheus text, with this service's outbox backlog and the process's memory
    /// refreshed.
    pub async fn render_metrics(&self) -> String {
        if let Ok(n) = Outbox::backlog(&self.db).await {
            self.metrics.set(metrics::OUTBOX_BACKLOG, &[("service", self.name)], n as f64);
        }
        metrics::set_resident_memory(&self.metrics);
        self.metrics.set(metrics::SQLITE_MEMORY, &[], storage::sqlite_memory_bytes() as f64);
        self.metrics.render()
    }
}
