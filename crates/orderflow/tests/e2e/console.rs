//! The web console in a real browser: Debian's Chromium driven by Playwright
//! (`crates/console/browser/console.test.mjs`), against `up`'s services with one order whose
//! `order-created` the stock group dead-lettered. The script checks the pages; this test
//! checks, from the services' side, what the script's actions did and did not change. The
//! same script runs against `up` and against the three-process RocketMQ topology with
//! `orderflow console` as its own process.
//!
//! Needs `chromium` (Debian) and `npm ci --prefix crates/console/browser` (playwright-core);
//! `.ci/run` installs both.

use std::path::{Path, PathBuf};

use tokio::io::AsyncBufReadExt;

use binding::Binder;
use order::domain::OrderStatus;
use orderflow::app::ConsoleSettings;
use payment::PaymentSettings;
use testkit::*;

const READ_ONLY_TOKEN: &str = "read-only-token-0123456789";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../console/browser")
}

fn chromium() -> String {
    std::env::var("ORDERFLOW_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// Where a run's screenshots go: `target/console-screenshots/<topology>/`.
fn screenshots(topology: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots").join(topology)
}

/// Runs the browser script against a console; panics with what it printed if a check fails.
/// Returns the order whose payment-success the script skipped for the order group, then
/// delivered again by resetting the group's offset.
async fn run_browser_test(
    console_url: &str,
    order_url: &str,
    dead_order: &str,
    shots: &Path,
) -> String {
    let browser = browser_dir();
    assert!(
        browser.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: npm ci --prefix crates/console/browser"
    );
    assert!(
        Path::new(&chromium()).exists(),
        "no Chromium at {} (Debian: apt-get install chromium)",
        chromium()
    );
    let out = tokio::process::Command::new("node")
        .arg(browser.join("console.test.mjs"))
        .env("CONSOLE_URL", console_url)
        .env("ORDER_URL", order_url)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("READ_ONLY_TOKEN", READ_ONLY_TOKEN)
        .env("DEAD_ORDER", dead_order)
        .env("SCREENSHOTS", shots)
        .env("CHROMIUM", chromium())
        .output()
        .await
        .expect("node (the browser test runs on Node.js)");
    let said =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the browser test failed:\n{said}");
    for page in
        ["overview", "orders", "topics", "dead-letters", "stock", "order-timeline", "topics-paused"]
    {
        let shot = shots.join(format!("{page}.png"));
        assert!(
            std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000),
            "screenshot {}",
            shot.display()
        );
    }
    said.lines()
        .find_map(|l| l.strip_prefix("reset order: "))
        .unwrap_or_else(|| panic!("the script names the reset order:\n{said}"))
        .to_owned()
}

#[tokio::test]
async fn the_console_in_a_browser_shows_orders_lag_and_dead_letters_and_acts_only_when_allowed() {
    let mut base = config(Path::new("set-by-spawn"), PaymentSettings::default());
    base.console = Some(ConsoleSettings {
        addr: "127.0.0.1:0".parse().unwrap(),
        read_only_token: Some(READ_ONLY_TOKEN.into()),
        trace_url: Some("http://127.0.0.1:16686/trace/{traceId}".into()),
    });
    let t = spawn_config(Variant::EmbeddedSqlite, base, |inner| {
        Faulty::dead_lettering_first(inner, "stock-consumer-group", "order-created", 1)
    })
    .await;
    let console_url = t.app.console_url.clone().expect("the console is served");
    let untouched = t.stock(1001).await;
    let before = t.stock(1003).await;
    let dead = t.create_order(21, &[(1003, 2)]).await;
    testkit::until("the dead letter is stored", || async {
        t.app.broker.as_ref().unwrap().dead_letters("stock-consumer-group", 10).await.unwrap().len()
            == 1
    })
    .await;

    let shots = screenshots("up");
    let reset =
        run_browser_test(&console_url, &t.app.order_url, dead.order_no.as_str(), &shots).await;

    // What the refused changes did not do, and what the replay did: once.
    assert_eq!(t.stock(1001).await, untouched, "refused changes changed nothing");
    let paid = t.settled(&dead.order_no).await;
    assert_eq!(paid.status, OrderStatus::Paid);
    let after = t.stock(1003).await;
    assert_eq!(after.available, before.available - 2, "frozen and deducted once");
    assert_eq!(after.sold, before.sold + 2);
    assert_eq!(after.frozen, 0);
    // Skipped, then delivered again by the reset: paid once; the redelivered rest absorbed.
    t.quiesce().await;
    assert_eq!(t.order(&reset).await.status, OrderStatus::Paid);
    assert_eq!(t.payments(&reset).await.len(), 1, "one payment");
    let history = t.order(&reset).await.events;
    let paid_events = history.iter().filter(|e| e.event == "PAYMENT_SUCCESS").count();
    assert_eq!(paid_events, 1, "applied once: {history:?}");
    t.shutdown().await;
}

/// The distributed topology: three `orderflow serve` processes on a RocketMQ name server and
/// broker, and `orderflow console` as a fourth against their URLs. (No dead letter is
/// injected across processes; the replay is tested above.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_as_its_own_process_against_three_services_on_rocketmq() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = rocketmq_binder::LocalCluster::start(&dir.path().join("rocketmq")).await.unwrap();
    let ns = cluster.name_server();
    let mut services = Vec::new();
    for name in ["order", "stock", "payment"] {
        let db = dir.path().join(format!("{name}.db")).display().to_string();
        services.push(crate::distributed::serve_with(name, &ns, &db, "127.0.0.1:0", &[]).await);
    }
    let (order, stock, payment) = (&services[0].url, &services[1].url, &services[2].url);
    let mut console = tokio::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(["console", "--order-url", order, "--stock-url", stock, "--payment-url", payment])
        .args(["--console-addr", "127.0.0.1:0"])
        .env("ORDERFLOW_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("ORDERFLOW_READ_ONLY_TOKEN", READ_ONLY_TOKEN)
        .env("ORDERFLOW_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("orderflow console starts");
    let mut lines = tokio::io::BufReader::new(console.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
        .await
        .expect("the console prints its address")
        .unwrap()
        .expect("a line");
    let console_url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {first:?}"))
        .trim_end_matches('/')
        .to_owned();

    let http = admin_client();
    let get = |url: String| {
        let req = http.get(url);
        async move { req.send().await.unwrap().json::<serde_json::Value>().await.unwrap() }
    };
    let untouched = get(format!("{stock}/api/stock/1001")).await;
    let reset = run_browser_test(&console_url, order, "", &screenshots("rocketmq")).await;
    // Skipped, then delivered again by the reset: paid once.
    let o = get(format!("{order}/api/orders/{reset}")).await;
    assert_eq!(o["status"], "PAID", "{o}");
    let paid_events = o["events"].as_array().unwrap().iter();
    assert_eq!(paid_events.filter(|e| e["event"] == "PAYMENT_SUCCESS").count(), 1, "{o}");
    let payments = get(format!("{payment}/api/payments?orderNo={reset}")).await;
    assert_eq!(payments.as_array().map(Vec::len), Some(1), "{payments}");
    assert_eq!(
        get(format!("{stock}/api/stock/1001")).await,
        untouched,
        "refused changes changed nothing"
    );
    console.kill().await.ok();
    for mut s in services {
        s.child.kill().await.ok();
    }
    cluster.stop().await;
}
