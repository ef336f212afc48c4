//! Stock's pure core: one reservation per order and the product counters it moves.
//!
//! Every product keeps `available + frozen + sold` constant except for explicit stock
//! changes: a decision only moves units between the three. Facts may arrive in any order
//! (payment and stock race on `order-created`; `payment-success` can overtake it):
//!
//! | reservation \ fact | order-created            | payment-success        | order-cancelled   |
//! |--------------------|--------------------------|------------------------|-------------------|
//! | none               | freeze all or none       | AWAITING_FREEZE        | VOID              |
//! | AWAITING_FREEZE    | freeze + deduct at once  | —                      | VOID              |
//! | FROZEN             | —                        | deduct → DEDUCTED      | release → RELEASED|
//! | DEDUCTED           | —                        | —                      | return → RETURNED |
//! | FAILED, RELEASED, VOID, RETURNED | —          | —                      | —                 |
//!
//! A failed freeze announces `stock-freeze-failed` (the order is cancelled and a captured
//! payment refunded); a deduction announces `stock-deducted` (the order becomes PAID).

use std::collections::BTreeMap;

use events::ProductQuantities;
#[cfg(test)]
use events::{ProductId, Quantity};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReservationState {
    /// Payment arrived before the order: freeze and deduct together when it comes.
    AwaitingFreeze,
    Frozen,
    Deducted,
    /// Not enough stock: nothing was frozen.
    Failed,
    /// Order cancelled while frozen: units back to available.
    Released,
    /// Order cancelled before stock saw it: it will never freeze.
    Void,
    /// Order cancelled after deduction: sold units back to available.
    Returned,
}

impl ReservationState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationState::AwaitingFreeze => "AWAITING_FREEZE",
            ReservationState::Frozen => "FROZEN",
            ReservationState::Deducted => "DEDUCTED",
            ReservationState::Failed => "FAILED",
            ReservationState::Released => "RELEASED",
            ReservationState::Void => "VOID",
            ReservationState::Returned => "RETURNED",
        }
    }

    pub fn parse(s: &str) -> Option<ReservationState> {
        [
            ReservationState::AwaitingFreeze,
            ReservationState::Frozen,
            ReservationState::Deducted,
            ReservationState::Failed,
            ReservationState::Released,
            ReservationState::Void,
            ReservationState::Returned,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub order_id: i64,
    pub state: ReservationState,
    pub lines: ProductQuantities,
    pub reason: Option<String>,
}

/// A product's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    pub available: i64,
    pub frozen: i64,
    pub sold: i64,
}

/// Why a product's counters moved (the `kind` column of `stock_movements`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MovementKind {
    /// Units frozen for an order.
    Freeze,
    /// Frozen units sold: the order is paid.
    Deduct,
    /// Units sold at once: the payment came before the freeze.
    FreezeAndDeduct,
    /// Frozen units given back: the order was cancelled.
    Release,
    /// Frozen units given back: the order was not paid in time.
    Expire,
    /// Sold units given back: a deducted order was cancelled after all.
    Return,
    /// An operator set the available units.
    Adjust,
}

impl MovementKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MovementKind::Freeze => "FREEZE",
            MovementKind::Deduct => "DEDUCT",
            MovementKind::FreezeAndDeduct => "FREEZE_AND_DEDUCT",
            MovementKind::Release => "RELEASE",
            MovementKind::Expire => "EXPIRE",
            MovementKind::Return => "RETURN",
            MovementKind::Adjust => "ADJUST",
        }
    }
}

/// A change to one product's counters, recorded in the stock history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Movement {
    pub product_id: i64,
    pub kind: MovementKind,
    pub available: i64,
    pub frozen: i64,
    pub sold: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    OrderCreated {
        order_id: i64,
        lines: ProductQuantities,
    },
    PaymentSucceeded {
        order_id: i64,
    },
    OrderCancelled {
        order_id: i64,
    },
    /// The reservation expiry job: frozen for `after_secs` and never paid.
    Expired {
        after_secs: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announce {
    FreezeFailed { reason: String },
    Deducted { lines: ProductQuantities },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The reservation to store (`None`: unchanged).
    pub reservation: Option<Reservation>,
    pub movements: Vec<Movement>,
    pub announce: Option<Announce>,
    pub note: String,
}

impl Decision {
    fn nothing(note: impl Into<String>) -> Decision {
        Decision { reservation: None, movements: Vec::new(), announce: None, note: note.into() }
    }
}

/// Decides what `fact` does, given the order's reservation and the counters of its products.
pub fn decide(
    existing: Option<&Reservation>,
    stock: &BTreeMap<i64, Counters>,
    fact: Fact,
) -> Decision {
    use ReservationState::*;
    match fact {
        Fact::OrderCreated { order_id, lines } => match existing.map(|r| r.state) {
            None => freeze(order_id, lines, stock, false),
            Some(AwaitingFreeze) => freeze(order_id, lines, stock, true),
            Some(state) => Decision::nothing(format!(
                "order-created ignored: reservation is {}",
                state.as_str()
            )),
        },
        Fact::PaymentSucceeded { order_id } => match existing {
            None => Decision {
                reservation: Some(Reservation {
                    order_id,
                    state: AwaitingFreeze,
                    lines: ProductQuantities::new(),
                    reason: None,
                }),
                movements: Vec::new(),
                announce: None,
                note: "payment before reservation: will deduct on freeze".into(),
            },
            Some(r) if r.state == Frozen => Decision {
                reservation: Some(Reservation { state: Deducted, ..r.clone() }),
                movements: moves(&r.lines, MovementKind::Deduct, |q| (0, -q, q)),
                announce: Some(Announce::Deducted { lines: r.lines.clone() }),
                note: "deducted".into(),
            },
            Some(r) => Decision::nothing(format!(
                "payment-success ignored: reservation is {}",
                r.state.as_str()
            )),
        },
        Fact::OrderCancelled { order_id } => match existing {
            None => Decision {
                reservation: Some(Reservation {
                    order_id,
                    state: Void,
                    lines: ProductQuantities::new(),
                    reason: None,
                }),
                movements: Vec::new(),
                announce: None,
                note: "cancelled before reservation: will not freeze".into(),
            },
            Some(r) => match r.state {
                AwaitingFreeze => Decision {
                    reservation: Some(Reservation { state: Void, ..r.clone() }),
                    movements: Vec::new(),
                    announce: None,
                    note: "cancelled before reservation: will not freeze".into(),
                },
                Frozen => Decision {
                    reservation: Some(Reservation { state: Released, ..r.clone() }),
                    movements: moves(&r.lines, MovementKind::Release, |q| (q, -q, 0)),
                    announce: None,
                    note: "released".into(),
                },
                Deducted => Decision {
                    reservation: Some(Reservation { state: Returned, ..r.clone() }),
                    movements: moves(&r.lines, MovementKind::Return, |q| (q, 0, -q)),
                    announce: None,
                    note: "returned to stock".into(),
                },
                Failed | Released | Void | Returned => Decision::nothing(format!(
                    "order-cancelled ignored: reservation is {}",
                    r.state.as_str()
                )),
            },
        },
        Fact::Expired { after_secs } => match existing {
            Some(r) if r.state == Frozen => {
                let reason = format!("reservation expired: not paid within {after_secs} s");
                Decision {
                    reservation: Some(Reservation {
                        state: Released,
                        reason: Some(reason.clone()),
                        ..r.clone()
                    }),
                    movements: moves(&r.lines, MovementKind::Expire, |q| (q, -q, 0)),
                    announce: Some(Announce::FreezeFailed { reason: reason.clone() }),
                    note: reason,
                }
            }
            _ => Decision::nothing("expiry ignored: nothing frozen"),
        },
    }
}

fn moves(
    lines: &ProductQuantities,
    kind: MovementKind,
    f: impl Fn(i64) -> (i64, i64, i64),
) -> Vec<Movement> {
    lines
        .iter()
        .map(|(&product_id, &q)| {
            let (available, frozen, sold) = f(q.get());
            Movement { product_id: product_id.get(), kind, available, frozen, sold }
        })
        .collect()
}

/// Freezes every line or none; `then_deduct` when the payment is already in.
fn freeze(
    order_id: i64,
    lines: ProductQuantities,
    stock: &BTreeMap<i64, Counters>,
    then_deduct: bool,
) -> Decision {
    let shortage = lines.iter().find_map(|(&product_id, &q)| match stock.get(&product_id.get()) {
        None => Some(format!("unknown product {product_id}")),
        Some(c) if c.available < q.get() => Some(format!(
            "insufficient stock for product {product_id}: requested {q}, available {}",
            c.available
        )),
        Some(_) => None,
    });
    if let Some(reason) = shortage {
        return Decision {
            reservation: Some(Reservation {
                order_id,
                state: ReservationState::Failed,
                lines,
                reason: Some(reason.clone()),
            }),
            movements: Vec::new(),
            announce: Some(Announce::FreezeFailed { reason: reason.clone() }),
            note: format!("freeze failed: {reason}"),
        };
    }
    if then_deduct {
        Decision {
            movements: moves(&lines, MovementKind::FreezeAndDeduct, |q| (-q, 0, q)),
            announce: Some(Announce::Deducted { lines: lines.clone() }),
            reservation: Some(Reservation {
                order_id,
                state: ReservationState::Deducted,
                lines,
                reason: None,
            }),
            note: "frozen and deducted (payment was first)".into(),
        }
    } else {
        Decision {
            movements: moves(&lines, MovementKind::Freeze, |q| (-q, q, 0)),
            reservation: Some(Reservation {
                order_id,
                state: ReservationState::Frozen,
                lines,
                reason: None,
            }),
            announce: None,
            note: "frozen".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stock(entries: &[(i64, i64)]) -> BTreeMap<i64, Counters> {
        entries.iter().map(|&(p, a)| (p, Counters { available: a, ..Default::default() })).collect()
    }
    fn lines(entries: &[(i64, i32)]) -> ProductQuantities {
        entries
            .iter()
            .map(|&(p, q)| (ProductId::new(p).unwrap(), Quantity::new(i64::from(q)).unwrap()))
            .collect()
    }
    fn created(l: &[(i64, i32)]) -> Fact {
        Fact::OrderCreated { order_id: 1, lines: lines(l) }
    }
    fn state(d: &Decision) -> ReservationState {
        d.reservation.as_ref().map(|r| r.state).expect("reservation written")
    }

    /// The service names the reservation's orderId in what it announces: whatever the
    /// state and the fact, a decision that announces has a reservation.
    #[test]
    fn every_announcement_is_about_a_reservation() {
        use ReservationState::*;
        let facts = || {
            [
                created(&[(1, 2)]),
                created(&[(2, 50)]),
                Fact::PaymentSucceeded { order_id: 1 },
                Fact::OrderCancelled { order_id: 1 },
                Fact::Expired { after_secs: 900 },
            ]
        };
        let states = [AwaitingFreeze, Frozen, Deducted, Failed, Released, Void, Returned];
        let mut existing: Vec<Option<Reservation>> = vec![None];
        existing.extend(states.iter().map(|&state| {
            Some(Reservation { order_id: 1, state, lines: lines(&[(1, 2)]), reason: None })
        }));
        let mut announced = 0;
        for r in &existing {
            for fact in facts() {
                let d = decide(r.as_ref(), &stock(&[(1, 10), (2, 10)]), fact.clone());
                if d.announce.is_some() {
                    announced += 1;
                    assert!(d.reservation.is_some() || r.is_some(), "{r:?} + {fact:?}: {d:?}");
                }
            }
        }
        assert!(announced >= 4, "the cases announce: {announced}");
    }

    #[test]
    fn freezes_all_lines_when_every_product_suffices() {
        let d = decide(None, &stock(&[(1, 5), (2, 1)]), created(&[(1, 2), (2, 1)]));
        assert_eq!(state(&d), ReservationState::Frozen);
        assert_eq!(d.movements.len(), 2);
        assert!(d.movements.iter().all(|m| m.available == -m.frozen && m.sold == 0));
        assert_eq!(d.announce, None);
    }

    #[test]
    fn freezes_nothing_when_one_product_falls_short_and_names_it() {
        let d = decide(None, &stock(&[(1, 5), (2, 0)]), created(&[(1, 2), (2, 1)]));
        assert_eq!(state(&d), ReservationState::Failed);
        assert!(d.movements.is_empty(), "all or none");
        match d.announce {
            Some(Announce::FreezeFailed { reason }) => {
                assert!(reason.contains("product 2"), "{reason}")
            }
            other => panic!("expected freeze failure, got {other:?}"),
        }
        let d = decide(None, &stock(&[]), created(&[(9, 1)]));
        assert!(
            matches!(d.announce, Some(Announce::FreezeFailed { reason }) if reason.contains("unknown product 9"))
        );
    }

    #[test]
    fn payment_then_freeze_deducts_at_once() {
        let d = decide(None, &stock(&[(1, 5)]), Fact::PaymentSucceeded { order_id: 1 });
        assert_eq!(state(&d), ReservationState::AwaitingFreeze);
        let waiting = d.reservation.unwrap();
        let d = decide(Some(&waiting), &stock(&[(1, 5)]), created(&[(1, 2)]));
        assert_eq!(state(&d), ReservationState::Deducted);
        assert_eq!(
            d.movements[0],
            Movement {
                product_id: 1,
                kind: MovementKind::FreezeAndDeduct,
                available: -2,
                frozen: 0,
                sold: 2
            }
        );
        assert_eq!(d.announce, Some(Announce::Deducted { lines: lines(&[(1, 2)]) }));
    }

    #[test]
    fn payment_after_freeze_deducts_the_reservation_exactly() {
        let frozen = decide(None, &stock(&[(1, 5)]), created(&[(1, 2)])).reservation.unwrap();
        let d = decide(Some(&frozen), &stock(&[(1, 3)]), Fact::PaymentSucceeded { order_id: 1 });
        assert_eq!(state(&d), ReservationState::Deducted);
        assert_eq!(
            d.movements[0],
            Movement {
                product_id: 1,
                kind: MovementKind::Deduct,
                available: 0,
                frozen: -2,
                sold: 2
            }
        );
    }

    #[test]
    fn cancellation_releases_or_voids_and_is_idempotent() {
        let frozen = decide(None, &stock(&[(1, 5)]), created(&[(1, 2)])).reservation.unwrap();
        let d = decide(Some(&frozen), &stock(&[]), Fact::OrderCancelled { order_id: 1 });
        assert_eq!(state(&d), ReservationState::Released);
        assert_eq!(d.movements[0].available, 2);
        let released = d.reservation.unwrap();
        assert_eq!(
            decide(Some(&released), &stock(&[]), Fact::OrderCancelled { order_id: 1 }).reservation,
            None
        );

        let void =
            decide(None, &stock(&[]), Fact::OrderCancelled { order_id: 1 }).reservation.unwrap();
        assert_eq!(void.state, ReservationState::Void);
        let late = decide(Some(&void), &stock(&[(1, 5)]), created(&[(1, 2)]));
        assert!(
            late.reservation.is_none() && late.movements.is_empty(),
            "a cancelled order never freezes"
        );
    }

    #[test]
    fn an_expired_reservation_is_released_and_announced_so_the_order_cancels() {
        let frozen = decide(None, &stock(&[(1, 5)]), created(&[(1, 2)])).reservation.unwrap();
        let d = decide(Some(&frozen), &stock(&[(1, 3)]), Fact::Expired { after_secs: 1800 });
        assert_eq!(state(&d), ReservationState::Released);
        assert_eq!(
            d.movements[0],
            Movement {
                product_id: 1,
                kind: MovementKind::Expire,
                available: 2,
                frozen: -2,
                sold: 0
            }
        );
        let reason = "reservation expired: not paid within 1800 s".to_owned();
        assert_eq!(d.announce, Some(Announce::FreezeFailed { reason }));
        let released = d.reservation.unwrap();
        let late =
            decide(Some(&released), &stock(&[(1, 5)]), Fact::PaymentSucceeded { order_id: 1 });
        assert!(
            late.reservation.is_none() && late.movements.is_empty(),
            "a late payment deducts nothing"
        );
        assert!(
            decide(Some(&released), &stock(&[]), Fact::Expired { after_secs: 1800 })
                .movements
                .is_empty()
        );
    }

    #[test]
    fn payment_for_a_failed_freeze_changes_nothing() {
        let failed = decide(None, &stock(&[(1, 0)]), created(&[(1, 1)])).reservation.unwrap();
        let d = decide(Some(&failed), &stock(&[]), Fact::PaymentSucceeded { order_id: 1 });
        assert!(d.reservation.is_none() && d.movements.is_empty() && d.announce.is_none());
    }
}
