//! The inbox: a consumer's effect and the record of the eventId it handled commit in one
//! transaction, so a redelivered, duplicated or replayed event has no second effect.
//!
//! [`InboxConsumer`] turns a service's [`TxHandler`] into a binder [`MessageHandler`]:
//! - the whole batch runs in one database transaction (one commit, one fsync), its eventIds
//!   claimed in one statement;
//! - when a message fails, the batch is applied again with each message inside its own
//!   savepoint: the failing message is rolled back alone and answered `Retry` (transient) or
//!   `DeadLetter` (permanent), while its neighbours commit and are acknowledged;
//! - the eventId is claimed first (`INSERT ... ON CONFLICT DO NOTHING`): when it was already
//!   there the message is acknowledged without calling the handler;
//! - a message without a usable eventId, or whose body does not decode, is permanent:
//!   dead-lettered at once, never retried;
//! - after the commit the outbox relay is woken when the batch caused events, so they leave
//!   at once;
//! - optionally, a Redis fast path acknowledges duplicates it has seen before any
//!   transaction ([`crate::idempotency`]); the inbox table still decides everything else.

use std::sync::Arc;

use async_trait::async_trait;
use events::{DecodeError, Message};
use sqlx::Row;

use binding::{
    ConsumerBinding, Delivery, MessageHandler, Outcome,
    metrics::{self, Metrics},
};
use storage::{Backend, Db, Tx, rows};

use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{OutboxRelay, idempotency::RedisIdempotency, trace};

pub const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE inbox (
    consumer TEXT NOT NULL, event_id TEXT NOT NULL, processed_at BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id));
",
    "
CREATE INDEX inbox_by_time ON inbox (processed_at);
",
];

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

/// A service's message handler: applies messages inside the open transaction.
#[async_trait]
pub trait TxHandler: Send + Sync + 'static {
    /// Applies one message.
    async fn apply(&self, tx: &mut Tx, message: &Message) -> Result<(), HandleError>;

    /// Applies `messages` in order, as [`TxHandler::apply`] one after another would. An
    /// error fails them all: the inbox rolls back and applies them one by one. A handler
    /// overrides this to read what the whole batch needs at once.
    async fn apply_batch(&self, tx: &mut Tx, messages: &[&Message]) -> Result<(), HandleError> {
        for m in messages {
            self.apply(tx, m).await?;
        }
        Ok(())
    }
}

pub struct InboxConsumer {
    db: Db,
    /// Inbox namespace: `<group>/<binding>`.
    consumer: String,
    topic: String,
    group: String,
    binding: String,
    handler: Arc<dyn TxHandler>,
    relay: OutboxRelay,
    metrics: Metrics,
    fast: Option<RedisIdempotency>,
    /// `messaging.system` of its consumer spans.
    system: &'static str,
}

impl InboxConsumer {
    pub fn new(
        db: Db,
        binding: &ConsumerBinding,
        handler: Arc<dyn TxHandler>,
        relay: OutboxRelay,
        metrics: Metrics,
    ) -> InboxConsumer {
        InboxConsumer {
            fast: None,
            system: "unknown",
            db,
            consumer: format!("{}/{}", binding.group, binding.name),
            topic: binding.destination.clone(),
            group: binding.group.clone(),
            binding: binding.name.clone(),
            handler,
            relay,
            metrics,
        }
    }

    /// Names the messaging system of its consumer spans (the binder's).
    pub fn traced_as(self, system: &'static str) -> InboxConsumer {
        InboxConsumer { system, ..self }
    }

    /// Puts the Redis fast path in front of the inbox (see [`crate::idempotency`]).
    pub fn with_fast_path(self, fast: Option<RedisIdempotency>) -> InboxConsumer {
        InboxConsumer { fast, ..self }
    }

    /// One message in the careful path; its queued writes are sent before it returns, so
    /// their errors are its own.
    async fn apply_one(&self, tx: &mut Tx, message: &Message) -> Result<bool, HandleError> {
        let event_id = message.event_id()?;
        let fresh = tx
            .execute(
                sqlx::query(
                    "INSERT INTO inbox (consumer, event_id, processed_at) VALUES ($1, $2, $3)
                     ON CONFLICT (consumer, event_id) DO NOTHING",
                )
                .bind(&self.consumer)
                .bind(&event_id)
                .bind(events::now_millis()),
            )
            .await?
            .rows_affected()
            == 1;
        if fresh {
            self.handler.apply(tx, message).await?;
            tx.flush().await?;
        }
        Ok(fresh)
    }
}

#[async_trait]
impl MessageHandler for InboxConsumer {
    async fn handle(&self, batch: &[Delivery]) -> Vec<Outcome> {
        let started = std::time::Instant::now();
        let outcomes = if trace::enabled() {
            self.handle_traced(batch).await
        } else {
            self.handle_timed(batch).await
        };
        let labels = [("binding", self.binding.as_str()), ("group", self.group.as_str())];
        self.metrics.observe(metrics::HANDLER_SECONDS, &labels, started.elapsed());
        outcomes
    }
}

impl InboxConsumer {
    /// [`InboxConsumer::handle_timed`] with a consumer span per message, child of its
    /// producer's; the events the batch causes continue the span of their key's message.
    async fn handle_traced(&self, batch: &[Delivery]) -> Vec<Outcome> {
        let spans: Vec<tracing::Span> = batch
            .iter()
            .map(|d| trace::process_span(self.system, &self.group, &d.message))
            .collect();
        let by_key = batch
            .iter()
            .zip(&spans)
            .map(|(d, span)| (d.message.keys.clone(), span.context()))
            .collect();
        // One message: its log lines carry its trace.
        let work = trace::with_keys(by_key, self.handle_timed(batch));
        let outcomes = match spans.as_slice() {
            [one] => work.instrument(one.clone()).await,
            _ => work.await,
        };
        for (span, outcome) in spans.iter().zip(&outcomes) {
            if let Outcome::Retry(why) | Outcome::DeadLetter(why) = outcome {
                trace::failed(span, why);
            }
        }
        outcomes
    }

    /// [`MessageHandler::handle`], whose duration `handle` records.
    async fn handle_timed(&self, batch: &[Delivery]) -> Vec<Outcome> {
        // Redis fast path: duplicates it has seen are acknowledged without a transaction.
        let (keys, seen): (Vec<Option<String>>, Vec<bool>) = match &self.fast {
            Some(fast) => {
                let keys: Vec<Option<String>> = batch
                    .iter()
                    .map(|d| {
                        d.message
                            .event_id()
                            .ok()
                            .map(|id| RedisIdempotency::key(&self.consumer, &id))
                    })
                    .collect();
                let known: Vec<String> = keys.iter().flatten().cloned().collect();
                let mut hits = fast.processed(&known).await.into_iter();
                let seen =
                    keys.iter().map(|k| k.is_some() && hits.next().unwrap_or(false)).collect();
                (keys, seen)
            }
            None => (Vec::new(), vec![false; batch.len()]),
        };
        let mut outcomes: Vec<Option<Outcome>> =
            seen.iter().map(|s| s.then_some(Outcome::Done)).collect();
        let fast_hits = seen.iter().filter(|s| **s).count() as u64;
        let duplicates = match self.apply_batch(batch, &mut outcomes).await {
            Ok(n) => n,
            Err(e) => return vec![Outcome::Retry(format!("storage: {e}")); batch.len()],
        };
        if duplicates + fast_hits > 0 {
            self.metrics.inc(
                metrics::DUPLICATES,
                &[("topic", &self.topic), ("group", &self.group)],
                duplicates + fast_hits,
            );
        }
        let outcomes: Vec<Outcome> =
            outcomes.into_iter().map(|o| o.unwrap_or(Outcome::Done)).collect();
        if let Some(fast) = &self.fast {
            let done: Vec<String> = keys
                .into_iter()
                .zip(&outcomes)
                .zip(&seen)
                .filter(|((_, o), seen)| **o == Outcome::Done && !**seen)
                .filter_map(|((k, _), _)| k)
                .collect();
            fast.mark(&done).await;
        }
        outcomes
    }
}

impl InboxConsumer {
    /// Applies the messages without an outcome yet in one transaction; fills in their
    /// outcomes and returns how many the inbox already had. An error means the transaction
    /// failed as a whole: nothing was applied.
    ///
    /// First all together: one statement claims every eventId, the handler applies the fresh
    /// ones, one commit. Only when a message fails is that rolled back and the batch applied
    /// again a savepoint per message, so the failure is rolled back alone. The fast path saves
    /// three statements per message, each a round trip to SQLite's worker thread.
    async fn apply_batch(
        &self,
        batch: &[Delivery],
        outcomes: &mut [Option<Outcome>],
    ) -> Result<u64, sqlx::Error> {
        if outcomes.iter().all(Option::is_some) {
            return Ok(0);
        }
        match self.apply_together(batch, outcomes).await? {
            Some(duplicates) => Ok(duplicates),
            None => self.apply_each(batch, outcomes).await,
        }
    }

    /// Commits; wakes the relay when the batch caused events, so they leave at once.
    async fn commit(&self, tx: Tx) -> Result<(), sqlx::Error> {
        let enqueued = tx.enqueued();
        tx.commit().await?;
        if enqueued {
            self.relay.wake();
        }
        Ok(())
    }

    /// The fast path: `None` (nothing committed) as soon as any message fails.
    async fn apply_together(
        &self,
        batch: &[Delivery],
        outcomes: &mut [Option<Outcome>],
    ) -> Result<Option<u64>, sqlx::Error> {
        let mut todo: Vec<(usize, String)> = Vec::new();
        for (i, (d, outcome)) in batch.iter().zip(outcomes.iter()).enumerate() {
            if outcome.is_none() {
                match d.message.event_id() {
                    Ok(id) => todo.push((i, id)),
                    Err(_) => return Ok(None),
                }
            }
        }
        let mut tx = Tx::begin(&self.db).await?;
        let now = events::now_millis();
        let mut fresh: std::collections::HashSet<String> =
            std::collections::HashSet::with_capacity(todo.len());
        for chunk in rows::chunks(&todo) {
            // ($1 consumer, $3 id, $2 now), ($1, $4, $2), ...
            let sql = rows::values_with(
                "INSERT INTO inbox (consumer, event_id, processed_at) VALUES",
                chunk.len(),
                |r, sql| {
                    sql.push_str("$1, ");
                    rows::placeholder(sql, r + 3);
                    sql.push_str(", $2");
                },
                " ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id",
            );
            let mut q = sqlx::query(sql).bind(&self.consumer).bind(now);
            for (_, id) in chunk {
                q = q.bind(id);
            }
            for row in tx.fetch_all(q).await? {
                fresh.insert(row.try_get(0)?);
            }
        }
        // The first of two copies of an event in one batch is the fresh one.
        let (new, seen): (Vec<_>, Vec<_>) = todo.iter().partition(|(_, id)| fresh.remove(id));
        let new: Vec<&Message> = new.iter().map(|(i, _)| &batch[*i].message).collect();
        if self.handler.apply_batch(&mut tx, &new).await.is_err() {
            return Ok(None);
        }
        let duplicates = seen.len() as u64;
        // On SQLite the queued writes go with the commit, and one that fails is some
        // message's failure: the careful path finds whose (a commit that fails for the batch
        // as a whole fails there too). On PostgreSQL every write has run already, so a
        // failed commit is the batch's.
        let sqlite = tx.backend() == Backend::Sqlite;
        match self.commit(tx).await {
            Ok(()) => {}
            Err(_) if sqlite => return Ok(None),
            Err(e) => return Err(e),
        }
        for (i, _) in &todo {
            outcomes[*i] = Some(Outcome::Done);
        }
        Ok(Some(duplicates))
    }

    /// The careful path: a savepoint per message.
    async fn apply_each(
        &self,
        batch: &[Delivery],
        outcomes: &mut [Option<Outcome>],
    ) -> Result<u64, sqlx::Error> {
        let mut tx = Tx::begin(&self.db).await?;
        let mut duplicates = 0;
        for (d, outcome) in batch.iter().zip(outcomes.iter_mut()) {
            if outcome.is_some() {
                continue;
            }
            let savepoint = tx.savepoint("msg").await?;
            let result = self.apply_one(&mut tx, &d.message).await;
            tx.end_savepoint(savepoint, result.is_ok()).await?;
            *outcome = Some(match result {
                Ok(fresh) => {
                    duplicates += u64::from(!fresh);
                    Outcome::Done
                }
                Err(HandleError::Permanent(e)) => Outcome::DeadLetter(e),
                Err(HandleError::Transient(e)) => Outcome::Retry(e),
            });
        }
        self.commit(tx).await?;
        Ok(duplicates)
    }
}
