//! What every service's HTTP surface shares.
//!
//! - [`ApiError`]: the one error type of the HTTP boundary. Client mistakes become 4xx with a
//!   JSON body naming the field and the problem; internal errors become 500, are logged with
//!   their cause, and leak nothing.
//! - [`JsonBody`]: a JSON extractor whose errors name the offending field
//!   (`items[0].quantity: invalid type: string "x", expected i64`).
//! - [`ops_routes`]: `/health` (live), `/ready` (database and binder answer), `/metrics`
//!   (Prometheus text).
//! - [`BODY_LIMIT`]: bodies over 1 MiB are refused with 413 before they are read whole.
//! - [`require_admin_token`]: every `/admin/...` and `/api/admin/...` request must carry
//!   `Authorization: Bearer <token>`; anything else is refused with 401 before a handler runs,
//!   so a refused call changes nothing. Every admin change is logged (target
//!   `orderflow::admin_actions`: method, path, actor, status).
//! - [`binding_routes`], [`dlq_routes`], [`broker_routes`]: the admin routes the operator
//!   commands (`orderflow dlq`, `orderflow mqadmin`) ask.

use std::{future::Future, pin::Pin, sync::Arc};

mod broker;
pub use broker::{OffsetReset, Publish, broker_routes};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{FromRequest, Request, rejection::BytesRejection},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::de::DeserializeOwned;
use serde_json::json;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 1024 * 1024;

#[derive(Debug)]
pub enum ApiError {
    /// 400: a field is missing, malformed or out of range.
    Invalid {
        field: String,
        message: String,
    },
    /// 404.
    NotFound(String),
    /// 409 / 422: the request conflicts with what exists.
    Conflict(String),
    Unprocessable(String),
    /// 413.
    TooLarge,
    /// 401.
    Unauthorized,
    /// 403: who asked may not do this.
    Forbidden(String),
    /// 503: a component this request needs (the broker) does not answer.
    Unavailable(String),
    /// 500; the cause is logged, not returned.
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Invalid { field: field.into(), message: message.into() }
    }

    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError::Internal(e.to_string())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(format!("storage: {e}"))
    }
}

impl From<stream::outbox::OutboxError> for ApiError {
    fn from(e: stream::outbox::OutboxError) -> Self {
        match e {
            stream::outbox::OutboxError::TooLarge { .. } => ApiError::Unprocessable(e.to_string()),
            stream::outbox::OutboxError::Sql(e) => e.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::Invalid { field, message } => (
                StatusCode::BAD_REQUEST,
                json!({"error": {"code": "invalid", "field": field, "message": format!("{field}: {message}")}}),
            ),
            ApiError::NotFound(m) => {
                (StatusCode::NOT_FOUND, json!({"error": {"code": "not_found", "message": m}}))
            }
            ApiError::Conflict(m) => {
                (StatusCode::CONFLICT, json!({"error": {"code": "conflict", "message": m}}))
            }
            ApiError::Unprocessable(m) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": {"code": "unprocessable", "message": m}}),
            ),
            ApiError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": {"code": "too_large", "message": format!("request body exceeds {BODY_LIMIT} bytes")}}),
            ),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                json!({"error": {"code": "unauthorized", "message": "missing or wrong admin token"}}),
            ),
            ApiError::Forbidden(m) => {
                (StatusCode::FORBIDDEN, json!({"error": {"code": "forbidden", "message": m}}))
            }
            ApiError::Unavailable(m) => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": {"code": "unavailable", "message": m}}),
            ),
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"error": {"code": "internal", "message": "internal error"}}),
                )
            }
        };
        (status, Json(body)).into_response()
    }
}

/// A JSON request body; rejections name the field.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| match e {
            BytesRejection::FailedToBufferBody(ref inner)
                if inner.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                ApiError::TooLarge
            }
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge,
            other => ApiError::invalid("(body)", other.body_text()),
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses JSON, naming the path of the first bad field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let field = if path == "." || path == "?" || path.is_empty() {
            // serde reports a missing field at its parent; pull the name out of the message.
            missing_field(&inner.to_string()).unwrap_or_else(|| "(body)".to_owned())
        } else if let Some(name) = missing_field(&inner.to_string()) {
            format!("{path}.{name}")
        } else {
            path
        };
        let message = inner.to_string();
        let message = message.split(" at line ").next().unwrap_or(&message).to_owned();
        ApiError::invalid(field, message)
    })
}

fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next().map(str::to_owned)
}

/// What [`record_http`] records into: the process's metrics, under the service's name.
#[derive(Clone)]
pub struct HttpMetrics {
    pub metrics: binding::Metrics,
    pub service: &'static str,
}

/// Middleware: each request's duration into `orderflow_http_request_duration_seconds`, by
/// service, route (the matched pattern such as `/api/orders/{order_no}`, never the raw path,
/// so ids do not make new series; `unmatched` for a 404 no route knew) and status class.
/// With tracing on, the request runs in its server span ([`stream::trace::server_span`]).
pub async fn record_http(
    axum::extract::State(to): axum::extract::State<HttpMetrics>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let route =
        request.extensions().get::<axum::extract::MatchedPath>().map(|p| p.as_str().to_owned());
    let started = std::time::Instant::now();
    let response = if stream::trace::enabled() {
        let headers = request.headers();
        let span = stream::trace::server_span(
            request.method().as_str(),
            route.as_deref().unwrap_or("unmatched"),
            |name| headers.get(name).and_then(|v| v.to_str().ok()),
        );
        let cx = stream::trace::context_of(&span);
        let response = stream::trace::within(&span, &cx, next.run(request)).await;
        span.record("http.response.status_code", response.status().as_u16());
        response
    } else {
        next.run(request).await
    };
    let class = format!("{}xx", response.status().as_u16() / 100);
    let route = route.as_deref().unwrap_or("unmatched");
    let labels = [("service", to.service), ("route", route), ("status", class.as_str())];
    to.metrics.observe(binding::metrics::HTTP_SECONDS, &labels, started.elapsed());
    response
}

/// Middleware: admin paths need the configured token (compared in constant time).
pub async fn require_admin_token(
    axum::extract::State(token): axum::extract::State<Arc<str>>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    let admin = path == "/admin" || path.starts_with("/admin/") || path.starts_with("/api/admin/");
    if admin {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            tracing::warn!(path, "admin request refused: missing or wrong token");
            return ApiError::Unauthorized.into_response();
        }
        let method = request.method().clone();
        if method != axum::http::Method::GET && method != axum::http::Method::HEAD {
            // The log of admin actions: every change, who asked (the console says so) and
            // what came of it.
            let path = path.to_owned();
            let actor = request
                .headers()
                .get("x-orderflow-actor")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("admin token")
                .to_owned();
            let response = next.run(request).await;
            tracing::info!(
                target: "orderflow::admin_actions",
                %method, path, actor, status = response.status().as_u16(), "admin action"
            );
            return response;
        }
    }
    next.run(request).await
}

/// Whether `a` and `b` are equal, in time that depends on their length only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the ops routes ask of a service.
pub trait Ops: Send + Sync + 'static {
    /// Ok when the database and the binder answer; Err names what does not.
    fn ready(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
    /// Prometheus text.
    fn metrics(&self) -> Pin<Box<dyn Future<Output = String> + Send + '_>>;
}

/// `/health`, `/ready`, `/metrics`.
pub fn ops_routes(ops: Arc<dyn Ops>) -> Router {
    let ready_ops = ops.clone();
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "UP"})) }))
        .route(
            "/ready",
            get(move || {
                let ops = ready_ops.clone();
                async move {
                    match ops.ready().await {
                        Ok(()) => (StatusCode::OK, Json(json!({"status": "READY"}))),
                        Err(why) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            Json(json!({"status": "NOT_READY", "reason": why})),
                        ),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let ops = ops.clone();
                async move {
                    ([(header::CONTENT_TYPE, binding::metrics::CONTENT_TYPE)], ops.metrics().await)
                }
            }),
        )
}

/// One consumer binding's progress, as `GET /admin/consumer-progress` reports it and
/// `orderflow mqadmin consumerProgress` reads it: the group's lag on the binding's topic,
/// per queue on RocketMQ.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerProgress {
    pub binding: String,
    pub group: String,
    pub topic: String,
    #[serde(flatten)]
    pub lag: binding::Lag,
}

/// `GET /admin/bindings` lists the service's consumer bindings and their state;
/// `PUT /admin/bindings/{name}` with `{"state":"PAUSED"}` or `{"state":"RUNNING"}` pauses or
/// resumes one (Spring Cloud Stream's bindings endpoint). Messages wait while paused.
/// `GET /admin/consumer-progress` reports each binding's [`ConsumerProgress`], read from the
/// binder when asked (on RocketMQ, the broker's offsets).
pub fn binding_routes(host: Arc<stream::ServiceHost>) -> Router {
    use axum::extract::{Path, State};
    use binding::BindingState;

    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct View {
        name: String,
        destination: String,
        group: String,
        subscription: String,
        orderly: bool,
        state: BindingState,
    }
    fn view(c: &binding::BindingControl) -> View {
        View {
            name: c.binding.name.clone(),
            destination: c.binding.destination.clone(),
            group: c.binding.group.clone(),
            subscription: c.binding.subscription.to_string(),
            orderly: c.binding.orderly,
            state: c.state(),
        }
    }
    #[derive(serde::Deserialize)]
    struct Change {
        state: String,
    }
    async fn list(State(host): State<Arc<stream::ServiceHost>>) -> Json<Vec<View>> {
        Json(host.bindings().iter().map(view).collect())
    }
    async fn change(
        State(host): State<Arc<stream::ServiceHost>>,
        Path(name): Path<String>,
        JsonBody(body): JsonBody<Change>,
    ) -> Result<Json<View>, ApiError> {
        let state = match body.state.to_ascii_uppercase().as_str() {
            "PAUSED" | "PAUSE" => BindingState::Paused,
            "RUNNING" | "RESUMED" | "RESUME" | "STARTED" => BindingState::Running,
            _ => return Err(ApiError::invalid("state", "must be PAUSED or RUNNING")),
        };
        let control =
            host.binding(&name).ok_or_else(|| ApiError::NotFound(format!("no binding {name}")))?;
        control.set(state);
        tracing::info!(binding = %name, ?state, "binding state changed");
        Ok(Json(view(&control)))
    }
    async fn progress(
        State(host): State<Arc<stream::ServiceHost>>,
    ) -> Result<Json<Vec<ConsumerProgress>>, ApiError> {
        let mut all = Vec::new();
        for (b, lag) in host.lags().await {
            let lag = lag.map_err(|e| ApiError::Unavailable(e.to_string()))?;
            all.push(ConsumerProgress {
                binding: b.name,
                group: b.group,
                topic: b.destination,
                lag,
            });
        }
        Ok(Json(all))
    }
    Router::new()
        .route("/admin/bindings", get(list))
        .route("/admin/bindings/{name}", axum::routing::put(change))
        .route("/admin/consumer-progress", get(progress))
        .with_state(host)
}

/// The service's dead letters (admin token required, like every `/admin` route):
/// - `GET /admin/dlq?limit=N` lists those not purged (payload, headers, error, attempts,
///   replays);
/// - `GET /admin/dlq/{id}` shows one;
/// - `POST /admin/dlq/{id}/replay` delivers it to its group again (through the inbox);
/// - `DELETE /admin/dlq/{id}` purges one, `DELETE /admin/dlq` purges all.
pub fn dlq_routes(host: Arc<stream::ServiceHost>) -> Router {
    use axum::extract::{Path, Query, State};
    use stream::dlq::{DeadLetterEntry, DlqError};

    type Host = State<Arc<stream::ServiceHost>>;
    fn api(e: DlqError) -> ApiError {
        match e {
            DlqError::NotFound(_) => ApiError::NotFound(e.to_string()),
            DlqError::Binder(e) => ApiError::Unavailable(e.to_string()),
            DlqError::Storage(e) => e.into(),
        }
    }
    #[derive(serde::Deserialize)]
    struct ListQuery {
        limit: Option<String>,
    }
    async fn list(
        State(host): Host,
        Query(q): Query<ListQuery>,
    ) -> Result<Json<Vec<DeadLetterEntry>>, ApiError> {
        let limit = match q.limit.as_deref() {
            None => 100,
            Some(text) => text
                .parse()
                .ok()
                .filter(|n| (1..=10_000).contains(n))
                .ok_or_else(|| ApiError::invalid("limit", "must be 1 to 10000"))?,
        };
        Ok(Json(host.dead_letters(limit).await.map_err(api)?))
    }
    async fn show(
        State(host): Host,
        Path(id): Path<String>,
    ) -> Result<Json<DeadLetterEntry>, ApiError> {
        Ok(Json(host.dead_letter(&id).await.map_err(api)?))
    }
    async fn replay(
        State(host): Host,
        Path(id): Path<String>,
    ) -> Result<Json<DeadLetterEntry>, ApiError> {
        Ok(Json(host.replay_dead_letter(&id).await.map_err(api)?))
    }
    async fn purge(
        State(host): Host,
        Path(id): Path<String>,
    ) -> Result<Json<DeadLetterEntry>, ApiError> {
        Ok(Json(host.purge_dead_letter(&id).await.map_err(api)?))
    }
    async fn purge_all(State(host): Host) -> Result<Json<serde_json::Value>, ApiError> {
        Ok(Json(json!({ "purged": host.purge_dead_letters().await.map_err(api)? })))
    }
    Router::new()
        .route("/admin/dlq", get(list).delete(purge_all))
        .route("/admin/dlq/{id}", get(show).delete(purge))
        .route("/admin/dlq/{id}/replay", axum::routing::post(replay))
        .with_state(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Req {
        #[serde(rename = "userId")]
        user_id: i64,
        items: Vec<Item>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Item {
        quantity: i64,
    }

    fn field(r: Result<Req, ApiError>) -> String {
        match r {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field(parse_json(br#"{"userId":"x","items":[]}"#)), "userId");
        assert_eq!(
            field(parse_json(br#"{"userId":1,"items":[{"quantity":"a"}]}"#)),
            "items[0].quantity"
        );
        assert_eq!(field(parse_json(br#"{"items":[]}"#)), "userId");
        assert_eq!(field(parse_json(br#"{"userId":1,"items":[{}]}"#)), "items[0].quantity");
        assert_eq!(field(parse_json(b"{not json")), "(body)");
    }
}
