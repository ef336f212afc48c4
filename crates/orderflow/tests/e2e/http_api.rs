//! The HTTP surface: bad input is refused with the field named and nothing written;
//! Idempotency-Key; listing; the ops endpoints.

use order::domain::OrderStatus;
use serde_json::{Value, json};
use storage::rows::Keys;
use testkit::*;

/// Nothing was written anywhere: no order, no outbox row, no message on the broker.
async fn assert_nothing_written(t: &TestApp) {
    let orders: Vec<Value> =
        t.http.get(t.order_url("/api/orders")).send().await.unwrap().json().await.unwrap();
    assert!(orders.is_empty(), "no order stored: {orders:?}");
    assert_eq!(stream::outbox::Outbox::backlog(&t.app.order.host.db).await.unwrap(), 0);
    assert_eq!(t.published("order-created"), 0.0);
}

async fn bad_orders_are_refused_naming_the_field_and_nothing_is_written(v: Variant) {
    let t = spawn(v).await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"userId": 1, "items": []}), "items"),
        (json!({"userId": 1}), "items"),
        (json!({"items": [{"productId": 1001, "quantity": 1}]}), "userId"),
        (json!({"userId": 0, "items": [{"productId": 1001, "quantity": 1}]}), "userId"),
        (json!({"userId": "seven", "items": [{"productId": 1001, "quantity": 1}]}), "userId"),
        (json!({"userId": 1, "items": [{"productId": 1001, "quantity": 0}]}), "items[0].quantity"),
        (json!({"userId": 1, "items": [{"productId": 1001, "quantity": -2}]}), "items[0].quantity"),
        (
            json!({"userId": 1, "items": [{"productId": 1001, "quantity": 1_000_000}]}),
            "items[0].quantity",
        ),
        (
            json!({"userId": 1, "items": [{"productId": 1001, "quantity": 1.5}]}),
            "items[0].quantity",
        ),
        (
            json!({"userId": 1, "items": [{"productId": 1001, "quantity": 1}, {"productId": 99999, "quantity": 1}]}),
            "items[1].productId",
        ),
        (json!({"userId": 1, "items": [{"productId": 1001}]}), "items[0].quantity"),
        (
            json!({"userId": 1, "items": [{"productId": 1001, "quantity": 1}], "remark": "x".repeat(501)}),
            "remark",
        ),
    ];
    for (body, field) in cases {
        let (status, err) = t.post_order(&body).await;
        assert_eq!(status, 400, "{body} -> {err}");
        assert_eq!(err["error"]["field"], field, "{body} -> {err}");
        assert!(err["error"]["message"].as_str().unwrap().starts_with(field), "{err}");
    }
    let r = t
        .http
        .post(t.order_url("/api/orders"))
        .header("content-type", "application/json")
        .body("{\"userId\": 1,")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["field"], "(body)");

    let huge = format!(
        r#"{{"userId":1,"items":[{{"productId":1001,"quantity":1}}],"remark":"{}"}}"#,
        "x".repeat(1_100_000)
    );
    let r = t
        .http
        .post(t.order_url("/api/orders"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "too_large");

    assert_nothing_written(&t).await;
    t.shutdown().await;
}

async fn an_idempotency_key_makes_a_retried_post_return_the_first_result(v: Variant) {
    let t = spawn(v).await;
    let body = json!({"userId": 5, "items": [{"productId": 1002, "quantity": 2}]});
    let post = |key: &'static str, body: Value| {
        let req =
            t.http.post(t.order_url("/api/orders")).header("Idempotency-Key", key).json(&body);
        async move {
            let r = req.send().await.unwrap();
            (
                r.status().as_u16(),
                r.headers().get("idempotent-replayed").is_some(),
                r.json::<Value>().await.unwrap(),
            )
        }
    };
    let (s1, replay1, first) = post("checkout-42", body.clone()).await;
    let (s2, replay2, second) = post("checkout-42", body.clone()).await;
    assert_eq!((s1, replay1), (201, false));
    assert_eq!((s2, replay2), (201, true));
    // The first answer is built from what was written, the replay is read back: the same
    // order (its status may have moved on meanwhile).
    for field in ["orderId", "orderNo", "userId", "totalAmount", "items", "remark", "createdAt"] {
        assert_eq!(first[field], second[field], "{field}");
    }
    assert_eq!(
        (first["status"].as_str(), first["events"].as_array().map(Vec::len)),
        (Some("PENDING"), Some(1))
    );
    assert_eq!(first["events"][0], second["events"][0]);
    let orders: Vec<Value> =
        t.http.get(t.order_url("/api/orders?userId=5")).send().await.unwrap().json().await.unwrap();
    assert_eq!(orders.len(), 1, "one order for one key");

    let (s3, _, err) =
        post("checkout-42", json!({"userId": 5, "items": [{"productId": 1002, "quantity": 3}]}))
            .await;
    assert_eq!(s3, 422, "{err}");
    let (s4, _, other) = post("checkout-43", body).await;
    assert_eq!(s4, 201);
    assert_ne!(other["orderNo"], first["orderNo"]);
    t.shutdown().await;
}

async fn orders_are_listed_by_user_and_status(v: Variant) {
    let t = spawn(v).await;
    let a = t.create_order(21, &[(1001, 1)]).await;
    let b = t.create_order(21, &[(1004, 50)]).await; // more than there is: cancelled
    let c = t.create_order(22, &[(1002, 1)]).await;
    for o in [&a, &b, &c] {
        t.settled(&o.order_no).await;
    }
    let get = |q: &'static str| {
        let req = t.http.get(t.order_url(&format!("/api/orders?{q}")));
        async move { req.send().await.unwrap().json::<Vec<order::store::OrderView>>().await.unwrap() }
    };
    let nos =
        |v: Vec<order::store::OrderView>| v.into_iter().map(|o| o.order_no).collect::<Vec<_>>();
    assert_eq!(
        nos(get("userId=21").await),
        [b.order_no.clone(), a.order_no.clone()],
        "newest first"
    );
    assert_eq!(nos(get("userId=21&status=PAID").await), std::slice::from_ref(&a.order_no));
    let cancelled = get("status=cancelled").await;
    assert_eq!(nos(cancelled.clone()), std::slice::from_ref(&b.order_no));
    assert_eq!(cancelled[0].status, OrderStatus::Cancelled);
    let r = t.http.get(t.order_url("/api/orders?status=LOST")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    // Paged: the next page starts below the last orderId shown.
    let first = get("limit=2").await;
    assert_eq!(nos(first.clone()), [c.order_no.clone(), b.order_no.clone()]);
    let next =
        t.http.get(t.order_url(&format!("/api/orders?limit=2&before={}", first[1].order_id)));
    let next: Vec<order::store::OrderView> = next.send().await.unwrap().json().await.unwrap();
    assert_eq!(nos(next), std::slice::from_ref(&a.order_no));
    let r = t.http.get(t.order_url("/api/orders?before=yesterday")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["field"], "before");
    let r = t.http.get(t.order_url("/api/orders/ORD-NOPE")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    t.shutdown().await;
}

async fn ops_endpoints_report_health_readiness_and_metrics(v: Variant) {
    let t = spawn(v).await;
    let o = t.create_order(30, &[(1001, 1)]).await;
    t.settled(&o.order_no).await;
    t.quiesce().await;
    for base in [&t.app.order_url, &t.app.stock_url, &t.app.payment_url] {
        let h: Value =
            t.http.get(format!("{base}/health")).send().await.unwrap().json().await.unwrap();
        assert_eq!(h["status"], "UP");
        let r = t.http.get(format!("{base}/ready")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let m = t.metrics(&t.app.order_url).await;
    for line in [
        r#"orderflow_orders{status="PAID"} 1"#,
        r#"orderflow_orders{status="PENDING"} 0"#,
        r#"orderflow_messages_published_total{topic="order-created"} 1"#,
        r#"orderflow_messages_consumed_total{topic="order-created",group="stock-consumer-group"} 1"#,
        r#"orderflow_messages_consumed_total{topic="order-created",group="payment-consumer-group"} 1"#,
        r#"orderflow_messages_consumed_total{topic="payment-success",group="order-consumer-group"} 1"#,
        r#"orderflow_outbox_backlog{service="order"} 0"#,
        "# TYPE orderflow_messages_consumed_total counter",
    ] {
        assert!(m.contains(line), "missing {line:?} in\n{m}");
    }
    let bindings: Vec<Value> = t
        .http
        .get(format!("{}/admin/bindings", t.app.stock_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = bindings.iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["orderCreatedConsumer-in-0", "paymentSuccessConsumer-in-0", "orderCancelledConsumer-in-0"]
    );
    let r = t
        .http
        .put(format!("{}/admin/bindings/nope", t.app.stock_url))
        .json(&json!({"state": "PAUSED"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    t.shutdown().await;
}

async fn stock_admin_validates_and_records_adjustments(v: Variant) {
    let t = spawn(v).await;
    let put = |id: &'static str, body: Value| {
        let req = t.http.put(format!("{}/api/admin/stock/{id}", t.app.stock_url)).json(&body);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(put("1001", json!({"available": -1})).await.1["error"]["field"], "available");
    assert_eq!(put("abc", json!({"available": 1})).await.1["error"]["field"], "productId");
    assert_eq!(put("1001", json!({"available": "many"})).await.1["error"]["field"], "available");
    let (status, v) = put("2001", json!({"available": 12})).await;
    assert_eq!(status, 200);
    assert_eq!(v, json!({"productId": 2001, "available": 12, "frozen": 0, "sold": 0}));
    assert_eq!(t.stock(2001).await.available, 12);
    let r = t.http.get(format!("{}/api/stock/9999", t.app.stock_url)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    t.shutdown().await;
}

async fn admin_calls_without_the_token_are_refused_and_change_nothing(v: Variant) {
    let t = spawn(v).await;
    let stock_before = t.stock(1001).await;
    let products_url = t.order_url("/api/products");
    let products_before: Value =
        t.http.get(&products_url).send().await.unwrap().json().await.unwrap();
    let mut wrong = reqwest::header::HeaderMap::new();
    wrong.insert(reqwest::header::AUTHORIZATION, "Bearer not-the-token-at-all".parse().unwrap());
    let clients = [
        reqwest::Client::new(),
        reqwest::Client::builder().default_headers(wrong).build().unwrap(),
    ];
    for client in &clients {
        let calls = [
            client
                .put(format!("{}/api/admin/stock/1001", t.app.stock_url))
                .json(&json!({"available": 0})),
            client
                .put(t.order_url("/api/admin/products/1001"))
                .json(&json!({"name": "free", "price": 0.01})),
            client
                .put(format!("{}/admin/bindings/orderCreatedConsumer-in-0", t.app.stock_url))
                .json(&json!({"state": "PAUSED"})),
            client.get(format!("{}/admin/bindings", t.app.stock_url)),
            client.get(format!("{}/admin/dlq", t.app.stock_url)),
            client.get(format!("{}/admin/dlq/1", t.app.stock_url)),
            client.post(format!("{}/admin/dlq/1/replay", t.app.stock_url)),
            client.delete(format!("{}/admin/dlq/1", t.app.stock_url)),
            client.delete(format!("{}/admin/dlq", t.app.payment_url)),
        ];
        for call in calls {
            let r = call.send().await.unwrap();
            assert_eq!(r.status(), 401);
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unauthorized");
        }
        // Public reads need no token.
        assert_eq!(
            client
                .get(format!("{}/api/stock/1001", t.app.stock_url))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        assert_eq!(
            client.get(format!("{}/health", t.app.order_url)).send().await.unwrap().status(),
            200
        );
    }
    assert_eq!(t.stock(1001).await, stock_before, "stock unchanged");
    let products_after: Value =
        t.http.get(&products_url).send().await.unwrap().json().await.unwrap();
    assert_eq!(products_after, products_before, "prices unchanged");
    let bindings: Vec<Value> = t
        .http
        .get(format!("{}/admin/bindings", t.app.stock_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(bindings.iter().all(|b| b["state"] == "RUNNING"), "nothing paused: {bindings:?}");
    let o = t.create_order(40, &[(1001, 1)]).await;
    assert_eq!(t.settled(&o.order_no).await.status, OrderStatus::Paid, "the system still flows");
    t.shutdown().await;
}

/// Concurrent creates share commits (group commit); a bad request among them fails alone
/// and a key used by several of them still makes one order.
async fn concurrent_creates_commit_together_and_a_bad_one_fails_alone(v: Variant) {
    let t = spawn(v).await;
    let user = 4242;
    let post = |items: Value, key: Option<&'static str>| {
        let mut req =
            t.http.post(t.order_url("/api/orders")).json(&json!({"userId": user, "items": items}));
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let mut calls = Vec::new();
    for i in 0..40 {
        calls.push(match i % 8 {
            0 => post(json!([{"productId": 9999, "quantity": 1}]), None),
            1 => post(json!([{"productId": 1001, "quantity": 1}]), Some("same-key-for-five")),
            _ => post(json!([{"productId": 1002, "quantity": 1}]), None),
        });
    }
    let answers = futures_join(calls).await;
    let (mut created, mut keyed, mut refused) = (0, std::collections::BTreeSet::new(), 0);
    for (i, (status, body)) in answers.iter().enumerate() {
        match i % 8 {
            0 => {
                assert_eq!(*status, 400, "{body}");
                assert_eq!(body["error"]["field"], "items[0].productId");
                refused += 1;
            }
            1 => {
                assert_eq!(*status, 201, "{body}");
                keyed.insert(body["orderNo"].as_str().unwrap().to_owned());
            }
            _ => {
                assert_eq!(*status, 201, "{body}");
                created += 1;
            }
        }
    }
    assert_eq!(
        (created, keyed.len(), refused),
        (30, 1, 5),
        "five posts with one key made one order"
    );
    let listed: Vec<Value> = t
        .http
        .get(t.order_url(&format!("/api/orders?userId={user}&limit=100")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), 31, "nothing written for the refused ones");
    // Ids are taken for a whole group before its inserts: each order still has its own, and
    // its number is `ORD` + its creation millis + its id.
    let ids: std::collections::BTreeSet<i64> =
        listed.iter().map(|o| o["orderId"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), 31, "every order has its own id");
    for o in &listed {
        assert_eq!(o["orderNo"], format!("ORD{}{}", o["createdAt"], o["orderId"]), "{o}");
    }
    let next = t.create_order(user, &[(1002, 1)]).await;
    assert!(next.order_id > *ids.last().unwrap(), "a later order gets a later id");
    t.shutdown().await;
}

/// Runs the futures at once (the creates must be in flight together to share a commit).
async fn futures_join<F: std::future::Future<Output = (u16, Value)> + Send + 'static>(
    calls: Vec<F>,
) -> Vec<(u16, Value)> {
    let handles: Vec<_> = calls.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// Runs `sql` on a service's database, committed on its own.
async fn exec(db: &storage::Db, sql: &str) {
    write(db, sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))).await;
}

/// A stored value that cannot be decoded is an error naming the table, column and row,
/// never a default: each such column of the order and stock databases is corrupted in turn.
async fn corrupt_stored_data_is_an_error_naming_the_table_and_key(v: Variant) {
    let t = spawn(v).await;
    let created = t.create_order(7, &[(1001, 1)]).await;
    let no = created.order_no.clone();
    t.settled(&no).await;
    let order_db = &t.app.order.host.db;
    // By orderNo, and in the user's list (which still finds an order whose orderNo is gone).
    let view = || async {
        let mut conn = order_db.reader().acquire().await.unwrap();
        order::store::view(&mut conn, &no).await.map_err(|e| e.to_string())?;
        order::store::list(order_db.reader(), Some(7), None, None, 10)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    assert_eq!(view().await, Ok(()));
    let id = created.order_id;
    let cases = [
        ("lines = '{not json'", format!("orders.lines of row id {id}")),
        ("transaction_no = NULL", format!("orders.transaction_no of row id {id}")),
        ("paid_amount = NULL", format!("orders.paid_amount of row id {id}")),
        ("status = 'SHIPPED'", format!("orders.status of row id {id}")),
        ("total = 'lots'", format!("orders.total of row id {id}")),
        ("order_no = NULL", format!("orders.order_no of row id {id}")),
        ("order_no = 'has space'", format!("orders.order_no of row id {id}")),
    ];
    for (set, expected) in cases {
        exec(order_db, &format!("CREATE TABLE keep AS SELECT * FROM orders WHERE id = {id}")).await;
        exec(order_db, &format!("UPDATE orders SET {set} WHERE id = {id}")).await;
        let err = view().await.expect_err(set);
        assert!(err.contains(&expected), "{set}: {err}");
        exec(order_db, &format!("DELETE FROM orders WHERE id = {id}")).await;
        exec(order_db, "INSERT INTO orders SELECT * FROM keep").await;
        exec(order_db, "DROP TABLE keep").await;
        assert_eq!(view().await, Ok(()), "restored after {set}");
    }

    // An Idempotency-Key kept with an orderNo that is not one: the retried POST fails.
    exec(
        order_db,
        "INSERT INTO idempotency_keys (idem_key, request_hash, order_no, created_at)
         VALUES ('checkout-bad', 'h', 'has space', 0)",
    )
    .await;
    let mut tx = storage::Tx::begin(order_db).await.unwrap();
    let err = order::store::idempotent(&mut tx, "checkout-bad").await.unwrap_err();
    drop(tx);
    assert!(err.to_string().contains("idempotency_keys.order_no of row checkout-bad"), "{err}");

    // The events a PENDING order announced, kept for the compensation job to send again.
    exec(order_db, &format!("UPDATE orders SET status = 'PENDING' WHERE id = {id}")).await;
    exec(
        order_db,
        &format!(
            "INSERT INTO order_messages (order_no, tags, topic, keys, properties, body, sent_at)
             VALUES ('{no}', 'ORDER_CREATED', 'order-created', '{no}', '{{\"eventId\":', '{{}}', 0)"
        ),
    )
    .await;
    let err = order::store::stale_messages(order_db.reader(), i64::MAX, 10, 10).await.unwrap_err();
    assert!(
        err.to_string().contains(&format!("order_messages.properties of row {no}/ORDER_CREATED")),
        "{err}"
    );

    let stock_db = &t.app.stock.host.db;
    exec(stock_db, &format!("UPDATE reservations SET lines = '[1,' WHERE order_no = '{no}'")).await;
    let err = stock::store::read_reservation(stock_db.reader(), &no).await.unwrap_err();
    assert!(err.to_string().contains(&format!("reservations.lines of row {no}")), "{err}");
    exec(stock_db, &format!("UPDATE reservations SET state = 'MELTED' WHERE order_no = '{no}'"))
        .await;
    let err = stock::store::read_reservation(stock_db.reader(), &no).await.unwrap_err();
    assert!(err.to_string().contains(&format!("reservations.state of row {no}")), "{err}");

    let payment_db = &t.app.payment.host.db;
    let named = [no.as_str()];
    let outcomes = || payment::store::outcomes(payment_db.reader(), Keys::Named(&named));
    assert_eq!(outcomes().await.unwrap().len(), 1, "the payment reads back");
    exec(payment_db, &format!("UPDATE payments SET status = 'MAYBE' WHERE order_no = '{no}'"))
        .await;
    let err = outcomes().await.unwrap_err();
    assert!(err.to_string().contains(&format!("payments.status of row {no}")), "{err}");
    exec(
        payment_db,
        &format!("UPDATE payments SET status = 'SUCCESS', amount = 'lots' WHERE order_no = '{no}'"),
    )
    .await;
    let err = outcomes().await.unwrap_err();
    assert!(err.to_string().contains(&format!("payments.amount of row {no}")), "{err}");
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_stored_data_is_an_error_on_sqlite() {
    corrupt_stored_data_is_an_error_naming_the_table_and_key(Variant::EmbeddedSqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_stored_data_is_an_error_on_postgres() {
    corrupt_stored_data_is_an_error_naming_the_table_and_key(Variant::EmbeddedPostgres).await
}

variants!(
    concurrent_creates_commit_together_and_a_bad_one_fails_alone,
    bad_orders_are_refused_naming_the_field_and_nothing_is_written,
    an_idempotency_key_makes_a_retried_post_return_the_first_result,
    orders_are_listed_by_user_and_status,
    ops_endpoints_report_health_readiness_and_metrics,
    stock_admin_validates_and_records_adjustments,
    admin_calls_without_the_token_are_refused_and_change_nothing,
);
