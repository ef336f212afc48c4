//! What an operator watches: consumer lag, latency histograms, dead letters, publish
//! failures — read from `/metrics` as Prometheus scrapes it, on every binder and storage.

use std::time::Duration;

use binding::metrics;
use order::domain::OrderStatus;
use testkit::*;

const PAYMENT_LAG: [(&str, &str); 2] =
    [("group", "payment-consumer-group"), ("topic", "order-created")];

/// A paused binding falls behind by exactly the orders placed meanwhile, and the age of its
/// oldest unacknowledged message grows; resumed, its lag drains to nothing.
async fn a_paused_binding_shows_its_lag_until_resumed(v: Variant) {
    let t = spawn(v).await;
    let url = t.app.payment_url.clone();
    let lag = |name: &'static str| {
        let t = &t;
        let url = url.clone();
        async move { sample(&t.metrics(&url).await, name, &PAYMENT_LAG) }
    };
    let first = t.create_order(40, &[(1002, 1)]).await;
    t.settled(&first.order_no).await;
    eventually("no lag once the first order is paid", || async {
        (lag(metrics::LAG_MESSAGES).await == Some(0.0)).then_some(())
    })
    .await;
    t.binding(&url, "orderCreatedConsumer-in-0", "PAUSED").await;
    let mut waiting = Vec::new();
    for user in 41..46 {
        waiting.push(t.create_order(user, &[(1002, 1)]).await.order_no);
    }
    eventually("the paused group is 5 behind", || async {
        (lag(metrics::LAG_MESSAGES).await == Some(5.0)).then_some(())
    })
    .await;
    if v.rocketmq() {
        // As `mqadmin consumerProgress` shows it: the queues' lag adds up to the group's.
        let text = t.metrics(&url).await;
        let queues = samples(&text, metrics::QUEUE_LAG, &PAYMENT_LAG);
        assert!(queues.len() > 1, "one sample per queue\n{text}");
        assert_eq!(queues.iter().sum::<f64>(), 5.0, "{text}");
    }
    let age = lag(metrics::LAG_OLDEST).await.expect("oldest age");
    assert!(age > 0.0, "the oldest waiting message has an age: {age}");
    eventually("the oldest waiting message ages", || async {
        (lag(metrics::LAG_OLDEST).await.expect("oldest age") > age).then_some(())
    })
    .await;
    t.binding(&url, "orderCreatedConsumer-in-0", "RUNNING").await;
    for order_no in &waiting {
        assert_eq!(t.settled(order_no).await.status, OrderStatus::Paid);
    }
    eventually("the lag drains once resumed", || async {
        let drained = lag(metrics::LAG_MESSAGES).await == Some(0.0)
            && lag(metrics::LAG_OLDEST).await == Some(0.0);
        drained.then_some(())
    })
    .await;
    t.shutdown().await;
}

/// After one order the histograms hold its samples, under the labels dashboards use.
async fn one_order_leaves_samples_in_every_histogram(v: Variant) {
    let t = spawn(v).await;
    let o = t.create_order(50, &[(1001, 1)]).await;
    assert_eq!(t.settled(&o.order_no).await.status, OrderStatus::Paid);
    t.quiesce().await;
    let text = t.metrics(&t.app.order_url).await;
    let count = |name: &str, labels: &[(&str, &str)]| {
        sample(&text, &format!("{name}_count"), labels).unwrap_or(0.0)
    };
    let stock = [("topic", "order-created"), ("group", "stock-consumer-group")];
    assert!(count(metrics::CONSUME_LATENCY, &stock) >= 1.0, "consume latency\n{text}");
    let binding = [("binding", "orderCreatedConsumer-in-0"), ("group", "stock-consumer-group")];
    assert!(count(metrics::HANDLER_SECONDS, &binding) >= 1.0, "handler duration\n{text}");
    for topic in ["order-created", "payment-success", "stock-deducted"] {
        let labels = [("topic", topic)];
        assert!(count(metrics::PUBLISH_SECONDS, &labels) >= 1.0, "publish {topic}\n{text}");
    }
    assert_eq!(count(metrics::ORDER_SECONDS, &[("outcome", "PAID")]), 1.0, "{text}");
    assert_eq!(count(metrics::ORDER_SECONDS, &[("outcome", "CANCELLED")]), 0.0, "{text}");
    let created = [("service", "order"), ("route", "/api/orders"), ("status", "2xx")];
    assert!(count(metrics::HTTP_SECONDS, &created) >= 1.0, "HTTP create\n{text}");
    let by_no = [("service", "order"), ("route", "/api/orders/{order_no}"), ("status", "2xx")];
    assert!(
        count(metrics::HTTP_SECONDS, &by_no) >= 1.0,
        "HTTP by orderNo, not by raw path\n{text}"
    );
    assert!(!text.contains(o.order_no.as_str()), "no series per order\n{text}");
    t.shutdown().await;
}

/// A cancelled order is timed under CANCELLED.
async fn a_cancelled_order_is_timed_as_cancelled(v: Variant) {
    let t = spawn(v).await;
    let o = t.create_order(51, &[(1004, 50)]).await; // more of the limited figure than there is
    assert_eq!(t.settled(&o.order_no).await.status, OrderStatus::Cancelled);
    eventually("the cancellation is timed", || async {
        let text = t.metrics(&t.app.order_url).await;
        let n =
            sample(&text, "orderflow_order_completion_seconds_count", &[("outcome", "CANCELLED")]);
        (n == Some(1.0)).then_some(())
    })
    .await;
    t.shutdown().await;
}

variants!(
    a_paused_binding_shows_its_lag_until_resumed,
    one_order_leaves_samples_in_every_histogram,
    a_cancelled_order_is_timed_as_cancelled,
);

/// The shipped alert rules load, and each passes its unit tests (`promtool`, from Debian's
/// `prometheus` package).
#[test]
fn the_alert_rules_pass_promtool() {
    let dir = deploy().join("prometheus");
    for args in [["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"]] {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool (Debian: apt-get install prometheus)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool {}:\n{text}", args.join(" "));
    }
}

fn deploy() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// A Prometheus server (Debian's `prometheus`) scraping the given targets every second with
/// the shipped alert rules, stopped when dropped.
struct Prometheus {
    url: String,
    http: reqwest::Client,
    _process: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(targets: &[&str]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let targets: Vec<String> =
            targets.iter().map(|t| format!("'{}'", t.trim_start_matches("http://"))).collect();
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: ['{}']\n\
             scrape_configs:\n  - job_name: orderflow\n    static_configs:\n      - targets: [{}]\n",
            deploy().join("prometheus/alerts.yml").display(),
            targets.join(", ")
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let process = tokio::process::Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("prometheus (Debian: apt-get install prometheus)");
        let p = Prometheus {
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            _process: process,
            _dir: dir,
        };
        until("prometheus ready", || async {
            let r = p.http.get(format!("{}/-/ready", p.url)).send().await;
            r.is_ok_and(|r| r.status() == 200)
        })
        .await;
        p
    }

    /// The result of an instant query (an error answer fails the test).
    async fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let r: serde_json::Value = self
            .http
            .get(format!("{}/api/v1/query?query={}", self.url, encode(expr)))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["status"], "success", "{expr}: {r}");
        r["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

/// `text` percent-encoded for a URL's query.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A real Prometheus scraping a running system with the shipped rules: every query of the
/// shipped dashboard returns data, and the stalled-consumer alert fires while a binding is
/// paused and clears once it is resumed. (Under `up` one port's /metrics tells everything
/// about the process, so one target.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_finds_data_for_every_dashboard_query_and_the_lag_alert_fires() {
    let t = spawn(Variant::EmbeddedSqlite).await;
    let prometheus = Prometheus::start(&[&t.app.order_url]).await;
    let paid = t.create_order(60, &[(1001, 1)]).await;
    let cancelled = t.create_order(61, &[(1004, 50)]).await;
    t.settled(&paid.order_no).await;
    t.settled(&cancelled.order_no).await;

    let dashboard: serde_json::Value =
        serde_json::from_slice(&std::fs::read(deploy().join("grafana/orderflow.json")).unwrap())
            .unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(exprs.len() >= 12, "the dashboard's queries: {exprs:?}");
    for expr in &exprs {
        eventually_within(&format!("data for {expr}"), Duration::from_secs(30), || async {
            (!prometheus.query(expr).await.is_empty()).then_some(())
        })
        .await;
    }

    let firing = r#"ALERTS{alertname="OrderflowConsumerStalled",alertstate="firing",group="payment-consumer-group"}"#;
    assert!(prometheus.query(firing).await.is_empty(), "nothing stalled yet");
    t.binding(&t.app.payment_url, "orderCreatedConsumer-in-0", "PAUSED").await;
    let waiting = t.create_order(62, &[(1002, 1)]).await;
    // The rule's threshold is 30 s of waiting.
    eventually_within("the stalled-consumer alert fires", Duration::from_secs(90), || async {
        (!prometheus.query(firing).await.is_empty()).then_some(())
    })
    .await;
    t.binding(&t.app.payment_url, "orderCreatedConsumer-in-0", "RUNNING").await;
    assert_eq!(t.settled(&waiting.order_no).await.status, OrderStatus::Paid);
    eventually_within("the alert clears once resumed", Duration::from_secs(30), || async {
        prometheus.query(firing).await.is_empty().then_some(())
    })
    .await;
    t.shutdown().await;
}
