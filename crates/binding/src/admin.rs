//! What an operator asks of a broker — mqadmin's questions — answered by each binder:
//! topics and their queues, a consumer group's offset moved, messages found by key or id.
//!
//! Offsets are a queue's positions, as RocketMQ's: a group's offset is the next message it
//! will be given. On RocketMQ they are the broker's own; the embedded binder has one queue
//! (0) per topic whose offsets are its message ids (increasing, not consecutive).
//!
//! Moving an offset is safe while the group's consumers run: the binder holds the group's
//! deliveries while it moves the offset, and a message given again after a rewind is handled
//! at most once because the consumers' inbox acknowledges an eventId it already applied.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::BinderError;

/// One queue of a topic, as `mqadmin topicStatus` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueStatus {
    pub broker: String,
    pub queue_id: i32,
    /// The offset of the oldest message the queue still holds.
    pub min_offset: i64,
    /// The offset the next message will get.
    pub max_offset: i64,
    /// When the newest message was stored (ms since the Unix epoch); `None` when empty.
    pub last_updated: Option<i64>,
}

/// Where `resetOffsetByTime` moves a group: to the first message stored at or after a time,
/// or past every message (`-1`, what `skipAccumulatedMessage` does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ResetTo {
    /// Ms since the Unix epoch.
    Time(i64),
    Latest,
}

/// A queue's offset for a group after a reset.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueOffset {
    pub broker: String,
    pub queue_id: i32,
    pub offset: i64,
}

/// A stored message with what the broker knows about it, as `mqadmin queryMsgById` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredMessage {
    pub message_id: String,
    pub topic: String,
    pub broker: String,
    pub queue_id: i32,
    pub queue_offset: i64,
    pub tags: String,
    pub keys: String,
    /// User properties (eventId, eventType, contentType, trace context, ...).
    pub properties: BTreeMap<String, String>,
    /// The body as text (the services' bodies are JSON).
    pub body: String,
    /// When the broker took it (ms since the Unix epoch).
    pub born_at: i64,
    /// Each consumer group subscribed to the topic, and whether it has acknowledged this
    /// message.
    pub groups: Vec<GroupConsumption>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupConsumption {
    pub group: String,
    pub consumed: bool,
    /// Deliveries so far of a message the group still waits for, where the broker keeps
    /// count (the embedded one); absent once consumed and on RocketMQ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
}

/// A consumer group's live instances and subscriptions, as `mqadmin consumerConnection`
/// shows them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupConnections {
    pub group: String,
    /// `CONSUME_PASSIVELY` (push consumers, ours).
    pub consume_type: String,
    /// `CLUSTERING`: the instances share the group's messages.
    pub message_model: String,
    pub connections: Vec<ClientConnection>,
    pub subscriptions: Vec<Subscribed>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientConnection {
    pub client_id: String,
    pub client_addr: String,
    pub language: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscribed {
    pub topic: String,
    /// The tag expression (`ORDER_CREATED || ...`, `*`).
    pub expression: String,
}

/// mqadmin's questions, answered by a binder.
#[async_trait]
pub trait BrokerAdmin: Send + Sync {
    /// Every topic the broker knows, sorted.
    async fn topics(&self) -> Result<Vec<String>, BinderError>;

    /// The queues of `topic` ([`BinderError::UnknownTopic`] if there is no such topic).
    async fn topic_status(&self, topic: &str) -> Result<Vec<QueueStatus>, BinderError>;

    /// Moves `group`'s offset on `topic`: every message of the topic stored at or after the
    /// time is given to the group (again), the earlier ones count as acknowledged. Without
    /// `force` a queue is only moved back, never forward (mqadmin's `-f false`).
    async fn reset_offset(
        &self,
        group: &str,
        topic: &str,
        to: ResetTo,
        force: bool,
    ) -> Result<Vec<QueueOffset>, BinderError>;

    /// The messages of `topic` whose KEYS is `key` (the orderNo), oldest first.
    async fn messages_by_key(
        &self,
        topic: &str,
        key: &str,
    ) -> Result<Vec<StoredMessage>, BinderError>;

    /// The message with the broker's id `id`, if the broker still holds it.
    async fn message_by_id(&self, id: &str) -> Result<Option<StoredMessage>, BinderError>;

    /// `group`'s instances consuming now and its subscriptions
    /// ([`BinderError::UnknownGroup`] when none is online).
    async fn consumer_connection(&self, group: &str) -> Result<GroupConnections, BinderError>;
}
