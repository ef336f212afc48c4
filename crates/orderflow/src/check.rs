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
//! The queries are the services' own (`order::store::audit*`, `stock::store::balances` and
//! `reservation_states`, `payment::store::outcomes`), beside the tables they read; this
//! module only composes and judges.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use binding::metrics;
use events::{Money, OrderNo};
use order::{domain::OrderStatus, store::OrderAudit};
use payment::domain::PaymentStatus;
use stock::domain::ReservationState;
use storage::{Db, rows::Keys};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// Which guarantee: `conservation`, `paid`, `cancelled` or `deadline`.
    pub kind: &'static str,
    /// The order or product concerned (`order ORD...` / `product 1002`).
    pub subject: String,
    pub problem: String,
    /// The order concerned, if it is one (the gauges look at it again next pass).
    #[serde(skip)]
    pub order: Option<OrderNo>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub orders: usize,
    pub products: usize,
    pub violations: Vec<Violation>,
}

fn violation(kind: &'static str, subject: String, problem: impl Into<String>) -> Violation {
    Violation { kind, subject, problem: problem.into(), order: None }
}

fn order_violation(kind: &'static str, order: &OrderNo, problem: impl Into<String>) -> Violation {
    Violation {
        kind,
        subject: format!("order {order}"),
        problem: problem.into(),
        order: Some(order.clone()),
    }
}

/// The kinds of violation, for gauges that should read 0 rather than be absent.
pub const KINDS: [&str; 4] = ["conservation", "paid", "cancelled", "deadline"];

/// Orders read (with their reservations and payments) per round.
const PAGE: i64 = 1000;

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
    let balances = stock::store::balances(stock.reader()).await?;
    judge_balances(&balances, &mut report);
    check_all_orders(order, stock, payment, &Judge::new(deadline, grace, now_millis), &mut report)
        .await?;
    Ok(report)
}

/// Judges every order, in pages by orderNo, each with the reservations and payments of the
/// same range, so memory stays bounded however many orders there are.
async fn check_all_orders(
    order: &Db,
    stock: &Db,
    payment: &Db,
    judge: &Judge,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut after = String::new();
    loop {
        let orders = order::store::audit_page(order.reader(), &after, PAGE).await?;
        let Some(last) = orders.last().map(|o| o.order_no.to_string()) else {
            return Ok(());
        };
        report.orders += orders.len();
        let keys = Keys::Range { after: &after, through: &last };
        let reservations = stock::store::reservation_states(stock.reader(), keys).await?;
        let payments = payment::store::outcomes(payment.reader(), keys).await?;
        for o in &orders {
            judge.order(o, &reservations, &payments, &mut report.violations);
        }
        after = last;
    }
}

/// Conservation, per product: its counters equal the sums of its movements.
fn judge_balances(balances: &[stock::store::Balance], report: &mut Report) {
    report.products = balances.len();
    for b in balances.iter().filter(|b| b.counters != b.movements) {
        report.violations.push(violation(
            "conservation",
            format!("product {}", b.product_id),
            format!(
                "available/frozen/sold are {:?} but its movements add up to {:?}",
                b.counters, b.movements
            ),
        ));
    }
}

/// orderNo → its payments' (status, amount).
type Payments = BTreeMap<OrderNo, Vec<(PaymentStatus, Option<Money>)>>;

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
            settled_before: now_millis
                .saturating_sub(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX)),
            now_millis,
        }
    }

    /// Judges one order against its reservation and payments.
    fn order(
        &self,
        o: &OrderAudit,
        reservations: &BTreeMap<OrderNo, ReservationState>,
        payments: &Payments,
        out: &mut Vec<Violation>,
    ) {
        let reservation = reservations.get(&o.order_no).copied();
        let pays = payments.get(&o.order_no).map(Vec::as_slice).unwrap_or_default();
        let captured: Vec<Option<Money>> = pays
            .iter()
            .filter(|(status, _)| *status == PaymentStatus::Success)
            .map(|(_, amount)| *amount)
            .collect();
        match o.status {
            OrderStatus::Paid | OrderStatus::Cancelled if o.updated_at > self.settled_before => {}
            OrderStatus::Paid => {
                match captured.as_slice() {
                    [Some(amount)] if *amount == o.total => {}
                    [amount] => out.push(order_violation(
                        "paid",
                        &o.order_no,
                        format!("PAID {} but the payment captured {amount:?}", o.total),
                    )),
                    other => out.push(order_violation(
                        "paid",
                        &o.order_no,
                        format!(
                            "PAID with {} successful unrefunded payments (want exactly 1)",
                            other.len()
                        ),
                    )),
                }
                if reservation != Some(ReservationState::Deducted) {
                    out.push(order_violation(
                        "paid",
                        &o.order_no,
                        format!(
                            "PAID but its reservation is {:?}, not DEDUCTED",
                            reservation.map(ReservationState::as_str)
                        ),
                    ));
                }
            }
            OrderStatus::Cancelled => {
                if matches!(
                    reservation,
                    Some(
                        ReservationState::Frozen
                            | ReservationState::Deducted
                            | ReservationState::AwaitingFreeze
                    )
                ) {
                    out.push(order_violation(
                        "cancelled",
                        &o.order_no,
                        format!(
                            "CANCELLED but its reservation is {:?}",
                            reservation.map(ReservationState::as_str)
                        ),
                    ));
                }
                if !captured.is_empty() {
                    out.push(order_violation(
                        "cancelled",
                        &o.order_no,
                        "CANCELLED but a captured payment was not refunded",
                    ));
                }
            }
            OrderStatus::Pending => {
                if self.now_millis.saturating_sub(o.created_at) > self.deadline_ms {
                    let age = Duration::from_millis(
                        u64::try_from(self.now_millis - o.created_at).unwrap_or(0),
                    );
                    out.push(order_violation(
                        "deadline",
                        &o.order_no,
                        format!("PENDING for {}s, past the deadline", age.as_secs()),
                    ));
                }
            }
        }
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
    order_nos: &[OrderNo],
    report: &mut Report,
) -> anyhow::Result<()> {
    let names: Vec<&str> = order_nos.iter().map(|o| o.as_str()).collect();
    let orders = order::store::audit(order.reader(), &names).await?;
    let reservations =
        stock::store::reservation_states(stock.reader(), Keys::Named(&names)).await?;
    let payments = payment::store::outcomes(payment.reader(), Keys::Named(&names)).await?;
    report.orders += orders.len();
    for o in &orders {
        judge.order(o, &reservations, &payments, &mut report.violations);
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
///
/// Conservation reads from a checkpoint: the per-product sums of the movements up to one
/// movement id, kept here, plus an aggregate of the movements after it, read in the same
/// statement as the counters; the checkpoint then moves up to the last movement older than
/// the grace (long committed, even where ids are handed out before commit, as on
/// PostgreSQL). A pass costs the movements since the last one, not the whole history;
/// `orderflow check` still sums every movement.
#[derive(Clone)]
pub struct Gauges {
    pub dbs: [Db; 3],
    pub metrics: binding::Metrics,
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
    open: BTreeSet<OrderNo>,
    /// Movements summed so far.
    movements: Checkpoint,
}

/// Per product, the sums (available, frozen, sold) of the movements up to id `through`.
#[derive(Debug, Default, Clone)]
struct Checkpoint {
    through: i64,
    sums: BTreeMap<i64, [i64; 3]>,
}

pub const GAUGE_INTERVAL: Duration = Duration::from_secs(30);
const GAUGE_GRACE: Duration = Duration::from_secs(60);
/// Every this many passes (ten minutes at [`GAUGE_INTERVAL`]) the pass is a full check.
pub const FULL_EVERY: u64 = 20;

impl Gauges {
    pub fn new(dbs: [Db; 3], metrics: binding::Metrics, deadline: Duration) -> Gauges {
        Gauges { dbs, metrics, deadline, state: Arc::default() }
    }

    /// One pass as of `now_millis`: full or incremental as [`Gauges`] says.
    pub async fn refresh(&self, now_millis: i64) -> anyhow::Result<Report> {
        let full = {
            let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.judged_until.is_none() || st.passes.is_multiple_of(FULL_EVERY)
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
                self.conservation(now_millis, &mut report).await?;
                let mut order_nos: BTreeSet<OrderNo> = open;
                order_nos.extend(
                    order::store::changed_between(o.reader(), since, judge.settled_before).await?,
                );
                order_nos.extend(
                    order::store::pending_before(
                        o.reader(),
                        now_millis.saturating_sub(judge.deadline_ms),
                        i64::MAX,
                    )
                    .await?,
                );
                let order_nos: Vec<OrderNo> = order_nos.into_iter().collect();
                check_orders(o, s, p, &judge, &order_nos, &mut report).await?;
                report
            }
            _ => {
                let mut report = Report::default();
                self.conservation(now_millis, &mut report).await?;
                check_all_orders(o, s, p, &judge, &mut report).await?;
                report
            }
        };
        {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.passes += 1;
            st.judged_until = Some(judge.settled_before);
            st.open = report.violations.iter().filter_map(|v| v.order.clone()).collect();
        }
        self.publish(&report, now_millis);
        Ok(report)
    }

    /// Conservation from the checkpoint, which then moves up (see [`Gauges`]).
    async fn conservation(&self, now_millis: i64, report: &mut Report) -> anyhow::Result<()> {
        let stock = self.dbs[1].reader();
        let checkpoint = {
            let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.movements.clone()
        };
        let mut balances = stock::store::balances_after(stock, checkpoint.through).await?;
        for b in &mut balances {
            if let Some(sums) = checkpoint.sums.get(&b.product_id) {
                for (m, s) in b.movements.iter_mut().zip(sums) {
                    *m += s;
                }
            }
        }
        judge_balances(&balances, report);
        let settled = now_millis.saturating_sub(GAUGE_GRACE.as_millis() as i64);
        let Some(through) =
            stock::store::movement_before(stock, checkpoint.through, settled).await?
        else {
            return Ok(());
        };
        let tail = stock::store::movement_sums(stock, checkpoint.through, through).await?;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // A pass that ran meanwhile moved it already.
        if st.movements.through == checkpoint.through {
            for (product, sums) in tail {
                let kept = st.movements.sums.entry(product).or_default();
                for (k, s) in kept.iter_mut().zip(sums) {
                    *k += s;
                }
            }
            st.movements.through = through;
        }
        Ok(())
    }

    fn publish(&self, report: &Report, now_millis: i64) {
        for kind in KINDS {
            let n = report.violations.iter().filter(|v| v.kind == kind).count();
            self.metrics.set(metrics::VIOLATIONS, &[("kind", kind)], n as f64);
        }
        self.metrics.set(metrics::ORDERS_CHECKED, &[], report.orders as f64);
        self.metrics.set(metrics::CHECKED_AT, &[], now_millis as f64 / 1000.0);
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
