//! A bounded chaos run: every event duplicated, batches reordered, deliveries delayed,
//! handlers failed, and acknowledgements lost after the commit. Every order must still end
//! PAID or CANCELLED, with one payment each, no oversell, stock conserved, and the invariant
//! checker clean. And the checker itself finds what is broken.

use std::{sync::Arc, time::Duration};

use binding::chaos::{ChaosBinder, ChaosConfig};
use orderflow::soak;
use payment::PaymentSettings;
use testkit::*;

/// The soak run of `orderflow soak`, as a test: 2,000 orders for 1,300 units with every
/// event duplicated, 10% handler failures, reordering, delays, and 10% of acknowledgements
/// lost after the commit.
async fn chaos_run(v: Variant) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), PaymentSettings::default());
    for s in [&mut config.order_stream, &mut config.stock_stream, &mut config.payment_stream] {
        soak::tune_for_chaos(s);
    }
    let chaos: ChaosConfig =
        "duplicate=1,reorder=0.2,delay=0.05,delay-ms=20,fail=0.1,crash=0.1,seed=11"
            .parse()
            .unwrap();
    let t = spawn_config(v, config, move |b| Arc::new(ChaosBinder::new(b, chaos))).await;
    let load = soak::SoakLoad {
        orders: 2000,
        units: 1300,
        concurrency: 16,
        settle_limit: Duration::from_secs(600),
    };
    let report = soak::run(&t.app, ADMIN_TOKEN, &load, &|_| {}).await.unwrap();
    assert!(report.clean(), "{report}");
    assert_eq!(
        (report.paid, report.cancelled, report.sold),
        (1300, 700, 1300),
        "exactly the units on offer were sold: {report}"
    );
    assert_eq!(report.dead_letters, 0, "{report}");
    assert_eq!(report.checked, 2000, "the checker read every order, page after page: {report}");
    assert!(
        report.duplicates_absorbed >= 2000.0 * 3.0,
        "every event was delivered twice and absorbed: {report}"
    );
    assert!(
        report.retries > 500.0,
        "failures and lost acknowledgements were injected and retried: {report}"
    );
    let s = t.stock(soak::PRODUCT).await;
    assert_eq!((s.available, s.frozen, s.sold), (0, 0, 1300), "no oversell, nothing left frozen");
    t.shutdown().await;
}

/// The same faults with the Redis fast path on (`orderflow.idempotency.redis` in each
/// service's YAML, the machine's Redis): duplicates are acknowledged from Redis, and still
/// nothing is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_run_with_the_redis_fast_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), PaymentSettings::default());
    let redis =
        std::env::var("ORDERFLOW_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    for s in [&mut config.order_stream, &mut config.stock_stream, &mut config.payment_stream] {
        soak::tune_for_chaos(s);
        s.orderflow = yaml_serde::from_str(&format!("idempotency:\n  redis: {redis}\n")).unwrap();
    }
    let chaos: ChaosConfig = "duplicate=1,reorder=0.2,fail=0.1,crash=0.1,seed=5".parse().unwrap();
    let t = spawn_config(Variant::EmbeddedSqlite, config, move |b| {
        Arc::new(ChaosBinder::new(b, chaos))
    })
    .await;
    let load = soak::SoakLoad {
        orders: 300,
        units: 200,
        concurrency: 8,
        settle_limit: Duration::from_secs(300),
    };
    let report = soak::run(&t.app, ADMIN_TOKEN, &load, &|_| {}).await.unwrap();
    assert!(report.clean(), "{report}");
    assert_eq!((report.paid, report.sold), (200, 200), "{report}");
    let hits = t.app.metrics.total(binding::metrics::FAST_HITS);
    assert!(hits > 100.0, "duplicates were acknowledged from Redis: {hits}");
    assert_eq!(t.app.metrics.total(binding::metrics::REDIS_ERRORS), 0.0);
    t.shutdown().await;
}

/// `orderflow soak`, the documented command: a small run prints the report and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_soak_command_prints_a_clean_report() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(["soak", "--orders", "60", "--concurrency", "4"])
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}\n{}", String::from_utf8_lossy(&out.stderr));
    for line in [
        "orders              60",
        "  paid              40",
        "lost                0",
        "double effects      0",
        "invariant violations 0 (60 orders checked)",
        "time to quiesce",
    ] {
        assert!(report.contains(line), "{line:?} in\n{report}");
    }
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("created 60 orders"),
        "progress is shown"
    );
}

// On RocketMQ the broker's redelivery delays (10 s, 30 s, ...) make a chaos run too slow for
// CI; the embedded binder's retries are what the run exercises.
mod chaos_embedded_sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chaos_run() {
        super::chaos_run(testkit::Variant::EmbeddedSqlite).await
    }
}

mod chaos_embedded_postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chaos_run() {
        super::chaos_run(testkit::Variant::EmbeddedPostgres).await
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
    let check =
        |now: i64| orderflow::check::check(o, st, p, Duration::from_secs(600), Duration::ZERO, now);
    assert!(
        check(events::now_millis()).await.unwrap().violations.is_empty(),
        "a healthy system checks clean"
    );
    t.app.refresh_invariants(events::now_millis()).await.unwrap();
    let metrics = t.metrics(&t.app.order_url).await;
    assert!(
        metrics.contains(r#"orderflow_invariant_violations{kind="conservation"} 0"#),
        "{metrics}"
    );

    // Break one thing of each kind.
    write(st, sqlx::query("UPDATE products SET available = available + 5 WHERE id = 1002")).await;
    write(
        st,
        sqlx::query("UPDATE reservations SET state = 'FROZEN' WHERE order_no = $1")
            .bind(paid.as_str()),
    )
    .await;
    write(
        p,
        sqlx::query("UPDATE payments SET status = 'SUCCESS' WHERE order_no = $1")
            .bind(cancelled.as_str()),
    )
    .await;
    let later = stuck.created_at + 601_000;
    let report = check(later).await.unwrap();
    let found: Vec<(&str, &str)> =
        report.violations.iter().map(|v| (v.subject.as_str(), v.problem.as_str())).collect();
    let has = |subject: &str, needle: &str| {
        found.iter().any(|(s, p)| *s == subject && p.contains(needle))
    };
    assert!(has("product 1002", "movements add up to"), "{found:?}");
    assert!(has(&format!("order {paid}"), "not DEDUCTED"), "{found:?}");
    assert!(has(&format!("order {cancelled}"), "not refunded"), "{found:?}");
    assert!(has(&format!("order {}", stuck.order_no), "past the deadline"), "{found:?}");
    assert_eq!(report.violations.len(), 4, "{found:?}");

    // The same, as gauges on /metrics (refreshed every 30 s; here at once, at the same hour).
    let gauges = t.app.refresh_invariants(stuck.created_at + 700_000).await.unwrap();
    assert_eq!(gauges.violations.len(), 4);
    let metrics = t.metrics(&t.app.order_url).await;
    for kind in ["conservation", "paid", "cancelled", "deadline"] {
        assert!(
            metrics.contains(&format!("orderflow_invariant_violations{{kind=\"{kind}\"}} 1")),
            "{kind}: {metrics}"
        );
    }
    assert!(metrics.contains("orderflow_invariant_orders_checked 3"), "{metrics}");
    t.binding(&t.app.stock_url, "orderCreatedConsumer-in-0", "RUNNING").await;
    t.binding(&t.app.payment_url, "orderCreatedConsumer-in-0", "RUNNING").await;
    t.shutdown().await;
}

variants!(the_checker_reports_violations_by_order_and_product);

/// Invariant gauges of the app's three databases, apart from the app's own (a 600 s
/// deadline), for passes driven with explicit times.
fn own_gauges(t: &TestApp) -> orderflow::check::Gauges {
    let dbs = [&t.app.order.host.db, &t.app.stock.host.db, &t.app.payment.host.db];
    orderflow::check::Gauges::new(
        dbs.map(|db| db.clone()),
        binding::Metrics::new(),
        Duration::from_secs(600),
    )
}

/// The gauges' passes read only the orders that changed since the last one (plus those
/// violating then); a full pass, every `FULL_EVERY`th, finds what changed behind an order's
/// back. Times are explicit: each pass is "as of" a given instant.
async fn the_gauges_read_what_changed_and_a_full_pass_finds_the_rest(v: Variant) {
    let t = spawn(v).await;
    let a = t.create_order(1, &[(1001, 1)]).await.order_no;
    let b = t.create_order(2, &[(1002, 1)]).await.order_no;
    t.settled(&a).await;
    t.settled(&b).await;
    t.quiesce().await;
    let (o, st, p) = (&t.app.order.host.db, &t.app.stock.host.db, &t.app.payment.host.db);
    let gauges = own_gauges(&t);
    let t0 = events::now_millis() + 61_000; // both orders are past the minute's grace
    let seen = |r: &orderflow::check::Report| {
        (r.orders, r.violations.iter().map(|v| v.subject.clone()).collect::<Vec<_>>())
    };

    assert_eq!(seen(&gauges.refresh(t0).await.unwrap()), (2, vec![]), "the first pass is full");
    assert_eq!(
        seen(&gauges.refresh(t0 + 30_000).await.unwrap()),
        (0, vec![]),
        "nothing changed: nothing read"
    );

    // Broken behind the order's back: the order row is untouched.
    write(
        st,
        sqlx::query("UPDATE reservations SET state = 'FROZEN' WHERE order_no = $1")
            .bind(a.as_str()),
    )
    .await;
    assert_eq!(
        seen(&gauges.pass(t0 + 60_000, false).await.unwrap()),
        (0, vec![]),
        "an incremental pass does not see it"
    );
    assert_eq!(
        seen(&gauges.pass(t0 + 90_000, true).await.unwrap()),
        (2, vec![format!("order {a}")]),
        "a full pass does"
    );
    assert_eq!(
        seen(&gauges.pass(t0 + 120_000, false).await.unwrap()),
        (1, vec![format!("order {a}")]),
        "looked at again"
    );
    write(
        st,
        sqlx::query("UPDATE reservations SET state = 'DEDUCTED' WHERE order_no = $1")
            .bind(a.as_str()),
    )
    .await;
    assert_eq!(
        seen(&gauges.pass(t0 + 150_000, false).await.unwrap()),
        (1, vec![]),
        "and seen to resolve"
    );

    // An order updated since the last pass is judged by the next one (once past the grace).
    write(
        o,
        sqlx::query("UPDATE orders SET updated_at = $1 WHERE order_no = $2")
            .bind(t0 + 100_000)
            .bind(b.as_str()),
    )
    .await;
    write(
        p,
        sqlx::query("UPDATE payments SET status = 'REFUNDED' WHERE order_no = $1").bind(b.as_str()),
    )
    .await;
    assert_eq!(
        seen(&gauges.pass(t0 + 180_000, false).await.unwrap()),
        (1, vec![format!("order {b}")])
    );
    t.shutdown().await;
}

/// Conservation on the gauges reads from a checkpoint: the sums of the movements up to one
/// (past the grace) plus the movements after it. Counters are always read whole, so a
/// counter changed by hand shows at once; a movement rewritten below the checkpoint is left
/// to `orderflow check`, which sums them all.
async fn the_conservation_gauge_adds_new_movements_to_a_checkpoint(v: Variant) {
    let t = spawn(v).await;
    let a = t.create_order(1, &[(1002, 1)]).await.order_no;
    t.settled(&a).await;
    t.quiesce().await;
    let (o, st, p) = (&t.app.order.host.db, &t.app.stock.host.db, &t.app.payment.host.db);
    let gauges = own_gauges(&t);
    let conservation = |r: &orderflow::check::Report| {
        r.violations
            .iter()
            .filter(|v| v.kind == "conservation")
            .map(|v| v.subject.clone())
            .collect::<Vec<_>>()
    };
    let t0 = events::now_millis() + 61_000; // the movements so far are past the grace
    assert!(conservation(&gauges.pass(t0, false).await.unwrap()).is_empty());

    // New movements, after the checkpoint, are added to it.
    let b = t.create_order(2, &[(1002, 2)]).await.order_no;
    t.settled(&b).await;
    t.quiesce().await;
    let t1 = events::now_millis() + 61_000;
    assert!(conservation(&gauges.pass(t1, false).await.unwrap()).is_empty(), "tail + checkpoint");
    assert!(conservation(&gauges.pass(t1 + 30_000, false).await.unwrap()).is_empty(), "folded in");

    // A counter changed by hand: seen at once.
    write(st, sqlx::query("UPDATE products SET sold = sold + 1 WHERE id = 1002")).await;
    assert_eq!(conservation(&gauges.pass(t1 + 60_000, false).await.unwrap()), ["product 1002"]);
    write(st, sqlx::query("UPDATE products SET sold = sold - 1 WHERE id = 1002")).await;
    assert!(conservation(&gauges.pass(t1 + 90_000, false).await.unwrap()).is_empty());

    // A movement rewritten below the checkpoint: the gauges no longer read it; the full
    // check does.
    write(st, sqlx::query("UPDATE stock_movements SET d_sold = d_sold + 1 WHERE id = (SELECT MIN(id) FROM stock_movements WHERE product_id = 1002 AND d_sold > 0)")).await;
    assert!(conservation(&gauges.pass(t1 + 120_000, true).await.unwrap()).is_empty());
    let full = orderflow::check::check(o, st, p, Duration::from_secs(600), Duration::ZERO, t1)
        .await
        .unwrap();
    assert_eq!(conservation(&full), ["product 1002"]);
    t.shutdown().await;
}

mod gauges_embedded_sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_gauges_read_what_changed_and_a_full_pass_finds_the_rest() {
        super::the_gauges_read_what_changed_and_a_full_pass_finds_the_rest(
            testkit::Variant::EmbeddedSqlite,
        )
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_conservation_gauge_adds_new_movements_to_a_checkpoint() {
        super::the_conservation_gauge_adds_new_movements_to_a_checkpoint(
            testkit::Variant::EmbeddedSqlite,
        )
        .await
    }
}

mod gauges_embedded_postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_gauges_read_what_changed_and_a_full_pass_finds_the_rest() {
        super::the_gauges_read_what_changed_and_a_full_pass_finds_the_rest(
            testkit::Variant::EmbeddedPostgres,
        )
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_conservation_gauge_adds_new_movements_to_a_checkpoint() {
        super::the_conservation_gauge_adds_new_movements_to_a_checkpoint(
            testkit::Variant::EmbeddedPostgres,
        )
        .await
    }
}
