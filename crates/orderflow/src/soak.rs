//! The soak run (`orderflow soak`, and the chaos test in CI): drive a running [`App`] whose
//! binder injects faults with a number of orders over HTTP, wait until everything settles,
//! and report what a user would ask: how many orders ended and how, how many were lost
//! (never reached PAID or CANCELLED), how many were charged or deducted twice, what the
//! invariant checker says, and how long the system took to go quiet after the last order.
//!
//! The orders all buy product 1002, of which `units` are on offer: the first `units` paid
//! orders sell it out and the rest are cancelled (a captured payment refunded), so both
//! endings are exercised under the faults.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use binding::{StreamConfig, config::Backoff, metrics};
use events::EventType;

use crate::{App, check};

/// The product every soak order buys.
pub const PRODUCT: i64 = 1002;

#[derive(Debug, Clone)]
pub struct SoakLoad {
    pub orders: usize,
    /// Units of [`PRODUCT`] on offer.
    pub units: i64,
    /// Orders in flight over HTTP at once.
    pub concurrency: usize,
    /// Give up waiting for the system to settle after this long (what is left is "lost").
    pub settle_limit: Duration,
}

/// What a soak run found.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SoakReport {
    pub orders: usize,
    pub paid: usize,
    pub cancelled: usize,
    /// Orders still PENDING when the run gave up waiting.
    pub lost: usize,
    /// Orders with more than one payment, or more than one stock deduction.
    pub double_effects: usize,
    pub sold: i64,
    /// Orders the invariant checker read.
    pub checked: usize,
    pub violations: Vec<check::Violation>,
    pub dead_letters: usize,
    /// Duplicate deliveries the inboxes absorbed.
    pub duplicates_absorbed: f64,
    /// Deliveries retried (injected failures and lost acknowledgements).
    pub retries: f64,
    pub create_secs: f64,
    /// From the last order accepted to the system quiet.
    pub quiesce_secs: f64,
}

impl SoakReport {
    /// Nothing lost, nothing doubled, no oversell, the checker clean.
    pub fn clean(&self) -> bool {
        self.lost == 0 && self.double_effects == 0 && self.violations.is_empty()
    }
}

impl std::fmt::Display for SoakReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "orders              {}", self.orders)?;
        writeln!(f, "  paid              {}", self.paid)?;
        writeln!(f, "  cancelled         {}", self.cancelled)?;
        writeln!(f, "lost                {}", self.lost)?;
        writeln!(f, "double effects      {}", self.double_effects)?;
        writeln!(
            f,
            "invariant violations {} ({} orders checked)",
            self.violations.len(),
            self.checked
        )?;
        for v in &self.violations {
            writeln!(f, "  {}: {}", v.subject, v.problem)?;
        }
        writeln!(f, "units sold          {}", self.sold)?;
        writeln!(f, "dead letters        {}", self.dead_letters)?;
        writeln!(f, "duplicates absorbed {}", self.duplicates_absorbed)?;
        writeln!(f, "retries             {}", self.retries)?;
        writeln!(f, "time to create      {:.1} s", self.create_secs)?;
        write!(f, "time to quiesce     {:.1} s", self.quiesce_secs)
    }
}

/// Gives every consumer enough quick retries that injected failures never exhaust a
/// message's attempts (with the seed's 3 attempts, 10% failures dead-letter ~0.1% of
/// deliveries, which the compensation job would then repair minutes later).
pub fn tune_for_chaos(stream: &mut StreamConfig) {
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
        b.backoff = Backoff {
            initial: Duration::from_millis(5),
            multiplier: 2.0,
            max: Duration::from_millis(50),
        };
    }
}

/// Runs `load` against `app`; `progress` gets a line now and then.
pub async fn run(
    app: &App,
    admin_token: &str,
    load: &SoakLoad,
    progress: &(dyn Fn(String) + Sync),
) -> anyhow::Result<SoakReport> {
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{}/api/admin/stock/{PRODUCT}", app.stock_url))
        .bearer_auth(admin_token)
        .json(&serde_json::json!({ "available": load.units }))
        .send()
        .await
        .context("setting the soak stock")?;
    anyhow::ensure!(r.status().is_success(), "setting the soak stock: {}", r.status());

    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..load.concurrency.max(1) {
        let (http, url, next, n) =
            (http.clone(), format!("{}/api/orders", app.order_url), next.clone(), load.orders);
        workers.spawn(async move {
            while next.fetch_add(1, Ordering::SeqCst) < n {
                let user = 1 + (next.load(Ordering::Relaxed) % 50) as i64;
                let body = serde_json::json!({"userId": user, "items": [{"productId": PRODUCT, "quantity": 1}]});
                let r = http.post(&url).json(&body).send().await.context("creating an order")?;
                anyhow::ensure!(r.status() == reqwest::StatusCode::CREATED, "creating an order: {}", r.status());
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                Some(result) => result.context("order creator")??,
                None => break,
            },
            _ = ticker.tick() => progress(format!("created {}/{}", next.load(Ordering::Relaxed).min(load.orders), load.orders)),
        }
    }
    let create_secs = started.elapsed().as_secs_f64();
    progress(format!(
        "created {} orders in {create_secs:.1} s; waiting for them to settle",
        load.orders
    ));

    let settled_at = Instant::now();
    let order_db = &app.order.host.db;
    let mut said = Instant::now();
    loop {
        let pending =
            count(order_db, "SELECT COUNT(*) FROM orders WHERE status = 'PENDING'").await?;
        if pending == 0 && app.is_quiet().await? {
            break;
        }
        if settled_at.elapsed() > load.settle_limit {
            progress(format!(
                "gave up waiting after {:.0} s: {pending} orders still pending",
                load.settle_limit.as_secs_f64()
            ));
            break;
        }
        if said.elapsed() >= Duration::from_secs(1) {
            progress(format!("{pending} orders pending"));
            said = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let quiesce_secs = settled_at.elapsed().as_secs_f64();

    let (stock_db, payment_db) = (&app.stock.host.db, &app.payment.host.db);
    let report = check::check(
        order_db,
        stock_db,
        payment_db,
        load.settle_limit + Duration::from_secs(600),
        Duration::ZERO,
        events::now_millis(),
    )
    .await?;
    let double_payments = count(payment_db, "SELECT COUNT(*) FROM (SELECT order_no FROM payments GROUP BY order_no HAVING COUNT(*) > 1) d").await?;
    let double_deductions = count(
        stock_db,
        "SELECT COUNT(*) FROM (SELECT order_no FROM stock_movements WHERE kind = 'DEDUCT'
                               GROUP BY order_no, product_id HAVING COUNT(*) > 1) d",
    )
    .await?;
    let mut dead_letters = 0;
    for host in [&app.order.host, &app.stock.host, &app.payment.host] {
        dead_letters += host.dead_letters(usize::MAX).await.map(|d| d.len()).unwrap_or(0);
    }
    let m = &app.metrics;
    Ok(SoakReport {
        orders: load.orders,
        paid: count(order_db, "SELECT COUNT(*) FROM orders WHERE status = 'PAID'").await? as usize,
        cancelled: count(order_db, "SELECT COUNT(*) FROM orders WHERE status = 'CANCELLED'").await?
            as usize,
        lost: count(order_db, "SELECT COUNT(*) FROM orders WHERE status = 'PENDING'").await?
            as usize,
        double_effects: (double_payments + double_deductions) as usize,
        sold: sqlx::query_scalar::<_, i64>("SELECT sold FROM products WHERE id = $1")
            .bind(PRODUCT)
            .fetch_one(stock_db.reader())
            .await?,
        checked: report.orders,
        violations: report.violations,
        dead_letters,
        duplicates_absorbed: m.total(metrics::DUPLICATES),
        retries: m.total(metrics::RETRIED),
        create_secs,
        quiesce_secs,
    })
}

async fn count(db: &storage::Db, sql: &'static str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar::<_, i64>(sql).fetch_one(db.reader()).await?)
}
