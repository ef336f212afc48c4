//! Traces across the services, as an OTLP receiver inside the test gets them from the real
//! `orderflow` processes: one order is one trace holding the HTTP request and each publish
//! and consume of its events, parent links intact — under `up` on the embedded binder, and
//! with the three services in processes of their own on RocketMQ. A message a Java producer
//! sent with a `traceparent` property is consumed under that producer's trace.

use std::{
    collections::HashMap,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, routing::post};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, common::v1::any_value::Value as AnyValue,
};
use prost::Message as _;
use rocketmq_binder::LocalCluster;
use serde_json::{Value, json};
use testkit::*;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{
    distributed::serve_with,
    restart::{start, up_command},
};

/// One span as the receiver got it (ids in hex).
#[derive(Debug, Clone)]
struct Got {
    service: String,
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    attributes: HashMap<String, String>,
}

/// An OTLP/HTTP trace receiver (`POST /v1/traces`, protobuf).
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<Got>>>,
}

fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn receive(State(spans): State<Arc<Mutex<Vec<Got>>>>, body: Bytes) -> &'static str {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
    let mut got = spans.lock().unwrap();
    for rs in request.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .map(|a| text(&a.value))
            .unwrap_or_default();
        for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
            got.push(Got {
                service: service.clone(),
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent: hex(&span.parent_span_id),
                name: span.name,
                attributes: span
                    .attributes
                    .iter()
                    .map(|a| (a.key.clone(), text(&a.value)))
                    .collect(),
            });
        }
    }
    ""
}

impl Receiver {
    async fn start() -> Receiver {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new().route("/v1/traces", post(receive)).with_state(spans.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, spans }
    }

    /// What a process exporting here needs in its environment.
    fn env(&self) -> [(&'static str, &str); 2] {
        [("OTEL_EXPORTER_OTLP_ENDPOINT", self.url.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "100")]
    }

    fn trace(&self, trace_id: &str) -> Vec<Got> {
        self.spans.lock().unwrap().iter().filter(|s| s.trace_id == trace_id).cloned().collect()
    }

    /// The trace of the order created by the request whose server span is in it.
    fn order_trace(&self, order_no: &str) -> Option<String> {
        let spans = self.spans.lock().unwrap();
        spans
            .iter()
            .find(|s| {
                s.name.ends_with("process") && s.attributes.get(KEYS).is_some_and(|k| k == order_no)
            })
            .map(|s| s.trace_id.clone())
    }
}

const KEYS: &str = "messaging.rocketmq.message.keys";
const GROUP: &str = "messaging.consumer.group.name";

/// The spans a paid order's trace must hold, by name and consumer group (none for the
/// producer side): the request, then each event published once and consumed by each group
/// that subscribes to it.
const PAID_ORDER: &[(&str, &str)] = &[
    ("POST /api/orders", ""),
    ("order-created publish", ""),
    ("order-created process", "stock-consumer-group"),
    ("order-created process", "payment-consumer-group"),
    ("payment-success publish", ""),
    ("payment-success process", "order-consumer-group"),
    ("payment-success process", "stock-consumer-group"),
    ("stock-deducted publish", ""),
    ("stock-deducted process", "order-consumer-group"),
];

/// Waits until the trace holds every span of [`PAID_ORDER`] and checks its shape: each
/// span's parent is in the trace (the request's is `remote_parent`, or none), a consumer
/// span's parent is its event's publish span, and every messaging span names the system,
/// the destination and the order's key.
async fn assert_paid_order_trace(
    rx: &Receiver,
    trace_id: &str,
    order_no: &str,
    remote_parent: &str,
) -> Vec<Got> {
    let has = |spans: &[Got], (name, group): (&str, &str)| {
        spans.iter().any(|s| {
            s.name == name
                && (group.is_empty() || s.attributes.get(GROUP).is_some_and(|g| g == group))
        })
    };
    let complete = |spans: &[Got]| PAID_ORDER.iter().all(|want| has(spans, *want));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let spans = loop {
        let spans = rx.trace(trace_id);
        if complete(&spans) {
            break spans;
        }
        let names: Vec<(&str, Option<&String>)> =
            spans.iter().map(|s| (s.name.as_str(), s.attributes.get(GROUP))).collect();
        assert!(std::time::Instant::now() < deadline, "trace {trace_id} incomplete: {names:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let by_id: HashMap<&str, &Got> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    for s in &spans {
        if s.name == "POST /api/orders" {
            assert_eq!(s.parent, remote_parent, "the request continues its caller's trace: {s:?}");
            continue;
        }
        let parent = by_id
            .get(s.parent.as_str())
            .unwrap_or_else(|| panic!("{} has its parent in the trace: {s:?}", s.name));
        if let Some(topic) = s.name.strip_suffix(" process") {
            assert_eq!(
                parent.name,
                format!("{topic} publish"),
                "a consumer span is its publish's child"
            );
        }
        if s.name.ends_with(" publish") || s.name.ends_with(" process") {
            assert_eq!(s.attributes.get(KEYS).map(String::as_str), Some(order_no), "{s:?}");
            assert!(s.attributes.contains_key("messaging.system"), "{s:?}");
            assert!(s.attributes.contains_key("messaging.destination.name"), "{s:?}");
            assert!(s.attributes.contains_key("messaging.rocketmq.message.tag"), "{s:?}");
        }
    }
    spans
}

/// `orderflow up` in its own process, exporting to `rx`, logging JSON; its order service's
/// URL, and its log lines as they come.
async fn up(
    rx: &Receiver,
    dir: &std::path::Path,
) -> (tokio::process::Child, String, Arc<Mutex<Vec<String>>>) {
    let mut command = up_command(dir);
    command
        .args(["--log-format", "json"])
        .envs(rx.env())
        .env("ORDERFLOW_LOG", "info,sqlx=warn")
        .stderr(Stdio::piped());
    let mut p = start(command).await;
    let logs = Arc::new(Mutex::new(Vec::new()));
    let mut stderr = BufReader::new(p.child.stderr.take().unwrap()).lines();
    let kept = logs.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            kept.lock().unwrap().push(line);
        }
    });
    (p.child, p.order_url, logs)
}

async fn create(http: &reqwest::Client, base: &str, traceparent: Option<&str>) -> String {
    let mut req = http
        .post(format!("{base}/api/orders"))
        .json(&json!({"userId": 70, "items": [{"productId": 1001, "quantity": 1}]}));
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["orderNo"].as_str().unwrap().to_owned()
}

async fn paid(http: &reqwest::Client, base: &str, order_no: &str) {
    eventually_within(&format!("{order_no} paid"), Duration::from_secs(60), || async {
        let o: Value = http
            .get(format!("{base}/api/orders/{order_no}"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (o["status"] == "PAID").then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_trace_under_up_on_the_embedded_binder() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut process, base, logs) = up(&rx, dir.path()).await;
    let http = admin_client();
    // The caller's own trace: the request continues it.
    let (trace_id, caller) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let traceparent = format!("00-{trace_id}-{caller}-01");
    let order_no = create(&http, &base, Some(&traceparent)).await;
    paid(&http, &base, &order_no).await;
    let spans = assert_paid_order_trace(&rx, trace_id, &order_no, caller).await;
    assert!(spans.iter().all(|s| s.service == "orderflow"), "one process: {spans:?}");
    // Log lines written inside the trace's spans carry its ids.
    let traced = format!("\"trace_id\":\"{trace_id}\"");
    let lines = logs.lock().unwrap().clone();
    let line = lines.iter().find(|l| l.contains(&traced));
    let line = line.unwrap_or_else(|| panic!("a log line with {traced}:\n{}", lines.join("\n")));
    assert!(line.contains("\"span_id\":\""), "{line}");
    assert!(
        spans
            .iter()
            .filter(|s| s.name.ends_with("process"))
            .all(|s| s.attributes["messaging.system"] == "orderflow_embedded"),
        "{spans:?}"
    );
    // Without a caller's trace, the request starts one.
    let second = create(&http, &base, None).await;
    paid(&http, &base, &second).await;
    let trace = eventually("the second order's trace", || async { rx.order_trace(&second) }).await;
    assert_ne!(trace, trace_id, "a trace of its own");
    assert_paid_order_trace(&rx, &trace, &second, "").await;
    let _ = process.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_trace_across_three_processes_on_rocketmq_and_a_java_trace_is_joined() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(&dir.path().join("rocketmq")).await.unwrap();
    let ns = cluster.name_server();
    let db = |svc: &str| dir.path().join(format!("{svc}.db")).display().to_string();
    let env = rx.env();
    let order = serve_with("order", &ns, &db("order"), "127.0.0.1:0", &env).await;
    let stock = serve_with("stock", &ns, &db("stock"), "127.0.0.1:0", &env).await;
    let payment = serve_with("payment", &ns, &db("payment"), "127.0.0.1:0", &env).await;
    let http = admin_client();

    let order_no = create(&http, &order.url, None).await;
    paid(&http, &order.url, &order_no).await;
    let trace = eventually_within("the order's trace", Duration::from_secs(30), || async {
        rx.order_trace(&order_no)
    })
    .await;
    let spans = assert_paid_order_trace(&rx, &trace, &order_no, "").await;
    let mut services: Vec<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    services.sort_unstable();
    services.dedup();
    assert_eq!(services, ["order", "payment", "stock"], "spans from all three services");
    assert!(
        spans
            .iter()
            .filter(|s| s.name.ends_with("process"))
            .all(|s| s.attributes["messaging.system"] == "rocketmq")
    );

    // A Java producer instrumented by the OpenTelemetry agent: its traceparent property.
    let (java_trace, java_span) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let fixture = std::fs::read(fixtures().join("events/order-created.json")).unwrap();
    let mut event: events::OrderCreatedEvent = serde_json::from_slice(&fixture).unwrap();
    event.event_id = "java-traced-1".into();
    let mut message = events::Event::to_message(&event);
    message.properties.insert("traceparent".into(), format!("00-{java_trace}-{java_span}-01"));
    let producer = rocketmq_binder::RocketMqBinder::connect(
        rocketmq_binder::RocketMqSettings {
            name_server: ns.clone(),
            producer_group: "java-producer-group".into(),
            topics: vec![],
            max_consume_threads: 1,
        },
        binding::Metrics::new(),
    )
    .await
    .unwrap();
    binding::Binder::publish(&producer, &[message]).await.unwrap();
    let joined = eventually_within(
        "the Java trace joined by both consumers",
        Duration::from_secs(60),
        || async {
            let spans = rx.trace(java_trace);
            let consumers: Vec<Got> = spans
                .into_iter()
                .filter(|s| s.name == "order-created process" && s.parent == java_span)
                .collect();
            (consumers.len() >= 2).then_some(consumers)
        },
    )
    .await;
    let mut groups: Vec<&str> = joined.iter().map(|s| s.attributes[GROUP].as_str()).collect();
    groups.sort_unstable();
    groups.dedup();
    assert_eq!(groups, ["payment-consumer-group", "stock-consumer-group"]);
    binding::Binder::shutdown(&producer).await;
    for mut s in [order, stock, payment] {
        let _ = s.child.kill().await;
    }
    cluster.stop().await;
}
