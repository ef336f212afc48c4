//! The events a stored payment announces. A payment that completes was made for an
//! `order-created` event, so it has an amount and lines; a captured payment also has its
//! transaction number. A row without them is corrupt, and building its event fails naming
//! the column, rather than announcing a zero amount or an empty map.

use events::{PaymentFailedEvent, PaymentRefundedEvent, PaymentSuccessEvent, ProductQuantities};
use storage::decode;

use crate::store::Payment;

const TABLE: &str = "payments";

/// `payment-success` for `p`, captured now (`now`, ms) as `transaction_no`.
pub fn success(
    p: &Payment,
    transaction_no: String,
    now: i64,
) -> Result<PaymentSuccessEvent, sqlx::Error> {
    Ok(PaymentSuccessEvent {
        payment_id: p.payment_id,
        order_id: p.order_id,
        order_no: p.order_no.clone(),
        user_id: p.user_id,
        amount: decode::required(p.amount, TABLE, "amount", &p.order_no)?,
        payment_method: p.payment_method.clone(),
        transaction_no,
        timestamp: Some(now),
        event_id: events::new_event_id(),
        product_quantity_map: Some(decode::json::<ProductQuantities>(
            &p.lines,
            TABLE,
            "lines",
            &p.order_no,
        )?),
    })
}

/// `payment-failed` for `p`, declined now for `reason`.
pub fn failed(p: &Payment, reason: String, now: i64) -> Result<PaymentFailedEvent, sqlx::Error> {
    Ok(PaymentFailedEvent {
        payment_id: p.payment_id,
        order_id: p.order_id,
        order_no: p.order_no.clone(),
        user_id: p.user_id,
        amount: decode::required(p.amount, TABLE, "amount", &p.order_no)?,
        reason,
        timestamp: Some(now),
        event_id: events::new_event_id(),
    })
}

/// `payment-refunded` for the captured payment `p`, refunded now.
pub fn refunded(p: &Payment, now: i64) -> Result<PaymentRefundedEvent, sqlx::Error> {
    Ok(PaymentRefundedEvent {
        payment_id: p.payment_id,
        order_id: p.order_id,
        order_no: p.order_no.clone(),
        amount: decode::required(p.amount, TABLE, "amount", &p.order_no)?,
        transaction_no: decode::required(
            p.transaction_no.clone(),
            TABLE,
            "transaction_no",
            &p.order_no,
        )?,
        timestamp: Some(now),
        event_id: events::new_event_id(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PaymentStatus;

    fn captured() -> Payment {
        Payment {
            payment_id: 7,
            order_id: 70,
            order_no: "ORD7".parse().expect("an orderNo"),
            user_id: 1001,
            amount: Some("259.00".parse().expect("an amount")),
            payment_method: "ALIPAY".into(),
            status: PaymentStatus::Success,
            transaction_no: Some("TXN1".into()),
            reason: None,
            lines: r#"{"1":2}"#.into(),
            created_at: 1,
            updated_at: 2,
        }
    }

    fn names(e: sqlx::Error, column: &str) {
        let text = e.to_string();
        assert!(text.contains(&format!("payments.{column} of row ORD7")), "{text}");
    }

    #[test]
    fn a_sound_payment_announces_its_amount_lines_and_transaction() {
        let p = captured();
        let s = success(&p, "TXN9".into(), 5).expect("success event");
        assert_eq!((s.amount.to_string().as_str(), s.transaction_no.as_str()), ("259.00", "TXN9"));
        let lines = s.product_quantity_map.expect("lines");
        assert_eq!(lines.len(), 1);
        let r = refunded(&p, 6).expect("refund event");
        assert_eq!((r.amount, r.transaction_no.as_str()), (p.amount.expect("amount"), "TXN1"));
        assert_eq!(failed(&p, "declined".into(), 7).expect("failed event").reason, "declined");
    }

    #[test]
    fn a_payment_without_an_amount_is_corrupt_whatever_it_announces() {
        let p = Payment { amount: None, ..captured() };
        names(success(&p, "TXN9".into(), 5).unwrap_err(), "amount");
        names(failed(&p, "declined".into(), 5).unwrap_err(), "amount");
        names(refunded(&p, 5).unwrap_err(), "amount");
    }

    #[test]
    fn unreadable_lines_are_corrupt_not_an_empty_map() {
        for lines in ["", "not json", r#"{"x":2}"#, r#"{"1":-2}"#, "[1,2]"] {
            let p = Payment { lines: lines.into(), ..captured() };
            names(success(&p, "TXN9".into(), 5).unwrap_err(), "lines");
        }
    }

    #[test]
    fn a_captured_payment_without_its_transaction_cannot_be_refunded() {
        let p = Payment { transaction_no: None, ..captured() };
        names(refunded(&p, 5).unwrap_err(), "transaction_no");
    }
}
