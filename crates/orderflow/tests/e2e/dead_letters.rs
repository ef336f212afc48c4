//! Dead letters an operator can work with, on both binders: an order's `order-created`
//! dead-lettered in the stock group leaves the order PENDING; the operator lists it, shows
//! it, replays it (twice: the second replay has no effect), and the order completes with its
//! stock frozen and deducted once; purging hides it. Through the admin API and the
//! `orderflow dlq` client, with the admin token (and refused without).

use order::domain::OrderStatus;
use orderflow::dlq::{DlqAction, run};
use payment::PaymentSettings;
use serde_json::Value;
use testkit::*;

async fn a_dead_letter_replayed_twice_is_applied_once(v: Variant) {
    let t = spawn_with(v, PaymentSettings::default(), |inner| {
        Faulty::dead_lettering_first(inner, "stock-consumer-group", "order-created", 1)
    })
    .await;
    let before = t.stock(1003).await;
    let o = t.create_order(21, &[(1003, 2)]).await;

    // The stock group's copy of order-created is dead: nothing frozen, the order waits.
    let dlq = eventually_within(
        "the dead letter is listed",
        std::time::Duration::from_secs(60),
        || async {
            let list: Vec<Value> = t
                .http
                .get(format!("{}/admin/dlq", t.app.stock_url))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (!list.is_empty()).then_some(list)
        },
    )
    .await;
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    let d = &dlq[0];
    assert_eq!(d["group"], "stock-consumer-group");
    assert_eq!(d["originTopic"], "order-created");
    assert_eq!(d["keys"], o.order_no.as_str());
    assert_eq!(d["tags"], "ORDER_CREATED");
    assert_eq!(d["error"], "stock database was read-only (test)");
    assert_eq!(d["replays"], 0);
    let bad = t.http.get(format!("{}/admin/dlq?limit=lots", t.app.stock_url)).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<Value>().await.unwrap()["error"]["field"], "limit");
    assert!(
        d["properties"]["eventId"].as_str().is_some_and(|e| !e.is_empty()),
        "headers shown: {d}"
    );
    assert!(d["body"].as_str().unwrap().contains(o.order_no.as_str()), "payload shown: {d}");
    let id = d["messageId"].as_str().unwrap().to_owned();
    assert_eq!(t.order(&o.order_no).await.status, OrderStatus::Pending);
    assert_eq!(t.stock(1003).await, before, "nothing frozen while the event is dead");
    // The other services saw the event; only stock's copy died.
    let order_dlq: Vec<Value> = t
        .http
        .get(format!("{}/admin/dlq", t.app.order_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(order_dlq.is_empty(), "{order_dlq:?}");

    // Without the token: refused, and nothing replayed.
    let refused = run(
        &DlqAction::Replay(id.clone()),
        std::slice::from_ref(&t.app.stock_url),
        "wrong-token-wrong-token",
        false,
    )
    .await;
    assert!(refused.unwrap_err().to_string().contains("admin token"));

    // Replayed twice: the order completes, the stock moves once.
    let urls = [t.app.order_url.clone(), t.app.stock_url.clone(), t.app.payment_url.clone()];
    let shown = run(&DlqAction::Show(id.clone()), &urls, ADMIN_TOKEN, false).await.unwrap();
    assert!(
        shown.contains("read-only") && shown.contains(r#""replays": 0"#),
        "nothing replayed yet: {shown}"
    );
    let first = run(&DlqAction::Replay(id.clone()), &urls, ADMIN_TOKEN, false).await.unwrap();
    assert!(first.starts_with(&format!("replayed {id} (stock-consumer-group)")), "{first}");
    let r = t.http.post(format!("{}/admin/dlq/{id}/replay", t.app.stock_url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["replays"], 2);

    let o = t.settled(&o.order_no).await;
    assert_eq!(o.status, OrderStatus::Paid);
    t.quiesce().await;
    eventually_within("both replays consumed", std::time::Duration::from_secs(60), || async {
        let duplicates = t.app.metrics.get(
            binding::metrics::DUPLICATES,
            &[("topic", "order-created"), ("group", "stock-consumer-group")],
        );
        (duplicates >= 1.0).then_some(())
    })
    .await;
    let after = t.stock(1003).await;
    assert_eq!(after.available, before.available - 2, "deducted once");
    assert_eq!(after.frozen, before.frozen);
    assert_eq!(t.published("stock-deducted"), 1.0, "deducted once");
    assert_eq!(t.payments(&o.order_no).await.len(), 1);

    // Still listed (with its replays) until purged.
    let list = run(&DlqAction::List { limit: 100 }, &urls, ADMIN_TOKEN, false).await.unwrap();
    assert!(list.starts_with("1 dead letters") && list.contains(&id), "{list}");
    let purged = run(&DlqAction::Purge(id.clone()), &urls, ADMIN_TOKEN, false).await.unwrap();
    assert!(purged.starts_with(&format!("purged {id}")), "{purged}");
    let list = run(&DlqAction::List { limit: 100 }, &urls, ADMIN_TOKEN, false).await.unwrap();
    assert_eq!(list, "0 dead letters");
    // The same through the binary.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(["dlq", "list", "--url", &t.app.stock_url, "--url", &t.app.order_url])
        .env("ORDERFLOW_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0 dead letters");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(["dlq", "show", &id, "--url", &t.app.stock_url, "--json"])
        .env("ORDERFLOW_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .await
        .unwrap();
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (shown["replays"].as_i64(), shown["messageId"].as_str()),
        (Some(2), Some(id.as_str())),
        "a purged one can still be shown"
    );
    let missing = run(&DlqAction::Replay("no-such-id".into()), &urls, ADMIN_TOKEN, false).await;
    assert!(missing.unwrap_err().to_string().contains("no dead letter \"no-such-id\""));
    t.shutdown().await;
}

variants!(a_dead_letter_replayed_twice_is_applied_once);
