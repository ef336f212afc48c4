//! The invariant checker (`orderflow check`): reads the three services' databases and
//! reports every violation of the guarantees, by order and by product.
//!
//! - Conservation: each product's `available`, `frozen` and `sold` equal the sums of its
//!   stock movements (explicit adjustments included).
//! - PAID: exactly one SUCCESS payment, equal to the order total; the reservation DEDUCTED.
//! - CANCELLED: no reservation still FROZEN or DEDUCTED; no payment still SUCCESS (captured
//!   and not refunded).
//! - No order PENDING longer than the deadline.
//!
//! Each violation has a kind (`conservation`, `paid`, `cancelled`, `deadline`); `orderflow up`
//! exports their counts as `orderflow_invariant_violations{kind}` on `/metrics`, refreshed
//! incrementally ([`Gauges`]).
//!
//! It only reads, a page of orders at a time (memory stays flat however large the tables
//! grow); it can run against live databases (a violation seen mid-flight, such as a
//! reservation a moment before its release, shows up again only if it persists).
//! Sums are cast to BIGINT: PostgreSQL's SUM of BIGINT is NUMERIC.

use std::{
    collections::{BTreeSet, HashMap},
    str::FromStr,
    sync::{Arc, Mutex},
    time::Duration,
};

use rust_decimal::Decimal;
use sqlx::{Row, any::AnyRow};
use stream::Db;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// Which guarantee: `conservation`, `paid`, `cancelled` or `deadline`.
    pub kind: &'static str,
    /// The order or product concerned (`order ORD...` / `product 1002`).
    pub subject: String,
    pub problem: String,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub orders: usize,
    pub products: usize,
    pub violations: Vec<Violation>,
}

fn violation(kind: &'static str, subject: String, problem: impl Into<String>) -> Violation {
    Violation { kind, subject, problem: problem.into() }
}

/// The kinds of violation, for gauges that should read 0 rather than be absent.
pub const KINDS: [&str; 4] = ["conservation", "paid", "cancelled", "deadline"];

/// Orders read (with their reservations and payments) per round.
const PAGE: i64 = 1000;

fn decimal(text: Option<String>) -> Option<Decimal> {
    text.and_then(|t| Decimal::from_str(&t).ok())
}

/// Checks the databases of the order, stock and payment services.
/// Orders changed within `grace` of `now_millis` are not judged on PAID/CANCELLED consistency
/// yet (on a live system their last events may still be in flight); 0 judges everything.
pub async fn check(
    order: &Db,
    stock: &Db,
    payment: &Db,
    deadline: Duration,
    grace: Duration,
    now_millis: i64,
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    conservation(stock, &mut report).await?;
    let judge = Judge::new(deadline, grace, now_millis);
    // Orders in pages by orderNo, each with the reservations and payments of the same range,
    // so memory stays bounded however many orders there are.
    let mut after = String::new();
    loop {
        let orders = sqlx::query(
            "SELECT order_no, status, total, created_at, updated_at FROM orders WHERE order_no > $1 ORDER BY order_no LIMIT $2",
        )
        .bind(&after)
        .bind(PAGE)
        .fetch_all(order.reader())
        .await?;
        let Some(last) = orders.last().map(|r| r.try_get::<String, _>("order_no")).transpose()? else { break };
        report.orders += orders.len();
        let reservations = reservations_of(
            sqlx::query("SELECT order_no, state FROM reservations WHERE order_no > $1 AND order_no <= $2")
                .bind(&after)
                .bind(&last)
                .fetch_all(stock.reader())
                .await?,
        )?;
        let payments = payments_of(
            sqlx::query("SELECT order_no, status, amount FROM payments WHERE order_no > $1 AND order_no <= $2")
                .bind(&after)
                .bind(&last)
                .fetch_all(payment.reader())
                .await?,
        )?;
        after = last;
        for r in &orders {
            judge.order(r, &reservations, &payments, &mut report.violations)?;
        }
    }
    Ok(report)
}

/// Conservation, per product: one aggregate over the movements.
async fn conservation(stock: &Db, report: &mut Report) -> anyhow::Result<()> {
    let rows = sqlx::query(
        // The movements are summed per product in index order, a row at a time: grouping
        // the join itself made SQLite sort every movement in memory, on each pass.
        "SELECT p.id, p.available, p.frozen, p.sold,
                CAST(COALESCE(m.ma, 0) AS BIGINT) AS ma,
                CAST(COALESCE(m.mf, 0) AS BIGINT) AS mf,
                CAST(COALESCE(m.ms, 0) AS BIGINT) AS ms
         FROM products p LEFT JOIN (
             SELECT product_id, SUM(d_available) AS ma, SUM(d_frozen) AS mf, SUM(d_sold) AS ms
             FROM stock_movements GROUP BY product_id) m ON m.product_id = p.id
         ORDER BY p.id",
    )
    .fetch_all(stock.reader())
    .await?;
    report.products = rows.len();
    for r in &rows {
        let id: i64 = r.try_get("id")?;
        let now: [i64; 3] = [r.try_get("available")?, r.try_get("frozen")?, r.try_get("sold")?];
        let history: [i64; 3] = [r.try_get("ma")?, r.try_get("mf")?, r.try_get("ms")?];
        if now != history {
            report.violations.push(violation(
                "conservation",
                format!("product {id}"),
                format!("available/frozen/sold are {now:?} but its movements add up to {history:?}"),
            ));
        }
    }
    Ok(())
}

/// orderNo → reservation state, from rows of (order_no, state).
fn reservations_of(rows: Vec<AnyRow>) -> Result<HashMap<String, String>, sqlx::Error> {
    rows.iter().map(|r| Ok((r.try_get("order_no")?, r.try_get("state")?))).collect()
}

/// orderNo → its payments' (status, amount), from rows of (order_no, status, amount).
type Payments = HashMap<String, Vec<(String, Option<Decimal>)>>;

fn payments_of(rows: Vec<AnyRow>) -> Result<Payments, sqlx::Error> {
    let mut payments: Payments = HashMap::new();
    for r in rows {
        payments.entry(r.try_get("order_no")?).or_default().push((r.try_get("status")?, decimal(r.try_get("amount")?)));
    }
    Ok(payments)
}

/// The per-order rules, as of one instant.
struct Judge {
    deadline_ms: i64,
    /// Orders updated after this are not judged on PAID/CANCELLED consistency yet.
    settled_before: i64,
    now_millis: i64,
}

impl Judge {
    fn new(deadline: Duration, grace: Duration, now_millis: i64) -> Judge {
        Judge {
            deadline_ms: i64::try_from(deadline.as_millis()).unwrap_or(i64::MAX),
            settled_before: now_millis.saturating_sub(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX)),
            now_millis,
        }
    }

    /// Judges one row of `orders` (order_no, status, total, created_at, updated_at).
    fn order(
        &self,
        r: &AnyRow,
        reservations: &HashMap<String, String>,
        payments: &Payments,
        out: &mut Vec<Violation>,
    ) -> Result<(), sqlx::Error> {
        let order_no: String = r.try_get::<Option<String>, _>("order_no")?.unwrap_or_default();
        let status: String = r.try_get("status")?;
        let total = decimal(r.try_get("total")?);
        let created_at: i64 = r.try_get("created_at")?;
        let updated_at: i64 = r.try_get("updated_at")?;
        let subject = format!("order {order_no}");
        let reservation = reservations.get(&order_no).map(String::as_str);
        let pays = payments.get(&order_no).map(Vec::as_slice).unwrap_or_default();
        let captured: Vec<&(String, Option<Decimal>)> = pays.iter().filter(|(s, _)| s == "SUCCESS").collect();
        match status.as_str() {
            "PAID" | "CANCELLED" if updated_at > self.settled_before => {}
            "PAID" => {
                match captured.as_slice() {
                    [(_, amount)] if *amount == total => {}
                    [(_, amount)] => {
                        out.push(violation("paid", subject.clone(), format!("PAID {total:?} but the payment captured {amount:?}")))
                    }
                    other => out.push(violation(
                        "paid",
                        subject.clone(),
                        format!("PAID with {} successful unrefunded payments (want exactly 1)", other.len()),
                    )),
                }
                if reservation != Some("DEDUCTED") {
                    out.push(violation("paid", subject, format!("PAID but its reservation is {reservation:?}, not DEDUCTED")));
                }
            }
            "CANCELLED" => {
                if matches!(reservation, Some("FROZEN" | "DEDUCTED" | "AWAITING_FREEZE")) {
                    out.push(violation("cancelled", subject.clone(), format!("CANCELLED but its reservation is {reservation:?}")));
                }
                if !captured.is_empty() {
                    out.push(violation("cancelled", subject, "CANCELLED but a captured payment was not refunded"));
                }
            }
            _ => {
                if self.now_millis.saturating_sub(created_at) > self.deadline_ms {
                    let age = Duration::from_millis(u64::try_from(self.now_millis - created_at).unwrap_or(0));
                    out.push(violation("deadline", subject, format!("{status} for {}s, past the deadline", age.as_secs())));
                }
            }
        }
        Ok(())
    }
}

/// Judges the named orders only (those changed since the last pass, those past the deadline,
/// those violating at the last pass), reading them and their reservations and payments by
/// orderNo in chunks.
async fn check_orders(
    order: &Db,
    stock: &Db,
    payment: &Db,
    judge: &Judge,
    order_nos: &[String],
    report: &mut Report,
) -> anyhow::Result<()> {
    for chunk in stream::rows::chunks(order_nos) {
        let fetch = |head: &str, db: &Db| {
            let mut q = sqlx::query(stream::rows::in_list(head, 1, chunk.len()));
            for no in chunk {
                q = q.bind(no);
            }
            let pool = db.reader().clone();
            async move { q.fetch_all(&pool).await }
        };
        let orders = fetch("SELECT order_no, status, total, created_at, updated_at FROM orders WHERE order_no IN", order).await?;
        let reservations = reservations_of(fetch("SELECT order_no, state FROM reservations WHERE order_no IN", stock).await?)?;
        let payments = payments_of(fetch("SELECT order_no, status, amount FROM payments WHERE order_no IN", payment).await?)?;
        report.orders += orders.len();
        for r in &orders {
            judge.order(r, &reservations, &payments, &mut report.violations)?;
        }
    }
    Ok(())
}

/// The invariant gauges of `/metrics` (`orderflow_invariant_*`), refreshed every
/// [`GAUGE_INTERVAL`] with a minute's grace for orders whose last events may still be in
/// flight.
///
/// Incremental, so a large database costs no more than the orders that changed: a pass
/// judges the orders updated since the previous pass (by `updated_at`, indexed), the orders
/// PENDING past the deadline, and the orders that were violating (to see them resolve); the
/// first pass and every [`FULL_EVERY`]th are the full [`check`], which also catches a
/// violation made later, behind an order's back (a reservation changed by hand, say).
/// Conservation is one aggregate per pass.
#[derive(Clone)]
pub struct Gauges {
    pub dbs: [Db; 3],
    pub metrics: stream::Metrics,
    /// An order PENDING longer than this is a violation.
    pub deadline: Duration,
    pub state: Arc<Mutex<GaugeState>>,
}

/// What a pass leaves for the next one.
#[derive(Debug, Default)]
pub struct GaugeState {
    /// Passes so far.
    passes: u64,
    /// Orders updated up to here were judged settled.
    judged_until: Option<i64>,
    /// Orders violating at the last pass.
    open: BTreeSet<String>,
}

pub const GAUGE_INTERVAL: Duration = Duration::from_secs(30);
const GAUGE_GRACE: Duration = Duration::from_secs(60);
/// Every this many passes (ten minutes at [`GAUGE_INTERVAL`]) the pass is a full check.
pub const FULL_EVERY: u64 = 20;

impl Gauges {
    pub fn new(dbs: [Db; 3], metrics: stream::Metrics, deadline: Duration) -> Gauges {
        Gauges { dbs, metrics, deadline, state: Arc::default() }
    }

    /// One pass as of `now_millis`: full or incremental as [`Gauges`] says.
    pub async fn refresh(&self, now_millis: i64) -> anyhow::Result<Report> {
        let full = {
            let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.judged_until.is_none() || st.passes % FULL_EVERY == 0
        };
        self.pass(now_millis, full).await
    }

    /// One pass as of `now_millis`; `full` reads every order.
    pub async fn pass(&self, now_millis: i64, full: bool) -> anyhow::Result<Report> {
        let [o, s, p] = &self.dbs;
        let (judged_until, open) = {
            let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            (st.judged_until, st.open.clone())
        };
        let judge = Judge::new(self.deadline, GAUGE_GRACE, now_millis);
        let report = match judged_until {
            Some(since) if !full => {
                let mut report = Report::default();
                conservation(s, &mut report).await?;
                let mut order_nos: BTreeSet<String> = open;
                order_nos.extend(
                    sqlx::query_scalar::<_, String>(
                        "SELECT order_no FROM orders WHERE updated_at > $1 AND updated_at <= $2 AND order_no IS NOT NULL",
                    )
                    .bind(since)
                    .bind(judge.settled_before)
                    .fetch_all(o.reader())
                    .await?,
                );
                order_nos.extend(
                    sqlx::query_scalar::<_, String>(
                        "SELECT order_no FROM orders WHERE status = 'PENDING' AND created_at < $1 AND order_no IS NOT NULL",
                    )
                    .bind(now_millis.saturating_sub(judge.deadline_ms))
                    .fetch_all(o.reader())
                    .await?,
                );
                let order_nos: Vec<String> = order_nos.into_iter().collect();
                check_orders(o, s, p, &judge, &order_nos, &mut report).await?;
                report
            }
            _ => check(o, s, p, self.deadline, GAUGE_GRACE, now_millis).await?,
        };
        {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.passes += 1;
            st.judged_until = Some(judge.settled_before);
            st.open = report
                .violations
                .iter()
                .filter_map(|v| v.subject.strip_prefix("order ").map(str::to_owned))
                .collect();
        }
        self.publish(&report, now_millis);
        Ok(report)
    }

    fn publish(&self, report: &Report, now_millis: i64) {
        for kind in KINDS {
            let n = report.violations.iter().filter(|v| v.kind == kind).count();
            self.metrics.gauge(
                "orderflow_invariant_violations",
                "Violations the invariant checker found at its last run, by kind (see `orderflow check`).",
                &[("kind", kind)],
                n as f64,
            );
        }
        self.metrics.gauge("orderflow_invariant_orders_checked", "Orders the invariant checker read at its last run.", &[], report.orders as f64);
        self.metrics.gauge(
            "orderflow_invariant_checked_at_seconds",
            "When the invariant checker last ran (Unix time).",
            &[],
            now_millis as f64 / 1000.0,
        );
    }

    pub async fn run(self, token: tokio_util::sync::CancellationToken) {
        loop {
            if let Err(e) = self.refresh(events::now_millis()).await {
                tracing::warn!(error = %e, "invariant check failed; will try again");
            }
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(GAUGE_INTERVAL) => {}
            }
        }
    }
}
