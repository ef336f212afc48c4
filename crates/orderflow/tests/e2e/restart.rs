//! Stopping mid-flow — gracefully, or by SIGKILL of the real binary — and starting again on
//! the same data directory leaves no order stuck and conserves stock.

use std::{process::Stdio, time::Duration};

use order::domain::OrderStatus;
use payment::PaymentSettings;
use serde_json::{Value, json};
use testkit::*;
use tokio::io::{AsyncBufReadExt, BufReader};

async fn a_graceful_stop_mid_flow_then_restart_finishes_every_order(v: Variant) {
    let slow = PaymentSettings { delay: Duration::from_millis(400), ..Default::default() };
    let t = spawn_with(v, slow, |b| b).await;
    let mut orders = Vec::new();
    for user in 0..10 {
        orders.push(t.create_order(300 + user, &[(1001, 1)]).await.order_no);
    }
    let pending = t.order(&orders[9]).await;
    assert_eq!(
        pending.status,
        OrderStatus::Pending,
        "stopping mid-flow: payments still in progress"
    );

    let t = t.restart(PaymentSettings::default()).await;
    for no in &orders {
        assert_eq!(t.settled(no).await.status, OrderStatus::Paid, "{no}");
    }
    t.quiesce().await;
    let s = t.stock(1001).await;
    assert_eq!(
        (s.available, s.frozen, s.sold),
        (90, 0, 10),
        "demo stock 100: conserved, not re-seeded"
    );
    for no in &orders {
        assert_eq!(t.payments(no).await.len(), 1);
    }
    t.shutdown().await;
}

variants!(a_graceful_stop_mid_flow_then_restart_finishes_every_order);

pub(crate) struct Process {
    pub child: tokio::process::Child,
    pub order_url: String,
    pub stock_url: String,
}

/// `orderflow up` on `dir` with free ports and the test admin token, logging warnings to
/// the test's standard error; add to it, then [`start`] it.
pub(crate) fn up_command(dir: &std::path::Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_orderflow"));
    command
        .args(["up", "--order-addr", "127.0.0.1:0", "--stock-addr", "127.0.0.1:0"])
        .args(["--payment-addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("ORDERFLOW_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("ORDERFLOW_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    command
}

/// Spawns an [`up_command`]; returns once it printed its addresses.
pub(crate) async fn start(mut command: tokio::process::Command) -> Process {
    let mut child = command.spawn().expect("orderflow binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut order_url, mut stock_url) = (String::new(), String::new());
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let url = line.split_whitespace().nth(1).unwrap_or_default().to_owned();
            match line.split_whitespace().next() {
                Some("order") => order_url = url,
                Some("stock") => stock_url = url,
                Some("Press") => return,
                _ => {}
            }
        }
        panic!("orderflow exited before it was up");
    };
    tokio::time::timeout(Duration::from_secs(30), read).await.expect("orderflow up within 30 s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Process { child, order_url, stock_url }
}

/// `orderflow up` on `dir` with the fixtures' YAML and payments completing after
/// `payment_delay_ms`.
async fn start_binary(dir: &std::path::Path, payment_delay_ms: u64) -> Process {
    let mut command = up_command(dir);
    command
        .arg("--config-dir")
        .arg(fixtures().join("config"))
        .env("ORDERFLOW_PAYMENT_DELAY_MS", payment_delay_ms.to_string());
    start(command).await
}

#[tokio::test]
async fn sigkill_mid_flow_then_restart_leaves_no_order_stuck() {
    let dir = tempfile::tempdir().unwrap();
    let http = admin_client();
    let mut p = start_binary(dir.path(), 500).await;
    let mut orders = Vec::new();
    for user in 0..20 {
        let body = json!({"userId": 400 + user, "items": [{"productId": 1003, "quantity": 1}, {"productId": 1002, "quantity": 2}]});
        let r: Value = http
            .post(format!("{}/api/orders", p.order_url))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        orders.push(r["orderNo"].as_str().unwrap().to_owned());
    }
    let pending: Vec<Value> = http
        .get(format!("{}/api/orders?status=PENDING", p.order_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!pending.is_empty(), "killing mid-flow: some orders are still pending");
    p.child.start_kill().unwrap(); // SIGKILL: no chance to clean up
    p.child.wait().await.unwrap();

    let mut p = start_binary(dir.path(), 0).await;
    let mut paid = 0;
    for no in &orders {
        let o: Value = eventually(&format!("{no} terminal after restart"), || async {
            let o: Value = http
                .get(format!("{}/api/orders/{no}", p.order_url))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (o["status"] != "PENDING").then_some(o)
        })
        .await;
        paid += usize::from(o["status"] == "PAID");
    }
    // 20 monitors are on offer: all 20 orders fit.
    assert_eq!(paid, 20);
    let monitors: Value = eventually("monitor stock settled", || async {
        let s: Value = http
            .get(format!("{}/api/stock/1003", p.stock_url))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (s["frozen"] == 0).then_some(s)
    })
    .await;
    assert_eq!(monitors, json!({"productId": 1003, "available": 0, "frozen": 0, "sold": 20}));
    p.child.start_kill().unwrap();
    p.child.wait().await.unwrap();
}

#[tokio::test]
async fn ctrl_c_stops_the_binary_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = start_binary(dir.path(), 0).await;
    let pid = p.child.id().expect("running").to_string();
    let killed = std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), p.child.wait())
        .await
        .expect("stops within 30 s")
        .unwrap();
    assert!(status.success(), "exit status {status}");
}

/// The broker is SIGKILLed mid-load and restarted on the same store: orders taken meanwhile
/// wait in the outboxes, and afterwards every order completes, each paid once.
async fn broker_killed_mid_load_then_restarted(v: Variant) {
    let mut t = spawn(v).await;
    let mut orders = Vec::new();
    for user in 0..10 {
        orders.push(t.create_order(500 + user, &[(1002, 1)]).await.order_no);
    }
    t.cluster.as_mut().expect("a RocketMQ variant").kill_broker().await;
    for user in 10..20 {
        orders.push(t.create_order(500 + user, &[(1002, 1)]).await.order_no);
    }
    let held = stream::outbox::Outbox::backlog(&t.app.order.host.db).await.unwrap();
    assert!(held > 0, "with the broker down, the order outbox holds the unsent events");
    t.cluster.as_mut().unwrap().start_broker().await.expect("broker restarts on its store");
    let restarted = std::time::Instant::now();
    // The clients find the restarted broker on their next route refresh (tens of seconds).
    let last = orders.last().unwrap().clone();
    eventually_within(
        "the first order after the restart settles",
        Duration::from_secs(120),
        || async { (t.order(&last).await.status != OrderStatus::Pending).then_some(()) },
    )
    .await;
    eprintln!("recovered {:?} after the broker restart", restarted.elapsed());
    for no in &orders {
        assert_eq!(t.settled(no).await.status, OrderStatus::Paid, "{no}");
    }
    t.quiesce().await;
    for no in &orders {
        let payments = t.payments(no).await;
        assert_eq!(payments.len(), 1, "{no}: one payment");
    }
    let cables = t.stock(1002).await;
    assert_eq!(
        (cables.available, cables.frozen, cables.sold),
        (480, 0, 20),
        "each deduction applied once"
    );
    t.shutdown().await;
}

mod rocketmq_sqlite_broker {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn broker_killed_mid_load_then_restarted() {
        super::broker_killed_mid_load_then_restarted(testkit::Variant::RocketMqSqlite).await
    }
}
mod rocketmq_postgres_broker {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn broker_killed_mid_load_then_restarted() {
        super::broker_killed_mid_load_then_restarted(testkit::Variant::RocketMqPostgres).await
    }
}
