//! Retention end to end (`orderflow.retention`): the embedded broker's handled messages and
//! the inboxes' records past the window go; nothing a user can see changes, not even when
//! every event arrives again after its inbox record is gone; and under steady load the
//! broker's file stops growing.

use std::time::Duration;

use binding::{StreamConfig, metrics};
use events::EventType;
use order::domain::OrderStatus;
use payment::{PaymentSettings, domain::Completion};
use serde_json::{Value, json};
use testkit::*;

/// The seed's YAML with `retention` added under `orderflow:`.
fn with_retention(file: &str, retention: &str) -> StreamConfig {
    let path = fixtures().join("config").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    StreamConfig::from_yaml(&format!("{text}\norderflow:\n  retention:\n{retention}")).unwrap()
}

fn app_config(retention: &str) -> orderflow::AppConfig {
    let mut base = config(std::path::Path::new("set-by-spawn"), PaymentSettings::default());
    base.order_stream = with_retention("order-service.yml", retention);
    base.stock_stream = with_retention("stock-service.yml", retention);
    base.payment_stream = with_retention("payment-service.yml", retention);
    base
}

/// Everything a user can see of `orders` and of the catalogue's stock.
async fn visible(t: &TestApp, orders: &[String]) -> Value {
    let mut all = Vec::new();
    for o in orders {
        all.push(json!({
            "order": t.order(o).await,
            "payments": t.payments(o).await,
            "reservation": t.reservation(o).await,
        }));
    }
    let mut stock = Vec::new();
    for p in 1001..=1004 {
        stock.push(t.stock(p).await);
    }
    json!({ "orders": all, "stock": stock })
}

/// The checker's verdict as of now, judging every order (no grace).
async fn verdict(t: &TestApp) -> Vec<orderflow::check::Violation> {
    let dbs = [&t.app.order.host.db, &t.app.stock.host.db, &t.app.payment.host.db];
    let deadline = Duration::from_secs(3600);
    orderflow::check::check(dbs[0], dbs[1], dbs[2], deadline, Duration::ZERO, events::now_millis())
        .await
        .unwrap()
        .violations
}

async fn inbox_records(db: &storage::Db) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM inbox").fetch_one(db.reader()).await.unwrap()
}

/// Orders that between them cause every kind of event: paid, cancelled for want of stock
/// after the payment was captured (refunded), cancelled because the payment failed.
async fn every_kind_of_order(t: TestApp) -> (TestApp, Vec<String>) {
    let mut orders = Vec::new();
    for user in 1..=3 {
        let o = t.create_order(user, &[(1001, 1), (1002, 2)]).await;
        assert_eq!(t.settled(&o.order_no).await.status, OrderStatus::Paid);
        orders.push(o.order_no.to_string());
    }
    t.binding(&t.app.stock_url, "orderCreatedConsumer-in-0", "PAUSED").await;
    let o = t.create_order(4, &[(1004, 50)]).await;
    eventually("payment captured before the freeze fails", || async {
        t.order(&o.order_no).await.payment_id.is_some().then_some(())
    })
    .await;
    t.binding(&t.app.stock_url, "orderCreatedConsumer-in-0", "RUNNING").await;
    assert!(t.settled(&o.order_no).await.refunded);
    orders.push(o.order_no.to_string());
    t.quiesce().await;
    let declined = PaymentSettings {
        outcome: Completion::Fail { reason: "card declined".into() },
        ..Default::default()
    };
    let t = t.restart(declined).await;
    let o = t.create_order(5, &[(1003, 1)]).await;
    assert_eq!(t.settled(&o.order_no).await.status, OrderStatus::Cancelled);
    orders.push(o.order_no.to_string());
    t.quiesce().await;
    (t, orders)
}

async fn handled_messages_and_old_inbox_records_go_and_late_duplicates_change_nothing(v: Variant) {
    // Passes are driven below with an explicit clock; the background ones are an hour apart.
    let retention = "    messages: 1s\n    inbox: 2s\n    interval: 1h\n";
    let t = spawn_config(v, app_config(retention), |b| b).await;
    let (t, orders) = every_kind_of_order(t).await;
    let broker = t.app.broker.clone().expect("the embedded binder");
    let mut published = Vec::new();
    for kind in EventType::ALL {
        let messages = broker.topic_messages(kind.topic()).await.unwrap();
        assert!(!messages.is_empty(), "the orders caused {kind:?}");
        published.extend(messages);
    }
    let seen = visible(&t, &orders).await;
    let judged = verdict(&t).await;
    assert!(judged.is_empty(), "{judged:?}");

    // Ten seconds on, everything is past both periods.
    let later = events::now_millis() + 10_000;
    let hosts = [&t.app.order.host, &t.app.stock.host, &t.app.payment.host];
    let removed = broker.retention_pass(&hosts[0].retention, later).await.unwrap();
    assert_eq!(removed, published.len() as u64, "every handled message went");
    for kind in EventType::ALL {
        assert!(broker.topic_messages(kind.topic()).await.unwrap().is_empty());
    }
    for host in hosts {
        assert!(inbox_records(&host.db).await > 0, "{} remembers what it handled", host.name);
        stream::retention::inbox_pass(&host.db, &host.retention, later).await.unwrap();
        assert_eq!(inbox_records(&host.db).await, 0, "{}'s inbox is past its window", host.name);
    }
    assert_eq!(visible(&t, &orders).await, seen, "removal changed nothing a user sees");
    assert_eq!(verdict(&t).await, judged, "nor the checker's verdict");

    // Every event again, for every consumer, after its inbox record is gone: the business
    // keys (one reservation, deduction, payment, refund per order; the state machine) hold.
    t.app.binder.publish(&published).await.unwrap();
    t.quiesce().await;
    for host in hosts {
        assert!(inbox_records(&host.db).await > 0, "{} handled the late copies", host.name);
    }
    assert_eq!(t.app.metrics.total(metrics::DEAD_LETTERED), 0.0, "none was refused either");
    assert_eq!(visible(&t, &orders).await, seen, "a late duplicate has no second effect");
    assert_eq!(verdict(&t).await, judged);
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_on_embedded_sqlite() {
    handled_messages_and_old_inbox_records_go_and_late_duplicates_change_nothing(
        Variant::EmbeddedSqlite,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_on_embedded_postgres() {
    handled_messages_and_old_inbox_records_go_and_late_duplicates_change_nothing(
        Variant::EmbeddedPostgres,
    )
    .await
}

/// A startup with an inbox window the broker outlasts is refused, naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbox_window_shorter_than_the_broker_keeps_messages_is_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let mut base = app_config("    messages: 1h\n");
    base.data_dir = dir.path().to_owned();
    // The stock service remembers eventIds for less time than the broker keeps messages.
    base.stock_stream = with_retention("stock-service.yml", "    inbox: 30m\n");
    let err = orderflow::App::start(base).await.err().expect("refused");
    let shown = format!("{err:#}");
    assert!(shown.contains("orderflow.retention.inbox"), "{shown}");
    assert!(shown.contains("stock"), "names the service: {shown}");
    assert!(!dir.path().join("order.db").exists(), "nothing written before the refusal");
}

async fn stored_messages(broker: &embedded::EmbeddedBinder) -> usize {
    let mut n = 0;
    for kind in EventType::ALL {
        n += broker.topic_messages(kind.topic()).await.unwrap().len();
    }
    n
}

/// A soak-sized run (2,000 orders in rounds) with a one-second retention and the background
/// removal on: after each round everything is handled and removed, and `broker.db`, whose
/// freed pages the next round reuses, stops growing after the first rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_steady_load_with_short_retention_the_broker_file_stops_growing() {
    let retention = "    messages: 1s\n    inbox: 2s\n    interval: 200ms\n";
    let t = spawn_config(Variant::EmbeddedSqlite, app_config(retention), |b| b).await;
    let broker = t.app.broker.clone().expect("the embedded binder");
    let file = t.dir.path().join("broker.db");
    let load = orderflow::soak::SoakLoad {
        orders: 250,
        units: 250,
        concurrency: 8,
        settle_limit: Duration::from_secs(60),
    };
    let mut sizes = Vec::new();
    for round in 1..=8 {
        let report = orderflow::soak::run(&t.app, ADMIN_TOKEN, &load, &|_| {}).await.unwrap();
        assert!(report.clean() && report.paid == round * load.orders, "round {round}: {report}");
        until("every handled message removed", || async { stored_messages(&broker).await == 0 })
            .await;
        until("every inbox record past the window removed", || async {
            let mut n = 0;
            for host in [&t.app.order.host, &t.app.stock.host, &t.app.payment.host] {
                n += inbox_records(&host.db).await;
            }
            n == 0
        })
        .await;
        sizes.push(std::fs::metadata(&file).unwrap().len());
    }
    let removed = t
        .app
        .metrics
        .get(metrics::RETENTION_REMOVED, &[("database", "broker"), ("table", "messages")]);
    assert!(removed >= 2000.0 * 3.0, "at least three messages an order went: {removed}");
    eprintln!("broker.db after each round of 250 orders: {sizes:?} bytes");
    let (warm, last) = (sizes[2], sizes[7]);
    assert!(
        last as f64 <= warm as f64 * 1.1,
        "broker.db grew from {warm} to {last} bytes over five rounds: {sizes:?}"
    );
    t.shutdown().await;
}
