//! The seed's application-rocketmq.yml files (fixtures/config) load unchanged, and a
//! bad configuration is refused with the key named.

use std::path::PathBuf;

use binding::{StreamConfig, config::ConfigError, tags::TagExpression};

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/config").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn load(text: &str) -> Result<StreamConfig, ConfigError> {
    StreamConfig::from_yaml_with_env(text, &|_| None)
}

#[test]
fn order_service_yaml_loads_unchanged() {
    let c = load(&fixture("order-service.yml")).unwrap();
    assert_eq!(c.name_server.as_deref(), Some("127.0.0.1:39876"), "placeholder default applied");
    assert_eq!(c.functions, ["paymentSuccessConsumer", "stockFreezeFailedConsumer"]);
    let p = &c.consumers["paymentSuccessConsumer-in-0"];
    assert_eq!(
        (p.destination.as_str(), p.group.as_str()),
        ("payment-success", "order-consumer-group")
    );
    assert_eq!(p.subscription, TagExpression::AnyOf(vec!["PAYMENT_SUCCESS".into()]));
    assert!(!p.orderly);
    assert_eq!((p.max_attempts, p.concurrency, p.batch_size), (3, 1, 1), "Spring's defaults");
    let s = &c.consumers["stockFreezeFailedConsumer-in-0"];
    assert_eq!(
        (s.destination.as_str(), s.group.as_str()),
        ("stock-freeze-failed", "order-consumer-group")
    );
    let out = &c.producers["orderCreatedProducer-out-0"];
    assert_eq!(out.destination, "order-created");
    assert_eq!(out.group.as_deref(), Some("order-producer-group"));
    assert!(!out.sync);
    assert_eq!(out.content_type, "application/json");
}

#[test]
fn stock_and_payment_yaml_load_unchanged() {
    let s = load(&fixture("stock-service.yml")).unwrap();
    assert_eq!(s.functions, ["orderCreatedConsumer", "paymentSuccessConsumer"]);
    assert_eq!(s.consumer("orderCreatedConsumer").unwrap().group, "stock-consumer-group");
    assert_eq!(s.consumer("paymentSuccessConsumer").unwrap().destination, "payment-success");
    assert_eq!(
        s.destination_of("stockDeductedProducer-out-0", events::EventType::StockDeducted),
        "stock-deducted",
        "an added topic defaults to its own name"
    );
    let renamed = fixture("stock-service.yml")
        .replace("destination: stock-freeze-failed", "destination: sff-renamed");
    let r = load(&renamed).unwrap();
    assert_eq!(
        r.destination_of("stockFreezeFailedProducer-out-0", events::EventType::StockFreezeFailed),
        "sff-renamed"
    );
    let added =
        s.added_consumer("orderCancelledConsumer", events::EventType::OrderCancelled, "unused");
    assert_eq!(
        (added.destination.as_str(), added.group.as_str()),
        ("order-cancelled", "stock-consumer-group")
    );
    assert!(added.subscription.matches("ORDER_CANCELLED"));
    assert_eq!(
        s.producers["stockFreezeFailedProducer-out-0"].group.as_deref(),
        Some("stock-producer-group")
    );

    let p = load(&fixture("payment-service.yml")).unwrap();
    assert_eq!(p.functions, ["orderCreatedConsumer"]);
    assert_eq!(p.consumer("orderCreatedConsumer").unwrap().group, "payment-consumer-group");
    assert_eq!(
        p.producers["paymentSuccessProducer-out-0"].group.as_deref(),
        Some("payment-producer-group")
    );
    assert_eq!(p.main_group(), Some("payment-consumer-group"));
}

#[test]
fn name_server_placeholder_takes_the_environment() {
    let c = StreamConfig::from_yaml_with_env(&fixture("order-service.yml"), &|k| {
        (k == "ROCKETMQ_NAME_SERVER").then(|| "10.0.0.5:9876".to_owned())
    })
    .unwrap();
    assert_eq!(c.name_server.as_deref(), Some("10.0.0.5:9876"));
}

#[test]
fn tuning_keys_are_read_from_either_binding_map_with_relaxed_names() {
    let yaml = fixture("stock-service.yml")
        .replace(
            "          orderCreatedConsumer-in-0:\n            consumer:\n              subscription: 'ORDER_CREATED'\n              orderly: false",
            "          orderCreatedConsumer-in-0:\n            consumer:\n              subscription: 'ORDER_CREATED || PAYMENT_SUCCESS'\n              orderly: true\n              max-attempts: 5\n              concurrency: 20",
        )
        .replace(
            "          destination: order-created\n          content-type: application/json\n          group: stock-consumer-group",
            "          destination: order-created\n          content-type: application/json\n          group: stock-consumer-group\n          consumer:\n            batchSize: 10\n            back-off-initial-interval: 50",
        );
    let c = load(&yaml).unwrap();
    let b = c.consumer("orderCreatedConsumer").unwrap();
    assert!(b.orderly);
    assert_eq!((b.max_attempts, b.concurrency, b.batch_size), (5, 20, 10));
    assert_eq!(b.backoff.initial.as_millis(), 50);
    assert!(b.subscription.matches("PAYMENT_SUCCESS"));
}

#[test]
fn bad_values_are_refused_naming_the_key() {
    let base = fixture("order-service.yml");
    let cases = [
        (
            base.replace(
                "          group: order-consumer-group\n        stockFreezeFailedConsumer",
                "        stockFreezeFailedConsumer",
            ),
            "spring.cloud.stream.bindings.paymentSuccessConsumer-in-0.group",
        ),
        (
            base.replace(
                "              subscription: 'PAYMENT_SUCCESS'\n              orderly: false",
                "              subscription: 'PAYMENT_SUCCESS'\n              orderly: perhaps",
            ),
            "spring.cloud.stream.rocketmq.bindings.paymentSuccessConsumer-in-0.consumer.orderly",
        ),
        (
            base.replace(
                "              subscription: 'PAYMENT_SUCCESS'\n",
                "              subscription: 'PAYMENT_SUCCESS'\n              max-attempts: 0\n",
            ),
            "spring.cloud.stream.rocketmq.bindings.paymentSuccessConsumer-in-0.consumer.max-attempts",
        ),
        (
            base.replace("${ROCKETMQ_NAME_SERVER:127.0.0.1:39876}", "${ROCKETMQ_NAME_SERVER}"),
            "spring.cloud.stream.rocketmq.binder.name-server",
        ),
        (
            base.replace(
                "paymentSuccessConsumer;stockFreezeFailedConsumer",
                "paymentSuccessConsumer;refundConsumer",
            ),
            "spring.cloud.stream.bindings.refundConsumer-in-0.destination",
        ),
        (
            base.replace("subscription: 'STOCK_FREEZE_FAILED'", "subscription: ''"),
            "spring.cloud.stream.rocketmq.bindings.stockFreezeFailedConsumer-in-0.consumer.subscription",
        ),
    ];
    for (yaml, key) in cases {
        assert_ne!(yaml, base, "test case edits the file");
        let err = load(&yaml).unwrap_err();
        assert_eq!(err.key, key, "{err}");
    }
    assert_eq!(load("spring: {}").unwrap_err().key, "spring.cloud.stream");
    assert_eq!(load(": : :").unwrap_err().key, "(document)");
}

#[test]
fn durations_of_the_orderflow_section_are_seconds_and_bad_ones_name_the_key() {
    let base = fixture("order-service.yml");
    let with =
        |section: &str| load(&format!("{base}\norderflow:\n  compensation:\n{section}")).unwrap();
    let c = with("    resend-after: 30\n    cancel-after: '${CANCEL_AFTER:900}'\n");
    let default = std::time::Duration::from_secs(1);
    assert_eq!(c.seconds("compensation.resend-after", default).unwrap().as_secs(), 30);
    assert_eq!(
        c.seconds("compensation.cancel-after", default).unwrap().as_secs(),
        900,
        "placeholder default"
    );
    assert_eq!(
        c.seconds("compensation.interval", default).unwrap(),
        default,
        "absent: the default"
    );
    let c = with("    resend-after: 90s\n    cancel-after: 2h\n");
    assert_eq!(c.seconds("compensation.resend-after", default).unwrap().as_secs(), 90);
    assert_eq!(c.seconds("compensation.cancel-after", default).unwrap().as_secs(), 7200);
    for bad in ["0", "-5", "soon", "[1]", "0s"] {
        let c = with(&format!("    resend-after: {bad}\n"));
        let err = c.seconds("compensation.resend-after", default).unwrap_err();
        assert_eq!(err.key, "orderflow.compensation.resend-after", "{bad}: {err}");
    }
}

#[test]
fn retention_defaults_follow_rocketmq_and_a_too_short_inbox_window_is_refused_by_name() {
    let base = fixture("order-service.yml");
    let with =
        |section: &str| load(&format!("{base}\norderflow:\n  retention:\n{section}")).unwrap();
    let d = binding::Retention::from_config(&load(&base).unwrap()).unwrap();
    assert_eq!(d.messages.as_secs(), 72 * 3600, "RocketMQ's fileReservedTime");
    assert_eq!(d.inbox.as_secs(), 7 * 24 * 3600);
    assert_eq!(d.dead_letters, None, "dead letters stay until purged");

    let r = binding::Retention::from_config(&with(
        "    messages: 2h\n    dead-letters: 1d\n    inbox: 2d\n    batch: 50\n",
    ))
    .unwrap();
    assert_eq!(
        (r.messages.as_secs(), r.dead_letters.map(|d| d.as_secs()), r.inbox.as_secs(), r.batch),
        (7200, Some(86_400), 172_800, 50)
    );

    for (section, key) in [
        ("    messages: 8d\n", "orderflow.retention.inbox"),
        ("    inbox: 1h\n", "orderflow.retention.inbox"),
        ("    dead-letters: 30d\n", "orderflow.retention.inbox"),
        ("    messages: soon\n", "orderflow.retention.messages"),
        ("    batch: 0\n", "orderflow.retention.batch"),
    ] {
        let err = binding::Retention::from_config(&with(section)).unwrap_err();
        assert_eq!(err.key, key, "{section:?}: {err}");
    }
}
