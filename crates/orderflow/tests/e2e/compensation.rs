//! The compensation job and reservation expiry, end to end. Each pass is run at an explicit
//! time (now plus the configured age), so nothing here waits for a clock.
//!
//! - An order whose `order-created` stock never got (dead-lettered) gets it again, with the
//!   same eventId, and completes; the services that had it do nothing twice.
//! - An order still PENDING past the deadline is cancelled: reason recorded, payment
//!   refunded, stock untouched once the late events arrive.
//! - Stock frozen for an order whose payment never completes is released, and the order is
//!   cancelled with the payment never charged.

use std::time::Duration;

use order::{
    compensation::{self, CompensationSettings},
    domain::OrderStatus,
};
use payment::{PaymentSettings, domain::PaymentStatus};
use stock::expiry::{self, ExpirySettings};
use testkit::*;

const SETTINGS: CompensationSettings = CompensationSettings {
    resend_after: Duration::from_secs(60),
    cancel_after: Duration::from_secs(600),
    interval: Duration::from_secs(5),
    max_resends: 10,
};

fn later(d: Duration) -> i64 {
    events::now_millis() + d.as_millis() as i64 + 1_000
}

async fn a_lost_order_created_is_sent_again_and_the_order_completes(v: Variant) {
    let t = spawn_with(v, PaymentSettings::default(), |inner| {
        Faulty::dead_lettering_first(inner, "stock-consumer-group", "order-created", 1)
    })
    .await;
    let before = t.stock(1002).await;
    let o = t.create_order(31, &[(1002, 3)]).await;
    eventually_within("stock's copy dead-lettered", Duration::from_secs(60), || async {
        let dead = t.app.binder.dead_letters("stock-consumer-group", 10).await.unwrap();
        (!dead.is_empty()).then_some(())
    })
    .await;
    let early = compensation::pass(&t.app.order, &SETTINGS, events::now_millis()).await.unwrap();
    assert_eq!(early, compensation::Pass::default(), "nothing is compensated before resend-after");

    let pass =
        compensation::pass(&t.app.order, &SETTINGS, later(SETTINGS.resend_after)).await.unwrap();
    assert_eq!(pass, compensation::Pass { resent: 1, cancelled: 0 });
    let o = t.settled(&o.order_no).await;
    assert_eq!(o.status, OrderStatus::Paid);
    t.quiesce().await;
    assert_eq!(t.stock(1002).await.available, before.available - 3, "deducted once");
    assert_eq!(t.payments(&o.order_no).await.len(), 1, "payment skipped the copy it had");
    assert_eq!(t.published("order-created"), 2.0, "the original and one re-send");
    assert!(
        o.events.iter().any(|e| e.event == "COMPENSATION"),
        "the re-send is in the order's history"
    );
    let metrics = t.metrics(&t.app.order_url).await;
    assert!(metrics.contains(r#"orderflow_compensation_total{action="resent"} 1"#), "{metrics}");

    // A PAID order is never touched again.
    let pass =
        compensation::pass(&t.app.order, &SETTINGS, later(SETTINGS.cancel_after)).await.unwrap();
    assert_eq!(pass, compensation::Pass::default());
    t.shutdown().await;
}

async fn an_order_pending_past_the_deadline_is_cancelled_and_refunded(v: Variant) {
    let t = spawn(v).await;
    t.binding(&t.app.stock_url, "orderCreatedConsumer-in-0", "PAUSED").await;
    let before = t.stock(1001).await;
    let o = t.create_order(32, &[(1001, 1)]).await;
    eventually("payment captured", || async { t.order(&o.order_no).await.payment_id.map(|_| ()) })
        .await;

    // Re-sent while it waits, but not more than max-resends times.
    let once = CompensationSettings { max_resends: 1, ..SETTINGS };
    assert_eq!(
        compensation::pass(&t.app.order, &once, later(SETTINGS.resend_after)).await.unwrap().resent,
        1
    );
    assert_eq!(
        compensation::pass(&t.app.order, &once, later(SETTINGS.resend_after)).await.unwrap().resent,
        0
    );

    let pass =
        compensation::pass(&t.app.order, &SETTINGS, later(SETTINGS.cancel_after)).await.unwrap();
    assert_eq!(pass.cancelled, 1);
    t.binding(&t.app.stock_url, "orderCreatedConsumer-in-0", "RUNNING").await;
    let o = t.settled(&o.order_no).await;
    assert_eq!(o.status, OrderStatus::Cancelled);
    assert_eq!(o.cancel_reason.as_deref(), Some("not completed within 600 s (compensation job)"));
    assert!(o.refunded);
    t.quiesce().await;
    assert_eq!(t.payments(&o.order_no).await[0].status, PaymentStatus::Refunded);
    assert_eq!(t.stock(1001).await, before, "whatever stock did, nothing stays frozen or sold");
    let metrics = t.metrics(&t.app.order_url).await;
    assert!(metrics.contains(r#"orderflow_compensation_total{action="cancelled"} 1"#), "{metrics}");
    t.shutdown().await;
}

async fn frozen_stock_of_an_order_never_paid_expires(v: Variant) {
    let slow = PaymentSettings { delay: Duration::from_secs(3600), ..PaymentSettings::default() };
    let t = spawn_with(v, slow, |b| b).await;
    let before = t.stock(1003).await;
    let o = t.create_order(33, &[(1003, 2)]).await;
    eventually("stock frozen", || async {
        (t.stock(1003).await.frozen == before.frozen + 2).then_some(())
    })
    .await;
    let settings =
        ExpirySettings { after: Duration::from_secs(1800), interval: Duration::from_secs(5) };
    assert_eq!(
        expiry::pass(&t.app.stock, &settings, events::now_millis()).await.unwrap(),
        0,
        "not yet"
    );

    assert_eq!(expiry::pass(&t.app.stock, &settings, later(settings.after)).await.unwrap(), 1);
    let o = t.settled(&o.order_no).await;
    assert_eq!(o.status, OrderStatus::Cancelled);
    assert_eq!(
        o.cancel_reason.as_deref(),
        Some("stock freeze failed: reservation expired: not paid within 1800 s")
    );
    t.quiesce().await;
    assert_eq!(t.stock(1003).await, before, "released");
    assert_eq!(t.payments(&o.order_no).await[0].status, PaymentStatus::Cancelled, "never charged");
    let metrics = t.metrics(&t.app.stock_url).await;
    assert!(metrics.contains("orderflow_reservations_expired_total 1"), "{metrics}");
    t.shutdown().await;
}

variants!(
    a_lost_order_created_is_sent_again_and_the_order_completes,
    an_order_pending_past_the_deadline_is_cancelled_and_refunded,
    frozen_stock_of_an_order_never_paid_expires,
);
