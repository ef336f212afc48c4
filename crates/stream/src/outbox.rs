//! The transactional outbox: a service's state change and the events it causes commit in one
//! database transaction; a relay hands them to the binder afterwards.
//!
//! Guarantees:
//! - No lost event: [`Outbox::enqueue`] writes into the caller's open transaction, so the
//!   event exists exactly when the state change does. The relay deletes a row only after the
//!   binder accepted it, and retries (with backoff) until it does — across restarts too.
//! - Prompt: whoever commits calls [`OutboxRelay::wake`]; polling is only the fallback.
//! - Order: one relay per database publishes rows in commit (id) order, so one order's
//!   events reach the broker in the order they were caused. On PostgreSQL, where several
//!   instances share the database, a relay publishes only while it holds a transaction-level
//!   advisory lock: one instance relays at a time, the others stand by (and take over within
//!   a poll interval if it dies, as PostgreSQL releases the lock with its connection).
//! - Size: an event over [`MAX_EVENT_BYTES`] (1 MiB, the seed's "avoid events over 1 MB") is
//!   refused by `enqueue` with [`OutboxError::TooLarge`], so the caller's transaction fails
//!   and nothing is written.
//! - At-least-once, not exactly-once: a crash between the broker's acceptance and the delete
//!   publishes a row again, with the same eventId; consumers' inboxes drop the duplicate.
//! - SQLite: the relay does not commit its deletes itself while others commit. It reads past
//!   what it has published (ids are given in commit order there: one writer), and the rows
//!   it published are deleted by the next transaction any writer commits on that database
//!   ([`storage::deferred`]); only when it finds nothing new does it
//!   commit the leftover deletes on its own. Under load that saves a durable commit (an
//!   fsync) per relay batch on every service database. [`Outbox::backlog`] counts only rows
//!   not yet published.

use std::{sync::Arc, time::Duration};

use events::Message;
use sqlx::{AssertSqlSafe, Row, any::AnyRow};
use tokio::sync::Notify;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use binding::{
    Binder,
    metrics::{self, Metrics},
};
use storage::{Backend, Db, Statement, Tx, deferred::delete_statements};

pub const MIGRATIONS: &[&str] = &["
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL, tags TEXT NOT NULL, keys TEXT NOT NULL,
    properties TEXT NOT NULL, body BLOB NOT NULL, created_at BIGINT NOT NULL);
"];

/// The table (its deletes ride on others' commits on SQLite, [`storage::deferred`]).
const TABLE: &str = "outbox";
/// Rows handed to the binder per publish call.
const RELAY_BATCH: i64 = 256;
const IDLE_POLL: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The advisory lock key of the outbox relay (PostgreSQL).
const RELAY_LOCK: i64 = 0x6f72_6465_7266_6c6f; // "orderflo"

/// The largest event body accepted.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("event {event} for {key} is {size} bytes, over the {MAX_EVENT_BYTES}-byte limit")]
    TooLarge { event: String, key: String, size: usize },
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

pub struct Outbox;

impl Outbox {
    /// Adds `message` to the outbox inside the caller's transaction, with the trace context
    /// of what caused it when tracing is on ([`crate::trace::stamp`]).
    pub async fn enqueue(tx: &mut Tx, message: &Message) -> Result<(), OutboxError> {
        let stamped = crate::trace::stamp(message);
        let message = stamped.as_ref().unwrap_or(message);
        if message.body.len() > MAX_EVENT_BYTES {
            return Err(OutboxError::TooLarge {
                event: message.tags.clone(),
                key: message.keys.clone(),
                size: message.body.len(),
            });
        }
        let properties = serde_json::to_string(&message.properties).unwrap_or_else(|_| "{}".into());
        tx.write(
            sqlx::query("INSERT INTO outbox (topic, tags, keys, properties, body, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(&message.topic)
                .bind(&message.tags)
                .bind(&message.keys)
                .bind(properties)
                .bind(&message.body)
                .bind(events::now_millis()),
        )
        .await?;
        tx.mark_enqueued();
        Ok(())
    }

    /// Events committed but not yet accepted by the broker.
    pub async fn backlog(db: &Db) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE id > $1")
            .bind(db.deferred().through(TABLE))
            .fetch_one(db.reader())
            .await
    }
}

/// Handle to a running relay; cheap to clone.
#[derive(Clone, Debug)]
pub struct OutboxRelay {
    notify: Arc<Notify>,
}

impl OutboxRelay {
    /// Starts the relay for `db` on `tracker`; it stops when `token` is cancelled.
    pub fn spawn(
        db: Db,
        binder: Arc<dyn Binder>,
        metrics: Metrics,
        service: &'static str,
        tracker: &TaskTracker,
        token: CancellationToken,
    ) -> OutboxRelay {
        let notify = Arc::new(Notify::new());
        let relay = OutboxRelay { notify: notify.clone() };
        tracker.spawn(run(db, binder, metrics, service, notify, token));
        relay
    }

    /// Tells the relay that rows were committed.
    pub fn wake(&self) {
        self.notify.notify_one();
    }
}

async fn run(
    db: Db,
    binder: Arc<dyn Binder>,
    metrics: Metrics,
    service: &'static str,
    notify: Arc<Notify>,
    token: CancellationToken,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let result = relay_once(&db, binder.as_ref(), &metrics).await;
        // On SQLite the one relay owns the file: a partial batch (or none) found the outbox
        // empty as of its fetch, so there is nothing to count.
        let known_empty =
            matches!(result, Ok(n) if (n as i64) < RELAY_BATCH) && db.backend() == Backend::Sqlite;
        let wait = match result {
            Ok(0) => IDLE_POLL,
            // A full batch: there may be more. A partial one emptied the outbox as of the
            // fetch; rows committed since have woken `notify`, which keeps the wake-up.
            Ok(n) if n as i64 >= RELAY_BATCH => {
                backoff = Duration::from_millis(50);
                continue;
            }
            Ok(_) => {
                backoff = Duration::from_millis(50);
                IDLE_POLL
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "outbox relay could not publish; will retry");
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        let backlog = if known_empty { Ok(0) } else { Outbox::backlog(&db).await };
        if let Ok(n) = backlog {
            metrics.set(metrics::OUTBOX_BACKLOG, &[("service", service)], n as f64);
        }
        tokio::select! {
            _ = token.cancelled() => break,
            _ = notify.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
    // So a restart does not publish those rows again. If this fails they are published
    // again, harmlessly.
    let _ = commit_deletes(&db).await;
}

/// Commits the deletes of published rows still waiting for someone's commit (SQLite), in a
/// transaction of their own.
async fn commit_deletes(db: &Db) -> Result<(), sqlx::Error> {
    if db.deferred().is_empty() {
        return Ok(());
    }
    Tx::begin(db).await?.commit().await
}

type RelayError = Box<dyn std::error::Error + Send + Sync>;

/// Publishes one batch; returns how many rows left the outbox.
async fn relay_once(db: &Db, binder: &dyn Binder, metrics: &Metrics) -> Result<usize, RelayError> {
    match db.backend() {
        // One process owns the file, and one relay: read past what was published, publish,
        // leave the deletes to the next commit (module docs). The read goes through the
        // writer (one round trip; the reader pool's driver sends every row as a message of
        // its own), which it holds only while reading.
        Backend::Sqlite => {
            let deferred = db.deferred();
            let rows = db.writer().await?.fetch_all(fetch_query(deferred.through(TABLE))).await?;
            let (mut messages, ids) = messages(&rows)?;
            if messages.is_empty() {
                // Nothing new, so likely nobody else is committing either.
                commit_deletes(db).await?;
                return Ok(0);
            }
            publish(binder, metrics, &mut messages).await?;
            deferred.record(TABLE, &ids);
            Ok(messages.len())
        }
        Backend::Postgres => {
            let mut tx = Tx::begin(db).await?;
            let mine: bool = tx
                .fetch_one(sqlx::query("SELECT pg_try_advisory_xact_lock($1)").bind(RELAY_LOCK))
                .await?
                .try_get(0)?;
            if !mine {
                return Ok(0);
            }
            let (mut messages, ids) = messages(&tx.fetch_all(fetch_query(0)).await?)?;
            if messages.is_empty() {
                return Ok(0);
            }
            publish(binder, metrics, &mut messages).await?;
            delete_and_commit(tx, &ids).await?;
            Ok(messages.len())
        }
    }
}

/// Hands `messages` to the binder, timing the call per topic and counting a refusal as a
/// publish failure of each topic in the batch.
async fn publish(
    binder: &dyn Binder,
    metrics: &Metrics,
    messages: &mut [Message],
) -> Result<(), binding::BinderError> {
    let spans = crate::trace::publish_spans(binder.system(), messages);
    let started = std::time::Instant::now();
    let result = binder.publish(messages).await;
    let took = started.elapsed();
    let mut topics: Vec<&str> = messages.iter().map(|m| m.topic.as_str()).collect();
    topics.sort_unstable();
    topics.dedup();
    for topic in topics {
        match &result {
            Ok(()) => metrics.observe(metrics::PUBLISH_SECONDS, &[("topic", topic)], took),
            Err(_) => metrics.inc(metrics::PUBLISH_FAILURES, &[("topic", topic)], 1),
        }
    }
    if let Err(e) = &result {
        spans.iter().for_each(|s| crate::trace::failed(s, &e.to_string()));
    }
    result
}

/// The oldest rows after id `after`. The limit is in the text, not bound: SQLite
/// re-prepares a statement whose LIMIT is a parameter each time it is bound.
fn fetch_query(after: i64) -> Statement<'static> {
    sqlx::query(AssertSqlSafe(format!(
        "SELECT id, topic, tags, keys, properties, body FROM outbox WHERE id > $1 ORDER BY id LIMIT {RELAY_BATCH}"
    )))
    .bind(after)
}

/// The fetched rows as messages, and their ids.
fn messages(rows: &[AnyRow]) -> Result<(Vec<Message>, Vec<i64>), RelayError> {
    let mut ids = Vec::with_capacity(rows.len());
    let mut messages = Vec::with_capacity(rows.len());
    for r in rows {
        let id: i64 = r.try_get("id")?;
        ids.push(id);
        let properties: String = r.try_get("properties")?;
        messages.push(Message {
            topic: r.try_get("topic")?,
            tags: r.try_get("tags")?,
            keys: r.try_get("keys")?,
            properties: storage::decode::json(&properties, TABLE, "properties", id)?,
            body: r.try_get("body")?,
        });
    }
    Ok((messages, ids))
}

/// Deletes exactly the published rows and commits (one round trip on SQLite). Not
/// `id <= last`: on PostgreSQL ids are taken at insert and committed in any order, so a
/// lower id can become visible after the fetch — a range delete would drop it unpublished.
async fn delete_and_commit(mut tx: Tx, ids: &[i64]) -> Result<(), sqlx::Error> {
    for q in delete_statements(TABLE, ids) {
        tx.write(q).await?;
    }
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row whose properties cannot be read is not published with `{}` (which would drop
    /// its eventId): the relay fails, naming the table and row, and the row stays.
    #[tokio::test]
    async fn a_row_with_corrupt_properties_fails_the_relay_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open_sqlite(&dir.path().join("o.db")).await.expect("open");
        db.migrate("outbox", MIGRATIONS).await.expect("migrate");
        let broker = embedded::EmbeddedBinder::open(&dir.path().join("b.db"), Metrics::new())
            .await
            .expect("broker");
        let mut tx = Tx::begin(&db).await.expect("begin");
        let message = Message {
            topic: "t".into(),
            tags: "T".into(),
            keys: "k".into(),
            properties: [("eventId".to_owned(), "e1".to_owned())].into(),
            body: b"{}".to_vec(),
        };
        Outbox::enqueue(&mut tx, &message).await.expect("enqueue");
        tx.commit().await.expect("commit");
        db.writer()
            .await
            .expect("writer")
            .execute(sqlx::query("UPDATE outbox SET properties = '{\"eventId\":'"))
            .await
            .expect("corrupt");
        let err =
            relay_once(&db, &broker, &Metrics::new()).await.expect_err("corrupt row").to_string();
        assert!(err.contains("outbox.properties of row 1"), "{err}");
        assert_eq!(Outbox::backlog(&db).await.expect("backlog"), 1, "the row stays");
        assert!(broker.topic_messages("t").await.expect("read").is_empty(), "nothing published");
        broker.shutdown().await;
        db.close().await;
    }
}
