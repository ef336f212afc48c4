//! The seed's three flows and their races, end to end: the real app on the embedded binder,
//! driven over HTTP. Every order must end PAID (stock deducted, one successful payment) or
//! CANCELLED (reason recorded, nothing frozen, any capture refunded).

use std::{collections::BTreeMap, sync::Arc};

use binding::Message;
use order::domain::OrderStatus;
use payment::{
    PaymentSettings,
    domain::{Completion, PaymentStatus},
};
use rust_decimal::Decimal;
use testkit::*;

async fn flow_1_and_2_an_order_is_paid_and_its_stock_deducted(v: Variant) {
    let t = spawn(v).await;
    let before = (t.stock(1001).await, t.stock(1002).await);
    let o = t.create_order(7, &[(1001, 2), (1002, 1)]).await;
    assert_eq!(o.status, OrderStatus::Pending);
    assert_eq!(
        o.total_amount.amount(),
        "149.80".parse::<Decimal>().unwrap(),
        "2 x 69.95 + 9.90, priced by the server"
    );

    let o = t.settled(&o.order_no).await;
    assert_eq!(o.status, OrderStatus::Paid);
    assert!(o.stock_deducted);
    let tx = o.transaction_no.clone().expect("transaction no recorded");
    assert!(tx.starts_with("TXN"), "{tx}");
    let events: Vec<&str> = o.events.iter().map(|e| e.event.as_str()).collect();
    assert!(
        events.starts_with(&["ORDER_CREATED"])
            && events.contains(&"PAYMENT_SUCCESS")
            && events.contains(&"STOCK_DEDUCTED"),
        "{events:?}"
    );

    let (k, c) = (t.stock(1001).await, t.stock(1002).await);
    assert_eq!((k.available, k.frozen, k.sold), (before.0.available - 2, 0, 2));
    assert_eq!((c.available, c.frozen, c.sold), (before.1.available - 1, 0, 1));

    let payments = t.payments(&o.order_no).await;
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].status, PaymentStatus::Success);
    assert_eq!(payments[0].amount, Some(o.total_amount));
    assert_eq!(payments[0].transaction_no.as_deref(), Some(tx.as_str()));
    assert_eq!(Some(payments[0].payment_id), o.payment_id);

    // What went over the wire has the Java producers' shape and metadata (the RocketMQ
    // binder's own test checks the same through a real broker).
    t.quiesce().await;
    assert_eq!(t.published("order-created"), 1.0);
    let Some(broker) = &t.app.broker else { return t.shutdown().await };
    let created = broker.topic_messages("order-created").await.unwrap();
    assert_eq!(created.len(), 1);
    let m = &created[0];
    assert_eq!((m.tags.as_str(), m.keys.as_str()), ("ORDER_CREATED", o.order_no.as_str()));
    assert_eq!(m.properties["eventType"], "ORDER_CREATED");
    assert_eq!(m.properties["contentType"], "application/json");
    let body: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
    assert_eq!(body["eventId"].as_str(), Some(m.properties["eventId"].as_str()));
    assert_eq!(body["productQuantityMap"], serde_json::json!({"1001": 2, "1002": 1}));
    let paid = broker.topic_messages("payment-success").await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&paid[0].body).unwrap();
    assert_eq!(body["amount"].to_string(), "149.80", "amount is a JSON number with its scale");
    t.shutdown().await;
}

async fn flow_3_insufficient_stock_cancels_with_the_product_named_and_nothing_frozen(v: Variant) {
    let t = spawn(v).await;
    let before = t.stock(1004).await; // 3 units of the limited figure
    let o = t.create_order(8, &[(1001, 1), (1004, 5)]).await;
    let o = t.settled(&o.order_no).await;
    assert_eq!(o.status, OrderStatus::Cancelled);
    let reason = o.cancel_reason.clone().unwrap();
    assert!(reason.contains("1004"), "reason names the product: {reason}");
    t.quiesce().await;
    assert_eq!(t.stock(1004).await, before, "nothing frozen or sold");
    let keyboards = t.stock(1001).await;
    assert_eq!((keyboards.frozen, keyboards.sold), (0, 0), "all lines or none");
    // Payment consumed order-created in parallel and captured: it must be refunded.
    let payments = t.payments(&o.order_no).await;
    assert_eq!(payments.len(), 1);
    assert!(
        matches!(payments[0].status, PaymentStatus::Refunded | PaymentStatus::Cancelled),
        "no money kept: {:?}",
        payments[0].status
    );
    if payments[0].status == PaymentStatus::Refunded {
        assert!(t.order(&o.order_no).await.refunded, "the order records the refund");
    }
    assert_eq!(t.reservation(&o.order_no).await.unwrap()["state"], "FAILED");
    t.shutdown().await;
}

async fn a_failed_payment_cancels_the_order_and_releases_the_reservation(v: Variant) {
    let settings = PaymentSettings {
        outcome: Completion::Fail { reason: "card declined".into() },
        ..Default::default()
    };
    let t = spawn_with(v, settings, |b| b).await;
    let before = t.stock(1003).await;
    let o = t.create_order(9, &[(1003, 2)]).await;
    let o = t.settled(&o.order_no).await;
    assert_eq!(o.status, OrderStatus::Cancelled);
    assert!(o.cancel_reason.as_deref().unwrap().contains("card declined"));
    t.quiesce().await;
    assert_eq!(t.stock(1003).await, before, "frozen units went back to available");
    let state = t.reservation(&o.order_no).await.unwrap()["state"].clone();
    assert!(state == "RELEASED" || state == "VOID", "{state}");
    assert_eq!(t.payments(&o.order_no).await[0].status, PaymentStatus::Failed);
    t.shutdown().await;
}

async fn fifty_concurrent_orders_for_the_last_ten_units_sell_exactly_ten(v: Variant) {
    let t = spawn(v).await;
    t.set_stock(1003, 10).await;
    let t = Arc::new(t);
    let mut tasks = Vec::new();
    for user in 0..50 {
        let t = t.clone();
        tasks.push(tokio::spawn(
            async move { t.create_order(100 + user, &[(1003, 1)]).await.order_no },
        ));
    }
    let mut orders = Vec::new();
    for task in tasks {
        orders.push(task.await.unwrap());
    }
    let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
    for no in &orders {
        *by_status.entry(t.settled(no).await.status.as_str()).or_default() += 1;
    }
    assert_eq!(by_status.get("PAID"), Some(&10), "{by_status:?}");
    assert_eq!(by_status.get("CANCELLED"), Some(&40), "{by_status:?}");
    t.quiesce().await;
    let s = t.stock(1003).await;
    assert_eq!((s.available, s.frozen, s.sold), (0, 0, 10), "no oversell, nothing left frozen");
    for no in &orders {
        let o = t.order(no).await;
        let p = t.payments(no).await;
        assert_eq!(p.len(), 1, "one payment per order");
        match o.status {
            OrderStatus::Paid => assert_eq!(p[0].status, PaymentStatus::Success),
            _ => assert!(
                matches!(p[0].status, PaymentStatus::Refunded | PaymentStatus::Cancelled),
                "{no}: {:?}",
                p[0].status
            ),
        }
    }
    let Ok(t) = Arc::try_unwrap(t) else { panic!("client tasks still hold the app") };
    t.shutdown().await;
}

async fn every_event_delivered_twice_has_one_effect(v: Variant) {
    // Every message is published twice (what a broker may do after a send timeout).
    let twice: binding::chaos::ChaosConfig = "duplicate=1".parse().unwrap();
    let t = spawn_with(v, PaymentSettings::default(), move |b| {
        Arc::new(binding::chaos::ChaosBinder::new(b, twice))
    })
    .await;
    t.set_stock(1004, 3).await;
    let mut orders = Vec::new();
    for user in 0..5 {
        // 5 orders for 3 units: both the paid and the cancelled paths see duplicates.
        orders.push(t.create_order(200 + user, &[(1004, 1)]).await.order_no);
    }
    for no in &orders {
        t.settled(no).await;
    }
    t.quiesce().await;
    let mut paid = 0;
    for no in &orders {
        let o = t.order(no).await;
        let p = t.payments(no).await;
        assert_eq!(p.len(), 1, "one payment per order despite duplicate order-created");
        if o.status == OrderStatus::Paid {
            paid += 1;
            assert_eq!(p[0].status, PaymentStatus::Success);
        } else {
            assert!(matches!(p[0].status, PaymentStatus::Refunded | PaymentStatus::Cancelled));
        }
        let history_lines = o.events.iter().filter(|e| e.event == "PAYMENT_SUCCESS").count();
        assert!(history_lines <= 1, "payment-success applied once: {:?}", o.events);
    }
    assert_eq!(paid, 3);
    let s = t.stock(1004).await;
    assert_eq!((s.available, s.frozen, s.sold), (0, 0, 3), "each deduction applied once");
    let dupes = t.app.metrics.total(binding::metrics::DUPLICATES);
    assert!(dupes >= 10.0, "the inbox dropped the duplicates ({dupes})");
    assert_eq!(t.published("order-created"), 10.0, "every event really went twice");
    t.shutdown().await;
}

async fn payment_success_before_the_reservation_exists_still_ends_paid(v: Variant) {
    let t = spawn(v).await;
    let before = t.stock(1001).await;
    t.binding(&t.app.stock_url, "orderCreatedConsumer-in-0", "PAUSED").await;
    let o = t.create_order(10, &[(1001, 3)]).await;
    // Stock sees payment-success first: it can only remember it.
    let r = eventually("stock saw the payment first", || async {
        t.reservation(&o.order_no).await.filter(|r| r["state"] == "AWAITING_FREEZE")
    })
    .await;
    assert_eq!(r["state"], "AWAITING_FREEZE");
    assert_eq!(
        t.order(&o.order_no).await.status,
        OrderStatus::Pending,
        "not PAID before stock is deducted"
    );
    t.binding(&t.app.stock_url, "orderCreatedConsumer-in-0", "RUNNING").await;

    let o = t.settled(&o.order_no).await;
    assert_eq!(o.status, OrderStatus::Paid);
    t.quiesce().await;
    let s = t.stock(1001).await;
    assert_eq!((s.available, s.frozen, s.sold), (before.available - 3, 0, 3));
    assert_eq!(t.reservation(&o.order_no).await.unwrap()["state"], "DEDUCTED");
    t.shutdown().await;
}

async fn payment_captured_for_an_order_whose_freeze_fails_is_refunded_and_cancelled(v: Variant) {
    let t = spawn(v).await;
    t.binding(&t.app.stock_url, "orderCreatedConsumer-in-0", "PAUSED").await;
    let before = t.stock(1004).await;
    let o = t.create_order(11, &[(1004, before.available + 1)]).await;
    eventually("payment captured and known to the order", || async {
        let o = t.order(&o.order_no).await;
        o.payment_id.is_some().then_some(())
    })
    .await;
    assert_eq!(t.payments(&o.order_no).await[0].status, PaymentStatus::Success);
    t.binding(&t.app.stock_url, "orderCreatedConsumer-in-0", "RUNNING").await;

    let o = t.settled(&o.order_no).await;
    assert_eq!(o.status, OrderStatus::Cancelled);
    assert!(o.refunded);
    assert!(o.cancel_reason.as_deref().unwrap().contains("1004"));
    t.quiesce().await;
    assert_eq!(t.payments(&o.order_no).await[0].status, PaymentStatus::Refunded);
    assert_eq!(t.stock(1004).await, before, "stock untouched");
    assert_eq!(t.published("payment-refunded"), 1.0);
    t.shutdown().await;
}

async fn a_malformed_event_is_dead_lettered_at_once_and_the_queue_keeps_flowing(v: Variant) {
    let t = spawn(v).await;
    let poison = Message {
        topic: "order-created".into(),
        tags: "ORDER_CREATED".into(),
        keys: "ORD-BROKEN".into(),
        properties: [("eventId".to_owned(), "poison-1".to_owned())].into(),
        body: br#"{"orderId":"not a number","orderNo":"ORD-BROKEN"}"#.to_vec(),
    };
    t.app.binder.publish(&[poison]).await.unwrap();
    let o = t.create_order(12, &[(1002, 1)]).await;
    assert_eq!(
        t.settled(&o.order_no).await.status,
        OrderStatus::Paid,
        "the order behind the poison completes"
    );
    t.quiesce().await;
    // The gauge is current on a scrape, before anyone lists the dead letters.
    let metrics = t.metrics(&t.app.stock_url).await;
    let group = [("group", "stock-consumer-group")];
    assert_eq!(sample(&metrics, "orderflow_dead_letters", &group), Some(1.0), "{metrics}");
    for group in ["stock-consumer-group", "payment-consumer-group"] {
        let dlq = t.app.binder.dead_letters(group, 10).await.unwrap();
        assert_eq!(dlq.len(), 1, "{group}");
        assert_eq!(dlq[0].attempts, 1, "{group}: no retries for a malformed event");
        assert_eq!(dlq[0].origin_topic, "order-created");
        assert!(
            dlq[0].error.contains("orderId"),
            "{group}: error names the field: {}",
            dlq[0].error
        );
    }
    let metrics = t.metrics(&t.app.stock_url).await;
    assert!(metrics.contains(r#"orderflow_messages_dead_lettered_total{topic="order-created",group="stock-consumer-group"} 1"#), "{metrics}");
    t.shutdown().await;
}

async fn an_event_for_an_unknown_order_is_dead_lettered(v: Variant) {
    let t = spawn(v).await;
    let fixture = std::fs::read(fixtures().join("events/payment-success.json")).unwrap();
    let event: events::PaymentSuccessEvent = serde_json::from_slice(&fixture).unwrap();
    // The Java payment service's exact message, for an order this deployment never saw.
    t.app.binder.publish(&[events::Event::to_message(&event)]).await.unwrap();
    t.quiesce().await;
    let dlq = t.app.binder.dead_letters("order-consumer-group", 10).await.unwrap();
    assert_eq!(dlq.len(), 1);
    assert!(dlq[0].error.contains("unknown order ORD1736900000001"), "{}", dlq[0].error);
    // Stock accepted it (it remembers a payment for an order it may yet see).
    assert!(t.app.binder.dead_letters("stock-consumer-group", 10).await.unwrap().is_empty());
    t.shutdown().await;
}

async fn the_java_services_order_created_message_is_consumed(v: Variant) {
    let t = spawn(v).await;
    let fixture = std::fs::read(fixtures().join("events/order-created.json")).unwrap();
    let event: events::OrderCreatedEvent = serde_json::from_slice(&fixture).unwrap();
    t.app.binder.publish(&[events::Event::to_message(&event)]).await.unwrap();
    // Stock may see payment-success first (another topic) and hold a reservation without
    // items until order-created arrives: wait for the freeze itself.
    let r = eventually("stock froze the Java order", || async {
        t.reservation("ORD1736900000001")
            .await
            .filter(|r| r["items"].as_object().is_some_and(|items| !items.is_empty()))
    })
    .await;
    assert_eq!(r["items"], serde_json::json!({"1001": 2, "1002": 1}));
    let p = eventually("payment took the Java order", || async {
        t.payments("ORD1736900000001").await.into_iter().next()
    })
    .await;
    assert_eq!(p.amount, Some("199.90".parse().unwrap()));
    assert_eq!(p.user_id, 7);
    t.shutdown().await;
}

/// One order announced three times under different eventIds, the three handled together (the
/// consumers were paused while they arrived): one payment, captured once, and one
/// reservation, frozen and deducted once.
async fn one_order_announced_three_times_in_one_batch_is_paid_and_frozen_once(v: Variant) {
    let t = spawn(v).await;
    let before = t.stock(1001).await;
    t.binding(&t.app.stock_url, "orderCreatedConsumer-in-0", "PAUSED").await;
    t.binding(&t.app.payment_url, "orderCreatedConsumer-in-0", "PAUSED").await;
    let fixture = std::fs::read(fixtures().join("events/order-created.json")).unwrap();
    let mut event: events::OrderCreatedEvent = serde_json::from_slice(&fixture).unwrap();
    let mut copies = Vec::new();
    for n in 0..3 {
        event.event_id = format!("announced-{n}");
        copies.push(events::Event::to_message(&event));
    }
    t.app.binder.publish(&copies).await.unwrap();
    t.binding(&t.app.stock_url, "orderCreatedConsumer-in-0", "RUNNING").await;
    t.binding(&t.app.payment_url, "orderCreatedConsumer-in-0", "RUNNING").await;
    eventually("payment captured", || async {
        t.payments("ORD1736900000001")
            .await
            .into_iter()
            .find(|p| p.status == PaymentStatus::Success)
    })
    .await;
    t.quiesce().await;
    assert_eq!(t.payments("ORD1736900000001").await.len(), 1, "one payment");
    assert_eq!(t.published("payment-success"), 1.0, "captured once");
    let after = t.stock(1001).await;
    let moved = (
        after.available - before.available,
        after.frozen - before.frozen,
        after.sold - before.sold,
    );
    assert_eq!(moved, (-2, 0, 2), "the order's 2 units of 1001 frozen and deducted once");
    t.shutdown().await;
}

async fn events_wait_in_the_outbox_while_the_broker_refuses_them(v: Variant) {
    let t = spawn_with(v, PaymentSettings::default(), |inner| Faulty::refusing_publishes(inner, 4))
        .await;
    let o = t.create_order(13, &[(1002, 1)]).await;
    assert_eq!(o.status, OrderStatus::Pending, "the order is accepted while the broker is down");
    let o = t.settled(&o.order_no).await;
    assert_eq!(o.status, OrderStatus::Paid, "the relay retried until the broker took the events");
    t.quiesce().await;
    assert_eq!(t.published("order-created"), 1.0, "published once");
    let failures = [("topic", "order-created")];
    assert_eq!(
        t.app.metrics.get(binding::metrics::PUBLISH_FAILURES, &failures),
        4.0,
        "each refusal is counted"
    );
    t.shutdown().await;
}

variants!(
    flow_1_and_2_an_order_is_paid_and_its_stock_deducted,
    flow_3_insufficient_stock_cancels_with_the_product_named_and_nothing_frozen,
    a_failed_payment_cancels_the_order_and_releases_the_reservation,
    fifty_concurrent_orders_for_the_last_ten_units_sell_exactly_ten,
    every_event_delivered_twice_has_one_effect,
    payment_success_before_the_reservation_exists_still_ends_paid,
    payment_captured_for_an_order_whose_freeze_fails_is_refunded_and_cancelled,
    a_malformed_event_is_dead_lettered_at_once_and_the_queue_keeps_flowing,
    an_event_for_an_unknown_order_is_dead_lettered,
    the_java_services_order_created_message_is_consumed,
    one_order_announced_three_times_in_one_batch_is_paid_and_frozen_once,
    events_wait_in_the_outbox_while_the_broker_refuses_them,
);
