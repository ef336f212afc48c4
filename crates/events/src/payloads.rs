//! Event payloads. Field order is the Java classes' declaration order, because Jackson writes
//! fields in that order and the fixtures must round-trip byte for byte.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Event, EventType, Money, OrderNo, ProductId, Quantity};

/// Product id → quantity, as Java's `Map<Long, Integer>` (JSON object with string keys).
pub type ProductQuantities = BTreeMap<ProductId, Quantity>;

/// `OrderCreatedEvent`: published by order, consumed by stock and payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCreatedEvent {
    pub order_id: i64,
    pub order_no: OrderNo,
    pub user_id: i64,
    pub total_amount: Money,
    pub product_quantity_map: ProductQuantities,
    pub remark: Option<String>,
    pub timestamp: Option<i64>,
    pub event_id: String,
}

/// `PaymentSuccessEvent`: published by payment, consumed by order and stock.
///
/// `productQuantityMap` is our addition (the seed's known issue 1); the Java class lacks it,
/// so it is omitted when absent and every consumer works without it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentSuccessEvent {
    pub payment_id: i64,
    pub order_id: i64,
    pub order_no: OrderNo,
    pub user_id: i64,
    pub amount: Money,
    pub payment_method: String,
    pub transaction_no: String,
    pub timestamp: Option<i64>,
    pub event_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_quantity_map: Option<ProductQuantities>,
}

/// `StockFreezeFailedEvent`: published by stock, consumed by order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockFreezeFailedEvent {
    pub order_id: i64,
    pub order_no: OrderNo,
    pub reason: String,
    pub timestamp: Option<i64>,
    pub event_id: String,
}

/// Ours: the order was cancelled; stock releases its reservation, payment refunds a capture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCancelledEvent {
    pub order_id: i64,
    pub order_no: OrderNo,
    pub user_id: i64,
    pub reason: String,
    pub timestamp: Option<i64>,
    pub event_id: String,
}

/// Ours: stock deducted the order's reservation (frozen → sold). The order is PAID once it
/// has both this and a payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockDeductedEvent {
    pub order_id: i64,
    pub order_no: OrderNo,
    pub product_quantity_map: ProductQuantities,
    pub timestamp: Option<i64>,
    pub event_id: String,
}

/// Ours: the payment could not be taken; the order is cancelled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentFailedEvent {
    pub payment_id: i64,
    pub order_id: i64,
    pub order_no: OrderNo,
    pub user_id: i64,
    pub amount: Money,
    pub reason: String,
    pub timestamp: Option<i64>,
    pub event_id: String,
}

/// Ours: a captured payment was refunded because its order was cancelled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRefundedEvent {
    pub payment_id: i64,
    pub order_id: i64,
    pub order_no: OrderNo,
    pub amount: Money,
    pub transaction_no: String,
    pub timestamp: Option<i64>,
    pub event_id: String,
}

macro_rules! event {
    ($ty:ty, $kind:expr) => {
        impl Event for $ty {
            const TYPE: EventType = $kind;
            fn event_id(&self) -> &str {
                &self.event_id
            }
            fn order_no(&self) -> &str {
                &self.order_no
            }
        }
    };
}

event!(OrderCreatedEvent, EventType::OrderCreated);
event!(PaymentSuccessEvent, EventType::PaymentSuccess);
event!(StockFreezeFailedEvent, EventType::StockFreezeFailed);
event!(OrderCancelledEvent, EventType::OrderCancelled);
event!(StockDeductedEvent, EventType::StockDeducted);
event!(PaymentFailedEvent, EventType::PaymentFailed);
event!(PaymentRefundedEvent, EventType::PaymentRefunded);
