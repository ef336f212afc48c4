//! The contract every binder keeps, whatever the broker behind it.
//!
//! - `publish` returns only when the broker holds every message durably (at-least-once
//!   starts here); messages published together keep their order.
//! - Every consumer group gets every message whose tag its subscription matches; the
//!   instances bound with the same group share those messages.
//! - A handler answers each message of a batch with an [`Outcome`]: `Done` acknowledges it,
//!   `Retry` redelivers it after the binding's backoff until `max-attempts` deliveries have
//!   been made, then dead-letters it; `DeadLetter` moves it to `%DLQ%<group>` at once. One
//!   message's outcome never causes its neighbours in the batch to be redelivered.
//! - A binding can be paused and resumed (like Spring Cloud Stream's bindings endpoint);
//!   messages published meanwhile wait.

use std::sync::Arc;

use async_trait::async_trait;
use events::Message;
use tokio::sync::watch;

use crate::{admin::BrokerAdmin, config::ConsumerBinding};

/// A boxed error from a binder's own storage or client library.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum BinderError {
    /// The binder's storage (the embedded binder's database) failed.
    #[error("binder storage: {0}")]
    Storage(#[source] Cause),
    #[error("binder unavailable: {0}")]
    Unavailable(String),
    #[error("no binding named {0:?}")]
    UnknownBinding(String),
    #[error("no topic {0:?}")]
    UnknownTopic(String),
    #[error("no consumer of group {0:?} is online")]
    UnknownGroup(String),
    #[error("consumer group {group:?} is not subscribed to {topic:?}")]
    NotSubscribed { group: String, topic: String },
    #[error("binder is shutting down")]
    ShuttingDown,
    /// The embedded broker's file is owned by another running process.
    #[error("{0} is in use by another running process")]
    InUse(String),
}

impl BinderError {
    /// A storage failure, whatever the storage's error type.
    pub fn storage(e: impl Into<Cause>) -> BinderError {
        BinderError::Storage(e.into())
    }
}

/// One delivery of a message to a consumer group.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: Message,
    /// 1 for the first delivery, 2 for the first retry, ...
    pub attempt: u32,
    /// The broker's id for the message.
    pub message_id: String,
    /// When the broker took the message (ms since the Unix epoch; RocketMQ's born
    /// timestamp), for the consume latency.
    pub born_at: i64,
}

/// What should happen to a delivered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Handled (or already handled before): acknowledge.
    Done,
    /// Failed for a reason that may pass: deliver again later.
    Retry(String),
    /// Can never be handled (malformed, invalid): to the dead-letter queue now.
    DeadLetter(String),
}

/// Handles batches of deliveries; answers one outcome per delivery, in the same order.
#[async_trait]
pub trait MessageHandler: Send + Sync + 'static {
    async fn handle(&self, batch: &[Delivery]) -> Vec<Outcome>;
}

/// A message in a dead-letter queue.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub message_id: String,
    pub group: String,
    pub origin_topic: String,
    pub tags: String,
    pub keys: String,
    pub properties: std::collections::BTreeMap<String, String>,
    pub body: String,
    pub error: String,
    pub attempts: u32,
    pub dead_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum BindingState {
    Running,
    Paused,
}

/// Pause / resume for one bound consumer.
#[derive(Clone, Debug)]
pub struct BindingControl {
    pub binding: ConsumerBinding,
    state: watch::Sender<BindingState>,
}

impl BindingControl {
    pub fn new(binding: ConsumerBinding) -> BindingControl {
        BindingControl { binding, state: watch::Sender::new(BindingState::Running) }
    }

    pub fn set(&self, state: BindingState) {
        self.state.send_replace(state);
    }

    pub fn state(&self) -> BindingState {
        *self.state.borrow()
    }

    /// Waits until the binding is running (returns at once if it is).
    pub async fn running(&self) {
        let mut rx = self.state.subscribe();
        // An Err means the sender is gone, which cannot happen while `self` lives.
        let _ = rx.wait_for(|s| *s == BindingState::Running).await;
    }
}

#[async_trait]
pub trait Binder: Send + Sync + 'static {
    /// The messaging system, as OpenTelemetry's `messaging.system` names it.
    fn system(&self) -> &'static str;

    /// Durably publishes `messages`, in order, to their topics.
    async fn publish(&self, messages: &[Message]) -> Result<(), BinderError>;

    /// Binds `handler` as an instance of `binding.group` on `binding.destination` and starts
    /// consuming. Several calls with the same group share the group's messages.
    async fn bind_consumer(
        &self,
        binding: ConsumerBinding,
        handler: Arc<dyn MessageHandler>,
    ) -> Result<BindingControl, BinderError>;

    /// Starts consuming on every binding made so far. Call once, after the last
    /// `bind_consumer`: a broker may need all of a group's subscriptions at once (RocketMQ
    /// wants one consistent subscription set per group). A no-op for binders that start
    /// each binding as it is made.
    async fn start(&self) -> Result<(), BinderError> {
        Ok(())
    }

    /// Readiness: the broker answers.
    async fn check(&self) -> Result<(), BinderError>;

    /// The messages in `%DLQ%<group>`, oldest first.
    async fn dead_letters(&self, group: &str, limit: usize)
    -> Result<Vec<DeadLetter>, BinderError>;

    /// Delivers a dead letter again to its group only (the other groups of its topic already
    /// had it), as a message of its origin topic with the original body and properties. The
    /// dead letter stays where it is: replaying is safe to repeat because the consumers'
    /// inbox acknowledges an eventId it already applied.
    async fn replay(&self, dead: &DeadLetter) -> Result<(), BinderError>;

    /// How far `group` is behind on `topic`: messages published and not yet acknowledged,
    /// and when the oldest of them was born.
    async fn lag(&self, group: &str, topic: &str) -> Result<Lag, BinderError>;

    /// mqadmin's questions: topics, queues, offsets moved, messages found.
    fn admin(&self) -> &dyn BrokerAdmin;

    /// Stops every consumer, letting in-flight batches finish and settle.
    async fn shutdown(&self);
}

/// A consumer group's lag on one topic.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lag {
    /// Messages published and not yet acknowledged by the group.
    pub messages: i64,
    /// Birth (ms since the Unix epoch) of the oldest of them; `None` when there are none.
    pub oldest_born_at: Option<i64>,
    /// Per queue, where the broker has queues (RocketMQ); empty otherwise.
    pub queues: Vec<QueueLag>,
}

/// One queue's part of a [`Lag`], as `mqadmin consumerProgress` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueLag {
    pub broker: String,
    pub queue_id: i32,
    /// The queue's max offset (the next message's).
    pub broker_offset: i64,
    /// The group's committed offset in the queue.
    pub consumer_offset: i64,
}

impl QueueLag {
    /// Messages of this queue the group has not acknowledged.
    pub fn lag(&self) -> i64 {
        (self.broker_offset - self.consumer_offset.max(0)).max(0)
    }
}

/// The dead-letter topic of a consumer group, as RocketMQ names it.
pub fn dlq_topic(group: &str) -> String {
    format!("{DLQ_PREFIX}{group}")
}

/// The consumer group whose dead-letter topic `topic` is, if it is one.
pub fn dlq_group(topic: &str) -> Option<&str> {
    topic.strip_prefix(DLQ_PREFIX)
}

const DLQ_PREFIX: &str = "%DLQ%";
