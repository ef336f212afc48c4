//! Traces across the services. The W3C trace context (`traceparent`, `tracestate`) travels
//! in each message's user properties, where the OpenTelemetry Java agent puts it too:
//!
//! - [`stamp`]: an event enqueued in the outbox carries the context of what caused it — the
//!   consumer span of the message about the same key (orderNo) in the batch being handled,
//!   else the current span (the HTTP request that creates an order). It is written with the
//!   outbox row, so it survives a relay delay or a restart.
//! - [`publish_spans`]: the relay publishes each such message under a producer span, child
//!   of that context, and sends the publish span's context on.
//! - [`process_span`]: a consumer takes a message up under a consumer span, child of the
//!   producer's (ours, or a Java producer's).
//!
//! Span names and attributes follow the OpenTelemetry messaging conventions
//! (`<destination> publish`, `<destination> process`, `messaging.system`,
//! `messaging.destination.name`, `messaging.consumer.group.name`,
//! `messaging.rocketmq.message.tag`, `messaging.rocketmq.message.keys`).
//!
//! Off unless the process installed an exporter ([`enable`]): then nothing here creates a
//! span or touches a message.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    sync::atomic::{AtomicBool, Ordering},
};

use events::Message;
pub use opentelemetry::Context;
use opentelemetry::{
    global,
    propagation::{Extractor, Injector},
    trace::{Status, TraceContextExt},
};
use tracing::{Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C trace context's property names.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns tracing on (the process exports spans).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether spans are made and contexts carried.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

struct Props<'a>(&'a BTreeMap<String, String>);

impl Extractor for Props<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

struct PropsMut<'a>(&'a mut BTreeMap<String, String>);

impl Injector for PropsMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

/// The trace context in `properties` (empty when there is none).
pub fn extract(properties: &BTreeMap<String, String>) -> Context {
    global::get_text_map_propagator(|p| p.extract(&Props(properties)))
}

/// Writes `cx` into `properties` (nothing when it holds no span).
pub fn inject(cx: &Context, properties: &mut BTreeMap<String, String>) {
    if cx.span().span_context().is_valid() {
        global::get_text_map_propagator(|p| p.inject_context(cx, &mut PropsMut(properties)));
    }
}

/// The server span of an HTTP request (`GET /api/orders/{order_no}`), child of the
/// request's own `traceparent` header when it has one (read through `header`); its
/// `http.response.status_code` is recorded by the caller.
pub fn server_span<'a>(
    method: &str,
    route: &str,
    header: impl Fn(&str) -> Option<&'a str>,
) -> Span {
    let carrier: BTreeMap<String, String> = [TRACEPARENT, TRACESTATE]
        .into_iter()
        .filter_map(|k| header(k).map(|v| (k.to_owned(), v.to_owned())))
        .collect();
    let span = tracing::info_span!(
        "request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = method,
        http.route = route,
        http.response.status_code = Empty,
        trace_id = Empty,
        span_id = Empty,
    );
    let parent = extract(&carrier);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    record_ids(&span);
    span
}

tokio::task_local! {
    /// The consumer span's context of each key in the batch being handled.
    static BY_KEY: HashMap<String, Context>;
}

/// Runs `f` with `contexts` as the trace context of each key's events.
pub async fn with_keys<F: Future>(contexts: HashMap<String, Context>, f: F) -> F::Output {
    BY_KEY.scope(contexts, f).await
}

/// Stamps `message` with the context of what caused it ([module docs](self)); `None` when
/// tracing is off or nothing is being traced.
pub fn stamp(message: &Message) -> Option<Message> {
    if !enabled() {
        return None;
    }
    let keyed = BY_KEY.try_with(|m| m.get(&message.keys).cloned()).ok().flatten();
    let cx = keyed.unwrap_or_else(current);
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut stamped = message.clone();
    inject(&cx, &mut stamped.properties);
    Some(stamped)
}

/// The trace context work runs in: the one [`within`] set, else the current span's. (A
/// span only logs see, such as a handler's `#[instrument]`, may be the current span; it has
/// no trace context of its own, so the one set by `within` comes first.)
pub fn current() -> Context {
    let cx = Context::current();
    if cx.span().span_context().is_valid() { cx } else { Span::current().context() }
}

/// Runs `f` in `span` (for its log lines) and under trace context `cx` (for the events it
/// causes): work handed from one task to another keeps its caller's trace.
pub async fn within<F: Future>(span: &Span, cx: &Context, f: F) -> F::Output {
    use opentelemetry::context::FutureExt as _;
    use tracing::Instrument as _;
    f.instrument(span.clone()).with_context(cx.clone()).await
}

/// The trace context of `span` (empty when tracing is off).
pub fn context_of(span: &Span) -> Context {
    span.context()
}

/// Records the span's trace and span ids as its `trace_id` and `span_id` fields, so the log
/// lines inside it carry them.
pub fn record_ids(span: &Span) {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        span.record("trace_id", tracing::field::display(sc.trace_id()));
        span.record("span_id", tracing::field::display(sc.span_id()));
    }
}

/// The consumer span of `message`, delivered to `group` on `system`, child of the
/// producer's context in its properties.
pub fn process_span(system: &'static str, group: &str, message: &Message) -> Span {
    let span = tracing::info_span!(
        "process",
        otel.name = format!("{} process", message.topic),
        otel.kind = "consumer",
        messaging.system = system,
        messaging.operation.type = "process",
        messaging.destination.name = message.topic.as_str(),
        messaging.consumer.group.name = group,
        messaging.rocketmq.message.tag = message.tags.as_str(),
        messaging.rocketmq.message.keys = message.keys.as_str(),
        trace_id = Empty,
        span_id = Empty,
    );
    let _ = span.set_parent(extract(&message.properties));
    record_ids(&span);
    span
}

/// A producer span for each message that carries a trace context, child of it; the message
/// then carries the publish span's context instead. The spans end when dropped, after the
/// publish.
pub fn publish_spans(system: &'static str, messages: &mut [Message]) -> Vec<Span> {
    if !enabled() {
        return Vec::new();
    }
    let mut spans = Vec::new();
    for m in messages.iter_mut().filter(|m| m.properties.contains_key(TRACEPARENT)) {
        let span = tracing::info_span!(
            "publish",
            otel.name = format!("{} publish", m.topic),
            otel.kind = "producer",
            messaging.system = system,
            messaging.operation.type = "send",
            messaging.destination.name = m.topic.as_str(),
            messaging.rocketmq.message.tag = m.tags.as_str(),
            messaging.rocketmq.message.keys = m.keys.as_str(),
        );
        let _ = span.set_parent(extract(&m.properties));
        inject(&span.context(), &mut m.properties);
        spans.push(span);
    }
    spans
}

/// Marks `span` failed with `why`.
pub fn failed(span: &Span, why: &str) {
    span.set_status(Status::error(why.to_owned()));
}
