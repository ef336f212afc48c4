//! A message as it travels on a topic: body plus the RocketMQ metadata (TAGS, KEYS, user
//! properties). The binders carry this struct unchanged; nothing here knows about a broker.

use std::collections::BTreeMap;

use crate::EventType;

/// User property holding the event's idempotency id (also in the body as `eventId`).
pub const PROP_EVENT_ID: &str = "eventId";
/// User property holding the event type, equal to the tag.
pub const PROP_EVENT_TYPE: &str = "eventType";
/// The content-type header Spring Cloud Stream adds.
pub const PROP_CONTENT_TYPE: &str = "contentType";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Destination topic.
    pub topic: String,
    /// RocketMQ TAGS (one tag; subscriptions filter on it).
    pub tags: String,
    /// RocketMQ KEYS: the orderNo for every event of ours. Orderly bindings keep per-key order.
    pub keys: String,
    /// User properties (`eventId`, `eventType`, `contentType`, and whatever else a producer set).
    pub properties: BTreeMap<String, String>,
    /// The JSON body.
    pub body: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("body is not a valid {event} event: {field}: {message}")]
    Json {
        event: &'static str,
        /// The path of the offending field (`orderId`, `productQuantityMap.1001`), or
        /// `(body)` when the body is not JSON at all.
        field: String,
        message: String,
    },
    #[error("message has no eventId (neither the `eventId` property nor the body field)")]
    MissingEventId,
}

impl Message {
    /// Builds the message for an event with the Java producers' metadata.
    pub fn for_event<T: serde::Serialize>(
        kind: EventType,
        order_no: &str,
        event_id: &str,
        payload: &T,
    ) -> Message {
        // Serializing plain structs of strings, numbers and maps cannot fail.
        let body = serde_json::to_vec(payload).unwrap_or_default();
        let mut properties = BTreeMap::new();
        properties.insert(PROP_EVENT_ID.to_owned(), event_id.to_owned());
        properties.insert(PROP_EVENT_TYPE.to_owned(), kind.tag().to_owned());
        properties.insert(PROP_CONTENT_TYPE.to_owned(), "application/json".to_owned());
        Message {
            topic: kind.topic().to_owned(),
            tags: kind.tag().to_owned(),
            keys: order_no.to_owned(),
            properties,
            body,
        }
    }

    /// The idempotency id: the `eventId` property, else the body's `eventId` field.
    pub fn event_id(&self) -> Result<String, DecodeError> {
        if let Some(id) = self.properties.get(PROP_EVENT_ID).filter(|s| !s.is_empty()) {
            return Ok(id.clone());
        }
        #[derive(serde::Deserialize)]
        struct IdOnly {
            #[serde(rename = "eventId")]
            event_id: Option<String>,
        }
        serde_json::from_slice::<IdOnly>(&self.body)
            .ok()
            .and_then(|b| b.event_id)
            .filter(|s| !s.is_empty())
            .ok_or(DecodeError::MissingEventId)
    }

    /// Decodes the body as `T`.
    pub fn decode<T: crate::Event>(&self) -> Result<T, DecodeError> {
        let de = &mut serde_json::Deserializer::from_slice(&self.body);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            // serde names a missing field at its parent: lift the name into the path.
            let missing = message.strip_prefix("missing field `").and_then(|r| r.split('`').next());
            let field = match (path.as_str(), missing) {
                ("." | "?" | "", Some(name)) => name.to_owned(),
                ("." | "?" | "", None) => "(body)".to_owned(),
                (p, Some(name)) => format!("{p}.{name}"),
                (p, None) => p.to_owned(),
            };
            DecodeError::Json { event: T::TYPE.tag(), field, message }
        })
    }
}
