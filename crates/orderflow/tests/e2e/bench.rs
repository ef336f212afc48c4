//! `orderflow bench` against a running system: the report adds up (every order counted and
//! timed, three messages per paid order, the baselines measured).

use std::time::Duration;

use orderflow::bench::{self, BenchConfig};
use testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bench_run_reports_what_it_measured() {
    let t = spawn(Variant::EmbeddedSqlite).await;
    let config = BenchConfig {
        order_url: t.app.order_url.clone(),
        service_urls: vec![t.app.order_url.clone()],
        stock_url: t.app.stock_url.clone(),
        admin_token: ADMIN_TOKEN.into(),
        rate: Some(200.0),
        concurrency: 4,
        count: Some(60),
        duration: None,
        product: 1002,
        scratch_dir: t.dir.path().to_owned(),
        baseline_messages: 100,
        raw_name_server: None,
        settle_limit: Duration::from_secs(60),
    };
    let r = bench::run(&config, &|_| {}).await.unwrap();
    assert_eq!((r.orders, r.paid, r.cancelled), (60, 60, 0), "{r}");
    assert_eq!(r.create_latency_ms.samples, 60);
    assert_eq!(r.create_to_paid_ms.samples, 60);
    assert!(r.create_to_paid_ms.p50 > 0.0 && r.create_to_paid_ms.p50 <= r.create_to_paid_ms.max);
    assert!(r.create_rate <= 200.0 * 1.2, "the offered rate is kept: {}", r.create_rate);
    assert!(
        (r.messages_per_order - 3.0).abs() < 1e-9,
        "order-created, payment-success, stock-deducted: {r}"
    );
    assert_eq!(
        r.messages_per_second.keys().collect::<Vec<_>>(),
        ["order-created", "payment-success", "stock-deducted"]
    );
    assert!(
        r.cpu_percent.is_some_and(|c| c > 0.0) && r.peak_rss_mb.is_some_and(|m| m > 1.0),
        "this test process measured: {r}"
    );
    assert!(
        r.raw_binder_rate.is_some_and(|x| x > 0.0) && r.disk_commit_rate.is_some_and(|x| x > 0.0)
    );
    assert!(r.ratio_to_raw.is_some());
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["createToPaidMs"]["samples"], 60);
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raw_round_trip_is_measured_on_rocketmq_too() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = rocketmq_binder::LocalCluster::start(&dir.path().join("rocketmq")).await.unwrap();
    let rate = bench::raw_binder_rate(dir.path(), Some(&cluster.name_server()), 50).await.unwrap();
    assert!(rate > 0.0 && rate.is_finite(), "{rate}");
    cluster.stop().await;
}
