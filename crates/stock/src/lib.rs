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
//! database has one writer, so two orders can never freeze the same last unit.

pub mod domain;
pub mod expiry;
pub mod http;
pub mod store;

use std::sync::Arc;

use async_trait::async_trait;
use events::{
    Event, EventType, Message, OrderCancelledEvent, OrderCreatedEvent, PaymentSuccessEvent, StockDeductedEvent,
    StockFreezeFailedEvent,
};

use stream::{HandleError, ServiceHost, StartError, Tx, TxHandler, outbox::Outbox};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    domain::{Announce, Fact, decide},
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
    pub async fn start(host: Arc<ServiceHost>, tracker: &TaskTracker, token: CancellationToken) -> Result<Arc<StockService>, StartError> {
        let config = &host.config;
        let expiry = ExpirySettings::from_config(config)?;
        let svc = Arc::new(StockService {
            freeze_failed_topic: config.destination_of("stockFreezeFailedProducer-out-0", EventType::StockFreezeFailed),
            deducted_topic: config.destination_of("stockDeductedProducer-out-0", EventType::StockDeducted),
            host: host.clone(),
        });
        let cancelled = config.added_consumer("orderCancelledConsumer", EventType::OrderCancelled, DEFAULT_GROUP);
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
    fn fact(&self, message: &Message) -> Result<(String, Fact), HandleError> {
        Ok(match self.kind {
            EventType::OrderCreated => {
                let e: OrderCreatedEvent = message.decode()?;
                if e.product_quantity_map.is_empty() {
                    return Err(HandleError::Permanent(format!("order {} has no products", e.order_no)));
                }
                (e.order_no, Fact::OrderCreated { order_id: e.order_id, lines: e.product_quantity_map })
            }
            EventType::PaymentSuccess => {
                let e: PaymentSuccessEvent = message.decode()?;
                (e.order_no, Fact::PaymentSucceeded { order_id: e.order_id })
            }
            EventType::OrderCancelled => {
                let e: OrderCancelledEvent = message.decode()?;
                (e.order_no, Fact::OrderCancelled { order_id: e.order_id })
            }
            other => return Err(HandleError::Permanent(format!("stock service does not consume {}", other.tag()))),
        })
    }
}

#[async_trait]
impl TxHandler for FactHandler {
    async fn apply(&self, tx: &mut Tx, message: &Message) -> Result<(), HandleError> {
        let (order_no, fact) = self.fact(message)?;
        let (note, _) = self.svc.apply_fact(tx, &order_no, fact).await?;
        tracing::info!(order_no, event = self.kind.tag(), %note, "stock decision");
        Ok(())
    }
}

impl StockService {
    /// Decides `fact` for the order's reservation (under the order's lock, on counters read
    /// in this transaction) and writes the decision: movements, reservation, announcement.
    /// Returns the decision's note and whether stock moved.
    async fn apply_fact(&self, tx: &mut Tx, order_no: &str, fact: Fact) -> Result<(String, bool), HandleError> {
        stream::db::lock_key(tx, order_no).await?;
        let existing = store::reservation(tx, order_no).await?;
        // Only a freeze weighs the counters; the other moves change the reservation's own
        // units, their updates taking the product rows in ascending id order as a freeze does.
        let counters = match &fact {
            Fact::OrderCreated { lines, .. } => store::counters(tx, lines.keys().copied()).await?,
            _ => Default::default(),
        };
        let d = decide(existing.as_ref(), &counters, fact);
        for m in &d.movements {
            store::apply(tx, Some(order_no), m).await?;
        }
        if let Some(r) = &d.reservation {
            store::save_reservation(tx, order_no, r).await?;
        }
        let order_id = d.reservation.as_ref().or(existing.as_ref()).map(|r| r.order_id).unwrap_or_default();
        let now = Some(events::now_millis());
        let order_no = order_no.to_owned();
        match d.announce {
            Some(Announce::FreezeFailed { reason }) => {
                let e = StockFreezeFailedEvent { order_id, order_no, reason, timestamp: now, event_id: events::new_event_id() };
                Outbox::enqueue(tx, &e.to_message_on(&self.freeze_failed_topic)).await?;
            }
            Some(Announce::Deducted { lines }) => {
                let e = StockDeductedEvent {
                    order_id,
                    order_no,
                    product_quantity_map: lines,
                    timestamp: now,
                    event_id: events::new_event_id(),
                };
                Outbox::enqueue(tx, &e.to_message_on(&self.deducted_topic)).await?;
            }
            None => {}
        }
        Ok((d.note, !d.movements.is_empty()))
    }
}
