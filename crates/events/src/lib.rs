//! The wire contract between the services: event payloads, topics, tags and message metadata.
//!
//! Guarantees:
//! - The seed's three events (`OrderCreatedEvent`, `PaymentSuccessEvent`,
//!   `StockFreezeFailedEvent`) serialize exactly as Jackson writes the Java classes: camelCase
//!   fields in declaration order, nulls written, `BigDecimal` as a JSON number,
//!   `Map<Long, Integer>` with string keys, timestamps as epoch milliseconds. The fixtures in
//!   `fixtures/events/` round-trip byte for byte.
//! - Amounts are parsed as decimals, never through `f64`; numeric strings are accepted too.
//!   Ids are `i64`. Unknown fields are ignored (a newer producer never breaks us).
//! - Every message carries the metadata the Java producers set: TAGS, KEYS = orderNo, and the
//!   user properties `eventId`, `eventType` and `contentType=application/json`.
//! - The events compensation needs (`order-cancelled`, `stock-deducted`, `payment-failed`,
//!   `payment-refunded`) are additions on their own topics: the seed's topics and payloads are
//!   unchanged, so a Java service that knows nothing of them still interoperates.

mod message;
mod payloads;
mod types;

pub use message::{DecodeError, Message, PROP_CONTENT_TYPE, PROP_EVENT_ID, PROP_EVENT_TYPE};
pub use payloads::*;
pub use types::{Money, OrderNo, ProductId, Quantity, TypeError};

use std::time::{SystemTime, UNIX_EPOCH};

/// The kinds of event on the wire. Each has exactly one topic and one tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    OrderCreated,
    PaymentSuccess,
    StockFreezeFailed,
    OrderCancelled,
    StockDeducted,
    PaymentFailed,
    PaymentRefunded,
}

impl EventType {
    pub const ALL: [EventType; 7] = [
        EventType::OrderCreated,
        EventType::PaymentSuccess,
        EventType::StockFreezeFailed,
        EventType::OrderCancelled,
        EventType::StockDeducted,
        EventType::PaymentFailed,
        EventType::PaymentRefunded,
    ];

    /// The RocketMQ topic (Spring Cloud Stream destination) the event is published to.
    pub fn topic(self) -> &'static str {
        match self {
            EventType::OrderCreated => "order-created",
            EventType::PaymentSuccess => "payment-success",
            EventType::StockFreezeFailed => "stock-freeze-failed",
            EventType::OrderCancelled => "order-cancelled",
            EventType::StockDeducted => "stock-deducted",
            EventType::PaymentFailed => "payment-failed",
            EventType::PaymentRefunded => "payment-refunded",
        }
    }

    /// The TAGS value, which is also the `eventType` property.
    pub fn tag(self) -> &'static str {
        match self {
            EventType::OrderCreated => "ORDER_CREATED",
            EventType::PaymentSuccess => "PAYMENT_SUCCESS",
            EventType::StockFreezeFailed => "STOCK_FREEZE_FAILED",
            EventType::OrderCancelled => "ORDER_CANCELLED",
            EventType::StockDeducted => "STOCK_DEDUCTED",
            EventType::PaymentFailed => "PAYMENT_FAILED",
            EventType::PaymentRefunded => "PAYMENT_REFUNDED",
        }
    }

    pub fn from_tag(tag: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.tag() == tag)
    }

    /// True for the seed's own three events; false for the compensation additions.
    pub fn is_seed(self) -> bool {
        matches!(
            self,
            EventType::OrderCreated | EventType::PaymentSuccess | EventType::StockFreezeFailed
        )
    }
}

/// A payload that travels as one event: it knows its type, its idempotency id and its key.
pub trait Event: serde::Serialize + serde::de::DeserializeOwned {
    const TYPE: EventType;

    fn event_id(&self) -> &str;
    fn order_no(&self) -> &str;

    /// The message as the Java producers send it: JSON body, TAGS, KEYS = orderNo, properties.
    fn to_message(&self) -> Message {
        Message::for_event(Self::TYPE, self.order_no(), self.event_id(), self)
    }

    /// The same message addressed to `topic` (a binding's configured destination).
    fn to_message_on(&self, topic: &str) -> Message {
        let mut m = self.to_message();
        m.topic = topic.to_owned();
        m
    }

    /// Decodes a message body; a failure is permanent (the same bytes never decode later).
    fn from_message(message: &Message) -> Result<Self, DecodeError> {
        message.decode()
    }
}

/// A new event id: a UUID, as the Java producers use, of version 7 (epoch millis, then 74
/// random bits), so ids made later sort later. Consumers key their inbox by eventId, and a
/// random id lands on a random page of that index: one more 4 KiB page SQLite writes to its
/// WAL per message at every commit, where time-ordered ids share the index's last pages.
pub fn new_event_id() -> String {
    let r = *uuid::Uuid::new_v4().as_bytes();
    // The fully random bytes of a v4 UUID (6 and 8 carry its version and variant).
    let random = [r[0], r[1], r[2], r[3], r[4], r[5], r[10], r[11], r[12], r[13]];
    uuid::Builder::from_unix_timestamp_millis(u64::try_from(now_millis()).unwrap_or(0), &random)
        .into_uuid()
        .to_string()
}

/// Wall-clock time in epoch milliseconds, the unit of every `timestamp` field.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::{new_event_id, now_millis};

    #[test]
    fn event_ids_are_distinct_uuids_that_sort_by_creation_time() {
        let first = new_event_id();
        let started = now_millis();
        while now_millis() == started {
            std::hint::spin_loop();
        }
        let later: Vec<String> = (0..1000).map(|_| new_event_id()).collect();
        for id in &later {
            let uuid = uuid::Uuid::parse_str(id).expect("a UUID");
            assert_eq!(uuid.get_version_num(), 7, "{id}");
            assert!(*id > first, "{id} was made after {first} in a later millisecond");
        }
        let distinct: std::collections::BTreeSet<&String> = later.iter().collect();
        assert_eq!(distinct.len(), later.len());
    }
}
