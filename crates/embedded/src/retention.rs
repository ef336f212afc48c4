//! Broker retention: messages past `orderflow.retention.messages` (dead letters past
//! `dead-letters`, when set) leave `broker.db` — never one that a group still has to
//! acknowledge.
//!
//! - A topic's *horizon* is its oldest message some group still has a delivery for (on a
//!   dead-letter topic `%DLQ%<group>`, the oldest that group's replays still wait for).
//!   Only messages below the horizon and born before the cutoff go; a paused or slow group
//!   therefore keeps its messages, and the lag gauges and alerts show them aging.
//! - A pass first finds, by a binary search over message ids, the first message born at or
//!   after the cutoff (ids and birth times grow together: one writer assigns both). Each
//!   statement then removes at most `batch` messages of one topic below
//!   `min(horizon, that bound)`, found along the `(topic, id)` index alone, and checks each
//!   one's birth time again, so a clock that stepped back keeps a message rather than removes
//!   it early: a pass reads what it removes, not the topic (issue 20 measured the per-batch
//!   scan this replaces at 20–30 µs a message). The horizon is read in the same statement as
//!   the delete, on the one writer connection, so a delivery written meanwhile cannot lose
//!   its message. An offset reset, which reads messages and then writes their
//!   deliveries, holds [`Inner::fence`] so no removal runs in between; a dead-letter replay is
//!   one statement and needs no fence (a replay of a removed dead letter finds nothing).
//! - Freed pages go to SQLite's free list and are reused by later publishes, so under steady
//!   load `broker.db` stops growing at about a retention period's worth of messages.
//!
//! [`Inner::fence`]: crate::Inner

use std::time::Duration;

use binding::{BinderError, Retention, dlq_group, metrics};
use events::now_millis;
use storage::Tx;

use crate::EmbeddedBinder;

/// Highest message id (no horizon).
const NO_HORIZON: i64 = i64::MAX;

impl EmbeddedBinder {
    /// Removes messages as `retention` says, a pass every `retention.interval`, until the
    /// binder shuts down. Also keeps the broker's size and oldest-message gauges current.
    pub fn retain(&self, retention: Retention) {
        let binder = self.clone();
        let token = self.inner.token.clone();
        self.inner.tracker.spawn(async move {
            loop {
                if let Err(e) = binder.retention_pass(&retention, now_millis()).await {
                    tracing::warn!(error = %e, "broker retention pass failed; will try again");
                }
                let wait = retention.interval.max(Duration::from_millis(10));
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        });
    }

    /// One pass as of `now_millis`: every topic, a batch at a time. Returns how many
    /// messages went.
    pub async fn retention_pass(
        &self,
        retention: &Retention,
        now_millis: i64,
    ) -> Result<u64, BinderError> {
        let mut total = 0;
        // The bound of each cutoff (messages and dead letters may differ), found once a pass.
        let mut bounds: Vec<(i64, i64)> = Vec::with_capacity(2);
        for topic in self.stored_topics().await? {
            let keep = match dlq_group(&topic) {
                Some(_) => retention.dead_letters,
                None => Some(retention.messages),
            };
            if let Some(keep) = keep {
                let cutoff = Retention::cutoff(now_millis, keep);
                let bound = match bounds.iter().find(|(c, _)| *c == cutoff) {
                    Some(&(_, bound)) => bound,
                    None => {
                        let bound = self.first_born_at_or_after(cutoff).await?;
                        bounds.push((cutoff, bound));
                        bound
                    }
                };
                loop {
                    let removed = self.remove_batch(&topic, cutoff, bound, retention.batch).await?;
                    total += removed;
                    if removed < retention.batch as u64 || self.inner.token.is_cancelled() {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
            }
            self.measure_oldest(&topic, now_millis).await?;
        }
        if total > 0 {
            let labels = [("database", "broker"), ("table", "messages")];
            self.inner.metrics.inc(metrics::RETENTION_REMOVED, &labels, total);
            tracing::debug!(removed = total, "broker messages past retention removed");
        }
        let size = self.inner.db.size_bytes().await.map_err(BinderError::storage)?;
        self.inner.metrics.set(metrics::DATABASE_SIZE, &[("database", "broker")], size as f64);
        Ok(total)
    }

    /// The topics that hold messages, each read once along the `(topic, id)` index.
    async fn stored_topics(&self) -> Result<Vec<String>, BinderError> {
        sqlx::query_scalar(
            "WITH RECURSIVE t(topic) AS (
                 SELECT MIN(topic) FROM messages
                 UNION ALL
                 SELECT (SELECT MIN(topic) FROM messages WHERE topic > t.topic) FROM t
                 WHERE t.topic IS NOT NULL)
             SELECT topic FROM t WHERE topic IS NOT NULL",
        )
        .fetch_all(self.inner.db.reader())
        .await
        .map_err(BinderError::storage)
    }

    /// The lowest message id at or above which every stored message was born at or after
    /// `cutoff` (one past the last message if all are older): a binary search over ids, a
    /// few dozen primary-key reads whatever the table holds.
    async fn first_born_at_or_after(&self, cutoff: i64) -> Result<i64, BinderError> {
        let reader = self.inner.db.reader();
        let (min, max): (Option<i64>, Option<i64>) =
            sqlx::query_as("SELECT MIN(id), MAX(id) FROM messages")
                .fetch_one(reader)
                .await
                .map_err(BinderError::storage)?;
        let (Some(mut lo), Some(max)) = (min, max) else { return Ok(0) };
        let mut hi = max + 1;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let next: Option<(i64, i64)> = sqlx::query_as(
                "SELECT id, born_at FROM messages WHERE id >= $1 ORDER BY id LIMIT 1",
            )
            .bind(mid)
            .fetch_optional(reader)
            .await
            .map_err(BinderError::storage)?;
            match next {
                Some((id, born_at)) if born_at < cutoff => lo = id + 1,
                _ => hi = mid,
            }
        }
        Ok(lo)
    }

    /// Removes up to `batch` of `topic`'s messages below its horizon and below `bound`
    /// ([`Self::first_born_at_or_after`]), each born before `cutoff`.
    async fn remove_batch(
        &self,
        topic: &str,
        cutoff: i64,
        bound: i64,
        batch: usize,
    ) -> Result<u64, BinderError> {
        // Whose deliveries hold the topic's messages: its own (groups subscribed to it), or
        // on a dead-letter topic the group's replays, which are delivered on their origin
        // topic.
        let (holder, held_by) = match dlq_group(topic) {
            Some(group) => ("grp", group),
            None => ("topic", topic),
        };
        let sql = format!(
            "DELETE FROM messages WHERE id IN (
                 SELECT id FROM messages WHERE topic = $1 AND id < $4 AND id < COALESCE(
                     (SELECT MIN(message_id) FROM deliveries WHERE {holder} = $3), {NO_HORIZON})
                 ORDER BY id LIMIT {batch})
             AND born_at < $2"
        );
        let _fence = self.inner.fence.lock().await;
        let mut tx = Tx::begin(&self.inner.db).await.map_err(BinderError::storage)?;
        let removed = tx
            .execute(
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(topic)
                    .bind(cutoff)
                    .bind(held_by)
                    .bind(bound),
            )
            .await
            .map_err(BinderError::storage)?
            .rows_affected();
        tx.commit().await.map_err(BinderError::storage)?;
        Ok(removed)
    }

    /// Sets `orderflow_retention_oldest_message_age_seconds{topic}`.
    async fn measure_oldest(&self, topic: &str, now_millis: i64) -> Result<(), BinderError> {
        let born: Option<i64> =
            sqlx::query_scalar("SELECT born_at FROM messages WHERE topic = $1 ORDER BY id LIMIT 1")
                .bind(topic)
                .fetch_optional(self.inner.db.reader())
                .await
                .map_err(BinderError::storage)?;
        let age = born.map_or(Duration::ZERO, |b| metrics::age(b, now_millis));
        self.inner.metrics.set(metrics::OLDEST_MESSAGE, &[("topic", topic)], age.as_secs_f64());
        Ok(())
    }
}
