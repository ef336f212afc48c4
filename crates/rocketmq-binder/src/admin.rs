//! mqadmin's questions on RocketMQ ([`BrokerAdmin`]), through the client's admin API (topic
//! list, routes, consume stats, message lookup by id, consumer offsets) and the binder's
//! pull consumer (queue offsets, offsets by time, reading messages).
//!
//! - An offset reset is the broker's own, per queue (RocketMQ 5's server-side reset,
//!   `INVOKE_BROKER_TO_RESET_OFFSET` with a queue and offset): a plain offset update may not
//!   move an offset back (the broker keeps the larger), this may, and the broker hands the
//!   new offset to the group's consumers on their next pull. For a group this process
//!   consumes as, the binder stops the group's push consumer first (it commits its offsets;
//!   a batch it handed out that a paused binding still holds is given back unhandled, never
//!   applied) and starts it again after: pause, move, resume. A group consumed by another
//!   process is reset only while none of its consumers is online.
//! - Finding messages by key reads the topic's queues from their first retained offset (the
//!   broker's key index is not used), so it costs a read of what the topic retains.
#![allow(deprecated)] // the classic pull consumer: see binder.rs

use std::collections::HashMap;

use async_trait::async_trait;
use binding::{
    BinderError, BrokerAdmin, ClientConnection, GroupConnections, GroupConsumption, QueueOffset,
    QueueStatus, ResetTo, StoredMessage, Subscribed,
};
use rocketmq_client_rust::{
    DefaultMQPullConsumer, MQAdminMessageReadExt, MQAdminReadExt, OffsetAdmin, TopicAdmin,
};
use rocketmq_model::common::message::{message_ext::MessageExt, message_queue::MessageQueue};
use rocketmq_model::topic::TopicConfig;

use crate::binder::{Group, RocketMqBinder, from_ext, unavailable};

/// Where a reset moves each of a topic's queues for a group.
#[derive(Default)]
struct Moves {
    offsets: Vec<(MessageQueue, i64)>,
    /// Messages between the group's offsets and later targets.
    skipped: u64,
}

/// A consumer group and its committed offset per queue.
type GroupOffsets = (String, HashMap<MessageQueue, i64>);

/// A message as mqadmin shows it, with each group that consumes its topic and whether that
/// group's offset on the message's queue has passed it.
fn stored(q: &MessageQueue, m: &MessageExt, consumers: &[GroupOffsets]) -> StoredMessage {
    let msg = from_ext(m);
    StoredMessage {
        message_id: m.msg_id().to_string(),
        broker: q.broker_name().to_string(),
        queue_id: q.queue_id(),
        queue_offset: m.queue_offset(),
        born_at: m.born_timestamp(),
        body: String::from_utf8_lossy(&msg.body).into_owned(),
        topic: msg.topic,
        tags: msg.tags,
        keys: msg.keys,
        properties: msg.properties,
        groups: consumers
            .iter()
            .map(|(group, offsets)| GroupConsumption {
                group: group.clone(),
                consumed: offsets.get(q).is_some_and(|o| *o > m.queue_offset()),
                attempts: None,
            })
            .collect(),
    }
}

fn queue_offset((q, offset): (MessageQueue, i64)) -> QueueOffset {
    QueueOffset { broker: q.broker_name().to_string(), queue_id: q.queue_id(), offset }
}

/// Messages read per pull while scanning a queue.
const PULL_BATCH: i32 = 32;

/// `topic`'s queues, sorted by broker and queue id; `UnknownTopic` when it has no route.
async fn queues(
    reader: &DefaultMQPullConsumer,
    topic: &str,
) -> Result<Vec<MessageQueue>, BinderError> {
    let mut queues = reader
        .fetch_subscribe_message_queues(topic)
        .await
        .map_err(|_| BinderError::UnknownTopic(topic.to_owned()))?;
    if queues.is_empty() {
        return Err(BinderError::UnknownTopic(topic.to_owned()));
    }
    queues.sort_by(|a, b| (a.broker_name(), a.queue_id()).cmp(&(b.broker_name(), b.queue_id())));
    Ok(queues)
}

/// The messages of one queue, from its first retained offset to its end, that `wanted` keeps.
async fn scan(
    reader: &DefaultMQPullConsumer,
    q: &MessageQueue,
    wanted: &(dyn Fn(&MessageExt) -> bool + Sync),
) -> Result<Vec<MessageExt>, BinderError> {
    let mut offset = reader.min_offset(q).await.map_err(|e| unavailable("min offset", e))?;
    let max = reader.max_offset(q).await.map_err(|e| unavailable("max offset", e))?;
    let mut found = Vec::new();
    while offset < max {
        let pulled =
            reader.pull(q, "*", offset, PULL_BATCH).await.map_err(|e| unavailable("pull", e))?;
        let next = i64::try_from(pulled.next_begin_offset()).unwrap_or(max);
        found.extend(pulled.msg_found_list().into_iter().flatten().filter(|m| wanted(m)).cloned());
        if next <= offset {
            break;
        }
        offset = next;
    }
    Ok(found)
}

impl RocketMqBinder {
    /// `mqadmin updateTopic`: creates `topic` (or changes its queue counts) on every master
    /// broker of `cluster` (of every cluster when `None`). Returns the brokers' addresses.
    pub async fn update_topic(
        &self,
        topic: &str,
        read_queues: u32,
        write_queues: u32,
        cluster: Option<&str>,
    ) -> Result<Vec<String>, BinderError> {
        let admin = &*self.admin_client().await?;
        let info = MQAdminReadExt::examine_broker_cluster_info(admin)
            .await
            .map_err(|e| unavailable("cluster info", e))?;
        let clusters = info.cluster_addr_table.unwrap_or_default();
        let brokers = info.broker_addr_table.unwrap_or_default();
        let names: Vec<String> = match cluster {
            Some(c) => clusters
                .get(c)
                .ok_or_else(|| {
                    BinderError::Unavailable(format!("no cluster {c:?} at the name server"))
                })?
                .iter()
                .map(|n| n.to_string())
                .collect(),
            None => clusters.values().flatten().map(|n| n.to_string()).collect(),
        };
        let mut addrs: Vec<String> = names
            .iter()
            .filter_map(|n| {
                brokers
                    .get(n.as_str())
                    .and_then(|b| b.broker_addrs().get(&0))
                    .map(|a| a.to_string())
            })
            .collect();
        addrs.sort();
        addrs.dedup();
        if addrs.is_empty() {
            return Err(BinderError::Unavailable(
                "no master broker registered at the name server".into(),
            ));
        }
        for addr in &addrs {
            let config = TopicConfig::with_queues(topic, read_queues, write_queues);
            TopicAdmin::create_and_update_topic_config(admin, addr.as_str().into(), config)
                .await
                .map_err(|e| unavailable(&format!("create topic {topic:?} on {addr}"), e))?;
        }
        tracing::info!(%topic, read_queues, write_queues, brokers = ?addrs, "topic created or updated");
        Ok(addrs)
    }

    /// `group`'s lag on each topic it has offsets on (what `consumerProgress -g` shows for
    /// a group, online or not).
    pub async fn group_progress(
        &self,
        group: &str,
    ) -> Result<Vec<(String, binding::Lag)>, BinderError> {
        let mut topics: Vec<String> = {
            let admin = &*self.admin_client().await?;
            match MQAdminReadExt::examine_consume_stats(admin, group.into(), None, None, None, None)
                .await
            {
                Ok(stats) => stats.offset_table.keys().map(|q| q.topic_str().to_owned()).collect(),
                Err(e) => {
                    tracing::debug!(%group, error = %e, "no consume stats");
                    Vec::new()
                }
            }
        };
        if topics.is_empty() {
            // The group's subscriptions, when its consumers are online.
            match self.consumer_connection(group).await {
                Ok(c) => topics.extend(c.subscriptions.into_iter().map(|s| s.topic)),
                Err(BinderError::UnknownGroup(_)) => {}
                Err(e) => return Err(e),
            }
        }
        topics.sort();
        topics.dedup();
        let mut all = Vec::with_capacity(topics.len());
        for topic in topics.into_iter().filter(|t| !t.starts_with("%RETRY%")) {
            let lag = binding::Binder::lag(self, group, &topic).await?;
            all.push((topic, lag));
        }
        Ok(all)
    }

    /// Creates each of `topics` that the name server has no route for, with `queues` queues,
    /// as `updateTopic` does: a broker with automatic topic creation off accepts this.
    pub(crate) async fn ensure_topics(
        &self,
        topics: &[String],
        queues: u32,
    ) -> Result<(), BinderError> {
        for topic in topics {
            let routed = {
                let admin = &*self.admin_client().await?;
                matches!(
                    MQAdminReadExt::examine_topic_route_info(admin, topic.as_str().into()).await,
                    Ok(Some(r)) if !r.queue_datas.is_empty()
                )
            };
            if !routed {
                self.update_topic(topic, queues, queues, None).await?;
            }
        }
        Ok(())
    }

    /// Each group that consumes `topic` (not this binder's own reader), with its committed
    /// offset per queue: asked once per query, not once per message found.
    async fn consumers_of(&self, topic: &str) -> Result<Vec<GroupOffsets>, BinderError> {
        let admin = &*self.admin_client().await?;
        let consumers = MQAdminReadExt::query_topic_consume_by_who(admin, topic.into())
            .await
            .map_err(|e| unavailable("consumers of the topic", e))?;
        let mut all = Vec::new();
        for group in consumers
            .group_list
            .into_iter()
            .filter(|g| !g.starts_with(crate::binder::READER_GROUP_PREFIX))
        {
            let stats = MQAdminReadExt::examine_consume_stats(
                admin,
                group.clone(),
                Some(topic.into()),
                None,
                None,
                None,
            )
            .await
            .map_err(|e| unavailable("consume stats", e))?;
            let offsets = stats
                .offset_table
                .iter()
                .map(|(q, w)| (q.clone(), w.get_consumer_offset()))
                .collect();
            all.push((group.to_string(), offsets));
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(all)
    }

    /// Each queue's offset for `group` on `topic` after the move (the group's own where a
    /// non-forced move would go forward), computed while the group's consumer is stopped,
    /// and how many messages the move skips (those between the group's offset and a later
    /// target).
    async fn offsets_to(
        &self,
        group: &str,
        topic: &str,
        to: ResetTo,
        force: bool,
    ) -> Result<Moves, BinderError> {
        let current = {
            let admin = &*self.admin_client().await?;
            MQAdminReadExt::examine_consume_stats(
                admin,
                group.into(),
                Some(topic.into()),
                None,
                None,
                None,
            )
            .await
            .map_err(|e| unavailable("consume stats", e))?
            .offset_table
        };
        let reader = &*self.reader().await?;
        let mut moves = Moves::default();
        for q in queues(reader, topic).await? {
            let target = match to {
                ResetTo::Latest => reader.max_offset(&q).await,
                ResetTo::Time(at) => reader.search_offset(&q, u64::try_from(at).unwrap_or(0)).await,
            }
            .map_err(|e| unavailable("offset by time", e))?;
            let own = current.get(&q).map(|w| w.get_consumer_offset());
            let offset = match own {
                Some(own) if !force && own >= 0 && target >= own => own,
                _ => target,
            };
            if let Some(own) = own.filter(|own| *own >= 0) {
                moves.skipped += u64::try_from(offset - own).unwrap_or(0);
            }
            moves.offsets.push((q, offset));
        }
        Ok(moves)
    }

    /// Writes the offsets and counts what they skip.
    async fn apply_offsets(
        &self,
        group: &str,
        topic: &str,
        moves: Moves,
        to: ResetTo,
        force: bool,
    ) -> Result<Vec<(MessageQueue, i64)>, BinderError> {
        let Moves { offsets, skipped, .. } = moves;
        self.write_offsets(group, topic, &offsets).await?;
        if skipped > 0 {
            let labels = [("topic", topic), ("group", group)];
            self.metrics.inc(binding::metrics::SKIPPED, &labels, skipped);
        }
        tracing::info!(%group, %topic, ?to, force, skipped, "consumer offsets reset");
        Ok(offsets)
    }

    /// Writes each queue's offset for `group` on the broker that holds the queue.
    async fn write_offsets(
        &self,
        group: &str,
        topic: &str,
        offsets: &[(MessageQueue, i64)],
    ) -> Result<(), BinderError> {
        let admin = &*self.admin_client().await?;
        let route = MQAdminReadExt::examine_topic_route_info(admin, topic.into())
            .await
            .map_err(|e| unavailable("topic route", e))?
            .ok_or_else(|| BinderError::UnknownTopic(topic.to_owned()))?;
        for (q, offset) in offsets {
            let broker = route
                .broker_datas
                .iter()
                .find(|b| b.broker_name() == q.broker_name())
                .and_then(|b| b.broker_addrs().get(&0).cloned())
                .ok_or_else(|| unavailable("broker address", q.broker_name()))?;
            // The broker's own reset (server-side, as RocketMQ 5 does it): a plain offset
            // update may not move an offset back, this may, and the broker hands the new
            // offset to the group's consumers on their next pull.
            OffsetAdmin::reset_offset_by_queue_id(
                admin,
                broker,
                group.into(),
                topic.into(),
                q.queue_id(),
                u64::try_from(*offset).unwrap_or(0),
            )
            .await
            .map_err(|e| unavailable("reset consumer offset", e))?;
        }
        Ok(())
    }
}

#[async_trait]
impl BrokerAdmin for RocketMqBinder {
    async fn topics(&self) -> Result<Vec<String>, BinderError> {
        let admin = &*self.admin_client().await?;
        let list = MQAdminReadExt::fetch_all_topic_list(admin)
            .await
            .map_err(|e| unavailable("topic list", e))?;
        let mut topics: Vec<String> = list.topic_list.iter().map(|t| t.to_string()).collect();
        topics.sort();
        topics.dedup();
        Ok(topics)
    }

    async fn topic_status(&self, topic: &str) -> Result<Vec<QueueStatus>, BinderError> {
        let reader = &*self.reader().await?;
        let mut status = Vec::new();
        for q in queues(reader, topic).await? {
            let min_offset =
                reader.min_offset(&q).await.map_err(|e| unavailable("min offset", e))?;
            let max_offset =
                reader.max_offset(&q).await.map_err(|e| unavailable("max offset", e))?;
            let last_updated = if max_offset > min_offset {
                let pulled = reader
                    .pull(&q, "*", max_offset - 1, 1)
                    .await
                    .map_err(|e| unavailable("pull the newest message", e))?;
                pulled.msg_found_list().into_iter().flatten().map(|m| m.store_timestamp()).max()
            } else {
                None
            };
            status.push(QueueStatus {
                broker: q.broker_name().to_string(),
                queue_id: q.queue_id(),
                min_offset,
                max_offset,
                last_updated,
            });
        }
        Ok(status)
    }

    async fn reset_offset(
        &self,
        group: &str,
        topic: &str,
        to: ResetTo,
        force: bool,
    ) -> Result<Vec<QueueOffset>, BinderError> {
        // Held throughout: one reset at a time, and shutdown waits for it.
        let mut groups = self.groups.lock().await;
        let Some(g) = groups.remove(group) else {
            // Not a group of this process: only while none of its consumers is online (a
            // running consumer would write its own offsets back over the new ones).
            match self.consumer_connection(group).await {
                Ok(c) if !c.connections.is_empty() => {
                    return Err(BinderError::Unavailable(format!(
                        "consumer group {group:?} has {} consumer(s) online; reset it through \
                         the services that run them (orderflow mqadmin without -n), which \
                         stop their consumers while the offsets move",
                        c.connections.len()
                    )));
                }
                Ok(_) | Err(BinderError::UnknownGroup(_)) => {}
                Err(e) => return Err(e),
            }
            let moves = self.offsets_to(group, topic, to, force).await?;
            let offsets = self.apply_offsets(group, topic, moves, to, force).await?;
            return Ok(offsets.into_iter().map(queue_offset).collect());
        };
        let Group { bound, mut consumer, retired } = g;
        retired.send_replace(true);
        consumer.shutdown().await;
        // Computed now: the consumer committed what it had handled as it stopped.
        let moved = match self.offsets_to(group, topic, to, force).await {
            Ok(moves) => self.apply_offsets(group, topic, moves, to, force).await,
            Err(e) => Err(e),
        };
        // Started again whether or not the offsets moved: the group must go on consuming.
        let (consumer, retired) = self.start_group(group, bound.clone()).await?;
        groups.insert(group.to_owned(), Group { bound, consumer, retired });
        Ok(moved?.into_iter().map(queue_offset).collect())
    }

    async fn messages_by_key(
        &self,
        topic: &str,
        key: &str,
    ) -> Result<Vec<StoredMessage>, BinderError> {
        let found = {
            let reader = &*self.reader().await?;
            let mut found = Vec::new();
            for q in queues(reader, topic).await? {
                let of_key = |m: &MessageExt| {
                    m.properties()
                        .get("KEYS")
                        .is_some_and(|k| k.as_str().split(' ').any(|k| k == key))
                };
                for m in scan(reader, &q, &of_key).await? {
                    found.push((q.clone(), m));
                }
            }
            found
        };
        let consumers = self.consumers_of(topic).await?;
        let mut all: Vec<StoredMessage> =
            found.iter().map(|(q, m)| stored(q, m, &consumers)).collect();
        all.sort_by_key(|m| m.born_at);
        Ok(all)
    }

    async fn message_by_id(&self, id: &str) -> Result<Option<StoredMessage>, BinderError> {
        let meta = {
            let admin = &*self.admin_client().await?;
            match MQAdminMessageReadExt::query_message_metadata_by_id(admin, id.into()).await {
                Ok(meta) => meta,
                // Not an id this broker gave, or a message it no longer holds.
                Err(e) => {
                    tracing::debug!(id, error = %e, "no message by that id");
                    return Ok(None);
                }
            }
        };
        let found = {
            let reader = &*self.reader().await?;
            let mut found = None;
            for q in queues(reader, &meta.topic)
                .await?
                .into_iter()
                .filter(|q| q.queue_id() == meta.queue_id)
            {
                let pulled = reader
                    .pull(&q, "*", meta.queue_offset, 1)
                    .await
                    .map_err(|e| unavailable("pull the message", e))?;
                let m = pulled
                    .msg_found_list()
                    .into_iter()
                    .flatten()
                    .find(|m| m.msg_id() == id)
                    .cloned();
                if let Some(m) = m {
                    found = Some((q, m));
                    break;
                }
            }
            found
        };
        match found {
            Some((q, m)) => Ok(Some(stored(&q, &m, &self.consumers_of(&meta.topic).await?))),
            None => Ok(None),
        }
    }

    async fn consumer_connection(&self, group: &str) -> Result<GroupConnections, BinderError> {
        let admin = &*self.admin_client().await?;
        let c = match MQAdminReadExt::examine_consumer_connection_info(admin, group.into(), None)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(%group, error = %e, "no consumer connection");
                return Err(BinderError::UnknownGroup(group.to_owned()));
            }
        };
        if c.get_connection_set().is_empty() {
            return Err(BinderError::UnknownGroup(group.to_owned()));
        }
        let mut connections: Vec<ClientConnection> = c
            .get_connection_set()
            .iter()
            .map(|x| ClientConnection {
                client_id: x.get_client_id().to_string(),
                client_addr: x.get_client_addr().to_string(),
                language: format!("{:?}", x.get_language()).to_uppercase(),
                version: x.get_version().to_string(),
            })
            .collect();
        connections.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        let mut subscriptions: Vec<Subscribed> = c
            .get_subscription_table()
            .values()
            .map(|d| Subscribed {
                topic: d.topic.to_string(),
                expression: d.sub_string.to_string(),
            })
            .collect();
        subscriptions.sort_by(|a, b| a.topic.cmp(&b.topic));
        let name = |x: Option<String>, default: &str| x.unwrap_or_else(|| default.to_owned());
        Ok(GroupConnections {
            group: group.to_owned(),
            consume_type: name(c.get_consume_type().map(|t| format!("{t:?}")), "CONSUME_PASSIVELY"),
            message_model: name(c.get_message_model().map(|m| format!("{m:?}")), "CLUSTERING"),
            connections,
            subscriptions,
        })
    }
}
