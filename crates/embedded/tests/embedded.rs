//! The embedded binder keeps RocketMQ's consumer-group semantics on a real SQLite file.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;

use binding::{
    Binder, ConsumerBinding, Delivery, Message, MessageHandler, Metrics, Outcome, config::Backoff,
    metrics, tags::TagExpression,
};
use embedded::EmbeddedBinder;

type Decide = dyn Fn(&Delivery) -> Outcome + Send + Sync;

/// Records every delivery and answers with `decide`.
struct Recorder {
    seen: Mutex<Vec<(String, String, u32)>>,
    decide: Box<Decide>,
}

impl Recorder {
    fn new(decide: impl Fn(&Delivery) -> Outcome + Send + Sync + 'static) -> Arc<Recorder> {
        Arc::new(Recorder { seen: Mutex::new(Vec::new()), decide: Box::new(decide) })
    }
    fn ok() -> Arc<Recorder> {
        Self::new(|_| Outcome::Done)
    }
    /// (key, body, attempt) of every delivery so far.
    fn seen(&self) -> Vec<(String, String, u32)> {
        self.seen.lock().unwrap().clone()
    }
    fn bodies(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.1).collect()
    }
}

#[async_trait]
impl MessageHandler for Recorder {
    async fn handle(&self, batch: &[Delivery]) -> Vec<Outcome> {
        let mut seen = self.seen.lock().unwrap();
        batch
            .iter()
            .map(|d| {
                seen.push((
                    d.message.keys.clone(),
                    String::from_utf8_lossy(&d.message.body).into_owned(),
                    d.attempt,
                ));
                (self.decide)(d)
            })
            .collect()
    }
}

fn msg(topic: &str, tag: &str, key: &str, body: &str) -> Message {
    Message {
        topic: topic.into(),
        tags: tag.into(),
        keys: key.into(),
        properties: BTreeMap::new(),
        body: body.as_bytes().to_vec(),
    }
}

fn binding(name: &str, topic: &str, group: &str) -> ConsumerBinding {
    let mut b = ConsumerBinding::with_defaults(name, topic, group, "*");
    b.subscription = TagExpression::All;
    b.backoff = Backoff {
        initial: Duration::from_millis(5),
        multiplier: 2.0,
        max: Duration::from_millis(20),
    };
    b
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    testkit::until(what, || std::future::ready(f())).await;
}

async fn open(dir: &tempfile::TempDir) -> EmbeddedBinder {
    EmbeddedBinder::open(&dir.path().join("broker.db"), Metrics::new()).await.unwrap()
}

#[tokio::test]
async fn every_group_gets_every_message_and_instances_of_a_group_share_them() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir).await;
    let (stock_a, stock_b, payment) = (Recorder::ok(), Recorder::ok(), Recorder::ok());
    b.bind_consumer(binding("s-in-0", "order-created", "stock-consumer-group"), stock_a.clone())
        .await
        .unwrap();
    b.bind_consumer(binding("s-in-0", "order-created", "stock-consumer-group"), stock_b.clone())
        .await
        .unwrap();
    b.bind_consumer(binding("p-in-0", "order-created", "payment-consumer-group"), payment.clone())
        .await
        .unwrap();
    let messages: Vec<Message> = (0..40)
        .map(|i| msg("order-created", "ORDER_CREATED", &format!("K{i}"), &i.to_string()))
        .collect();
    b.publish(&messages).await.unwrap();

    until("payment group saw all 40", || payment.seen().len() == 40).await;
    until("stock group saw all 40", || stock_a.seen().len() + stock_b.seen().len() == 40).await;
    let mut stock: Vec<String> = stock_a.bodies().into_iter().chain(stock_b.bodies()).collect();
    stock.sort_by_key(|s| s.parse::<i32>().unwrap());
    let expected: Vec<String> = (0..40).map(|i| i.to_string()).collect();
    assert_eq!(stock, expected, "each message to exactly one instance of the group");
    testkit::until("stock backlog drained", || async {
        b.backlog("stock-consumer-group", "order-created").await.unwrap() == 0
    })
    .await;
    b.shutdown().await;
}

#[tokio::test]
async fn subscriptions_filter_by_tag_expression() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir).await;
    let r = Recorder::ok();
    let mut bind = binding("x-in-0", "t", "g");
    bind.subscription = TagExpression::parse("A || B").unwrap();
    b.bind_consumer(bind, r.clone()).await.unwrap();
    b.publish(&[msg("t", "A", "1", "a"), msg("t", "C", "2", "c"), msg("t", "B", "3", "b")])
        .await
        .unwrap();
    testkit::until("A and B acknowledged", || async { b.backlog("g", "t").await.unwrap() == 0 })
        .await;
    assert_eq!(r.bodies(), ["a", "b"], "C was never queued for the group");
    b.shutdown().await;
}

#[tokio::test]
async fn retries_with_backoff_then_dead_letters_after_max_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let b = EmbeddedBinder::open(&dir.path().join("broker.db"), metrics.clone()).await.unwrap();
    let r = Recorder::new(|d| {
        if d.message.keys == "poison" { Outcome::Retry("boom".into()) } else { Outcome::Done }
    });
    let mut bind = binding("x-in-0", "t", "g");
    bind.max_attempts = 3;
    b.bind_consumer(bind, r.clone()).await.unwrap();
    b.publish(&[msg("t", "T", "poison", "p")]).await.unwrap();
    until("dead-lettered", || {
        metrics.get(metrics::DEAD_LETTERED, &[("topic", "t"), ("group", "g")]) == 1.0
    })
    .await;
    let attempts: Vec<u32> = r.seen().iter().map(|s| s.2).collect();
    assert_eq!(attempts, [1, 2, 3], "delivered max-attempts times");
    let dlq = b.dead_letters("g", 10).await.unwrap();
    assert_eq!(dlq.len(), 1);
    assert_eq!(
        (dlq[0].origin_topic.as_str(), dlq[0].error.as_str(), dlq[0].attempts),
        ("t", "boom", 3)
    );
    assert_eq!(dlq[0].keys, "poison");
    assert_eq!(b.topic_messages("%DLQ%g").await.unwrap().len(), 1, "readable on %DLQ%<group>");
    assert_eq!(metrics.get(metrics::RETRIED, &[("topic", "t"), ("group", "g")]), 2.0);

    b.publish(&[msg("t", "T", "fine", "f")]).await.unwrap();
    until("later message flows", || r.bodies().contains(&"f".to_owned())).await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_dead_letter_outcome_skips_the_retries() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir).await;
    let r = Recorder::new(|d| {
        if d.message.body == b"garbage" {
            Outcome::DeadLetter("not JSON".into())
        } else {
            Outcome::Done
        }
    });
    b.bind_consumer(binding("x-in-0", "t", "g"), r.clone()).await.unwrap();
    b.publish(&[msg("t", "T", "1", "garbage"), msg("t", "T", "2", "good")]).await.unwrap();
    testkit::until("dead letter stored", || async {
        b.dead_letters("g", 10).await.unwrap().len() == 1
    })
    .await;
    assert_eq!(r.seen().len(), 2, "the good message was handled too");
    let dlq = b.dead_letters("g", 10).await.unwrap();
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].attempts, 1, "no retries for a permanent failure");
    assert_eq!(dlq[0].body, "garbage");
    b.shutdown().await;
}

#[tokio::test]
async fn one_failure_in_a_batch_does_not_redeliver_its_neighbours() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir).await;
    let failed_once = Arc::new(Mutex::new(false));
    let flag = failed_once.clone();
    let r = Recorder::new(move |d| {
        let mut f = flag.lock().unwrap();
        if d.message.keys == "K2" && !*f {
            *f = true;
            Outcome::Retry("transient".into())
        } else {
            Outcome::Done
        }
    });
    let mut bind = binding("x-in-0", "t", "g");
    bind.batch_size = 5;
    b.bind_consumer(bind, r.clone()).await.unwrap();
    let messages: Vec<Message> =
        (0..5).map(|i| msg("t", "T", &format!("K{i}"), &i.to_string())).collect();
    b.publish(&messages).await.unwrap();
    until("K2 redelivered", || r.seen().iter().any(|s| s.0 == "K2" && s.2 == 2)).await;
    let mut per_key: BTreeMap<String, usize> = BTreeMap::new();
    for (k, _, _) in r.seen() {
        *per_key.entry(k).or_default() += 1;
    }
    assert_eq!(per_key["K2"], 2);
    for k in ["K0", "K1", "K3", "K4"] {
        assert_eq!(per_key[k], 1, "{k} delivered once");
    }
    b.shutdown().await;
}

#[tokio::test]
async fn orderly_bindings_keep_each_keys_order_through_retries() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir).await;
    let failed = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let f = failed.clone();
    // The first message of every key fails once: its successors must wait for it.
    let r = Recorder::new(move |d| {
        let body = String::from_utf8_lossy(&d.message.body).into_owned();
        if body.ends_with("#0") && f.lock().unwrap().insert(body) {
            Outcome::Retry("once".into())
        } else {
            Outcome::Done
        }
    });
    let mut bind = binding("x-in-0", "t", "g");
    bind.orderly = true;
    bind.concurrency = 4;
    bind.batch_size = 3;
    b.bind_consumer(bind, r.clone()).await.unwrap();
    let mut messages = Vec::new();
    for seq in 0..4 {
        for key in ["A", "B", "C"] {
            messages.push(msg("t", "T", key, &format!("{key}#{seq}")));
        }
    }
    b.publish(&messages).await.unwrap();
    until("all 12 handled (plus 3 retries)", || r.seen().len() == 15).await;
    for key in ["A", "B", "C"] {
        let order: Vec<String> = r.seen().into_iter().filter(|s| s.0 == key).map(|s| s.1).collect();
        let expected: Vec<String> = [0, 0, 1, 2, 3].iter().map(|i| format!("{key}#{i}")).collect();
        assert_eq!(order, expected, "key {key} handled in publish order, retry first");
    }
    b.shutdown().await;
}

#[tokio::test]
async fn messages_wait_for_a_group_that_is_down_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir).await;
    b.bind_consumer(binding("x-in-0", "t", "g"), Recorder::ok()).await.unwrap();
    b.shutdown().await;

    let b = open(&dir).await;
    b.publish(&[msg("t", "T", "1", "while down")]).await.unwrap();
    assert_eq!(b.backlog("g", "t").await.unwrap(), 1, "subscription is durable");
    b.shutdown().await;

    let b = open(&dir).await;
    let r = Recorder::ok();
    b.bind_consumer(binding("x-in-0", "t", "g"), r.clone()).await.unwrap();
    until("delivered after restart", || r.bodies() == ["while down"]).await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_poison_message_on_an_orderly_binding_never_blocks_its_key_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir).await;
    let r = Recorder::new(|d| {
        if d.message.body == b"B#0 poison" {
            Outcome::DeadLetter("malformed".into())
        } else {
            Outcome::Done
        }
    });
    let mut bind = binding("x-in-0", "t", "g");
    bind.orderly = true;
    b.bind_consumer(bind, r.clone()).await.unwrap();
    let mut messages = vec![msg("t", "T", "B", "B#0 poison")];
    for seq in 1..4 {
        for key in ["A", "B", "C"] {
            messages.push(msg("t", "T", key, &format!("{key}#{seq}")));
        }
    }
    b.publish(&messages).await.unwrap();
    testkit::until("everything settled", || async { b.backlog("g", "t").await.unwrap() == 0 })
        .await;
    let b_order: Vec<String> = r.seen().into_iter().filter(|s| s.0 == "B").map(|s| s.1).collect();
    assert_eq!(
        b_order,
        ["B#0 poison", "B#1", "B#2", "B#3"],
        "the poison's successors of the same key still flow, in order"
    );
    assert_eq!(r.seen().len(), 10, "every other message delivered once");
    let dlq = b.dead_letters("g", 10).await.unwrap();
    assert_eq!((dlq.len(), dlq[0].body.as_str(), dlq[0].attempts), (1, "B#0 poison", 1));
    b.shutdown().await;
}

/// A publish of many messages is written many rows per statement; they still arrive in
/// publish order, to every group, and publishing goes on after a restart.
#[tokio::test]
async fn a_large_publish_keeps_its_order_for_every_group_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir).await;
    b.bind_consumer(binding("x-in-0", "t", "g1"), Recorder::ok()).await.unwrap();
    b.bind_consumer(binding("x-in-1", "t", "g2"), Recorder::ok()).await.unwrap();
    b.shutdown().await;

    let bodies =
        |range: std::ops::Range<usize>| -> Vec<String> { range.map(|i| format!("m{i}")).collect() };
    let b = open(&dir).await;
    b.publish(&bodies(0..300).iter().map(|s| msg("t", "T", "k", s)).collect::<Vec<_>>())
        .await
        .unwrap();
    b.shutdown().await;
    let b = open(&dir).await;
    b.publish(&bodies(300..303).iter().map(|s| msg("t", "T", "k", s)).collect::<Vec<_>>())
        .await
        .unwrap();
    let stored: Vec<String> = b
        .topic_messages("t")
        .await
        .unwrap()
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    assert_eq!(stored, bodies(0..303));

    let (r1, r2) = (Recorder::ok(), Recorder::ok());
    let mut orderly = binding("x-in-0", "t", "g1");
    orderly.orderly = true;
    b.bind_consumer(orderly, r1.clone()).await.unwrap();
    b.bind_consumer(binding("x-in-1", "t", "g2"), r2.clone()).await.unwrap();
    until("both groups got all 303", || r1.bodies().len() == 303 && r2.bodies().len() == 303).await;
    assert_eq!(r1.bodies(), bodies(0..303), "one key, orderly: publish order");
    let mut unordered = r2.bodies();
    unordered.sort_by_key(|s| s[1..].parse::<usize>().unwrap());
    assert_eq!(unordered, bodies(0..303));
    b.shutdown().await;
}

/// A stored message whose properties cannot be read is an error naming the table and row,
/// not a message with its eventId silently dropped; so is a dead letter's attempt count.
#[tokio::test]
async fn corrupt_stored_messages_are_errors_naming_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir).await;
    let r = Recorder::new(|_| Outcome::DeadLetter("not JSON".into()));
    b.bind_consumer(binding("x-in-0", "t", "g"), r.clone()).await.unwrap();
    b.publish(&[msg("t", "T", "1", "garbage")]).await.unwrap();
    testkit::until("dead letter stored", || async {
        b.dead_letters("g", 10).await.unwrap().len() == 1
    })
    .await;
    let raw = storage::Db::open(&dir.path().join("broker.db").display().to_string()).await.unwrap();
    let exec = |sql: &'static str| testkit::write(&raw, sqlx::query(sql));

    exec("UPDATE messages SET properties = json_set(properties, '$.DLQ_ATTEMPTS', 'many') WHERE topic = '%DLQ%g'").await;
    let err = b.dead_letters("g", 10).await.unwrap_err().to_string();
    assert!(err.contains("messages.properties.DLQ_ATTEMPTS of row 2"), "{err}");

    exec("UPDATE messages SET properties = '{\"eventId\":' WHERE topic = 't'").await;
    let err = b.topic_messages("t").await.unwrap_err().to_string();
    assert!(err.contains("messages.properties of row 1"), "{err}");
    raw.close().await;
    b.shutdown().await;
}

/// Retention with everything past its period, judged as of `now + ahead` (time is an
/// argument: no test waits for messages to age).
fn retention(batch: usize, dead_letters: Option<Duration>) -> binding::Retention {
    binding::Retention {
        messages: Duration::from_secs(1),
        dead_letters,
        inbox: Duration::from_secs(60),
        interval: Duration::from_secs(3600),
        batch,
    }
}

fn later() -> i64 {
    events::now_millis() + 10_000
}

#[tokio::test]
async fn retention_removes_acknowledged_messages_and_keeps_what_a_paused_group_waits_for() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let b = EmbeddedBinder::open(&dir.path().join("broker.db"), metrics.clone()).await.unwrap();
    let fast = Recorder::ok();
    let slow = Recorder::ok();
    b.bind_consumer(binding("f-in-0", "t", "fast"), fast.clone()).await.unwrap();
    let paused = b.bind_consumer(binding("s-in-0", "t", "slow"), slow.clone()).await.unwrap();
    paused.set(binding::BindingState::Paused);
    let messages: Vec<Message> =
        (0..10).map(|i| msg("t", "T", &format!("K{i}"), &i.to_string())).collect();
    b.publish(&messages).await.unwrap();
    b.publish(&[msg("nobody-listens", "T", "K", "x")]).await.unwrap();
    until("the fast group handled all 10", || fast.seen().len() == 10).await;

    // Young messages stay, whoever has handled them.
    let young = binding::Retention { messages: Duration::from_secs(3600), ..retention(3, None) };
    assert_eq!(b.retention_pass(&young, events::now_millis()).await.unwrap(), 0);

    // Old, but the paused group has not handled them: all kept (its offset is the first).
    assert_eq!(
        b.retention_pass(&retention(3, None), later()).await.unwrap(),
        1,
        "only the unsubscribed topic's"
    );
    assert_eq!(b.topic_messages("t").await.unwrap().len(), 10);
    assert!(b.topic_messages("nobody-listens").await.unwrap().is_empty());
    let oldest = testkit::sample(&metrics.render(), metrics::OLDEST_MESSAGE, &[("topic", "t")]);
    assert!(oldest.is_some_and(|age| age >= 9.0), "the held messages show their age: {oldest:?}");

    paused.set(binding::BindingState::Running);
    until("the slow group handled all 10", || slow.seen().len() == 10).await;
    testkit::until("both groups acknowledged", || async { b.pending().await.unwrap() == 0 }).await;
    // In batches of 3: four statements, all ten gone.
    assert_eq!(b.retention_pass(&retention(3, None), later()).await.unwrap(), 10);
    assert!(b.topic_messages("t").await.unwrap().is_empty());
    let removed =
        metrics.get(metrics::RETENTION_REMOVED, &[("database", "broker"), ("table", "messages")]);
    assert_eq!(removed, 11.0);
    let size = metrics.get(metrics::DATABASE_SIZE, &[("database", "broker")]);
    assert!(size > 0.0, "broker.db's size is reported");

    // The ids go on from where they were: a new message is delivered and nothing repeats.
    b.publish(&[msg("t", "T", "K10", "10")]).await.unwrap();
    until("both groups got the new message", || fast.seen().len() == 11 && slow.seen().len() == 11)
        .await;
    assert_eq!(slow.bodies().iter().filter(|body| *body == "0").count(), 1);
    b.shutdown().await;
}

#[tokio::test]
async fn retention_keeps_a_young_message_below_older_ones_when_the_clock_stepped_back() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir).await;
    let messages: Vec<Message> =
        (0..5).map(|i| msg("t", "T", &format!("K{i}"), &i.to_string())).collect();
    b.publish(&messages).await.unwrap();
    // The first two were stamped by a clock an hour ahead that then stepped back: they are
    // the lowest ids but the youngest messages.
    let raw = storage::Db::open(&dir.path().join("broker.db").display().to_string()).await.unwrap();
    let hour_ahead = events::now_millis() + 3_600_000;
    testkit::write(
        &raw,
        sqlx::query("UPDATE messages SET born_at = $1 WHERE id <= 2").bind(hour_ahead),
    )
    .await;
    raw.close().await;

    assert_eq!(b.retention_pass(&retention(100, None), later()).await.unwrap(), 3);
    let kept: Vec<String> =
        b.topic_messages("t").await.unwrap().into_iter().map(|m| m.keys).collect();
    assert_eq!(kept, ["K0", "K1"], "young messages stay, whatever their place");
    b.shutdown().await;
}

#[tokio::test]
async fn dead_letters_stay_until_their_own_retention_and_while_a_replay_waits() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir).await;
    let healed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fixed = healed.clone();
    let r = Recorder::new(move |_| match fixed.load(std::sync::atomic::Ordering::SeqCst) {
        true => Outcome::Done,
        false => Outcome::DeadLetter("bad".into()),
    });
    let control = b.bind_consumer(binding("x-in-0", "t", "g"), r.clone()).await.unwrap();
    b.publish(&[msg("t", "T", "A", "a"), msg("t", "T", "B", "b")]).await.unwrap();
    testkit::until("both dead-lettered", || async {
        b.dead_letters("g", 10).await.unwrap().len() == 2
    })
    .await;
    // Without a dead-letter retention they are kept, however old (their originals go).
    b.retention_pass(&retention(100, None), later()).await.unwrap();
    assert_eq!(b.dead_letters("g", 10).await.unwrap().len(), 2);
    assert!(
        b.topic_messages("t").await.unwrap().is_empty(),
        "the originals were acknowledged (dead-lettered)"
    );

    // A replay waiting for its (paused) group holds its dead letter, and the ones after it.
    control.set(binding::BindingState::Paused);
    healed.store(true, std::sync::atomic::Ordering::SeqCst);
    let letters = b.dead_letters("g", 10).await.unwrap();
    b.replay(&letters[0]).await.unwrap();
    let keep_a_second = retention(100, Some(Duration::from_secs(1)));
    assert_eq!(b.retention_pass(&keep_a_second, later()).await.unwrap(), 0);
    assert_eq!(b.dead_letters("g", 10).await.unwrap().len(), 2);

    control.set(binding::BindingState::Running);
    until("the replay was handled", || r.seen().len() == 3).await;
    testkit::until("the replay was acknowledged", || async { b.pending().await.unwrap() == 0 })
        .await;
    assert_eq!(b.retention_pass(&keep_a_second, later()).await.unwrap(), 2);
    assert!(b.dead_letters("g", 10).await.unwrap().is_empty());
    let err = b.replay(&letters[1]).await.unwrap_err();
    assert!(err.to_string().contains("no longer kept"), "{err}");
    b.shutdown().await;
}
