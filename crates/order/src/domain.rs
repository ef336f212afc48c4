//! The order's pure core: validated values, the state machine, and the decision for each
//! incoming fact. No I/O: `state + fact -> new state + what to announce`.
//!
//! An order is PAID only when both facts are in: a successful payment *and* stock's
//! deduction of its reservation. Waiting for the deduction (our `stock-deducted` event) is
//! what makes "PAID" mean "paid and shipped from stock": in the seed, payment and stock race
//! on `order-created`, so a payment can succeed for an order whose stock freeze then fails.
//! Such an order is CANCELLED, and its cancellation (`order-cancelled`) makes payment refund
//! and stock release. The full table is in `docs/order-states.md`.

use std::collections::BTreeMap;

use events::{Money, ProductId, ProductQuantities, Quantity};

use rust_decimal::Decimal;

pub const MAX_LINES: usize = 100;
pub const MAX_QUANTITY: i64 = 10_000;
pub const MAX_REMARK_CHARS: usize = 500;

/// A request field that failed validation: the field path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid { field: field.into(), message: message.into() }
}

/// A valid order request: a positive user id and 1..=100 lines of positive quantities,
/// merged by product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRequest {
    pub user_id: i64,
    pub lines: ProductQuantities,
    pub remark: Option<String>,
}

impl OrderRequest {
    /// Parses raw request values; the error names the first bad field.
    pub fn parse(
        user_id: i64,
        items: &[(i64, i64)],
        remark: Option<String>,
    ) -> Result<OrderRequest, Invalid> {
        if user_id <= 0 {
            return Err(invalid("userId", "must be a positive id"));
        }
        if items.is_empty() {
            return Err(invalid("items", "must contain at least one item"));
        }
        if items.len() > MAX_LINES {
            return Err(invalid("items", format!("at most {MAX_LINES} items per order")));
        }
        let mut lines: BTreeMap<ProductId, i64> = BTreeMap::new();
        for (i, &(product_id, quantity)) in items.iter().enumerate() {
            let product_id = ProductId::new(product_id)
                .map_err(|_| invalid(format!("items[{i}].productId"), "must be a positive id"))?;
            if quantity <= 0 {
                return Err(invalid(format!("items[{i}].quantity"), "must be at least 1"));
            }
            let total = lines.entry(product_id).or_default();
            *total += quantity;
            if *total > MAX_QUANTITY {
                return Err(invalid(
                    format!("items[{i}].quantity"),
                    format!("at most {MAX_QUANTITY} of one product"),
                ));
            }
        }
        if let Some(r) = &remark
            && r.chars().count() > MAX_REMARK_CHARS
        {
            return Err(invalid("remark", format!("at most {MAX_REMARK_CHARS} characters")));
        }
        let lines = lines
            .into_iter()
            .map(|(p, q)| Quantity::new(q).map(|q| (p, q)))
            .collect::<Result<_, _>>()
            .map_err(|e| invalid("items", e.to_string()))?;
        Ok(OrderRequest { user_id, lines, remark })
    }

    /// The total from the catalogue's prices; the error names the line of an unknown product.
    pub fn total(
        &self,
        items: &[(i64, i64)],
        price_of: impl Fn(i64) -> Option<Money>,
    ) -> Result<Money, Invalid> {
        let mut total = Decimal::ZERO;
        for (product_id, quantity) in &self.lines {
            let price = price_of(product_id.get()).ok_or_else(|| {
                let i = items.iter().position(|(p, _)| *p == product_id.get()).unwrap_or(0);
                invalid(format!("items[{i}].productId"), format!("unknown product {product_id}"))
            })?;
            total += price.amount() * Decimal::from(quantity.get());
        }
        // Prices are never negative, so neither is their sum.
        Money::new(total).map_err(|e| invalid("items", e.to_string()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum OrderStatus {
    /// Created; waiting for payment and stock.
    Pending,
    /// Paid and stock deducted. Terminal.
    Paid,
    /// Cancelled with a reason; the reservation is released and a capture refunded. Terminal.
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Paid => "PAID",
            OrderStatus::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(s: &str) -> Option<OrderStatus> {
        match s.to_ascii_uppercase().as_str() {
            "PENDING" => Some(OrderStatus::Pending),
            "PAID" => Some(OrderStatus::Paid),
            "CANCELLED" => Some(OrderStatus::Cancelled),
            _ => None,
        }
    }

    pub const ALL: [OrderStatus; 3] =
        [OrderStatus::Pending, OrderStatus::Paid, OrderStatus::Cancelled];
}

/// The payment an order received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRef {
    pub payment_id: i64,
    pub transaction_no: String,
    pub amount: Money,
}

/// The state a decision reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderState {
    pub status: OrderStatus,
    pub total: Money,
    pub payment: Option<PaymentRef>,
    pub stock_deducted: bool,
    pub refunded: bool,
    pub cancel_reason: Option<String>,
}

impl OrderState {
    pub fn new(total: Money) -> OrderState {
        OrderState {
            status: OrderStatus::Pending,
            total,
            payment: None,
            stock_deducted: false,
            refunded: false,
            cancel_reason: None,
        }
    }
}

/// A fact the order learns from another service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    PaymentSucceeded(PaymentRef),
    StockDeducted,
    StockFreezeFailed {
        reason: String,
    },
    PaymentFailed {
        reason: String,
    },
    PaymentRefunded,
    /// The compensation job: the order was not completed within `after_secs` of its creation.
    DeadlinePassed {
        after_secs: u64,
    },
}

/// What a fact changes: the new state, whether to announce a cancellation, and a line for
/// the order's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub state: OrderState,
    /// `Some(reason)`: publish `order-cancelled` (stock releases, payment refunds).
    pub cancel: Option<String>,
    pub note: String,
}

/// Applies `fact` to `state`.
pub fn decide(state: &OrderState, fact: Fact) -> Decision {
    match fact {
        Fact::PaymentSucceeded(p) => payment_succeeded(state, p),
        Fact::StockDeducted => stock_deducted(state),
        Fact::StockFreezeFailed { reason } => {
            cancel(state, format!("stock freeze failed: {reason}"))
        }
        Fact::PaymentFailed { reason } => cancel(state, format!("payment failed: {reason}")),
        Fact::PaymentRefunded => refunded(state),
        Fact::DeadlinePassed { after_secs } => {
            cancel(state, format!("not completed within {after_secs} s (compensation job)"))
        }
    }
}

fn payment_succeeded(state: &OrderState, p: PaymentRef) -> Decision {
    let mut next = state.clone();
    let note = format!(
        "payment {} succeeded ({}), transaction {}",
        p.payment_id, p.amount, p.transaction_no
    );
    match state.status {
        OrderStatus::Pending => {
            next.payment = Some(p);
            if next.stock_deducted {
                next.status = OrderStatus::Paid;
            }
        }
        // Payment is told of the cancellation through `order-cancelled` and refunds.
        OrderStatus::Cancelled => {
            next.payment.get_or_insert(p);
        }
        OrderStatus::Paid => {}
    }
    Decision { state: next, cancel: None, note }
}

fn stock_deducted(state: &OrderState) -> Decision {
    let mut next = state.clone();
    next.stock_deducted = true;
    if state.status == OrderStatus::Pending && state.payment.is_some() {
        next.status = OrderStatus::Paid;
    }
    Decision { state: next, cancel: None, note: "stock deducted".into() }
}

fn cancel(state: &OrderState, reason: String) -> Decision {
    match state.status {
        OrderStatus::Pending => {
            let mut next = state.clone();
            next.status = OrderStatus::Cancelled;
            next.cancel_reason = Some(reason.clone());
            Decision {
                state: next,
                cancel: Some(reason.clone()),
                note: format!("cancelled: {reason}"),
            }
        }
        // The fact that cancelled it, again: the line it wrote then (recorded once).
        OrderStatus::Cancelled if state.cancel_reason.as_deref() == Some(reason.as_str()) => {
            Decision { state: state.clone(), cancel: None, note: format!("cancelled: {reason}") }
        }
        // Terminal already: record what arrived, change nothing.
        OrderStatus::Paid | OrderStatus::Cancelled => Decision {
            state: state.clone(),
            cancel: None,
            note: format!("ignored after {}: {reason}", state.status.as_str()),
        },
    }
}

fn refunded(state: &OrderState) -> Decision {
    let mut next = state.clone();
    next.refunded = true;
    Decision { state: next, cancel: None, note: "payment refunded".into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cents` / 100, as money.
    fn money(cents: i64) -> Money {
        Money::new(Decimal::new(cents, 2)).expect("not negative")
    }

    fn pay() -> PaymentRef {
        PaymentRef { payment_id: 5, transaction_no: "TXN1".into(), amount: money(1999) }
    }
    fn pending() -> OrderState {
        OrderState::new(money(1999))
    }
    fn given(facts: Vec<Fact>) -> OrderState {
        facts.into_iter().fold(pending(), |s, f| decide(&s, f).state)
    }

    #[test]
    fn paid_needs_both_payment_and_deduction_in_either_order() {
        let s = given(vec![Fact::PaymentSucceeded(pay())]);
        assert_eq!(s.status, OrderStatus::Pending);
        assert_eq!(decide(&s, Fact::StockDeducted).state.status, OrderStatus::Paid);

        let s = given(vec![Fact::StockDeducted]);
        assert_eq!(s.status, OrderStatus::Pending);
        assert_eq!(decide(&s, Fact::PaymentSucceeded(pay())).state.status, OrderStatus::Paid);
    }

    #[test]
    fn freeze_failure_cancels_a_pending_order_and_announces_it() {
        let d = decide(&pending(), Fact::StockFreezeFailed { reason: "no stock for 1002".into() });
        assert_eq!(d.state.status, OrderStatus::Cancelled);
        assert_eq!(d.cancel.as_deref(), Some("stock freeze failed: no stock for 1002"));
        assert_eq!(d.state.cancel_reason, d.cancel);
    }

    #[test]
    fn payment_received_before_freeze_failure_still_cancels() {
        let s = given(vec![Fact::PaymentSucceeded(pay())]);
        let d = decide(&s, Fact::StockFreezeFailed { reason: "x".into() });
        assert_eq!(d.state.status, OrderStatus::Cancelled);
        assert!(d.cancel.is_some(), "cancellation announced so the payment is refunded");
    }

    /// Without its inbox record (past the window) a copy of every fact is decided again: it
    /// changes no state, announces nothing, and writes the line its original wrote (the
    /// service records a line once).
    #[test]
    fn every_fact_again_changes_nothing_and_repeats_its_line() {
        let freeze = || Fact::StockFreezeFailed { reason: "x".into() };
        let declined = || Fact::PaymentFailed { reason: "declined".into() };
        for facts in [
            vec![Fact::PaymentSucceeded(pay()), Fact::StockDeducted],
            vec![Fact::PaymentSucceeded(pay()), freeze(), Fact::PaymentRefunded],
            vec![declined()],
        ] {
            let mut s = pending();
            let mut lines = Vec::new();
            for f in &facts {
                let d = decide(&s, f.clone());
                lines.push(d.note);
                s = d.state;
            }
            for (f, line) in facts.into_iter().zip(lines) {
                let d = decide(&s, f);
                assert_eq!((&d.state, d.cancel.is_none(), &d.note), (&s, true, &line));
            }
        }
    }

    #[test]
    fn payment_after_cancellation_is_recorded_without_reviving_the_order() {
        let s = given(vec![Fact::StockFreezeFailed { reason: "x".into() }]);
        let d = decide(&s, Fact::PaymentSucceeded(pay()));
        assert_eq!(d.state.status, OrderStatus::Cancelled);
        assert_eq!(d.state.payment, Some(pay()));
        assert!(d.cancel.is_none(), "announced once, when it was cancelled");
        assert!(decide(&d.state, Fact::PaymentRefunded).state.refunded);
    }

    #[test]
    fn terminal_orders_ignore_late_cancellations_and_duplicates() {
        let paid = given(vec![Fact::PaymentSucceeded(pay()), Fact::StockDeducted]);
        let d = decide(&paid, Fact::PaymentFailed { reason: "late".into() });
        assert_eq!(d.state, paid);
        assert!(d.cancel.is_none());
        assert_eq!(decide(&paid, Fact::PaymentSucceeded(pay())).state, paid);

        let cancelled = given(vec![Fact::PaymentFailed { reason: "declined".into() }]);
        let again = decide(&cancelled, Fact::StockFreezeFailed { reason: "y".into() });
        assert_eq!(again.state.cancel_reason.as_deref(), Some("payment failed: declined"));
        assert!(again.cancel.is_none());
    }

    #[test]
    fn the_deadline_cancels_only_a_pending_order_and_announces_it() {
        let s = given(vec![Fact::PaymentSucceeded(pay())]);
        let d = decide(&s, Fact::DeadlinePassed { after_secs: 600 });
        assert_eq!(d.state.status, OrderStatus::Cancelled);
        assert_eq!(d.cancel.as_deref(), Some("not completed within 600 s (compensation job)"));
        assert_eq!(
            d.state.payment,
            Some(pay()),
            "the capture stays recorded until payment refunds it"
        );

        let paid = given(vec![Fact::PaymentSucceeded(pay()), Fact::StockDeducted]);
        let d = decide(&paid, Fact::DeadlinePassed { after_secs: 600 });
        assert_eq!(d.state, paid);
        assert!(d.cancel.is_none());
    }

    #[test]
    fn requests_are_parsed_with_the_bad_field_named() {
        let bad = |u, items: &[(i64, i64)]| OrderRequest::parse(u, items, None).unwrap_err().field;
        assert_eq!(bad(0, &[(1, 1)]), "userId");
        assert_eq!(bad(1, &[]), "items");
        assert_eq!(bad(1, &[(1, 1), (2, 0)]), "items[1].quantity");
        assert_eq!(bad(1, &[(1, -3)]), "items[0].quantity");
        assert_eq!(bad(1, &[(1, 10_001)]), "items[0].quantity");
        assert_eq!(bad(1, &[(-1, 1)]), "items[0].productId");
        let too_many: Vec<(i64, i64)> = (1..=101).map(|p| (p, 1)).collect();
        assert_eq!(bad(1, &too_many), "items");

        let r = OrderRequest::parse(1, &[(7, 2), (7, 3)], None).unwrap();
        let units = r.lines.get(&ProductId::new(7).unwrap()).map(|q| q.get());
        assert_eq!(units, Some(5), "lines of one product are merged");
    }

    #[test]
    fn total_comes_from_catalogue_prices() {
        let items = [(1001, 2), (1002, 1)];
        let r = OrderRequest::parse(1, &items, None).unwrap();
        let price = |p| match p {
            1001 => Some(money(6995)),
            1002 => Some(money(5999)),
            _ => None,
        };
        assert_eq!(r.total(&items, price).unwrap().to_string(), "199.89");
        let items = [(1001, 1), (9, 1)];
        let r = OrderRequest::parse(1, &items, None).unwrap();
        assert_eq!(r.total(&items, price).unwrap_err().field, "items[1].productId");
    }
}
