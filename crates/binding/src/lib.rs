//! The binding contract, in the manner of Spring Cloud Stream: what a service and a binder
//! agree on, with no broker, database or Redis behind it.
//!
//! - [`config`]: a service's `application-rocketmq.yml` read unchanged into typed bindings.
//! - [`binder`]: the contract every binder keeps (publish; bind a consumer group to a
//!   destination with a tag expression; per-message outcomes; dead letters; pause/resume).
//! - [`admin`]: mqadmin's questions of a broker (topics, queues, offsets moved, messages
//!   found), answered by each binder.
//! - [`tags`]: RocketMQ tag expressions (`A || B`, `*`).
//! - [`chaos`]: fault injection around any binder (duplicates, reordering, delays, handler
//!   failures, crashes between commit and acknowledgement).
//! - [`metrics`]: counters and gauges by label, rendered in Prometheus text format.
//! - [`retention`]: how long messages, dead letters and inbox records are kept.

pub mod admin;
pub mod binder;
pub mod chaos;
pub mod config;
pub mod metrics;
pub mod retention;
pub mod tags;

pub use admin::{
    BrokerAdmin, ClientConnection, GroupConnections, GroupConsumption, QueueOffset, QueueStatus,
    ResetTo, StoredMessage, Subscribed,
};
pub use binder::{
    Binder, BinderError, BindingControl, BindingState, DeadLetter, Delivery, Lag, MessageHandler,
    Outcome, QueueLag, dlq_group, dlq_topic,
};
pub use config::{ConfigError, ConsumerBinding, ProducerBinding, StreamConfig};
pub use events::Message;
pub use metrics::Metrics;
pub use retention::Retention;
