//! The payment service: on `order-created` it creates the order's one payment and completes
//! it (the seed's simplified logic: outcome and delay are settings), announcing
//! `payment-success` (with `productQuantityMap`, the seed's known issue 1) or our
//! `payment-failed`. On our `order-cancelled` it refunds a captured payment
//! (`payment-refunded`) or makes sure the order is never charged.
//!
//! A delayed completion is durable: the payment is stored PENDING with its due time and a
//! completer task finishes it, so a restart in between loses nothing.

mod announce;
pub mod domain;
pub mod http;
pub mod store;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use events::{Event, EventType, Message, Money, OrderCancelledEvent, OrderCreatedEvent};

use storage::Tx;
use stream::{HandleError, ServiceHost, StartError, TxHandler, outbox::Outbox};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::domain::{Announce, Completion, Fact, decide};

pub const SERVICE: &str = "payment";
const DEFAULT_GROUP: &str = "payment-consumer-group";

/// How the simulated provider behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentSettings {
    pub outcome: Completion,
    /// Time between creating a payment and completing it.
    pub delay: Duration,
    /// `paymentMethod` of every payment (the seed uses ALIPAY).
    pub method: String,
}

impl Default for PaymentSettings {
    fn default() -> Self {
        PaymentSettings {
            outcome: Completion::Succeed,
            delay: Duration::ZERO,
            method: "ALIPAY".into(),
        }
    }
}

pub struct PaymentService {
    pub host: Arc<ServiceHost>,
    settings: PaymentSettings,
    success_topic: String,
    failed_topic: String,
    refunded_topic: String,
}

impl PaymentService {
    pub async fn start(
        host: Arc<ServiceHost>,
        settings: PaymentSettings,
        tracker: &TaskTracker,
        token: CancellationToken,
    ) -> Result<Arc<PaymentService>, StartError> {
        let config = &host.config;
        let svc = Arc::new(PaymentService {
            success_topic: config
                .destination_of("paymentSuccessProducer-out-0", EventType::PaymentSuccess),
            failed_topic: config
                .destination_of("paymentFailedProducer-out-0", EventType::PaymentFailed),
            refunded_topic: config
                .destination_of("paymentRefundedProducer-out-0", EventType::PaymentRefunded),
            settings,
            host: host.clone(),
        });
        let cancelled = config.added_consumer(
            "orderCancelledConsumer",
            EventType::OrderCancelled,
            DEFAULT_GROUP,
        );
        host.bind(
            config.consumer("orderCreatedConsumer")?.clone(),
            Arc::new(FactHandler { svc: svc.clone(), kind: EventType::OrderCreated }),
        )
        .await?;
        host.bind(
            cancelled,
            Arc::new(FactHandler { svc: svc.clone(), kind: EventType::OrderCancelled }),
        )
        .await?;
        tracker.spawn(completer(svc.clone(), token));
        Ok(svc)
    }

    /// Completes the order's PENDING payment with the configured outcome.
    async fn complete(&self, tx: &mut Tx, order_no: &str) -> Result<(), HandleError> {
        storage::lock_key(tx, order_no).await?;
        match store::by_order(tx, order_no).await? {
            Some(p) => self.complete_payment(tx, p).await,
            None => Ok(()),
        }
    }

    /// Completes `p`, read (and locked) in this transaction.
    async fn complete_payment(&self, tx: &mut Tx, p: store::Payment) -> Result<(), HandleError> {
        let order_no = p.order_no.as_str();
        let d = decide(Some(p.status), Fact::Completed(self.settings.outcome.clone()));
        let Some(status) = d.status else { return Ok(()) };
        let now = events::now_millis();
        match d.announce {
            Some(Announce::Success) => {
                let transaction_no = format!("TXN{now}{}", p.payment_id);
                let e = announce::success(&p, transaction_no.clone(), now)?;
                store::set_status(tx, p.payment_id, status, Some(&transaction_no), None).await?;
                Outbox::enqueue(tx, &e.to_message_on(&self.success_topic)).await?;
            }
            Some(Announce::Failed { reason }) => {
                let e = announce::failed(&p, reason.clone(), now)?;
                store::set_status(tx, p.payment_id, status, None, Some(&reason)).await?;
                Outbox::enqueue(tx, &e.to_message_on(&self.failed_topic)).await?;
            }
            Some(Announce::Refunded) | None => {
                store::set_status(tx, p.payment_id, status, None, None).await?
            }
        }
        tracing::info!(order_no, status = status.as_str(), "payment completed");
        Ok(())
    }
}

struct FactHandler {
    svc: Arc<PaymentService>,
    kind: EventType,
}

impl FactHandler {
    /// Payments for orders seen for the first time, one insert for all of them. Any payment
    /// an order has already makes `order-created` a no-op (see `decide`), so the insert
    /// itself asks (`ON CONFLICT DO NOTHING`): one statement, not a read and an insert each.
    async fn orders_created(
        &self,
        tx: &mut Tx,
        events: &[OrderCreatedEvent],
    ) -> Result<(), HandleError> {
        let Some(status) = decide(None, Fact::OrderCreated).status else { return Ok(()) };
        // Ascending, so two instances locking overlapping batches never wait in a cycle.
        let mut keys: Vec<&str> = events.iter().map(|e| e.order_no.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            storage::lock_key(tx, key).await?;
        }
        let settings = &self.svc.settings;
        let delay = i64::try_from(settings.delay.as_millis()).unwrap_or(i64::MAX);
        let mut new = Vec::with_capacity(events.len());
        for e in events {
            if e.total_amount == Money::ZERO {
                if store::by_order(tx, &e.order_no).await?.is_some() {
                    continue;
                }
                return Err(HandleError::Permanent(format!(
                    "order {} has a non-positive total {}",
                    e.order_no, e.total_amount
                )));
            }
            new.push(store::NewPayment {
                order_no: &e.order_no,
                order_id: e.order_id,
                user_id: e.user_id,
                amount: Some(e.total_amount),
                method: &settings.method,
                status,
                lines: serde_json::to_string(&e.product_quantity_map).unwrap_or_default(),
                complete_at: Some(events::now_millis().saturating_add(delay)),
            });
        }
        let payments = store::insert_new(tx, &new).await?;
        if settings.delay.is_zero() {
            for payment in payments {
                self.svc.complete_payment(tx, payment).await?;
            }
        }
        Ok(())
    }

    async fn order_cancelled(
        &self,
        tx: &mut Tx,
        e: OrderCancelledEvent,
    ) -> Result<(), HandleError> {
        storage::lock_key(tx, &e.order_no).await?;
        let existing = store::by_order(tx, &e.order_no).await?;
        let d = decide(existing.as_ref().map(|p| p.status), Fact::OrderCancelled);
        let Some(status) = d.status else { return Ok(()) };
        let Some(p) = existing else {
            store::insert(
                tx,
                store::NewPayment {
                    order_no: &e.order_no,
                    order_id: e.order_id,
                    user_id: e.user_id,
                    amount: None,
                    method: &self.svc.settings.method,
                    status,
                    lines: "{}".into(),
                    complete_at: None,
                },
            )
            .await?;
            return Ok(());
        };
        store::set_status(tx, p.payment_id, status, None, Some(&e.reason)).await?;
        if d.announce == Some(Announce::Refunded) {
            let r = announce::refunded(&p, events::now_millis())?;
            Outbox::enqueue(tx, &r.to_message_on(&self.svc.refunded_topic)).await?;
            tracing::info!(order_no = %p.order_no, "payment refunded");
        }
        Ok(())
    }
}

#[async_trait]
impl TxHandler for FactHandler {
    async fn apply(&self, tx: &mut Tx, message: &Message) -> Result<(), HandleError> {
        self.apply_batch(tx, &[message]).await
    }

    async fn apply_batch(&self, tx: &mut Tx, messages: &[&Message]) -> Result<(), HandleError> {
        match self.kind {
            EventType::OrderCreated => {
                let events = messages
                    .iter()
                    .map(|m| m.decode())
                    .collect::<Result<Vec<OrderCreatedEvent>, _>>()?;
                self.orders_created(tx, &events).await
            }
            EventType::OrderCancelled => {
                for m in messages {
                    self.order_cancelled(tx, m.decode()?).await?;
                }
                Ok(())
            }
            other => Err(HandleError::Permanent(format!(
                "payment service does not consume {}",
                other.tag()
            ))),
        }
    }
}

/// Completes delayed payments when they fall due. Without a delay payments complete in the
/// handler's own transaction; the completer then only looks once a second for any left
/// PENDING by an earlier run with a delay.
async fn completer(svc: Arc<PaymentService>, token: CancellationToken) {
    let poll = if svc.settings.delay.is_zero() {
        Duration::from_secs(1)
    } else {
        (svc.settings.delay / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
    };
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(poll) => {}
        }
        let due = match store::due(svc.host.db.reader(), events::now_millis()).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "payment completer could not read due payments");
                continue;
            }
        };
        for order_no in due {
            let result = async {
                let mut tx = storage::Tx::begin(&svc.host.db).await?;
                svc.complete(&mut tx, &order_no).await?;
                tx.commit().await?;
                Ok::<_, HandleError>(())
            }
            .await;
            match result {
                Ok(()) => svc.host.relay.wake(),
                Err(e) => {
                    tracing::warn!(order_no, error = %e, "payment completion failed; will retry")
                }
            }
        }
    }
}
