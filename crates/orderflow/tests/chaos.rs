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
    let m = &t.app.metrics;
    assert!(m.total(metrics::DUPLICATES) > 50.0, "duplicates were injected and absorbed");
    assert!(m.total(metrics::RETRIED) > 50.0, "failures and lost acknowledgements were injected and retried");
    t.shutdown().await;
}

mod embedded_sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chaos_run() {
        super::chaos_run(super::common::Variant::EmbeddedSqlite).await
    }
}

mod embedded_postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chaos_run() {
        super::chaos_run(super::common::Variant::EmbeddedPostgres).await
    }
}
