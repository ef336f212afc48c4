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

/// `mqadmin ARGS... --json`, which must succeed, parsed.
async fn mqadmin_json(args: &[&str], url: &str) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (ok, out) = mqadmin(&all, url, ADMIN_TOKEN).await;
    assert!(ok, "mqadmin {args:?}: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("mqadmin {args:?}: {e}: {out}"))
}

/// The inbox's duplicates counter of `group` on `topic`, read from the service at `url`.
async fn duplicates(t: &TestApp, url: &str, topic: &str, group: &str) -> f64 {
    let text = t.metrics(url).await;
    sample(&text, "orderflow_messages_duplicates_total", &[("topic", topic), ("group", group)])
        .unwrap_or(0.0)
}

/// `resetOffsetByTime` back before N handled orders: the N `order-created` messages come to
/// the payment group again, the inbox absorbs every one (counted as duplicates), and no
/// payment or stock changes; `topicList` and `topicStatus` show the topic and its messages.
async fn reset_offset_by_time_redelivers_what_the_inbox_absorbs(v: Variant) {
    let t = spawn(v).await;
    let url = t.app.payment_url.clone();
    let since = events::now_millis() - 1;
    let mut orders = Vec::new();
    for user in 70..73 {
        let o = t.create_order(user, &[(1002, 1)]).await;
        assert_eq!(t.settled(&o.order_no).await.status, OrderStatus::Paid);
        orders.push(o.order_no.to_string());
    }
    t.quiesce().await;
    let stock = t.stock(1002).await.available;
    let before = duplicates(&t, &url, "order-created", GROUP).await;

    let topics = mqadmin_json(&["topicList"], &url).await;
    assert!(topics.as_array().unwrap().iter().any(|x| x == "order-created"), "{topics}");
    let status = mqadmin_json(&["topicStatus", "-t", "order-created"], &url).await;
    let held: i64 = status
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["maxOffset"].as_i64().unwrap() - q["minOffset"].as_i64().unwrap())
        .sum();
    if v.rocketmq() {
        assert_eq!(held, 3, "three messages in the topic's queues: {status}");
    } else {
        // One queue whose offsets are message ids: three messages between them at least.
        assert!(held >= 3, "{status}");
    }
    let (ok, out) = mqadmin(&["topicStatus", "-t", "no-such-topic"], &url, ADMIN_TOKEN).await;
    assert!(!ok && out.contains("no-such-topic"), "{out}");

    let at = since.to_string();
    let reset = ["resetOffsetByTime", "-g", GROUP, "-t", "order-created", "-s", &at];
    let (ok, out) = mqadmin(&reset, &url, ADMIN_TOKEN).await;
    assert!(ok, "{out}");
    assert!(out.starts_with("#brokerName"), "{out}");
    let expected = before + orders.len() as f64;
    until("the rewound messages absorbed as duplicates", || async {
        duplicates(&t, &url, "order-created", GROUP).await >= expected
    })
    .await;
    t.quiesce().await;
    assert_eq!(duplicates(&t, &url, "order-created", GROUP).await, expected, "each once");
    for order_no in &orders {
        assert_eq!(t.payments(order_no).await.len(), 1, "no second payment for {order_no}");
        assert_eq!(t.order(order_no).await.status, OrderStatus::Paid);
    }
    assert_eq!(t.stock(1002).await.available, stock, "stock unchanged");
    // On RocketMQ once the consumer has committed its offsets again (within seconds).
    eventually("caught up again", || async {
        (progress(&url).await["messages"] == 0).then_some(())
    })
    .await;

    // A time before the epoch is refused over HTTP, naming the field, and nothing moves.
    let r = t
        .http
        .post(format!("{url}/admin/consumer-offsets"))
        .json(&serde_json::json!({"group": GROUP, "topic": "order-created",
            "resetTo": {"time": -5}, "force": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["field"], "resetTo.time", "{body}");

    // Refused for a group the services do not consume the topic as, and for a bad time.
    let (ok, out) = mqadmin(
        &["resetOffsetByTime", "-g", "nobody", "-t", "order-created", "-s", "now"],
        &url,
        ADMIN_TOKEN,
    )
    .await;
    assert!(!ok && out.contains("\"nobody\""), "{out}");
    let (ok, out) = mqadmin(
        &["resetOffsetByTime", "-g", GROUP, "-t", "order-created", "-s", "soon"],
        &url,
        ADMIN_TOKEN,
    )
    .await;
    assert!(!ok && out.contains("yyyy-MM-dd#HH:mm:ss:SSS"), "{out}");
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_offset_by_time_on_the_embedded_binder() {
    reset_offset_by_time_redelivers_what_the_inbox_absorbs(Variant::EmbeddedSqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_offset_by_time_on_rocketmq() {
    reset_offset_by_time_redelivers_what_the_inbox_absorbs(Variant::RocketMqSqlite).await
}

/// `skipAccumulatedMessage` on a paused group with N waiting: diff 0, the skipped messages
/// are never delivered (no payment), and the compensation job's re-send still brings every
/// affected order to PAID.
async fn skip_accumulated_message_skips_and_compensation_finishes(v: Variant) {
    use order::compensation::{self, CompensationSettings};
    let t = spawn(v).await;
    let url = t.app.payment_url.clone();
    t.binding(&url, "orderCreatedConsumer-in-0", "PAUSED").await;
    let mut skipped = Vec::new();
    for user in 80..83 {
        skipped.push(t.create_order(user, &[(1002, 1)]).await.order_no.to_string());
    }
    eventually("the 3 waiting", || async { (progress(&url).await["messages"] == 3).then_some(()) })
        .await;
    // With -f false a queue is only moved back: past the last message is no move at all.
    let (ok, out) = mqadmin(
        &["resetOffsetByTime", "-g", GROUP, "-t", "order-created", "-s", "-1", "-f", "false"],
        &url,
        ADMIN_TOKEN,
    )
    .await;
    assert!(ok, "{out}");
    assert_eq!(progress(&url).await["messages"], 3, "-f false skipped nothing");
    let (ok, out) =
        mqadmin(&["skipAccumulatedMessage", "-g", GROUP, "-t", "order-created"], &url, ADMIN_TOKEN)
            .await;
    assert!(ok, "{out}");
    assert_eq!(progress(&url).await["messages"], 0, "nothing waits after the skip");
    t.binding(&url, "orderCreatedConsumer-in-0", "RUNNING").await;
    t.quiesce().await;
    for order_no in &skipped {
        assert!(t.payments(order_no).await.is_empty(), "{order_no} was skipped, never paid");
        assert_eq!(t.order(order_no).await.status, OrderStatus::Pending);
    }
    assert!(
        t.app.binder.dead_letters(GROUP, 10).await.unwrap().is_empty(),
        "a skipped message is not a dead letter"
    );

    let settings = CompensationSettings {
        resend_after: std::time::Duration::from_secs(60),
        cancel_after: std::time::Duration::from_secs(600),
        interval: std::time::Duration::from_secs(5),
        max_resends: 10,
    };
    let later = events::now_millis() + 61_000;
    let pass = compensation::pass(&t.app.order, &settings, later).await.unwrap();
    assert_eq!(pass, compensation::Pass { resent: 3, cancelled: 0 });
    for order_no in &skipped {
        assert_eq!(t.settled(order_no).await.status, OrderStatus::Paid);
        assert_eq!(t.payments(order_no).await.len(), 1);
    }
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_accumulated_message_on_the_embedded_binder() {
    skip_accumulated_message_skips_and_compensation_finishes(Variant::EmbeddedSqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_accumulated_message_on_rocketmq() {
    skip_accumulated_message_skips_and_compensation_finishes(Variant::RocketMqSqlite).await
}

/// A Java fixture body with its order's orderNo and orderId (and amount) put in.
fn fixture_for(file: &str, o: &order::store::OrderView) -> String {
    let mut body: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("events").join(file)).unwrap(),
    )
    .unwrap();
    body["orderNo"] = o.order_no.to_string().into();
    body["orderId"] = o.order_id.into();
    if body.get("amount").is_some() {
        body["amount"] = serde_json::to_value(o.total_amount).unwrap();
    }
    body.to_string()
}

/// `sendMessage` of each Java fixture body (tag given, the rest completed as the Java
/// producer sets it) is consumed as the Java service's message: payment-success pays the
/// order and deducts its stock, stock-freeze-failed cancels one, and order-created freezes
/// stock for its (unknown to us) order. `queryMsgByKey` finds that message by its orderNo,
/// with the Java producer's properties, and `queryMsgById` tells who consumed it.
async fn send_message_is_consumed_as_a_java_services(v: Variant) {
    let t = spawn(v).await;
    let url = t.app.payment_url.clone();
    // Payment takes no part: the fixtures stand in for it.
    t.binding(&url, "orderCreatedConsumer-in-0", "PAUSED").await;
    let paid = t.create_order(90, &[(1002, 1)]).await;
    let failed = t.create_order(91, &[(1002, 1)]).await;
    for o in [&paid, &failed] {
        let no = o.order_no.to_string();
        eventually("stock frozen", || async {
            t.reservation(&no).await.filter(|r| r["state"] == "FROZEN").map(|_| ())
        })
        .await;
    }
    let dir = tempfile::tempdir().unwrap();
    for (file, topic, tag, o) in [
        ("payment-success.json", "payment-success", "PAYMENT_SUCCESS", &paid),
        ("stock-freeze-failed.json", "stock-freeze-failed", "STOCK_FREEZE_FAILED", &failed),
    ] {
        let path = dir.path().join(file);
        std::fs::write(&path, fixture_for(file, o)).unwrap();
        let body = format!("@{}", path.display());
        let (ok, out) =
            mqadmin(&["sendMessage", "-t", topic, "-c", tag, "-p", &body], &url, ADMIN_TOKEN).await;
        assert!(ok && out.contains("SEND_OK"), "{out}");
    }
    let o = t.settled(&paid.order_no).await;
    assert_eq!(o.status, OrderStatus::Paid);
    let no = paid.order_no.to_string();
    eventually("the paid order's stock deducted", || async {
        t.reservation(&no).await.filter(|r| r["state"] == "DEDUCTED").map(|_| ())
    })
    .await;
    let o = t.settled(&failed.order_no).await;
    assert_eq!(o.status, OrderStatus::Cancelled);

    // order-created exactly as the Java order service wrote it.
    let java = fixtures().join("events").join("order-created.json");
    let java_body = std::fs::read_to_string(&java).unwrap();
    let body = format!("@{}", java.display());
    let (ok, out) = mqadmin(
        &["sendMessage", "-t", "order-created", "-c", "ORDER_CREATED", "-p", &body],
        &url,
        ADMIN_TOKEN,
    )
    .await;
    assert!(ok, "{out}");
    eventually("stock frozen for the Java order", || async {
        t.reservation("ORD1736900000001").await.filter(|r| r["state"] == "FROZEN").map(|_| ())
    })
    .await;
    let found =
        mqadmin_json(&["queryMsgByKey", "-t", "order-created", "-k", "ORD1736900000001"], &url)
            .await;
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    let m = &found[0];
    assert_eq!(m["tags"], "ORDER_CREATED");
    assert_eq!(m["keys"], "ORD1736900000001");
    assert_eq!(m["body"], java_body.as_str());
    assert_eq!(m["properties"]["eventId"], "6f1c3c1e-6f0e-4a3e-9a53-0c7f0c0b9c11");
    assert_eq!(m["properties"]["eventType"], "ORDER_CREATED");
    assert_eq!(m["properties"]["contentType"], "application/json");
    let id = m["messageId"].as_str().unwrap().to_owned();
    // Consumed by stock (on RocketMQ once its consumer has committed the offset, within
    // seconds), not by the paused payment group.
    let one = eventually("stock's consumption shown", || async {
        let one = mqadmin_json(&["queryMsgById", "-i", &id], &url).await;
        let consumed = |group: &str| {
            let groups = one["groups"].as_array().unwrap();
            groups.iter().find(|g| g["group"] == group).map(|g| g["consumed"] == true)
        };
        (consumed("stock-consumer-group") == Some(true)).then(|| (one.clone(), consumed(GROUP)))
    })
    .await;
    assert_eq!(one.1, Some(false), "paused: {}", one.0);
    assert_eq!(one.0["keys"], "ORD1736900000001");
    assert_eq!(one.0["groups"].as_array().unwrap().len(), 2, "the topic's two groups: {}", one.0);
    let (ok, table) = mqadmin(&["queryMsgById", "-i", &id], &url, ADMIN_TOKEN).await;
    assert!(ok && table.contains("NOT_CONSUME_YET") && table.contains("CONSUMED"), "{table}");
    let (ok, out) = mqadmin(&["queryMsgById", "-i", "no-such-id"], &url, ADMIN_TOKEN).await;
    assert!(!ok && out.contains("no message"), "{out}");
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_message_on_the_embedded_binder() {
    send_message_is_consumed_as_a_java_services(Variant::EmbeddedSqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_message_on_rocketmq() {
    send_message_is_consumed_as_a_java_services(Variant::RocketMqSqlite).await
}

/// A broker with automatic topic creation off (as most production brokers run): `mqadmin
/// -n ... updateTopic` creates a topic with the queues asked for, `topicList` and
/// `topicStatus` show it, the services start (creating the topics they still miss the same
/// way) and an order completes; `consumerConnection` shows the running group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_topic_on_a_broker_without_automatic_topic_creation() {
    use rocketmq_binder::{ClusterOptions, LocalCluster};
    let dir = tempfile::tempdir().unwrap();
    let options = ClusterOptions { auto_create_topics: false, ..ClusterOptions::default() };
    let cluster = LocalCluster::start_with(&dir.path().join("rocketmq"), options).await.unwrap();
    let ns = cluster.name_server();
    let direct = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["-n", ns.as_str()]);
        all.iter().map(|a| a.to_string()).collect::<Vec<String>>()
    };
    let run = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        mqadmin(&refs, "http://127.0.0.1:9", "unused-token-0000000000").await
    };
    let (ok, out) = run(direct(&[
        "updateTopic",
        "-t",
        "order-created",
        "-c",
        "DefaultCluster",
        "-r",
        "6",
        "-w",
        "6",
    ]))
    .await;
    assert!(ok && out.contains("create topic to") && out.contains("success"), "{out}");
    let (ok, out) = run(direct(&["updateTopic", "-t", "x", "-c", "NoSuchCluster"])).await;
    assert!(!ok && out.contains("NoSuchCluster"), "{out}");
    let (ok, out) = run(direct(&["topicList", "--json"])).await;
    assert!(ok && out.contains("\"order-created\""), "{out}");
    let (ok, out) = run(direct(&["topicStatus", "-t", "order-created", "--json"])).await;
    assert!(ok, "{out}");
    let queues: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(queues.len(), 6, "{out}");

    let t = spawn_on(dir, cluster).await;
    let o = t.create_order(95, &[(1002, 1)]).await;
    assert_eq!(t.settled(&o.order_no).await.status, OrderStatus::Paid);
    let c = mqadmin_json(&["consumerConnection", "-g", GROUP], &t.app.payment_url).await;
    assert!(!c["connections"].as_array().unwrap().is_empty(), "{c}");
    assert!(
        c["subscriptions"].as_array().unwrap().iter().any(|s| s["topic"] == "order-created"),
        "{c}"
    );
    let (ok, table) = run(direct(&["consumerConnection", "-g", GROUP])).await;
    assert!(
        ok && table.contains("Below is subscription:") && table.contains("order-created"),
        "{table}"
    );
    let (ok, out) = run(direct(&["consumerProgress", "-g", GROUP, "--json"])).await;
    assert!(ok && out.contains("order-created"), "{out}");
    t.shutdown().await;
}

/// `consumerConnection` on the embedded binder: this process, and the group's subscriptions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_connection_on_the_embedded_binder() {
    let t = spawn(Variant::EmbeddedSqlite).await;
    let c = mqadmin_json(&["consumerConnection", "-g", GROUP], &t.app.payment_url).await;
    assert_eq!(c["connections"].as_array().unwrap().len(), 1, "{c}");
    assert_eq!(c["messageModel"], "CLUSTERING");
    let topics: Vec<&str> = c["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["topic"].as_str().unwrap())
        .collect();
    assert!(topics.contains(&"order-created"), "{c}");
    let (ok, out) =
        mqadmin(&["consumerConnection", "-g", "nobody"], &t.app.payment_url, ADMIN_TOKEN).await;
    assert!(!ok && out.contains("\"nobody\""), "{out}");
    let (ok, out) = mqadmin(&["updateTopic", "-t", "x"], &t.app.payment_url, ADMIN_TOKEN).await;
    assert!(!ok && out.contains("-n"), "{out}");
    t.shutdown().await;
}

/// `orderflow mqadmin ARGS... --data-dir DIR`: its exit status and what it printed.
async fn mqadmin_stored(args: &[&str], dir: &std::path::Path) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .arg("mqadmin")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .await
        .unwrap();
    let text = if out.status.success() { out.stdout } else { out.stderr };
    (out.status.success(), String::from_utf8_lossy(&text).into_owned())
}

async fn stored_json(args: &[&str], dir: &std::path::Path) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (ok, out) = mqadmin_stored(&all, dir).await;
    assert!(ok, "mqadmin {args:?} --data-dir: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("mqadmin {args:?}: {e}: {out}"))
}

/// With `up` stopped, `--data-dir` reads and changes its `broker.db` directly: a paused
/// group's waiting message shows in consumerProgress and queryMsgByKey, and a rewind written
/// there is delivered when the services start again, absorbed by the inbox. While `up` runs
/// the directory is refused, naming what to do instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqadmin_reads_and_changes_a_stopped_ups_data_directory() {
    let t = spawn(Variant::EmbeddedSqlite).await;
    let url = t.app.payment_url.clone();
    let since = events::now_millis() - 1;
    let paid = t.create_order(80, &[(1002, 1)]).await;
    assert_eq!(t.settled(&paid.order_no).await.status, OrderStatus::Paid);
    t.quiesce().await;
    let (ok, out) = mqadmin_stored(&["topicList"], t.dir.path()).await;
    assert!(
        !ok && out.contains("running orderflow") && out.contains("without --data-dir"),
        "{out}"
    );

    t.binding(&url, "orderCreatedConsumer-in-0", "PAUSED").await;
    let waiting = t.create_order(81, &[(1002, 1)]).await.order_no.to_string();
    eventually("the payment group has one waiting", || async {
        (progress(&url).await["messages"] == 1).then_some(())
    })
    .await;
    let stopped = t.stop().await;
    let dir = stopped.dir.path();

    let topics = stored_json(&["topicList"], dir).await;
    assert!(topics.as_array().unwrap().iter().any(|x| x == "order-created"), "{topics}");
    let all = stored_json(&["consumerProgress", "-g", GROUP], dir).await;
    let created = all.as_array().unwrap().iter().find(|p| p["topic"] == "order-created").cloned();
    assert_eq!(created.map(|p| p["messages"].clone()), Some(1.into()), "{all}");
    let found = stored_json(&["queryMsgByKey", "-t", "order-created", "-k", &waiting], dir).await;
    let groups = &found[0]["groups"];
    let payment = groups.as_array().unwrap().iter().find(|g| g["group"] == GROUP).unwrap();
    assert_eq!(payment["consumed"], false, "{found}");
    assert_eq!(payment["attempts"], 0, "paused before its first delivery: {found}");
    let stock = groups.as_array().unwrap().iter().find(|g| g["group"] != GROUP).unwrap();
    assert_eq!(stock["consumed"], true, "{found}");
    assert!(stock.get("attempts").is_none(), "no count once consumed: {found}");

    let at = since.to_string();
    let reset = ["resetOffsetByTime", "-g", GROUP, "-t", "order-created", "-s", &at];
    let (ok, out) = mqadmin_stored(&reset, dir).await;
    assert!(ok, "{out}");
    let all = stored_json(&["consumerProgress", "-g", GROUP], dir).await;
    let created = all.as_array().unwrap().iter().find(|p| p["topic"] == "order-created").cloned();
    assert_eq!(created.map(|p| p["messages"].clone()), Some(2.into()), "rewound: {all}");
    let (ok, out) = mqadmin_stored(&["topicList"], &dir.join("nowhere")).await;
    assert!(!ok && out.contains("no broker.db"), "{out}");

    // Started again: the waiting order is paid, the rewound one absorbed, nothing twice.
    let t = stopped.start(payment::PaymentSettings::default()).await;
    assert_eq!(t.settled(&waiting).await.status, OrderStatus::Paid);
    until("the rewound message absorbed", || async {
        duplicates(&t, &t.app.payment_url, "order-created", GROUP).await >= 1.0
    })
    .await;
    t.quiesce().await;
    assert_eq!(t.payments(paid.order_no.as_str()).await.len(), 1);
    t.shutdown().await;
}
