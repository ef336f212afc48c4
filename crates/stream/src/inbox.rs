//! The inbox: a consumer's effect and the record of the eventId it handled commit in one
//! transaction, so a redelivered, duplicated or replayed event has no second effect.
//!
//! [`InboxConsumer`] turns a service's [`TxHandler`] into a binder [`MessageHandler`]:
//! - the whole batch runs in one database transaction (one commit, one fsync);
//! - each message runs inside its own savepoint: a failing message is rolled back alone and
//!   answered `Retry` (transient) or `DeadLetter` (permanent), while its neighbours commit and
//!   are acknowledged;
//! - the eventId is claimed first (`INSERT ... ON CONFLICT DO NOTHING`): when it was already
//!   there the message is acknowledged without calling the handler;
//! - a message without a usable eventId, or whose body does not decode, is permanent:
//!   dead-lettered at once, never retried;
//! - after the commit the outbox relay is woken, so the events the batch caused leave at once.

use std::sync::Arc;

use async_trait::async_trait;
use events::{DecodeError, Message};
use sqlx::AnyConnection;

use crate::{
    Db, OutboxRelay,
    binder::{Delivery, MessageHandler, Outcome},
    metrics::{self, Metrics},
};

pub const MIGRATIONS: &[&str] = &["
CREATE TABLE inbox (
    consumer TEXT NOT NULL, event_id TEXT NOT NULL, processed_at BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id));
"];

/// Why a message could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// It will never work (malformed or invalid): dead-letter now.
    #[error("{0}")]
    Permanent(String),
    /// It may work later (storage busy, ...): retry with backoff.
    #[error("{0}")]
    Transient(String),
}

impl From<sqlx::Error> for HandleError {
    fn from(e: sqlx::Error) -> Self {
        HandleError::Transient(format!("storage: {e}"))
    }
}

impl From<crate::outbox::OutboxError> for HandleError {
    fn from(e: crate::outbox::OutboxError) -> Self {
        match e {
            // The same input always makes the same event: retrying cannot help.
            crate::outbox::OutboxError::TooLarge { .. } => HandleError::Permanent(e.to_string()),
            crate::outbox::OutboxError::Sql(e) => e.into(),
        }
    }
}

impl From<DecodeError> for HandleError {
    fn from(e: DecodeError) -> Self {
        HandleError::Permanent(e.to_string())
    }
}

/// A service's message handler: applies one message inside the open transaction.
#[async_trait]
pub trait TxHandler: Send + Sync + 'static {
    async fn apply(&self, tx: &mut AnyConnection, message: &Message) -> Result<(), HandleError>;
}

pub struct InboxConsumer {
    db: Db,
    /// Inbox namespace: `<group>/<binding>`.
    consumer: String,
    topic: String,
    group: String,
    handler: Arc<dyn TxHandler>,
    relay: OutboxRelay,
    metrics: Metrics,
}

impl InboxConsumer {
    pub fn new(
        db: Db,
        binding: &crate::ConsumerBinding,
        handler: Arc<dyn TxHandler>,
        relay: OutboxRelay,
        metrics: Metrics,
    ) -> InboxConsumer {
        InboxConsumer {
            db,
            consumer: format!("{}/{}", binding.group, binding.name),
            topic: binding.destination.clone(),
            group: binding.group.clone(),
            handler,
            relay,
            metrics,
        }
    }

    async fn apply_one(&self, tx: &mut AnyConnection, message: &Message) -> Result<bool, HandleError> {
        let event_id = message.event_id()?;
        let fresh = sqlx::query(
            "INSERT INTO inbox (consumer, event_id, processed_at) VALUES ($1, $2, $3)
             ON CONFLICT (consumer, event_id) DO NOTHING",
        )
        .bind(&self.consumer)
        .bind(&event_id)
        .bind(events::now_millis())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if fresh {
            self.handler.apply(tx, message).await?;
        }
        Ok(fresh)
    }
}

#[async_trait]
impl MessageHandler for InboxConsumer {
    async fn handle(&self, batch: &[Delivery]) -> Vec<Outcome> {
        let retry_all = |e: &sqlx::Error| vec![Outcome::Retry(format!("storage: {e}")); batch.len()];
        let mut tx = match self.db.writer().begin().await {
            Ok(tx) => tx,
            Err(e) => return retry_all(&e),
        };
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut duplicates = 0;
        for d in batch {
            if let Err(e) = sqlx::query("SAVEPOINT msg").execute(&mut *tx).await {
                return retry_all(&e);
            }
            let result = self.apply_one(&mut tx, &d.message).await;
            let end = if result.is_ok() { "RELEASE SAVEPOINT msg" } else { "ROLLBACK TO SAVEPOINT msg" };
            if let Err(e) = sqlx::query(end).execute(&mut *tx).await {
                return retry_all(&e);
            }
            if result.is_err() {
                // ROLLBACK TO leaves the savepoint open; release it.
                if let Err(e) = sqlx::query("RELEASE SAVEPOINT msg").execute(&mut *tx).await {
                    return retry_all(&e);
                }
            }
            outcomes.push(match result {
                Ok(fresh) => {
                    duplicates += u64::from(!fresh);
                    Outcome::Done
                }
                Err(HandleError::Permanent(e)) => Outcome::DeadLetter(e),
                Err(HandleError::Transient(e)) => Outcome::Retry(e),
            });
        }
        if let Err(e) = tx.commit().await {
            return retry_all(&e);
        }
        if duplicates > 0 {
            self.metrics.inc(metrics::DUPLICATES, &[("topic", &self.topic), ("group", &self.group)], duplicates);
        }
        self.relay.wake();
        outcomes
    }
}
