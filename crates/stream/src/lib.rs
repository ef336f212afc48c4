//! The reliability layer: what makes a service's events exactly-once in effect on any
//! binder.
//!
//! - [`outbox`]: a service's state change and its events commit together; a relay hands
//!   them to the binder afterwards.
//! - [`inbox`]: an incoming event's effect and its eventId commit together, so duplicates,
//!   redeliveries and replays change nothing.
//! - [`dlq`]: listing, replaying and purging a service's dead letters.
//! - [`idempotency`]: the optional Redis fast path in front of the inbox.
//! - [`retention`]: inbox records removed once past the deduplication window.
//! - [`host`]: hosting one service on a binder: database, migrations, relay, bindings,
//!   readiness and metrics.
//! - [`trace`]: the W3C trace context carried from HTTP request to outbox row to message to
//!   consumer, and the spans on the way.

pub mod dlq;
pub mod host;
pub mod idempotency;
pub mod inbox;
pub mod outbox;
pub mod retention;
pub mod trace;

pub use host::{ServiceHost, StartError};
pub use inbox::{HandleError, InboxConsumer, TxHandler};
pub use outbox::{Outbox, OutboxRelay};
