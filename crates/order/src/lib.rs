//! The order service: takes orders over HTTP, prices them from its catalogue, announces
//! `order-created`, and follows payment and stock to a terminal state (PAID or CANCELLED).
//!
//! - [`domain`]: the pure state machine (no I/O).
//! - [`store`]: its tables; every write joins the caller's transaction.
//! - [`http`]: `POST /api/orders` (with `Idempotency-Key`), `GET /api/orders/{orderNo}`,
//!   `GET /api/orders?userId=&status=`, the product catalogue.
//! - Consumers (group `order-consumer-group` from the YAML): `payment-success` and
//!   `stock-freeze-failed` (the seed's), `stock-deducted`, `payment-failed`,
//!   `payment-refunded` (ours). Each runs through the inbox: one effect per eventId.
//! - [`creator`]: group commit for `POST /api/orders`.
//! - [`compensation`]: re-sends what a stuck order announced, cancels it past its deadline.

pub mod compensation;
pub mod creator;
pub mod domain;
pub mod http;
pub mod store;

use std::sync::Arc;

use async_trait::async_trait;
use events::{
    Event, EventType, Message, OrderCancelledEvent, OrderNo, PaymentFailedEvent,
    PaymentRefundedEvent, PaymentSuccessEvent, StockDeductedEvent, StockFreezeFailedEvent,
};
use storage::Tx;
use stream::{HandleError, ServiceHost, StartError, TxHandler, outbox::Outbox};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    compensation::CompensationSettings,
    domain::{Decision, Fact, OrderStatus, PaymentRef, decide},
};

pub const SERVICE: &str = "order";
const DEFAULT_GROUP: &str = "order-consumer-group";

/// The running service: its host (database, binder, relay) and where its events go.
pub struct OrderService {
    pub host: Arc<ServiceHost>,
    creator: creator::Creator,
    order_created_topic: String,
    order_cancelled_topic: String,
}

impl OrderService {
    /// Puts an event of the order in the outbox and keeps it for the compensation job.
    pub(crate) async fn announce(
        &self,
        tx: &mut Tx,
        order_no: &str,
        m: &Message,
    ) -> Result<(), stream::outbox::OutboxError> {
        Outbox::enqueue(tx, m).await?;
        store::save_message(tx, order_no, m).await?;
        Ok(())
    }

    /// Announces `order-cancelled` (stock releases, payment refunds) and records it.
    pub(crate) async fn announce_cancellation(
        &self,
        tx: &mut Tx,
        order_no: &OrderNo,
        order_id: i64,
        user_id: i64,
        reason: String,
    ) -> Result<(), HandleError> {
        let event = OrderCancelledEvent {
            order_id,
            order_no: order_no.clone(),
            user_id,
            reason,
            timestamp: Some(events::now_millis()),
            event_id: events::new_event_id(),
        };
        self.announce(tx, order_no, &event.to_message_on(&self.order_cancelled_topic)).await?;
        store::record(tx, order_no, EventType::OrderCancelled.tag(), &event.reason).await?;
        Ok(())
    }

    /// Writes decision `d` about order `o` (`event` caused it, for the history): its state,
    /// the messages it still keeps, the history line, and the cancellation it announces.
    /// When the order has just ended (PAID or CANCELLED), its time from creation is recorded
    /// once the transaction commits.
    pub(crate) async fn apply(
        &self,
        tx: &mut Tx,
        order_no: &OrderNo,
        o: &store::Loaded,
        d: Decision,
        event: &str,
    ) -> Result<(), HandleError> {
        // A fact that changes nothing (a late copy, once its inbox record is gone, or one that
        // arrives after the end) leaves the order as it is and its history line once.
        if d.state == o.state && d.cancel.is_none() {
            store::record_once(tx, order_no, event, &d.note).await?;
            return Ok(());
        }
        store::save_state(tx, order_no, &d.state).await?;
        store::prune_messages(tx, order_no, &d.state).await?;
        store::record(tx, order_no, event, &d.note).await?;
        if let Some(reason) = d.cancel {
            self.announce_cancellation(tx, order_no, o.order_id, o.user_id, reason).await?;
        }
        let ended = d.state.status != o.state.status && d.state.status != OrderStatus::Pending;
        if ended {
            let metrics = self.host.metrics.clone();
            let (status, created_at) = (d.state.status, o.created_at);
            tx.on_commit(move || {
                let took = binding::metrics::age(created_at, events::now_millis());
                let outcome = [("outcome", status.as_str())];
                metrics.observe(binding::metrics::ORDER_SECONDS, &outcome, took);
            });
        }
        Ok(())
    }

    /// Binds the consumers, starts the compensation job (stopped by `token`, awaited through
    /// `tracker`) and returns the service; serve [`http::routes`] for its API.
    pub async fn start(
        host: Arc<ServiceHost>,
        tracker: &TaskTracker,
        token: CancellationToken,
    ) -> Result<Arc<OrderService>, StartError> {
        let config = &host.config;
        let compensation = CompensationSettings::from_config(config)?;
        let (creator, creations) = creator::Creator::new();
        let svc = Arc::new(OrderService {
            creator,
            order_created_topic: config
                .destination_of("orderCreatedProducer-out-0", EventType::OrderCreated),
            order_cancelled_topic: config
                .destination_of("orderCancelledProducer-out-0", EventType::OrderCancelled),
            host: host.clone(),
        });
        let ours =
            |function: &str, kind: EventType| config.added_consumer(function, kind, DEFAULT_GROUP);
        let bindings = [
            (config.consumer("paymentSuccessConsumer")?.clone(), EventType::PaymentSuccess),
            (config.consumer("stockFreezeFailedConsumer")?.clone(), EventType::StockFreezeFailed),
            (ours("stockDeductedConsumer", EventType::StockDeducted), EventType::StockDeducted),
            (ours("paymentFailedConsumer", EventType::PaymentFailed), EventType::PaymentFailed),
            (
                ours("paymentRefundedConsumer", EventType::PaymentRefunded),
                EventType::PaymentRefunded,
            ),
        ];
        for (binding, kind) in bindings {
            host.bind(binding, Arc::new(FactHandler { svc: svc.clone(), kind })).await?;
        }
        tracker.spawn(creator::run(svc.clone(), creations, token.clone()));
        tracker.spawn(compensation::run(svc.clone(), compensation, token));
        Ok(svc)
    }
}

/// Applies one kind of incoming event to the order it names.
struct FactHandler {
    svc: Arc<OrderService>,
    kind: EventType,
}

impl FactHandler {
    fn fact(&self, message: &Message) -> Result<(OrderNo, Fact), HandleError> {
        Ok(match self.kind {
            EventType::PaymentSuccess => {
                let e: PaymentSuccessEvent = message.decode()?;
                let p = PaymentRef {
                    payment_id: e.payment_id,
                    transaction_no: e.transaction_no,
                    amount: e.amount,
                };
                (e.order_no, Fact::PaymentSucceeded(p))
            }
            EventType::StockFreezeFailed => {
                let e: StockFreezeFailedEvent = message.decode()?;
                (e.order_no, Fact::StockFreezeFailed { reason: e.reason })
            }
            EventType::StockDeducted => {
                (message.decode::<StockDeductedEvent>()?.order_no, Fact::StockDeducted)
            }
            EventType::PaymentFailed => {
                let e: PaymentFailedEvent = message.decode()?;
                (e.order_no, Fact::PaymentFailed { reason: e.reason })
            }
            EventType::PaymentRefunded => {
                (message.decode::<PaymentRefundedEvent>()?.order_no, Fact::PaymentRefunded)
            }
            other => {
                return Err(HandleError::Permanent(format!(
                    "order service does not consume {}",
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

    /// One statement reads every order the batch names; each decision then sees the state
    /// the batch's earlier messages left, and only writes (which wait for the commit).
    async fn apply_batch(&self, tx: &mut Tx, messages: &[&Message]) -> Result<(), HandleError> {
        let facts = messages.iter().map(|m| self.fact(m)).collect::<Result<Vec<_>, _>>()?;
        let order_nos: Vec<&str> = facts.iter().map(|(order_no, _)| order_no.as_str()).collect();
        let mut orders = store::load_states(tx, &order_nos).await?;
        for (order_no, fact) in facts {
            let Some(order) = orders.get_mut(order_no.as_str()) else {
                return Err(HandleError::Permanent(format!("unknown order {order_no}")));
            };
            let d = decide(&order.state, fact);
            let state = d.state.clone();
            self.svc.apply(tx, &order_no, order, d, self.kind.tag()).await?;
            tracing::info!(
                %order_no,
                event = self.kind.tag(),
                status = state.status.as_str(),
                "order updated"
            );
            order.state = state;
        }
        Ok(())
    }
}
