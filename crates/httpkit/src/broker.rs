//! The broker's admin routes — what `orderflow mqadmin` asks a running service (admin token
//! required, like every `/admin` route). Each answers from the service's binder, so they
//! work on either binder:
//!
//! - `GET /admin/topics`: every topic the broker knows;
//! - `GET /admin/topic-status?topic=T`: T's queues (min and max offset, last update);
//! - `POST /admin/consumer-offsets` with `{"group", "topic", "resetTo": {"time": ms} |
//!   "latest", "force"}`: moves the group's offset on the topic. Only a service that
//!   consumes the topic as that group does it (404 otherwise), so its binder can hold the
//!   group's deliveries while the offset moves;
//! - `GET /admin/consumer-connection?group=G`: G's consumers online and subscriptions;
//! - `GET /admin/messages?topic=T&key=K`: T's messages whose KEYS is K;
//! - `GET /admin/messages/{id}`: one message, and which groups have consumed it;
//! - `POST /admin/messages` with a message (`topic`, `tags`, `keys`, `properties`, `body`):
//!   publishes it as it is.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    routing::{get, post},
};
use binding::{BinderError, GroupConnections, QueueOffset, QueueStatus, ResetTo, StoredMessage};
use serde_json::json;

use crate::{ApiError, JsonBody};

type Host = State<Arc<stream::ServiceHost>>;

fn api(e: BinderError) -> ApiError {
    match e {
        BinderError::UnknownTopic(_)
        | BinderError::NotSubscribed { .. }
        | BinderError::UnknownGroup(_) => ApiError::NotFound(e.to_string()),
        e => ApiError::Unavailable(e.to_string()),
    }
}

/// A required, non-empty query or body field.
fn required(value: Option<String>, field: &str) -> Result<String, ApiError> {
    value.filter(|v| !v.trim().is_empty()).ok_or_else(|| ApiError::invalid(field, "is required"))
}

/// The body of `POST /admin/consumer-offsets`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OffsetReset {
    pub group: String,
    pub topic: String,
    pub reset_to: ResetTo,
    /// Without it a queue is only moved back, never forward.
    pub force: bool,
}

/// The body of `POST /admin/messages`: a message exactly as it is to be published.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Publish {
    pub topic: String,
    #[serde(default)]
    pub tags: String,
    #[serde(default)]
    pub keys: String,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    pub body: String,
}

pub fn broker_routes(host: Arc<stream::ServiceHost>) -> Router {
    #[derive(serde::Deserialize)]
    struct TopicQuery {
        topic: Option<String>,
        key: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct GroupQuery {
        group: Option<String>,
    }
    async fn connection(
        State(host): Host,
        Query(q): Query<GroupQuery>,
    ) -> Result<Json<GroupConnections>, ApiError> {
        let group = required(q.group, "group")?;
        Ok(Json(host.binder.admin().consumer_connection(&group).await.map_err(api)?))
    }
    async fn topics(State(host): Host) -> Result<Json<Vec<String>>, ApiError> {
        Ok(Json(host.binder.admin().topics().await.map_err(api)?))
    }
    async fn topic_status(
        State(host): Host,
        Query(q): Query<TopicQuery>,
    ) -> Result<Json<Vec<QueueStatus>>, ApiError> {
        let topic = required(q.topic, "topic")?;
        Ok(Json(host.binder.admin().topic_status(&topic).await.map_err(api)?))
    }
    async fn reset(
        State(host): Host,
        JsonBody(r): JsonBody<OffsetReset>,
    ) -> Result<Json<Vec<QueueOffset>>, ApiError> {
        if let ResetTo::Time(at) = r.reset_to
            && at < 0
        {
            return Err(ApiError::invalid(
                "resetTo.time",
                "must be 0 or more (ms since the epoch)",
            ));
        }
        let consumes = host
            .bindings()
            .iter()
            .any(|c| c.binding.group == r.group && c.binding.destination == r.topic);
        if !consumes {
            return Err(ApiError::NotFound(format!(
                "this service does not consume {:?} as {:?}",
                r.topic, r.group
            )));
        }
        let moved = host
            .binder
            .admin()
            .reset_offset(&r.group, &r.topic, r.reset_to, r.force)
            .await
            .map_err(api)?;
        tracing::info!(group = %r.group, topic = %r.topic, reset_to = ?r.reset_to, force = r.force,
            "consumer offset reset by an operator");
        Ok(Json(moved))
    }
    async fn by_key(
        State(host): Host,
        Query(q): Query<TopicQuery>,
    ) -> Result<Json<Vec<StoredMessage>>, ApiError> {
        let topic = required(q.topic, "topic")?;
        let key = required(q.key, "key")?;
        Ok(Json(host.binder.admin().messages_by_key(&topic, &key).await.map_err(api)?))
    }
    async fn by_id(
        State(host): Host,
        Path(id): Path<String>,
    ) -> Result<Json<StoredMessage>, ApiError> {
        host.binder
            .admin()
            .message_by_id(&id)
            .await
            .map_err(api)?
            .map(Json)
            .ok_or_else(|| ApiError::NotFound(format!("no message {id:?}")))
    }
    async fn publish(
        State(host): Host,
        JsonBody(p): JsonBody<Publish>,
    ) -> Result<Json<serde_json::Value>, ApiError> {
        let topic = required(Some(p.topic), "topic")?;
        if p.body.is_empty() {
            return Err(ApiError::invalid("body", "is required"));
        }
        let message = binding::Message {
            topic: topic.clone(),
            tags: p.tags,
            keys: p.keys,
            properties: p.properties,
            body: p.body.into_bytes(),
        };
        host.binder.publish(std::slice::from_ref(&message)).await.map_err(api)?;
        tracing::info!(%topic, tags = %message.tags, keys = %message.keys, "message sent by an operator");
        Ok(Json(json!({ "topic": topic, "sendStatus": "SEND_OK" })))
    }
    Router::new()
        .route("/admin/topics", get(topics))
        .route("/admin/topic-status", get(topic_status))
        .route("/admin/consumer-offsets", post(reset))
        .route("/admin/consumer-connection", get(connection))
        .route("/admin/messages", get(by_key).post(publish))
        .route("/admin/messages/{id}", get(by_id))
        .with_state(host)
}
