//! The Java services' event bodies (fixtures/events) decode, keep exact decimals, and
//! re-encode byte for byte; our messages carry the Java producers' metadata.

use std::{path::PathBuf, str::FromStr};

use events::*;
use rust_decimal::Decimal;

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/events").join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("fixture {} unreadable: {e}", path.display()))
        .trim_end()
        .to_owned()
}

fn round_trip<T: Event + std::fmt::Debug>(name: &str) -> T {
    let json = fixture(name);
    let event: T = serde_json::from_str(&json).expect("fixture decodes");
    assert_eq!(serde_json::to_string(&event).unwrap(), json, "{name} re-encodes byte for byte");
    event
}

#[test]
fn order_created_fixture_round_trips() {
    let e: OrderCreatedEvent = round_trip("order-created.json");
    assert_eq!(e.order_id, 10001);
    assert_eq!(e.order_no.as_str(), "ORD1736900000001");
    assert_eq!(e.total_amount.amount(), Decimal::from_str("199.90").unwrap());
    assert_eq!(e.total_amount.amount().scale(), 2, "scale kept: 199.90 is not 199.9");
    let units = |p| e.product_quantity_map.get(&ProductId::new(p).unwrap()).map(|q| q.get());
    assert_eq!((units(1001), units(1002)), (Some(2), Some(1)));
    assert_eq!(e.timestamp, Some(1736900000000));
}

#[test]
fn payment_success_fixture_round_trips_without_product_map() {
    let e: PaymentSuccessEvent = round_trip("payment-success.json");
    assert_eq!(e.payment_id, 50001);
    assert_eq!(e.amount.amount(), Decimal::from_str("199.90").unwrap());
    assert_eq!(e.transaction_no, "TXN173690000012350001");
    assert!(e.product_quantity_map.is_none(), "the Java event has no productQuantityMap");
}

#[test]
fn stock_freeze_failed_fixture_round_trips() {
    let e: StockFreezeFailedEvent = round_trip("stock-freeze-failed.json");
    assert_eq!(e.reason, "商品 1002 库存不足");
}

#[test]
fn amounts_accept_numeric_strings_and_exceed_f64_precision() {
    let json = fixture("order-created.json")
        .replace("\"totalAmount\":199.90", "\"totalAmount\":\"12345678901234567.89\"");
    let e: OrderCreatedEvent = serde_json::from_str(&json).unwrap();
    assert_eq!(e.total_amount.amount(), Decimal::from_str("12345678901234567.89").unwrap());

    let json = fixture("order-created.json")
        .replace("\"totalAmount\":199.90", "\"totalAmount\":12345678901234567.89");
    let e: OrderCreatedEvent = serde_json::from_str(&json).unwrap();
    assert_eq!(e.total_amount.to_string(), "12345678901234567.89", "no f64 rounding");
}

#[test]
fn unknown_fields_are_ignored_and_missing_required_fields_are_named() {
    let json = fixture("stock-freeze-failed.json").replacen('{', "{\"newField\":[1,2],", 1);
    let e: StockFreezeFailedEvent = serde_json::from_str(&json).unwrap();
    assert_eq!(e.order_id, 10002);

    let msg = Message {
        topic: "stock-freeze-failed".into(),
        tags: "STOCK_FREEZE_FAILED".into(),
        keys: "x".into(),
        properties: Default::default(),
        body: br#"{"orderId":1,"reason":"r","eventId":"e"}"#.to_vec(),
    };
    let err = msg.decode::<StockFreezeFailedEvent>().unwrap_err().to_string();
    assert!(err.contains("orderNo"), "error names the missing field: {err}");
}

#[test]
fn messages_carry_the_java_producers_metadata() {
    let e: OrderCreatedEvent = serde_json::from_str(&fixture("order-created.json")).unwrap();
    let m = e.to_message();
    assert_eq!(m.topic, "order-created");
    assert_eq!(m.tags, "ORDER_CREATED");
    assert_eq!(m.keys, "ORD1736900000001");
    assert_eq!(m.properties[PROP_EVENT_ID], "6f1c3c1e-6f0e-4a3e-9a53-0c7f0c0b9c11");
    assert_eq!(m.properties[PROP_EVENT_TYPE], "ORDER_CREATED");
    assert_eq!(m.properties[PROP_CONTENT_TYPE], "application/json");
    assert_eq!(String::from_utf8(m.body.clone()).unwrap(), fixture("order-created.json"));
    assert_eq!(m.event_id().unwrap(), e.event_id);

    let p: PaymentSuccessEvent = serde_json::from_str(&fixture("payment-success.json")).unwrap();
    let m = p.to_message();
    assert_eq!((m.topic.as_str(), m.tags.as_str()), ("payment-success", "PAYMENT_SUCCESS"));
    let s: StockFreezeFailedEvent =
        serde_json::from_str(&fixture("stock-freeze-failed.json")).unwrap();
    let m = s.to_message();
    assert_eq!((m.topic.as_str(), m.tags.as_str()), ("stock-freeze-failed", "STOCK_FREEZE_FAILED"));
}

#[test]
fn event_id_falls_back_to_the_body_when_the_property_is_absent() {
    let mut m = serde_json::from_str::<OrderCreatedEvent>(&fixture("order-created.json"))
        .unwrap()
        .to_message();
    m.properties.clear();
    assert_eq!(m.event_id().unwrap(), "6f1c3c1e-6f0e-4a3e-9a53-0c7f0c0b9c11");
    m.body = b"not json".to_vec();
    assert!(m.event_id().is_err());
}

#[test]
fn an_event_with_a_bad_order_number_or_a_negative_amount_does_not_decode() {
    let json = fixture("order-created.json");
    let spaced = json.replace("\"ORD1736900000001\"", "\"ORD 1\"");
    let e = serde_json::from_str::<OrderCreatedEvent>(&spaced).unwrap_err().to_string();
    assert!(e.contains("orderNo"), "{e}");
    let negative = json.replace("\"totalAmount\":199.90", "\"totalAmount\":-199.90");
    let e = serde_json::from_str::<OrderCreatedEvent>(&negative).unwrap_err().to_string();
    assert!(e.contains("must not be negative"), "{e}");
}
