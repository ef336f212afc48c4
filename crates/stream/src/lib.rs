//! The binding layer, in the manner of Spring Cloud Stream.
//!
//! - [`config`]: the seed's `application-rocketmq.yml` read unchanged into typed bindings.
//! - [`binder`]: the contract every binder keeps (publish; bind a consumer group to a
//!   destination with a tag expression; per-message outcomes; dead letters).
//! - [`embedded`]: the zero-setup binder: durable topics in a SQLite file, in process.
//! - [`outbox`] and [`inbox`]: how a service's state change and its events commit together,
//!   and how an incoming event's effect and its eventId commit together.
//! - [`dlq`]: listing, replaying and purging a service's dead letters.
//! - [`idempotency`]: the optional Redis fast path in front of the inbox.
//! - [`rows`]: many rows per SQL statement on the hot paths.
//! - [`tx`]: a write transaction that queues writes nobody reads and sends them to SQLite
//!   with the next read, one round trip.
//! - [`db`]: opening a service database and applying its versioned migrations.
//! - [`metrics`]: counters per topic and group, rendered in Prometheus text format.
//! - [`chaos`]: fault injection around any binder (duplicates, reordering, delays, handler
//!   failures, crashes between commit and acknowledgement).

pub mod binder;
pub mod chaos;
pub mod config;
pub mod db;
pub mod dlq;
pub mod embedded;
pub mod host;
pub mod idempotency;
pub mod inbox;
pub mod metrics;
pub mod outbox;
pub mod rows;
mod sqlite;
pub mod tags;
pub mod tx;

pub use binder::{
    Binder, BinderError, BindingControl, BindingState, DeadLetter, Delivery, MessageHandler,
    Outcome,
};
pub use config::{ConfigError, ConsumerBinding, ProducerBinding, StreamConfig};
pub use db::{Db, DbError};
pub use events::Message;
pub use inbox::{HandleError, InboxConsumer, TxHandler};
pub use host::{ServiceHost, StartError};
pub use metrics::Metrics;
pub use outbox::{Outbox, OutboxRelay};
pub use tx::Tx;
