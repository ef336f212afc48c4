//! The stock service: one reservation per order; freezes on `order-created` (all lines or
//! none), deducts exactly that reservation on `payment-success`, releases it on our
//! `order-cancelled`. Announces `stock-freeze-failed` (the seed's) and `stock-deducted`
//! (ours).
//!
//! - [`domain`]: the pure decision table (arrival order does not matter).
//! - [`store`]: products, reservations, and the movement history.
//! - [`http`]: `GET /api/stock/{productId}`, `GET /api/stock/reservations/{orderNo}`, and
//!   `PUT /api/admin/stock/{productId}` to set available units.
//!
//! - [`expiry`]: releases frozen stock of an order never paid in time.
//!
//! Race safety: a decision reads the counters inside the write transaction, and a service
//! database has one writer, so two orders can never freeze the same last unit. A batch's
//! decisions read once (reservations, then counters) and each sees what the earlier ones
//! left.

pub mod domain;
pub mod expiry;
pub mod http;
pub mod store;

use std::sync::Arc;

use async_trait::async_trait;
use events::{
    Event, EventType, Message, OrderCancelledEvent, OrderCreatedEvent, OrderNo,
    PaymentSuccessEvent, StockDeductedEvent, StockFreezeFailedEvent,
};

use storage::Tx;
use stream::{HandleError, ServiceHost, StartError, TxHandler, outbox::Outbox};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    domain::{Announce, Decision, Fact, Reservation, decide},
    expiry::ExpirySettings,
};

pub const SERVICE: &str = "stock";
const DEFAULT_GROUP: &str = "stock-consumer-group";

pub struct StockService {
    pub host: Arc<ServiceHost>,
    freeze_failed_topic: String,
    deducted_topic: String,
}

impl StockService {
    /// Binds the consumers, starts the reservation expiry job (stopped by `token`, awaited
    /// through `tracker`) and returns the service.
    pub async fn start(
        host: Arc<ServiceHost>,
        tracker: &TaskTracker,
        token: CancellationToken,
    ) -> Result<Arc<StockService>, StartError> {
        let config = &host.config;
        let expiry = ExpirySettings::from_config(config)?;
        let svc = Arc::new(StockService {
            freeze_failed_topic: config
                .destination_of("stockFreezeFailedProducer-out-0", EventType::StockFreezeFailed),
            deducted_topic: config
                .destination_of("stockDeductedProducer-out-0", EventType::StockDeducted),
            host: host.clone(),
        });
        let cancelled = config.added_consumer(
            "orderCancelledConsumer",
            EventType::OrderCancelled,
            DEFAULT_GROUP,
        );
        let bindings = [
            (config.consumer("orderCreatedConsumer")?.clone(), EventType::OrderCreated),
            (config.consumer("paymentSuccessConsumer")?.clone(), EventType::PaymentSuccess),
            (cancelled, EventType::OrderCancelled),
        ];
        for (binding, kind) in bindings {
            host.bind(binding, Arc::new(FactHandler { svc: svc.clone(), kind })).await?;
        }
        tracker.spawn(expiry::run(svc.clone(), expiry, token));
        Ok(svc)
    }
}

struct FactHandler {
    svc: Arc<StockService>,
    kind: EventType,
}

impl FactHandler {
    fn fact(&self, message: &Message) -> Result<(OrderNo, Fact), HandleError> {
        Ok(match self.kind {
            EventType::OrderCreated => {
                let e: OrderCreatedEvent = message.decode()?;
                if e.product_quantity_map.is_empty() {
                    return Err(HandleError::Permanent(format!(
                        "order {} has no products",
                        e.order_no
                    )));
                }
                (
                    e.order_no,
                    Fact::OrderCreated { order_id: e.order_id, lines: e.product_quantity_map },
                )
            }
            EventType::PaymentSuccess => {
                let e: PaymentSuccessEvent = message.decode()?;
                (e.order_no, Fact::PaymentSucceeded { order_id: e.order_id })
            }
            EventType::OrderCancelled => {
                let e: OrderCancelledEvent = message.decode()?;
                (e.order_no, Fact::OrderCancelled { order_id: e.order_id })
            }
            other => {
                return Err(HandleError::Permanent(format!(
                    "stock service does not consume {}",
                    other.tag()
                )));
            }
        })
    }
}

#[async_trait]
impl TxHandler for FactHandler {
    async fn apply(&self, tx: &mut Tx, message: &Message) -> Result<(), HandleError> {
        self.apply_batch(tx, &[message]).await
    }

    async fn apply_batch(&self, tx: &mut Tx, messages: &[&Message]) -> Result<(), HandleError> {
        let facts = messages.iter().map(|m| self.fact(m)).collect::<Result<Vec<_>, _>>()?;
        for (order_no, note, _) in self.svc.apply_facts(tx, facts).await? {
            tracing::info!(%order_no, event = self.kind.tag(), %note, "stock decision");
        }
        Ok(())
    }
}

impl StockService {
    /// Decides `fact` for the order's reservation; see [`StockService::apply_facts`].
    async fn apply_fact(
        &self,
        tx: &mut Tx,
        order_no: &OrderNo,
        fact: Fact,
    ) -> Result<(String, bool), HandleError> {
        let mut decided = self.apply_facts(tx, vec![(order_no.clone(), fact)]).await?;
        let (_, note, moved) =
            decided.pop().ok_or_else(|| HandleError::Transient("no decision".into()))?;
        Ok((note, moved))
    }

    /// Decides each fact for its order's reservation, in order, and writes the decisions:
    /// movements, reservation, announcement. What they read comes in two statements for the
    /// whole list: the reservations, then the counters of every product they or the new
    /// orders name. On PostgreSQL that takes the locks in one order for any list (orderNo
    /// keys, reservations, products, each ascending), so two instances never wait on each
    /// other in a cycle. Each decision sees the reservations and counters the earlier ones
    /// left. Returns each order's note and whether stock moved.
    async fn apply_facts(
        &self,
        tx: &mut Tx,
        facts: Vec<(OrderNo, Fact)>,
    ) -> Result<Vec<(OrderNo, String, bool)>, HandleError> {
        let mut keys: Vec<&str> = facts.iter().map(|(order_no, _)| order_no.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        for key in &keys {
            storage::lock_key(tx, key).await?;
        }
        let mut reservations = store::reservations(tx, &keys).await?;
        let products: Vec<i64> = facts
            .iter()
            .flat_map(|(order_no, fact)| match fact {
                Fact::OrderCreated { lines, .. } => {
                    lines.keys().map(|p| p.get()).collect::<Vec<_>>()
                }
                _ => reservations
                    .get(order_no.as_str())
                    .map(|r| r.lines.keys().map(|p| p.get()).collect())
                    .unwrap_or_default(),
            })
            .collect();
        let mut counters = store::counters(tx, &products).await?;
        let mut decided = Vec::with_capacity(facts.len());
        for (order_no, fact) in facts {
            let existing = reservations.get(order_no.as_str());
            let d = decide(existing, &counters, fact);
            for m in &d.movements {
                store::apply(tx, Some(&order_no), m).await?;
                if let Some(c) = counters.get_mut(&m.product_id) {
                    c.available += m.available;
                    c.frozen += m.frozen;
                    c.sold += m.sold;
                }
            }
            if let Some(r) = &d.reservation {
                store::save_reservation(tx, &order_no, r).await?;
            }
            self.announce(tx, &order_no, existing, &d).await?;
            if let Some(r) = d.reservation {
                reservations.insert(order_no.to_string(), r);
            }
            decided.push((order_no, d.note, !d.movements.is_empty()));
        }
        Ok(decided)
    }

    /// Puts the decision's announcement, if any, in the outbox. Every announcement is about
    /// a reservation (the decision's, or the one it left as it was), whose orderId it names.
    async fn announce(
        &self,
        tx: &mut Tx,
        order_no: &OrderNo,
        existing: Option<&Reservation>,
        d: &Decision,
    ) -> Result<(), HandleError> {
        if d.announce.is_none() {
            return Ok(());
        }
        let Some(order_id) = d.reservation.as_ref().or(existing).map(|r| r.order_id) else {
            return Err(HandleError::Permanent(format!(
                "stock would announce for order {order_no}, which has no reservation"
            )));
        };
        let now = Some(events::now_millis());
        let order_no = order_no.clone();
        match &d.announce {
            Some(Announce::FreezeFailed { reason }) => {
                let e = StockFreezeFailedEvent {
                    order_id,
                    order_no,
                    reason: reason.clone(),
                    timestamp: now,
                    event_id: events::new_event_id(),
                };
                Outbox::enqueue(tx, &e.to_message_on(&self.freeze_failed_topic)).await?;
            }
            Some(Announce::Deducted { lines }) => {
                let e = StockDeductedEvent {
                    order_id,
                    order_no,
                    product_quantity_map: lines.clone(),
                    timestamp: now,
                    event_id: events::new_event_id(),
                };
                Outbox::enqueue(tx, &e.to_message_on(&self.deducted_topic)).await?;
            }
            None => {}
        }
        Ok(())
    }
}
