//! The embedded binder: durable topics in one SQLite file, consumed in process.
//!
//! Model (RocketMQ's semantics, on tables):
//! - `messages`: every published message, in publish order; a dead letter is a message on
//!   topic `%DLQ%<group>`.
//! - `subscriptions`: (group, topic, tag expression), durable: a group that is down still
//!   accumulates the messages published meanwhile; a new group starts from the next message,
//!   as RocketMQ's CONSUME_FROM_LAST_OFFSET.
//! - `deliveries`: one row per (group, message) still to be acknowledged, written in the same
//!   transaction as the message. A worker claims due rows by setting a lease (up to 32
//!   handler batches in one commit, handled one `batch-size` batch at a time, settled in one
//!   commit that also leases the next rows); `Done` deletes
//!   the row, `Retry` pushes `due_at` back by the binding's backoff, and the last failed
//!   attempt (or `DeadLetter`) moves the message to `%DLQ%<group>` and deletes the row.
//! - At-least-once: a claimed row whose worker dies is claimed again when its lease runs
//!   out; a restart releases all leases at once. One process owns the file: it holds a lock
//!   on `<file>.lock` from open to shutdown, and a second process is refused.
//! - `orderly`: a row is claimable only when no earlier row of the same group, topic and key
//!   is pending, so each orderNo's messages are handled one at a time, in order, while
//!   different keys proceed in parallel.
//! - Offsets (mqadmin's view, `admin.rs`): one queue per topic, whose offsets are message ids;
//!   a group's offset is its oldest delivery of the topic still waiting.
//! - Retention (`retention.rs`): messages past their retention that no group still waits for
//!   are removed in small batches.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use events::{Message, now_millis};
use sqlx::{AssertSqlSafe, Row, any::AnyRow};
use tokio::sync::Notify;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use binding::{
    Binder, BinderError, BindingControl, BindingState, ConsumerBinding, DeadLetter, Delivery,
    MessageHandler, Outcome, dlq_topic,
    metrics::{self, Metrics},
    tags::TagExpression,
};
use storage::{Db, DbError, Statement, Tx, rows};

mod admin;
mod retention;

/// Property on a dead letter naming the topic it came from (RocketMQ's `RETRY_TOPIC`).
pub const PROP_ORIGIN_TOPIC: &str = "RETRY_TOPIC";
pub const PROP_DLQ_ERROR: &str = "DLQ_ERROR";
pub const PROP_DLQ_ATTEMPTS: &str = "DLQ_ATTEMPTS";

const MIGRATIONS: &[&str] = &["
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL, tags TEXT NOT NULL, keys TEXT NOT NULL,
    properties TEXT NOT NULL, body BLOB NOT NULL, born_at BIGINT NOT NULL);
CREATE INDEX messages_by_topic ON messages (topic, id);
CREATE TABLE subscriptions (
    grp TEXT NOT NULL, topic TEXT NOT NULL, expression TEXT NOT NULL,
    PRIMARY KEY (grp, topic));
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    grp TEXT NOT NULL, topic TEXT NOT NULL, message_id BIGINT NOT NULL, msg_key TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0, due_at BIGINT NOT NULL,
    leased_until BIGINT NOT NULL DEFAULT 0, lease_owner BIGINT, last_error TEXT);
CREATE INDEX deliveries_due ON deliveries (grp, topic, due_at);
CREATE INDEX deliveries_key ON deliveries (grp, topic, msg_key, id);
CREATE INDEX deliveries_lease ON deliveries (lease_owner);
"];

/// The lease statements, without their limit: it goes into the SQL text as a number
/// ([`Inner::lease`]). SQLite re-prepares a statement whose `LIMIT` is a bound parameter
/// every time it is bound again (the planner looked at the value), and these run for every
/// batch.
macro_rules! claim_sql {
    ($extra:literal) => {
        concat!(
            "UPDATE deliveries SET leased_until = $1, lease_owner = $2, attempts = attempts + 1
             WHERE id IN (SELECT d.id FROM deliveries d
                          WHERE d.grp = $3 AND d.topic = $4 AND d.due_at <= $5 AND d.leased_until <= $5 ",
            $extra,
            " ORDER BY d.id LIMIT "
        )
    };
}
const CLAIM: &str = claim_sql!("");
/// Orderly: only the earliest pending delivery of each key is claimable.
const CLAIM_ORDERLY: &str = claim_sql!(
    "AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.grp = d.grp AND e.topic = d.topic
                     AND e.msg_key = d.msg_key AND e.id < d.id)"
);

/// Handler batches claimed (and settled) together: one `broker.db` commit each way for up to
/// this many batches, where one per batch made every delivery cost three commits.
const CLAIM_BATCHES: usize = 32;
/// How long a claimed batch may take before its messages are handed out again.
const LEASE: Duration = Duration::from_secs(60);
/// Longest idle wait before a worker looks again even without a wake-up.
const IDLE_POLL: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct EmbeddedBinder {
    inner: Arc<Inner>,
}

struct Subscription {
    group: String,
    topic: String,
    expression: TagExpression,
}

struct Inner {
    db: Db,
    metrics: Metrics,
    subscriptions: RwLock<Vec<Subscription>>,
    /// The groups this process consumes as.
    bound: Mutex<std::collections::BTreeSet<String>>,
    wakers: Mutex<HashMap<(String, String), Arc<Notify>>>,
    next_lease: AtomicI64,
    /// The last message id handed out. Only the one writer connection inserts messages, so
    /// ids are handed out in commit order (a rolled-back publish leaves a harmless gap).
    last_message_id: AtomicI64,
    /// Held by retention's removals and by offset resets (which read messages, then write
    /// deliveries for them), so that no message is removed in between.
    fence: tokio::sync::Mutex<()>,
    /// `<file>.lock`, locked while this process owns the file; released at shutdown.
    lock: Mutex<Option<std::fs::File>>,
    token: CancellationToken,
    tracker: TaskTracker,
}

struct Claimed {
    delivery_id: i64,
    delivery: Delivery,
}

impl EmbeddedBinder {
    /// Opens (or creates) the broker file and releases leases left by a previous process;
    /// [`BinderError::InUse`] while another process has it open.
    pub async fn open(path: &Path, metrics: Metrics) -> Result<EmbeddedBinder, BinderError> {
        let lock = own(path)?;
        Self::open_db(path, metrics, lock).await.map_err(BinderError::storage)
    }

    async fn open_db(
        path: &Path,
        metrics: Metrics,
        lock: std::fs::File,
    ) -> Result<EmbeddedBinder, DbError> {
        let db = Db::open_sqlite(path).await?;
        db.migrate("embedded-broker", MIGRATIONS).await?;
        db.writer()
            .await?
            .execute(sqlx::query("UPDATE deliveries SET leased_until = 0, lease_owner = NULL WHERE lease_owner IS NOT NULL"))
            .await?;
        let rows = sqlx::query("SELECT grp, topic, expression FROM subscriptions")
            .fetch_all(db.reader())
            .await?;
        let last_message_id: i64 = sqlx::query_scalar(
            "SELECT MAX(COALESCE((SELECT MAX(id) FROM messages), 0),
                        COALESCE((SELECT MAX(seq) FROM sqlite_sequence WHERE name = 'messages'), 0))",
        )
        .fetch_one(db.reader())
        .await?;
        let mut subscriptions = Vec::new();
        for row in rows {
            let expression: String = row.try_get("expression")?;
            if let Ok(expression) = TagExpression::parse(&expression) {
                subscriptions.push(Subscription {
                    group: row.try_get("grp")?,
                    topic: row.try_get("topic")?,
                    expression,
                });
            }
        }
        Ok(EmbeddedBinder {
            inner: Arc::new(Inner {
                db,
                metrics,
                subscriptions: RwLock::new(subscriptions),
                bound: Mutex::new(Default::default()),
                wakers: Mutex::new(HashMap::new()),
                next_lease: AtomicI64::new(now_millis().saturating_mul(1000)),
                last_message_id: AtomicI64::new(last_message_id),
                fence: tokio::sync::Mutex::new(()),
                lock: Mutex::new(Some(lock)),
                token: CancellationToken::new(),
                tracker: TaskTracker::new(),
            }),
        })
    }

    /// Messages still to be acknowledged by `group` on `topic` (its backlog).
    pub async fn backlog(&self, group: &str, topic: &str) -> Result<i64, BinderError> {
        Ok(self.lag(group, topic).await?.messages)
    }

    /// Deliveries not yet acknowledged, over every group and topic.
    pub async fn pending(&self) -> Result<i64, BinderError> {
        sqlx::query_scalar("SELECT COUNT(*) FROM deliveries")
            .fetch_one(self.inner.db.reader())
            .await
            .map_err(BinderError::storage)
    }

    /// Every message ever published to `topic`, oldest first (for inspection and tests).
    pub async fn topic_messages(&self, topic: &str) -> Result<Vec<Message>, BinderError> {
        let rows = sqlx::query(
            "SELECT id, topic, tags, keys, properties, body FROM messages WHERE topic = $1 ORDER BY id",
        )
        .bind(topic)
        .fetch_all(self.inner.db.reader())
        .await
        .map_err(BinderError::storage)?;
        rows.iter()
            .map(|r| r.try_get("id").and_then(|id| row_message(r, id)))
            .collect::<Result<_, _>>()
            .map_err(BinderError::storage)
    }
}

/// Takes `<path>.lock` for this process, or says who has it.
fn own(path: &Path) -> Result<std::fs::File, BinderError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let file =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&name).map_err(
            |e| BinderError::Unavailable(format!("{}: {e}", Path::new(&name).display())),
        )?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(BinderError::InUse(path.display().to_string()))
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(BinderError::Unavailable(format!("{}: {e}", Path::new(&name).display())))
        }
    }
}

/// The deliveries a lease's read found.
fn claimed_rows(rows: &[AnyRow]) -> Result<Vec<Claimed>, sqlx::Error> {
    rows.iter()
        .map(|r| {
            let attempts: i64 = r.try_get("attempts")?;
            let message_id: i64 = r.try_get("message_id")?;
            let stored_topic: String = r.try_get("stored_topic")?;
            let mut message = row_message(r, message_id)?;
            if stored_topic != message.topic {
                for k in [PROP_ORIGIN_TOPIC, PROP_DLQ_ERROR, PROP_DLQ_ATTEMPTS] {
                    message.properties.remove(k);
                }
            }
            Ok(Claimed {
                delivery_id: r.try_get("delivery_id")?,
                delivery: Delivery {
                    message,
                    attempt: attempts.clamp(1, u32::MAX as i64) as u32,
                    message_id: message_id.to_string(),
                    born_at: r.try_get("born_at")?,
                },
            })
        })
        .collect()
}

/// The message of a row of `messages` (its id given, for the error if it is corrupt).
fn row_message(row: &AnyRow, id: i64) -> Result<Message, sqlx::Error> {
    let properties: String = row.try_get("properties")?;
    Ok(Message {
        topic: row.try_get("topic")?,
        tags: row.try_get("tags")?,
        keys: row.try_get("keys")?,
        properties: storage::decode::json(&properties, "messages", "properties", id)?,
        body: row.try_get("body")?,
    })
}

impl Inner {
    fn waker(&self, group: &str, topic: &str) -> Arc<Notify> {
        let mut wakers = self.wakers.lock().unwrap_or_else(|p| p.into_inner());
        wakers.entry((group.to_owned(), topic.to_owned())).or_default().clone()
    }

    fn wake(&self, group: &str, topic: &str) {
        let wakers = self.wakers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = wakers.get(&(group.to_owned(), topic.to_owned())) {
            n.notify_waiters();
        }
    }

    /// Inserts `messages` and their deliveries, many rows per statement ([`rows`]), inside
    /// the writer's open transaction. Message ids are given explicitly from
    /// `last_message_id`, so they keep publish order (the order of a multi-row insert's
    /// `RETURNING` is unspecified). Returns the (group, topic) pairs that got a delivery.
    async fn insert(
        &self,
        tx: &mut Tx,
        messages: &[Message],
        now: i64,
    ) -> Result<Vec<(String, String)>, sqlx::Error> {
        let last = self.last_message_id.fetch_add(messages.len() as i64, Ordering::SeqCst);
        let numbered: Vec<(i64, &Message)> =
            messages.iter().enumerate().map(|(i, m)| (last + 1 + i as i64, m)).collect();
        let mut deliveries: Vec<(String, &Message, i64)> = Vec::new();
        {
            let subs = self.subscriptions.read().unwrap_or_else(|p| p.into_inner());
            for &(id, m) in &numbered {
                for s in subs.iter().filter(|s| s.topic == m.topic && s.expression.matches(&m.tags))
                {
                    deliveries.push((s.group.clone(), m, id));
                }
            }
        }
        for chunk in rows::chunks(&numbered) {
            let sql = rows::values(
                "INSERT INTO messages (id, topic, tags, keys, properties, body, born_at) VALUES",
                7,
                chunk.len(),
            );
            let mut q = sqlx::query(sql);
            for &(id, m) in chunk {
                let properties =
                    serde_json::to_string(&m.properties).unwrap_or_else(|_| "{}".into());
                q = q
                    .bind(id)
                    .bind(&m.topic)
                    .bind(&m.tags)
                    .bind(&m.keys)
                    .bind(properties)
                    .bind(&m.body)
                    .bind(now);
            }
            tx.write(q).await?;
        }
        for chunk in rows::chunks(&deliveries) {
            let sql = rows::values(
                "INSERT INTO deliveries (grp, topic, message_id, msg_key, due_at) VALUES",
                5,
                chunk.len(),
            );
            let mut q = sqlx::query(sql);
            for (group, m, id) in chunk {
                q = q.bind(group).bind(&m.topic).bind(*id).bind(&m.keys).bind(now);
            }
            tx.write(q).await?;
        }
        let mut woken: Vec<(String, String)> =
            deliveries.into_iter().map(|(g, m, _)| (g, m.topic.clone())).collect();
        woken.sort();
        woken.dedup();
        Ok(woken)
    }

    /// Leases up to `limit` due deliveries of the binding: one commit (one round trip).
    async fn claim(&self, b: &ConsumerBinding, limit: usize) -> Result<Vec<Claimed>, sqlx::Error> {
        let mut tx = Tx::begin(&self.db).await?;
        let read = self.lease(&mut tx, b, limit).await?;
        claimed_rows(&tx.fetch_and_commit(read).await?)
    }

    /// Queues the lease of up to `limit` due deliveries of the binding in `tx`; returns the
    /// statement that reads what it leased.
    async fn lease<'a>(
        &self,
        tx: &mut Tx,
        b: &'a ConsumerBinding,
        limit: usize,
    ) -> Result<Statement<'a>, sqlx::Error> {
        let now = now_millis();
        let owner = self.next_lease.fetch_add(1, Ordering::Relaxed);
        let sql = format!("{}{limit})", if b.orderly { CLAIM_ORDERLY } else { CLAIM });
        tx.write(
            sqlx::query(AssertSqlSafe(sql))
                .bind(now + LEASE.as_millis() as i64)
                .bind(owner)
                .bind(&b.group)
                .bind(&b.destination)
                .bind(now),
        )
        .await?;
        // A replayed dead letter is delivered on its origin topic (the delivery's), not on
        // the DLQ topic it is stored under.
        Ok(sqlx::query(
            "SELECT d.id AS delivery_id, d.attempts, d.message_id, m.topic AS stored_topic,
                    d.topic, m.tags, m.keys, m.properties, m.body, m.born_at
             FROM deliveries d JOIN messages m ON m.id = d.message_id
             WHERE d.lease_owner = $1 ORDER BY d.id",
        )
        .bind(owner))
    }

    /// Settles `claimed` by their outcomes and, given `next`, leases up to that many more in
    /// the same commit (one `broker.db` commit per handled batch, not two).
    async fn settle(
        &self,
        b: &ConsumerBinding,
        claimed: &[Claimed],
        outcomes: &[Outcome],
        next: Option<usize>,
    ) -> Result<Vec<Claimed>, sqlx::Error> {
        let now = now_millis();
        let labels = [("topic", b.destination.as_str()), ("group", b.group.as_str())];
        let mut tx = Tx::begin(&self.db).await?;
        let mut settled: Vec<i64> = Vec::with_capacity(claimed.len());
        let mut dead_letters: Vec<Message> = Vec::new();
        let mut counts = [0u64; 3]; // failed, retried, dead-lettered
        let mut acknowledged = Vec::with_capacity(claimed.len());
        for (i, c) in claimed.iter().enumerate() {
            let outcome = outcomes
                .get(i)
                .cloned()
                .unwrap_or_else(|| Outcome::Retry("handler returned no outcome".into()));
            let dead = match outcome {
                Outcome::Done => {
                    acknowledged.push(metrics::age(c.delivery.born_at, now));
                    None
                }
                Outcome::Retry(e) if c.delivery.attempt < b.max_attempts => {
                    counts[0] += 1;
                    counts[1] += 1;
                    let delay = b.backoff.delay(c.delivery.attempt + 1).as_millis() as i64;
                    tx.write(
                        sqlx::query(
                            "UPDATE deliveries SET leased_until = 0, lease_owner = NULL, due_at = $1, last_error = $2
                             WHERE id = $3",
                        )
                        .bind(now + delay)
                        .bind(e.clone())
                        .bind(c.delivery_id),
                    )
                    .await?;
                    tracing::warn!(topic = %b.destination, group = %b.group, attempt = c.delivery.attempt,
                        key = %c.delivery.message.keys, error = %e, "message will be redelivered");
                    continue;
                }
                Outcome::Retry(e) | Outcome::DeadLetter(e) => {
                    counts[0] += 1;
                    Some(e)
                }
            };
            if let Some(error) = dead {
                counts[2] += 1;
                let mut m = c.delivery.message.clone();
                m.properties.insert(PROP_ORIGIN_TOPIC.into(), m.topic.clone());
                m.properties.insert(PROP_DLQ_ERROR.into(), error.clone());
                m.properties.insert(PROP_DLQ_ATTEMPTS.into(), c.delivery.attempt.to_string());
                m.topic = dlq_topic(&b.group);
                tracing::error!(topic = %b.destination, group = %b.group, attempt = c.delivery.attempt,
                    key = %m.keys, error = %error, "message moved to the dead-letter queue");
                dead_letters.push(m);
            }
            settled.push(c.delivery_id);
        }
        let woken = if dead_letters.is_empty() {
            Vec::new()
        } else {
            self.insert(&mut tx, &dead_letters, now).await?
        };
        for chunk in rows::chunks(&settled) {
            let mut q =
                sqlx::query(rows::in_list("DELETE FROM deliveries WHERE id IN", 1, chunk.len()));
            for id in chunk {
                q = q.bind(*id);
            }
            tx.write(q).await?;
        }
        let claimed = match next {
            Some(limit) => {
                let read = self.lease(&mut tx, b, limit).await?;
                claimed_rows(&tx.fetch_and_commit(read).await?)?
            }
            None => {
                tx.commit().await?;
                Vec::new()
            }
        };
        let m = &self.metrics;
        m.acknowledged(&labels, acknowledged);
        for (name, n) in [
            (metrics::FAILED, counts[0]),
            (metrics::RETRIED, counts[1]),
            (metrics::DEAD_LETTERED, counts[2]),
        ] {
            if n > 0 {
                m.inc(name, &labels, n);
            }
        }
        // Settling may unblock this binding's next message of a key (orderly): the other
        // workers must look again (this one just did, in `next`'s claim). Dead letters feed
        // DLQ readers.
        if b.concurrency > 1 {
            self.wake(&b.group, &b.destination);
        }
        for (g, topic) in woken {
            self.wake(&g, &topic);
        }
        Ok(claimed)
    }

    /// When the earliest delivery that is not yet due becomes due.
    async fn next_due(&self, b: &ConsumerBinding, now: i64) -> Option<i64> {
        sqlx::query_scalar::<_, Option<i64>>(
            "SELECT MIN(CASE WHEN leased_until > due_at THEN leased_until ELSE due_at END)
             FROM deliveries WHERE grp = $1 AND topic = $2 AND (due_at > $3 OR leased_until > $3)",
        )
        .bind(&b.group)
        .bind(&b.destination)
        .bind(now)
        .fetch_one(self.db.reader())
        .await
        .ok()
        .flatten()
    }

    async fn work(
        self: Arc<Self>,
        b: ConsumerBinding,
        handler: Arc<dyn MessageHandler>,
        control: BindingControl,
    ) {
        let waker = self.waker(&b.group, &b.destination);
        let limit = b.batch_size.saturating_mul(CLAIM_BATCHES);
        // Leased by the last settle's commit, still to be handled.
        let mut ahead: Vec<Claimed> = Vec::new();
        // The last settle's commit found nothing more to lease: wait for a wake, not claim.
        let mut drained = false;
        // Armed before every claim and settle, so a publish committed after it wakes us.
        let mut notified = Box::pin(waker.notified());
        loop {
            tokio::select! {
                _ = self.token.cancelled() => return,
                _ = control.running() => {}
            }
            if !drained {
                notified = Box::pin(waker.notified());
                notified.as_mut().enable();
            }
            let claimed = if !ahead.is_empty() {
                std::mem::take(&mut ahead)
            } else if std::mem::take(&mut drained) {
                Vec::new()
            } else {
                match self.claim(&b, limit).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(group = %b.group, topic = %b.destination, error = %e, "claim failed");
                        tokio::select! {
                            _ = self.token.cancelled() => return,
                            _ = tokio::time::sleep(IDLE_POLL) => continue,
                        }
                    }
                }
            };
            if claimed.is_empty() {
                let now = now_millis();
                let wait = match self.next_due(&b, now).await {
                    Some(due) => Duration::from_millis(
                        (due - now).clamp(1, IDLE_POLL.as_millis() as i64) as u64,
                    ),
                    None => IDLE_POLL,
                };
                tokio::select! {
                    _ = self.token.cancelled() => return,
                    _ = &mut notified => {}
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
            // The handler sees `batch-size` messages at a time; the claim and the settle of
            // up to CLAIM_BATCHES such batches share one commit each.
            let mut outcomes = Vec::with_capacity(claimed.len());
            for chunk in claimed.chunks(b.batch_size.max(1)) {
                let batch: Vec<Delivery> = chunk.iter().map(|c| c.delivery.clone()).collect();
                let mut answered = handler.handle(&batch).await;
                answered.resize(batch.len(), Outcome::Retry("handler returned no outcome".into()));
                outcomes.extend(answered);
            }
            // The settle leases the next batch in its commit, unless the binding is stopping
            // or paused. A failed settle leaves the leases to expire: the batch is delivered
            // again.
            let next = (!self.token.is_cancelled() && control.state() == BindingState::Running)
                .then_some(limit);
            notified = Box::pin(waker.notified());
            notified.as_mut().enable();
            match self.settle(&b, &claimed, &outcomes, next).await {
                Ok(claimed) => {
                    drained = next.is_some() && claimed.is_empty();
                    ahead = claimed;
                }
                Err(e) => {
                    tracing::error!(group = %b.group, topic = %b.destination, error = %e, "settle failed; batch will be redelivered")
                }
            }
        }
    }
}

#[async_trait]
impl Binder for EmbeddedBinder {
    fn system(&self) -> &'static str {
        "orderflow_embedded"
    }

    async fn publish(&self, messages: &[Message]) -> Result<(), BinderError> {
        if self.inner.token.is_cancelled() {
            return Err(BinderError::ShuttingDown);
        }
        if messages.is_empty() {
            return Ok(());
        }
        let now = now_millis();
        let mut tx = Tx::begin(&self.inner.db).await.map_err(BinderError::storage)?;
        let woken =
            self.inner.insert(&mut tx, messages, now).await.map_err(BinderError::storage)?;
        tx.commit().await.map_err(BinderError::storage)?;
        let mut per_topic: BTreeMap<&str, u64> = BTreeMap::new();
        for m in messages {
            *per_topic.entry(m.topic.as_str()).or_default() += 1;
        }
        for (topic, n) in per_topic {
            self.inner.metrics.inc(metrics::PUBLISHED, &[("topic", topic)], n);
        }
        for (g, t) in woken {
            self.inner.wake(&g, &t);
        }
        Ok(())
    }

    async fn bind_consumer(
        &self,
        binding: ConsumerBinding,
        handler: Arc<dyn MessageHandler>,
    ) -> Result<BindingControl, BinderError> {
        self.inner
            .db
            .writer()
            .await
            .map_err(BinderError::storage)?
            .execute(
                sqlx::query(
                    "INSERT INTO subscriptions (grp, topic, expression) VALUES ($1, $2, $3)
             ON CONFLICT (grp, topic) DO UPDATE SET expression = excluded.expression",
                )
                .bind(&binding.group)
                .bind(&binding.destination)
                .bind(binding.subscription.to_string()),
            )
            .await
            .map_err(BinderError::storage)?;
        {
            let mut subs = self.inner.subscriptions.write().unwrap_or_else(|p| p.into_inner());
            subs.retain(|s| !(s.group == binding.group && s.topic == binding.destination));
            subs.push(Subscription {
                group: binding.group.clone(),
                topic: binding.destination.clone(),
                expression: binding.subscription.clone(),
            });
        }
        self.inner.bound.lock().unwrap_or_else(|p| p.into_inner()).insert(binding.group.clone());
        let control = BindingControl::new(binding.clone());
        for _ in 0..binding.concurrency {
            let inner = self.inner.clone();
            let (b, h, c) = (binding.clone(), handler.clone(), control.clone());
            self.inner.tracker.spawn(async move { inner.work(b, h, c).await });
        }
        tracing::info!(binding = %binding.name, group = %binding.group, topic = %binding.destination,
            subscription = %binding.subscription, orderly = binding.orderly, "consumer bound");
        Ok(control)
    }

    async fn check(&self) -> Result<(), BinderError> {
        self.inner.db.ping().await.map_err(|e| BinderError::Unavailable(e.to_string()))
    }

    async fn dead_letters(
        &self,
        group: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BinderError> {
        let rows = sqlx::query(
            "SELECT id, topic, tags, keys, properties, body, born_at FROM messages
             WHERE topic = $1 ORDER BY id LIMIT $2",
        )
        .bind(dlq_topic(group))
        .bind(limit as i64)
        .fetch_all(self.inner.db.reader())
        .await
        .map_err(BinderError::storage)?;
        rows.iter()
            .map(|r| {
                let id: i64 = r.try_get("id")?;
                let mut m = row_message(r, id)?;
                let take = |m: &mut Message, k: &str| m.properties.remove(k).unwrap_or_default();
                Ok(DeadLetter {
                    message_id: id.to_string(),
                    group: group.to_owned(),
                    origin_topic: take(&mut m, PROP_ORIGIN_TOPIC),
                    error: take(&mut m, PROP_DLQ_ERROR),
                    attempts: {
                        let attempts = take(&mut m, PROP_DLQ_ATTEMPTS);
                        attempts.parse().map_err(|e| {
                            storage::decode::corrupt(
                                "messages",
                                "properties.DLQ_ATTEMPTS",
                                id,
                                format!("{attempts:?}: {e}"),
                            )
                        })?
                    },
                    tags: m.tags,
                    keys: m.keys,
                    properties: m.properties,
                    body: String::from_utf8_lossy(&m.body).into_owned(),
                    dead_at: r.try_get("born_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(BinderError::storage)
    }

    async fn replay(&self, dead: &DeadLetter) -> Result<(), BinderError> {
        let id: i64 = dead.message_id.parse().map_err(|_| {
            BinderError::Unavailable(format!("no dead letter {:?}", dead.message_id))
        })?;
        // One statement: a dead letter removed by retention meanwhile is simply not found.
        let replayed = self
            .inner
            .db
            .writer()
            .await
            .map_err(BinderError::storage)?
            .execute(
                sqlx::query(
                    "INSERT INTO deliveries (grp, topic, message_id, msg_key, due_at)
             SELECT $1, $2, id, keys, $3 FROM messages WHERE id = $4 AND topic = $5",
                )
                .bind(&dead.group)
                .bind(&dead.origin_topic)
                .bind(now_millis())
                .bind(id)
                .bind(dlq_topic(&dead.group)),
            )
            .await
            .map_err(BinderError::storage)?;
        if replayed.rows_affected() == 0 {
            return Err(BinderError::Unavailable(format!(
                "dead letter {} is no longer kept (dead-letter retention)",
                dead.message_id
            )));
        }
        self.inner.wake(&dead.group, &dead.origin_topic);
        Ok(())
    }

    /// The group's deliveries still in `deliveries` (leased ones too: not yet acknowledged),
    /// and the birth of the oldest of their messages.
    async fn lag(&self, group: &str, topic: &str) -> Result<binding::Lag, BinderError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(m.born_at) AS oldest
             FROM deliveries d JOIN messages m ON m.id = d.message_id
             WHERE d.grp = $1 AND d.topic = $2",
        )
        .bind(group)
        .bind(topic)
        .fetch_one(self.inner.db.reader())
        .await
        .map_err(BinderError::storage)?;
        Ok(binding::Lag {
            messages: row.try_get("n").map_err(BinderError::storage)?,
            oldest_born_at: row.try_get("oldest").map_err(BinderError::storage)?,
            queues: Vec::new(),
        })
    }

    fn admin(&self) -> &dyn binding::BrokerAdmin {
        self
    }

    async fn shutdown(&self) {
        self.inner.token.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
        self.inner.db.close().await;
        // Dropping the file releases its lock: another process may open the broker now.
        self.inner.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}
