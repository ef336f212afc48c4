//! A bounded chaos run: every event may be duplicated, batches reordered, deliveries
//! delayed, handlers failed, and acknowledgements lost after the commit. Every order must
//! still end PAID or CANCELLED, with one payment each, no oversell, and stock conserved.

mod common;

use std::{sync::Arc, time::Duration};

use common::*;
use events::EventType;
use order::domain::OrderStatus;
use payment::{PaymentSettings, domain::PaymentStatus};
use stream::{
    StreamConfig,
    chaos::{ChaosBinder, ChaosConfig},
    config::Backoff,
    metrics,
};

/// Enough quick retries that injected failures never exhaust a message's attempts.
fn tune(stream: &mut StreamConfig) {
    let group = stream.main_group().unwrap_or("group").to_owned();
    for (function, kind) in [
        ("orderCancelledConsumer", EventType::OrderCancelled),
        ("stockDeductedConsumer", EventType::StockDeducted),
        ("paymentFailedConsumer", EventType::PaymentFailed),
        ("paymentRefundedConsumer", EventType::PaymentRefunded),
    ] {
        let b = stream.added_consumer(function, kind, &group);
        stream.consumers.insert(b.name.clone(), b);
    }
    for b in stream.consumers.values_mut() {
        b.max_attempts = 40;
        b.backoff = Backoff { initial: Duration::from_millis(5), multiplier: 2.0, max: Duration::from_millis(50) };
    }
}

async fn chaos_run(v: Variant) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), PaymentSettings::default());
    for s in [&mut config.order_stream, &mut config.stock_stream, &mut config.payment_stream] {
        tune(s);
    }
    let chaos: ChaosConfig = "duplicate=0.2,reorder=0.2,delay=0.05,delay-ms=20,fail=0.1,crash=0.1,seed=11".parse().unwrap();
    let t = spawn_config(v, config, move |b| Arc::new(ChaosBinder::new(b, chaos))).await;
    t.set_stock(1002, 200).await;
    let mut orders = Vec::new();
    for i in 0..300 {
        orders.push(t.create_order(1 + i % 40, &[(1002, 1)]).await.order_no);
    }
    let mut paid = 0;
    for no in &orders {
        paid += usize::from(t.settled(no).await.status == OrderStatus::Paid);
    }
    t.quiesce().await;
    assert_eq!(paid, 200, "exactly the units on offer were sold");
    let s = t.stock(1002).await;
    assert_eq!((s.available, s.frozen, s.sold), (0, 0, 200), "no oversell, nothing left frozen");
    for no in &orders {
        let o = t.order(no).await;
        let p = t.payments(no).await;
        assert_eq!(p.len(), 1, "{no}: one payment");
        match o.status {
            OrderStatus::Paid => assert_eq!(p[0].status, PaymentStatus::Success, "{no}"),
            _ => assert!(matches!(p[0].status, PaymentStatus::Refunded | PaymentStatus::Cancelled), "{no}: {:?}", p[0].status),
        }
    }
    for group in ["order-consumer-group", "stock-consumer-group", "payment-consumer-group"] {
        assert!(t.app.binder.dead_letters(group, 10).await.unwrap().is_empty(), "{group}: no dead letters");
    }
    let (o, st, p) = (&t.app.order.host.db, &t.app.stock.host.db, &t.app.payment.host.db);
    let report = orderflow::check::check(o, st, p, Duration::from_secs(600), events::now_millis()).await.unwrap();
    assert_eq!(report.orders, 300);
    assert!(report.violations.is_empty(), "invariant checker: {:?}", report.violations);
    let m = &t.app.metrics;
    assert!(m.total(metrics::DUPLICATES) > 50.0, "duplicates were injected and absorbed");
    assert!(m.total(metrics::RETRIED) > 50.0, "failures and lost acknowledgements were injected and retried");
    t.shutdown().await;
}

// On RocketMQ the broker's redelivery delays (10 s, 30 s, ...) make a chaos run too slow for
// CI; the embedded binder's retries are what the run exercises.
mod chaos_embedded_sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chaos_run() {
        super::chaos_run(super::common::Variant::EmbeddedSqlite).await
    }
}

mod chaos_embedded_postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chaos_run() {
        super::chaos_run(super::common::Variant::EmbeddedPostgres).await
    }
}

/// The checker finds what was broken, naming the order or product.
async fn the_checker_reports_violations_by_order_and_product(v: Variant) {
    let t = spawn(v).await;
    let paid = t.create_order(1, &[(1001, 1)]).await.order_no;
    let cancelled = t.create_order(2, &[(1004, 50)]).await.order_no;
    t.settled(&paid).await;
    t.settled(&cancelled).await;
    t.quiesce().await;
    t.binding(&t.app.stock_url, "orderCreatedConsumer-in-0", "PAUSED").await;
    t.binding(&t.app.payment_url, "orderCreatedConsumer-in-0", "PAUSED").await;
    let stuck = t.create_order(3, &[(1002, 1)]).await;
    let (o, st, p) = (&t.app.order.host.db, &t.app.stock.host.db, &t.app.payment.host.db);
    let check = |now: i64| orderflow::check::check(o, st, p, Duration::from_secs(600), now);
    assert!(check(events::now_millis()).await.unwrap().violations.is_empty(), "a healthy system checks clean");

    // Break one thing of each kind.
    sqlx::query("UPDATE products SET available = available + 5 WHERE id = 1002").execute(st.writer()).await.unwrap();
    sqlx::query("UPDATE reservations SET state = 'FROZEN' WHERE order_no = $1").bind(&paid).execute(st.writer()).await.unwrap();
    sqlx::query("UPDATE payments SET status = 'SUCCESS' WHERE order_no = $1").bind(&cancelled).execute(p.writer()).await.unwrap();
    let later = stuck.created_at + 601_000;
    let report = check(later).await.unwrap();
    let found: Vec<(&str, &str)> = report.violations.iter().map(|v| (v.subject.as_str(), v.problem.as_str())).collect();
    let has = |subject: &str, needle: &str| found.iter().any(|(s, p)| *s == subject && p.contains(needle));
    assert!(has("product 1002", "movements add up to"), "{found:?}");
    assert!(has(&format!("order {paid}"), "not DEDUCTED"), "{found:?}");
    assert!(has(&format!("order {cancelled}"), "not refunded"), "{found:?}");
    assert!(has(&format!("order {}", stuck.order_no), "past the deadline"), "{found:?}");
    assert_eq!(report.violations.len(), 4, "{found:?}");
    t.binding(&t.app.stock_url, "orderCreatedConsumer-in-0", "RUNNING").await;
    t.binding(&t.app.payment_url, "orderCreatedConsumer-in-0", "RUNNING").await;
    t.shutdown().await;
}

variants!(the_checker_reports_violations_by_order_and_product);
