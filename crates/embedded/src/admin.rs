//! mqadmin's questions on the embedded binder ([`BrokerAdmin`]).
//!
//! Each topic is one queue (0) whose offsets are message ids: a group's offset on a topic is
//! its oldest message still to be acknowledged (its `deliveries` row), or the topic's end.
//! Moving an offset rewrites the group's deliveries of that topic in one writer transaction,
//! so it is atomic against publishes and settles: a batch in flight when it commits settles
//! nothing (its rows are gone) and, after a rewind, is delivered again, which the inbox
//! absorbs. Replayed dead letters waiting for the group are left alone.

use async_trait::async_trait;
use binding::{
    BinderError, BrokerAdmin, ClientConnection, GroupConnections, GroupConsumption, QueueOffset,
    QueueStatus, ResetTo, StoredMessage, Subscribed, tags::TagExpression,
};
use events::now_millis;
use sqlx::{Row, any::AnyRow};
use storage::{Tx, decode::corrupt, rows};

use crate::{EmbeddedBinder, row_message};

/// The broker name the embedded binder reports.
const BROKER: &str = "embedded";

const MESSAGE_COLUMNS: &str = "id, topic, tags, keys, properties, body, born_at";

impl EmbeddedBinder {
    /// Every durable subscription, (group, topic), sorted: the groups whose offsets this
    /// broker keeps, whether or not they are online.
    pub fn subscribed(&self) -> Vec<(String, String)> {
        let subs = self.inner.subscriptions.read().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<(String, String)> =
            subs.iter().map(|s| (s.group.clone(), s.topic.clone())).collect();
        all.sort();
        all
    }

    fn expression(&self, group: &str, topic: &str) -> Option<TagExpression> {
        let subs = self.inner.subscriptions.read().unwrap_or_else(|p| p.into_inner());
        subs.iter().find(|s| s.group == group && s.topic == topic).map(|s| s.expression.clone())
    }

    /// A stored message with, for each group subscribed to its topic whose expression takes
    /// its tags, whether that group has acknowledged it (no delivery row left).
    async fn stored(&self, row: &AnyRow) -> Result<StoredMessage, BinderError> {
        let id: i64 = row.try_get("id").map_err(BinderError::storage)?;
        let m = row_message(row, id).map_err(BinderError::storage)?;
        let groups: Vec<String> = {
            let subs = self.inner.subscriptions.read().unwrap_or_else(|p| p.into_inner());
            subs.iter()
                .filter(|s| s.topic == m.topic && s.expression.matches(&m.tags))
                .map(|s| s.group.clone())
                .collect()
        };
        let mut consumption = Vec::with_capacity(groups.len());
        for group in groups {
            let waiting: Option<i64> = sqlx::query_scalar(
                "SELECT attempts FROM deliveries
                 WHERE grp = $1 AND topic = $2 AND msg_key = $3 AND message_id = $4",
            )
            .bind(&group)
            .bind(&m.topic)
            .bind(&m.keys)
            .bind(id)
            .fetch_optional(self.inner.db.reader())
            .await
            .map_err(BinderError::storage)?;
            let attempts = waiting
                .map(|n| u32::try_from(n).map_err(|e| corrupt("deliveries", "attempts", id, e)))
                .transpose()
                .map_err(BinderError::storage)?;
            consumption.push(GroupConsumption { group, consumed: waiting.is_none(), attempts });
        }
        consumption.sort_by(|a, b| a.group.cmp(&b.group));
        Ok(StoredMessage {
            message_id: id.to_string(),
            broker: BROKER.into(),
            queue_id: 0,
            queue_offset: id,
            born_at: row.try_get("born_at").map_err(BinderError::storage)?,
            body: String::from_utf8_lossy(&m.body).into_owned(),
            topic: m.topic,
            tags: m.tags,
            keys: m.keys,
            properties: m.properties,
            groups: consumption,
        })
    }
}

#[async_trait]
impl BrokerAdmin for EmbeddedBinder {
    /// The topics that hold messages or have a subscription.
    async fn topics(&self) -> Result<Vec<String>, BinderError> {
        let mut topics: Vec<String> = sqlx::query_scalar(
            "SELECT topic FROM messages GROUP BY topic UNION SELECT topic FROM subscriptions",
        )
        .fetch_all(self.inner.db.reader())
        .await
        .map_err(BinderError::storage)?;
        topics.sort();
        topics.dedup();
        Ok(topics)
    }

    async fn topic_status(&self, topic: &str) -> Result<Vec<QueueStatus>, BinderError> {
        let row = sqlx::query(
            "SELECT MIN(id) AS first, MAX(id) AS last,
                    (SELECT born_at FROM messages WHERE id = (SELECT MAX(id) FROM messages WHERE topic = $1)) AS updated
             FROM messages WHERE topic = $1",
        )
        .bind(topic)
        .fetch_one(self.inner.db.reader())
        .await
        .map_err(BinderError::storage)?;
        let first: Option<i64> = row.try_get("first").map_err(BinderError::storage)?;
        let last: Option<i64> = row.try_get("last").map_err(BinderError::storage)?;
        let last_updated: Option<i64> = row.try_get("updated").map_err(BinderError::storage)?;
        let (min_offset, max_offset) = match (first, last) {
            (Some(first), Some(last)) => (first, last + 1),
            _ => {
                // No message: the topic exists only if some group subscribes to it.
                let subscribed = {
                    let subs = self.inner.subscriptions.read().unwrap_or_else(|p| p.into_inner());
                    subs.iter().any(|s| s.topic == topic)
                };
                if !subscribed {
                    return Err(BinderError::UnknownTopic(topic.to_owned()));
                }
                let next = self.inner.last_message_id.load(std::sync::atomic::Ordering::SeqCst) + 1;
                (next, next)
            }
        };
        Ok(vec![QueueStatus {
            broker: BROKER.into(),
            queue_id: 0,
            min_offset,
            max_offset,
            last_updated,
        }])
    }

    async fn reset_offset(
        &self,
        group: &str,
        topic: &str,
        to: ResetTo,
        force: bool,
    ) -> Result<Vec<QueueOffset>, BinderError> {
        let expression = self.expression(group, topic).ok_or_else(|| {
            BinderError::NotSubscribed { group: group.to_owned(), topic: topic.to_owned() }
        })?;
        let (offset, skipped) = self
            .move_offset(group, topic, &expression, to, force)
            .await
            .map_err(BinderError::storage)?;
        if skipped > 0 {
            let labels = [("topic", topic), ("group", group)];
            self.inner.metrics.inc(binding::metrics::SKIPPED, &labels, skipped);
        }
        self.inner.wake(group, topic);
        tracing::info!(%group, %topic, ?to, force, offset, skipped, "consumer offset reset");
        Ok(vec![QueueOffset { broker: BROKER.into(), queue_id: 0, offset }])
    }

    async fn messages_by_key(
        &self,
        topic: &str,
        key: &str,
    ) -> Result<Vec<StoredMessage>, BinderError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE topic = $1 AND keys = $2 ORDER BY id"
        )))
        .bind(topic)
        .bind(key)
        .fetch_all(self.inner.db.reader())
        .await
        .map_err(BinderError::storage)?;
        let mut found = Vec::with_capacity(rows.len());
        for row in &rows {
            found.push(self.stored(row).await?);
        }
        Ok(found)
    }

    async fn message_by_id(&self, id: &str) -> Result<Option<StoredMessage>, BinderError> {
        let Ok(id) = id.parse::<i64>() else {
            return Ok(None);
        };
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.inner.db.reader())
        .await
        .map_err(BinderError::storage)?;
        match row {
            Some(row) => Ok(Some(self.stored(&row).await?)),
            None => Ok(None),
        }
    }

    /// This process, if it has bound the group, and the group's durable subscriptions.
    async fn consumer_connection(&self, group: &str) -> Result<GroupConnections, BinderError> {
        let bound = self.inner.bound.lock().unwrap_or_else(|p| p.into_inner()).contains(group);
        if !bound {
            return Err(BinderError::UnknownGroup(group.to_owned()));
        }
        let mut subscriptions: Vec<Subscribed> = {
            let subs = self.inner.subscriptions.read().unwrap_or_else(|p| p.into_inner());
            subs.iter()
                .filter(|s| s.group == group)
                .map(|s| Subscribed {
                    topic: s.topic.clone(),
                    expression: s.expression.to_string(),
                })
                .collect()
        };
        subscriptions.sort_by(|a, b| a.topic.cmp(&b.topic));
        Ok(GroupConnections {
            group: group.to_owned(),
            consume_type: "CONSUME_PASSIVELY".into(),
            message_model: "CLUSTERING".into(),
            connections: vec![ClientConnection {
                client_id: format!("orderflow@{}", std::process::id()),
                client_addr: "in-process".into(),
                language: "RUST".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            }],
            subscriptions,
        })
    }
}

impl EmbeddedBinder {
    /// Rewrites `group`'s deliveries of `topic`'s messages so that the group gets every
    /// message from the target on (those its expression takes), in one writer transaction.
    /// Returns the group's offset afterwards and how many waiting messages it skipped.
    async fn move_offset(
        &self,
        group: &str,
        topic: &str,
        expression: &TagExpression,
        to: ResetTo,
        force: bool,
    ) -> Result<(i64, u64), sqlx::Error> {
        // Retention removes no message between the reads and the writes below.
        let _fence = self.inner.fence.lock().await;
        let mut tx = Tx::begin(&self.inner.db).await?;
        let last: Option<i64> = tx
            .fetch_one(
                sqlx::query("SELECT MAX(id) AS last FROM messages WHERE topic = $1").bind(topic),
            )
            .await?
            .try_get("last")?;
        let end = last.map_or(0, |l| l + 1);
        let from: Vec<(i64, String, String)> = match to {
            ResetTo::Latest => Vec::new(),
            ResetTo::Time(at) => tx
                .fetch_all(
                    sqlx::query(
                        "SELECT id, tags, keys FROM messages
                         WHERE topic = $1 AND born_at >= $2 AND id < $3 ORDER BY id",
                    )
                    .bind(topic)
                    .bind(at)
                    .bind(end),
                )
                .await?
                .iter()
                .map(|r| Ok((r.try_get("id")?, r.try_get("tags")?, r.try_get("keys")?)))
                .collect::<Result<_, sqlx::Error>>()?,
        };
        let target = from.first().map_or(end, |(id, _, _)| *id);
        // The group's waiting messages of the topic (not replayed dead letters) below the
        // target: the earliest is the group's offset, and a forward move skips them all.
        let below = tx
            .fetch_one(
                sqlx::query(
                    "SELECT MIN(message_id) AS first, COUNT(*) AS n FROM deliveries
                     WHERE grp = $1 AND topic = $2 AND message_id < $3
                       AND EXISTS (SELECT 1 FROM messages m WHERE m.id = message_id AND m.topic = $2)",
                )
                .bind(group)
                .bind(topic)
                .bind(target),
            )
            .await?;
        let current: Option<i64> = below.try_get("first")?;
        let skipped: i64 = below.try_get("n")?;
        if let Some(current) = current.filter(|c| !force && target >= *c) {
            tx.commit().await?;
            return Ok((current, 0));
        }
        tx.write(
            sqlx::query(
                "DELETE FROM deliveries WHERE grp = $1 AND topic = $2 AND message_id < $3
                   AND EXISTS (SELECT 1 FROM messages m WHERE m.id = message_id AND m.topic = $2)",
            )
            .bind(group)
            .bind(topic)
            .bind(end),
        )
        .await?;
        let now = now_millis();
        let wanted: Vec<&(i64, String, String)> =
            from.iter().filter(|(_, tags, _)| expression.matches(tags)).collect();
        for chunk in rows::chunks(&wanted) {
            let sql = rows::values(
                "INSERT INTO deliveries (grp, topic, message_id, msg_key, due_at) VALUES",
                5,
                chunk.len(),
            );
            let mut q = sqlx::query(sql);
            for (id, _, key) in chunk.iter().copied() {
                q = q.bind(group).bind(topic).bind(*id).bind(key).bind(now);
            }
            tx.write(q).await?;
        }
        tx.commit().await?;
        Ok((target, u64::try_from(skipped).unwrap_or(0)))
    }
}
