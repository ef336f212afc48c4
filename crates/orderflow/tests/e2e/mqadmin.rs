//! `orderflow mqadmin`, run as the binary an operator runs, against the real app on each
//! binder (the storage does not matter to it): `consumerProgress` shows a paused group's
//! waiting messages — per queue on RocketMQ, from the broker's offsets — and nothing once
//! it has caught up.

use order::domain::OrderStatus;
use serde_json::Value;
use testkit::*;

const GROUP: &str = "payment-consumer-group";

/// `orderflow mqadmin ARGS... --url URL`: its exit status and what it printed.
async fn mqadmin(args: &[&str], url: &str, token: &str) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .arg("mqadmin")
        .args(args)
        .args(["--url", url])
        .env("ORDERFLOW_ADMIN_TOKEN", token)
        .output()
        .await
        .unwrap();
    let text = if out.status.success() { out.stdout } else { out.stderr };
    (out.status.success(), String::from_utf8_lossy(&text).into_owned())
}

/// The group's progress on `order-created`, as `consumerProgress --json` reports it.
async fn progress(url: &str) -> Value {
    let (ok, out) = mqadmin(&["consumerProgress", "-g", GROUP, "--json"], url, ADMIN_TOKEN).await;
    assert!(ok, "{out}");
    let all: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert!(all.iter().all(|p| p["group"] == GROUP), "only the group asked for: {out}");
    all.into_iter().find(|p| p["topic"] == "order-created").expect("order-created")
}

async fn consumer_progress_shows_a_paused_groups_waiting_messages(v: Variant) {
    let t = spawn(v).await;
    let url = t.app.payment_url.clone();
    let first = t.create_order(60, &[(1002, 1)]).await;
    t.settled(&first.order_no).await;
    t.binding(&url, "orderCreatedConsumer-in-0", "PAUSED").await;
    let mut waiting = Vec::new();
    for user in 61..64 {
        waiting.push(t.create_order(user, &[(1002, 1)]).await.order_no);
    }
    let behind = eventually("consumerProgress shows the 3 waiting", || async {
        let p = progress(&url).await;
        (p["messages"] == 3).then_some(p)
    })
    .await;
    assert!(behind["oldestBornAt"].as_i64().is_some(), "{behind}");
    let queues = behind["queues"].as_array().unwrap();
    if v.rocketmq() {
        // As mqadmin shows it: a row per queue, diff = broker offset - consumer offset.
        assert!(queues.len() > 1, "{behind}");
        let diffs: i64 = queues
            .iter()
            .map(|q| q["brokerOffset"].as_i64().unwrap() - q["consumerOffset"].as_i64().unwrap())
            .sum();
        assert_eq!(diffs, 3, "{behind}");
        assert!(queues.iter().map(|q| q["brokerOffset"].as_i64().unwrap()).sum::<i64>() >= 4);
    } else {
        assert!(queues.is_empty(), "the embedded binder has no queues: {behind}");
    }
    let (ok, table) = mqadmin(&["consumerProgress", "-g", GROUP], &url, ADMIN_TOKEN).await;
    assert!(ok, "{table}");
    assert!(table.starts_with("#Group"), "{table}");
    assert!(table.contains(&format!("{GROUP}: Diff Total: 3, oldest waiting: ")), "{table}");

    // Refused without the admin token, and an unknown group named.
    let (ok, out) = mqadmin(&["consumerProgress"], &url, "not-the-token-at-all").await;
    assert!(!ok && out.contains("admin token"), "{out}");
    let (ok, out) = mqadmin(&["consumerProgress", "-g", "nobody"], &url, ADMIN_TOKEN).await;
    assert!(!ok && out.contains("no consumer group \"nobody\""), "{out}");

    t.binding(&url, "orderCreatedConsumer-in-0", "RUNNING").await;
    for order_no in &waiting {
        assert_eq!(t.settled(order_no).await.status, OrderStatus::Paid);
    }
    eventually("consumerProgress shows the group caught up", || async {
        let p = progress(&url).await;
        (p["messages"] == 0 && p["oldestBornAt"].is_null()).then_some(())
    })
    .await;
    let (ok, table) = mqadmin(&["consumerProgress", "-g", GROUP], &url, ADMIN_TOKEN).await;
    assert!(ok && table.contains(&format!("{GROUP}: Diff Total: 0, oldest waiting: -")), "{table}");
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_progress_on_the_embedded_binder() {
    consumer_progress_shows_a_paused_groups_waiting_messages(Variant::EmbeddedSqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_progress_on_rocketmq() {
    consumer_progress_shows_a_paused_groups_waiting_messages(Variant::RocketMqSqlite).await
}
