//! Payment's pure core: one payment per order and its status machine.
//!
//! | payment \ fact | order-created        | completion (success/fail) | order-cancelled          |
//! |----------------|----------------------|---------------------------|--------------------------|
//! | none           | create PENDING       | —                         | CANCELLED (never charge) |
//! | PENDING        | —                    | SUCCESS / FAILED, announce| CANCELLED                |
//! | SUCCESS        | —                    | —                         | REFUNDED, announce       |
//! | FAILED, REFUNDED, CANCELLED | —       | —                         | —                        |
//!
//! Because a cancellation that arrives first leaves a CANCELLED record, a late
//! `order-created` never charges a cancelled order; a captured payment of a cancelled order
//! is always refunded.

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PaymentStatus {
    Pending,
    Success,
    Failed,
    Refunded,
    Cancelled,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "PENDING",
            PaymentStatus::Success => "SUCCESS",
            PaymentStatus::Failed => "FAILED",
            PaymentStatus::Refunded => "REFUNDED",
            PaymentStatus::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(s: &str) -> Option<PaymentStatus> {
        [
            PaymentStatus::Pending,
            PaymentStatus::Success,
            PaymentStatus::Failed,
            PaymentStatus::Refunded,
            PaymentStatus::Cancelled,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

/// How the (simulated) payment provider answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    Succeed,
    Fail { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    OrderCreated,
    Completed(Completion),
    OrderCancelled,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announce {
    Success,
    Failed { reason: String },
    Refunded,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The status to store (`None`: unchanged, or no record to create).
    pub status: Option<PaymentStatus>,
    pub announce: Option<Announce>,
}

const NOTHING: Decision = Decision { status: None, announce: None };

pub fn decide(current: Option<PaymentStatus>, fact: Fact) -> Decision {
    use PaymentStatus::*;
    match (current, fact) {
        (None, Fact::OrderCreated) => Decision { status: Some(Pending), announce: None },
        (None, Fact::OrderCancelled) => Decision { status: Some(Cancelled), announce: None },
        (Some(Pending), Fact::Completed(Completion::Succeed)) => {
            Decision { status: Some(Success), announce: Some(Announce::Success) }
        }
        (Some(Pending), Fact::Completed(Completion::Fail { reason })) => {
            Decision { status: Some(Failed), announce: Some(Announce::Failed { reason }) }
        }
        (Some(Pending), Fact::OrderCancelled) => {
            Decision { status: Some(Cancelled), announce: None }
        }
        (Some(Success), Fact::OrderCancelled) => {
            Decision { status: Some(Refunded), announce: Some(Announce::Refunded) }
        }
        (None, Fact::Completed(_))
        | (Some(_), Fact::OrderCreated)
        | (Some(Success | Failed | Refunded | Cancelled), Fact::Completed(_))
        | (Some(Failed | Refunded | Cancelled), Fact::OrderCancelled) => NOTHING,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PaymentStatus::*;

    #[test]
    fn order_created_then_completed_announces_the_outcome() {
        assert_eq!(decide(None, Fact::OrderCreated).status, Some(Pending));
        let ok = decide(Some(Pending), Fact::Completed(Completion::Succeed));
        assert_eq!((ok.status, ok.announce), (Some(Success), Some(Announce::Success)));
        let ko =
            decide(Some(Pending), Fact::Completed(Completion::Fail { reason: "declined".into() }));
        assert_eq!(ko.status, Some(Failed));
        assert_eq!(ko.announce, Some(Announce::Failed { reason: "declined".into() }));
    }

    #[test]
    fn a_cancelled_order_is_refunded_or_never_charged() {
        assert_eq!(decide(Some(Success), Fact::OrderCancelled).announce, Some(Announce::Refunded));
        assert_eq!(decide(Some(Pending), Fact::OrderCancelled).status, Some(Cancelled));
        assert_eq!(decide(None, Fact::OrderCancelled).status, Some(Cancelled));
        assert_eq!(
            decide(Some(Cancelled), Fact::OrderCreated),
            NOTHING,
            "late order-created never charges"
        );
        assert_eq!(decide(Some(Cancelled), Fact::Completed(Completion::Succeed)), NOTHING);
    }

    #[test]
    fn duplicates_change_nothing() {
        assert_eq!(decide(Some(Success), Fact::OrderCreated), NOTHING);
        assert_eq!(decide(Some(Refunded), Fact::OrderCancelled), NOTHING);
        assert_eq!(decide(Some(Success), Fact::Completed(Completion::Succeed)), NOTHING);
    }
}
