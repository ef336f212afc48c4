//! The RocketMQ binder against a real name server and broker: wire metadata as the Java
//! producers set it, every group gets every message, dead letters land in %DLQ%<group>.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use binding::{
    Binder, ConsumerBinding, Delivery, Message, MessageHandler, Metrics, Outcome, metrics,
};
use rocketmq_binder::{LocalCluster, RocketMqBinder, RocketMqSettings};

struct Recorder {
    seen: Mutex<Vec<Delivery>>,
    poison_key: &'static str,
}

#[async_trait]
impl MessageHandler for Recorder {
    async fn handle(&self, batch: &[Delivery]) -> Vec<Outcome> {
        let mut seen = self.seen.lock().unwrap();
        batch
            .iter()
            .map(|d| {
                seen.push(d.clone());
                if d.message.keys == self.poison_key {
                    Outcome::DeadLetter("cannot parse".into())
                } else {
                    Outcome::Done
                }
            })
            .collect()
    }
}

fn fixture_messages() -> Vec<Message> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/events");
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    vec![
        events::Event::to_message(
            &serde_json::from_slice::<events::OrderCreatedEvent>(&read("order-created.json"))
                .unwrap(),
        ),
        events::Event::to_message(
            &serde_json::from_slice::<events::PaymentSuccessEvent>(&read("payment-success.json"))
                .unwrap(),
        ),
    ]
}

/// A binder on `cluster` whose producer creates `order-created` if missing.
async fn connect(cluster: &LocalCluster, metrics: Metrics) -> RocketMqBinder {
    let settings = RocketMqSettings {
        name_server: cluster.name_server(),
        producer_group: "order-producer-group".into(),
        topics: vec!["order-created".into(), "payment-success".into()],
        max_consume_threads: 4,
    };
    RocketMqBinder::connect(settings, metrics).await.unwrap()
}

/// Waits until `f` holds (a broker's redelivery takes seconds: up to 60 s).
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    testkit::eventually_within(what, Duration::from_secs(60), || {
        std::future::ready(f().then_some(()))
    })
    .await
}

/// Reads `%DLQ%<group>` until a dead letter is there (or `secs` pass).
async fn dead_letters_within(
    binder: &RocketMqBinder,
    group: &str,
    secs: u64,
) -> Vec<binding::DeadLetter> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let dlq = binder.dead_letters(group, 10).await.unwrap();
        if !dlq.is_empty() || Instant::now() > deadline {
            return dlq;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_shaped_messages_round_trip_and_poison_is_dead_lettered() {
    if let Ok(filter) = std::env::var("ORDERFLOW_TEST_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(dir.path()).await.unwrap();
    let metrics = Metrics::new();
    let binder = connect(&cluster, metrics.clone()).await;
    binder.check().await.expect("ready");

    let stock = Arc::new(Recorder { seen: Mutex::new(Vec::new()), poison_key: "POISON" });
    let payment = Arc::new(Recorder { seen: Mutex::new(Vec::new()), poison_key: "-" });
    let created = |group: &str| {
        ConsumerBinding::with_defaults(
            "orderCreatedConsumer-in-0",
            "order-created",
            group,
            "ORDER_CREATED",
        )
    };
    binder.bind_consumer(created("stock-consumer-group"), stock.clone()).await.unwrap();
    binder.bind_consumer(created("payment-consumer-group"), payment.clone()).await.unwrap();
    binder.start().await.unwrap();

    let fixtures = fixture_messages();
    let mut poison = fixtures[0].clone();
    poison.keys = "POISON".into();
    poison.body = b"{not json".to_vec();
    // payment-success is not ORDER_CREATED: filtered out by both subscriptions.
    binder.publish(&[fixtures[0].clone(), poison, fixtures[1].clone()]).await.unwrap();

    until("stock saw both order-created messages", || stock.seen.lock().unwrap().len() >= 2).await;
    until("payment saw both order-created messages", || payment.seen.lock().unwrap().len() >= 2)
        .await;
    let got = stock
        .seen
        .lock()
        .unwrap()
        .iter()
        .find(|d| d.message.keys == "ORD1736900000001")
        .cloned()
        .unwrap();
    let sent = &fixtures[0];
    assert_eq!(got.message.topic, sent.topic);
    assert_eq!(got.message.tags, "ORDER_CREATED");
    assert_eq!(got.message.keys, "ORD1736900000001");
    assert_eq!(got.message.properties, sent.properties, "eventId, eventType, contentType as sent");
    assert_eq!(got.message.body, sent.body, "body byte for byte");
    assert!(stock.seen.lock().unwrap().iter().all(|d| d.message.tags == "ORDER_CREATED"));

    let dlq = dead_letters_within(&binder, "stock-consumer-group", 60).await;
    assert_eq!(dlq.len(), 1, "the poison is in %DLQ%stock-consumer-group");
    assert_eq!(
        (dlq[0].keys.as_str(), dlq[0].origin_topic.as_str(), dlq[0].attempts),
        ("POISON", "order-created", 1)
    );
    assert_eq!(dlq[0].error, "cannot parse");
    assert!(binder.dead_letters("payment-consumer-group", 10).await.unwrap().is_empty());
    assert_eq!(
        metrics.get(
            metrics::DEAD_LETTERED,
            &[("topic", "order-created"), ("group", "stock-consumer-group")]
        ),
        1.0
    );
    binder.shutdown().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_failing_every_attempt_reaches_the_dlq_after_max_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(dir.path()).await.unwrap();
    let metrics = Metrics::new();
    let binder = connect(&cluster, metrics.clone()).await;

    /// Fails every delivery transiently, recording the attempt numbers.
    struct AlwaysBusy(Mutex<Vec<u32>>);
    #[async_trait]
    impl MessageHandler for AlwaysBusy {
        async fn handle(&self, batch: &[Delivery]) -> Vec<Outcome> {
            self.0.lock().unwrap().extend(batch.iter().map(|d| d.attempt));
            vec![Outcome::Retry("database busy".into()); batch.len()]
        }
    }
    let handler = Arc::new(AlwaysBusy(Mutex::new(Vec::new())));
    let mut binding = ConsumerBinding::with_defaults(
        "orderCreatedConsumer-in-0",
        "order-created",
        "flaky-group",
        "ORDER_CREATED",
    );
    binding.max_attempts = 2;
    binder.bind_consumer(binding, handler.clone()).await.unwrap();
    binder.start().await.unwrap();
    binder.publish(&fixture_messages()[..1]).await.unwrap();

    let dlq = dead_letters_within(&binder, "flaky-group", 90).await;
    assert_eq!(dlq.len(), 1, "moved to %DLQ%flaky-group by the broker after max-attempts");
    assert_eq!(dlq[0].keys, "ORD1736900000001");
    assert_eq!(dlq[0].origin_topic, "order-created");
    assert_eq!(*handler.0.lock().unwrap(), [1, 2], "delivered max-attempts times, then no more");
    assert_eq!(
        metrics.get(metrics::RETRIED, &[("topic", "order-created"), ("group", "flaky-group")]),
        2.0
    );
    binder.shutdown().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orderly_bindings_keep_each_keys_order_through_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(dir.path()).await.unwrap();
    let binder = connect(&cluster, Metrics::new()).await;

    /// Fails the first delivery of each key's first message once; records (key, body).
    struct FailFirstOnce {
        seen: Mutex<Vec<(String, String)>>,
        failed: Mutex<std::collections::HashSet<String>>,
    }
    #[async_trait]
    impl MessageHandler for FailFirstOnce {
        async fn handle(&self, batch: &[Delivery]) -> Vec<Outcome> {
            batch
                .iter()
                .map(|d| {
                    let body = String::from_utf8_lossy(&d.message.body).into_owned();
                    self.seen.lock().unwrap().push((d.message.keys.clone(), body.clone()));
                    if body.ends_with("#0") && self.failed.lock().unwrap().insert(body) {
                        Outcome::Retry("once".into())
                    } else {
                        Outcome::Done
                    }
                })
                .collect()
        }
    }
    let handler = Arc::new(FailFirstOnce {
        seen: Mutex::new(Vec::new()),
        failed: Mutex::new(Default::default()),
    });
    let mut binding = ConsumerBinding::with_defaults(
        "orderCreatedConsumer-in-0",
        "order-created",
        "orderly-group",
        "*",
    );
    binding.subscription = binding::tags::TagExpression::All;
    binding.orderly = true;
    binding.concurrency = 2;
    binder.bind_consumer(binding, handler.clone()).await.unwrap();
    binder.start().await.unwrap();
    let mut messages = Vec::new();
    for seq in 0..4 {
        for key in ["A", "B", "C"] {
            messages.push(Message {
                topic: "order-created".into(),
                tags: "ORDER_CREATED".into(),
                keys: format!("ORD-{key}"),
                properties: [("eventId".to_owned(), format!("{key}-{seq}"))].into(),
                body: format!("{key}#{seq}").into_bytes(),
            });
        }
    }
    binder.publish(&messages).await.unwrap();
    until("12 messages and 3 retries handled", || handler.seen.lock().unwrap().len() >= 15).await;
    for key in ["A", "B", "C"] {
        let order: Vec<String> = handler
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| *k == format!("ORD-{key}"))
            .map(|(_, b)| b.clone())
            .collect();
        let expected: Vec<String> = [0, 0, 1, 2, 3].iter().map(|i| format!("{key}#{i}")).collect();
        assert_eq!(order, expected, "key {key}: publish order, the retry before its successors");
    }
    binder.shutdown().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_on_an_orderly_binding_goes_to_the_dlq_and_its_key_keeps_flowing() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(dir.path()).await.unwrap();
    let binder = connect(&cluster, Metrics::new()).await;
    let handler = Arc::new(Recorder { seen: Mutex::new(Vec::new()), poison_key: "-" });
    struct PoisonByBody(Arc<Recorder>);
    #[async_trait]
    impl MessageHandler for PoisonByBody {
        async fn handle(&self, batch: &[Delivery]) -> Vec<Outcome> {
            let outcomes = self.0.handle(batch).await;
            batch
                .iter()
                .zip(outcomes)
                .map(|(d, o)| {
                    if d.message.body.starts_with(b"poison") {
                        Outcome::DeadLetter("malformed".into())
                    } else {
                        o
                    }
                })
                .collect()
        }
    }
    let mut binding = ConsumerBinding::with_defaults(
        "orderCreatedConsumer-in-0",
        "order-created",
        "orderly-poison-group",
        "*",
    );
    binding.subscription = binding::tags::TagExpression::All;
    binding.orderly = true;
    binder.bind_consumer(binding, Arc::new(PoisonByBody(handler.clone()))).await.unwrap();
    binder.start().await.unwrap();
    let m = |body: &str, seq: u32| Message {
        topic: "order-created".into(),
        tags: "ORDER_CREATED".into(),
        keys: "ORD-B".into(),
        properties: [("eventId".to_owned(), format!("b-{seq}"))].into(),
        body: body.as_bytes().to_vec(),
    };
    binder.publish(&[m("poison", 0), m("B#1", 1), m("B#2", 2)]).await.unwrap();
    until("the poison and both successors handled", || handler.seen.lock().unwrap().len() >= 3)
        .await;
    let bodies: Vec<Vec<u8>> =
        handler.seen.lock().unwrap().iter().map(|d| d.message.body.clone()).collect();
    assert_eq!(
        bodies,
        [b"poison".to_vec(), b"B#1".to_vec(), b"B#2".to_vec()],
        "in order, not blocked"
    );
    let dlq = dead_letters_within(&binder, "orderly-poison-group", 60).await;
    assert_eq!((dlq.len(), dlq[0].body.as_str()), (1, "poison"));
    binder.shutdown().await;
    cluster.stop().await;
}
