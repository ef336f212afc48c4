//! The inbox on a real SQLite file: a batch is one transaction in which each message stands
//! alone (a failure rolls back only itself), and an eventId is applied once.

use std::sync::Arc;

use async_trait::async_trait;
use binding::{ConsumerBinding, Delivery, Message, MessageHandler, Metrics, Outcome, metrics};
use storage::{Db, Tx};
use stream::{
    HandleError, InboxConsumer, OutboxRelay, TxHandler, idempotency::RedisIdempotency, inbox,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Writes the body into `effects`; bodies starting with "bad" / "busy" fail permanently /
/// transiently *after* writing, so a rollback is observable; a "clash" body also writes a
/// row that collides with the first effect, an error only the queued write's send reveals.
struct Writer;

#[async_trait]
impl TxHandler for Writer {
    async fn apply(&self, tx: &mut Tx, m: &Message) -> Result<(), HandleError> {
        let body = String::from_utf8_lossy(&m.body).into_owned();
        tx.write(sqlx::query("INSERT INTO effects (body) VALUES ($1)").bind(&body)).await?;
        if body.starts_with("clash") {
            // Takes row id 1 (the batch's first effect): fails only when the queue is sent.
            tx.write(sqlx::query("INSERT INTO effects (id, body) VALUES (1, $1)").bind(&body))
                .await?;
        }
        if body.starts_with("bad") {
            return Err(HandleError::Permanent("invalid".into()));
        }
        if body.starts_with("busy") {
            return Err(HandleError::Transient("try later".into()));
        }
        Ok(())
    }
}

fn delivery(event_id: &str, body: &str) -> Delivery {
    Delivery {
        message: Message {
            topic: "t".into(),
            tags: "T".into(),
            keys: "k".into(),
            properties: [("eventId".to_owned(), event_id.to_owned())].into(),
            body: body.as_bytes().to_vec(),
        },
        attempt: 1,
        message_id: event_id.into(),
        born_at: events::now_millis(),
    }
}

async fn effects(db: &Db) -> Vec<String> {
    sqlx::query_scalar("SELECT body FROM effects ORDER BY id").fetch_all(db.reader()).await.unwrap()
}

/// A service database with the inbox, the outbox (relayed to an embedded broker) and an
/// `effects` table, in `dir`.
struct Service {
    db: Db,
    relay: OutboxRelay,
    tracker: TaskTracker,
    token: CancellationToken,
}

impl Service {
    async fn open(dir: &std::path::Path) -> Service {
        let db = Db::open_sqlite(&dir.join("svc.db")).await.unwrap();
        db.migrate("inbox", inbox::MIGRATIONS).await.unwrap();
        db.migrate("outbox", stream::outbox::MIGRATIONS).await.unwrap();
        db.migrate(
            "test",
            &["CREATE TABLE effects (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL)"],
        )
        .await
        .unwrap();
        let (tracker, token) = (TaskTracker::new(), CancellationToken::new());
        let binder =
            embedded::EmbeddedBinder::open(&dir.join("broker.db"), Metrics::new()).await.unwrap();
        let relay = OutboxRelay::spawn(
            db.clone(),
            Arc::new(binder),
            Metrics::new(),
            "test",
            &tracker,
            token.clone(),
        );
        Service { db, relay, tracker, token }
    }

    fn consumer(&self, metrics: &Metrics) -> InboxConsumer {
        let binding = ConsumerBinding::with_defaults("x-in-0", "t", "g", "T");
        InboxConsumer::new(
            self.db.clone(),
            &binding,
            Arc::new(Writer),
            self.relay.clone(),
            metrics.clone(),
        )
    }

    async fn stop(self) {
        self.token.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

#[tokio::test]
async fn a_batch_commits_its_good_messages_and_rolls_back_only_the_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::open(dir.path()).await;
    let db = svc.db.clone();
    let metrics = Metrics::new();
    let consumer = svc.consumer(&metrics);

    let batch = [
        delivery("e1", "one"),
        delivery("e2", "bad two"),
        delivery("e3", "busy three"),
        delivery("e4", "four"),
        delivery("", "no id"),
    ];
    let outcomes = consumer.handle(&batch).await;
    assert_eq!(outcomes[0], Outcome::Done);
    assert_eq!(outcomes[1], Outcome::DeadLetter("invalid".into()));
    assert_eq!(outcomes[2], Outcome::Retry("try later".into()));
    assert_eq!(outcomes[3], Outcome::Done);
    assert!(
        matches!(&outcomes[4], Outcome::DeadLetter(e) if e.contains("eventId")),
        "{:?}",
        outcomes[4]
    );
    assert_eq!(effects(&db).await, ["one", "four"], "failed messages left no trace");

    // Redelivery of the whole batch: the done ones are skipped, the failed ones retried.
    let outcomes = consumer
        .handle(&[delivery("e1", "one"), delivery("e3", "three, now fine"), delivery("e4", "four")])
        .await;
    assert_eq!(outcomes, [Outcome::Done, Outcome::Done, Outcome::Done]);
    assert_eq!(effects(&db).await, ["one", "four", "three, now fine"], "no second effect");
    assert_eq!(metrics.get(metrics::DUPLICATES, &[("topic", "t"), ("group", "g")]), 2.0);
    svc.stop().await;
}

/// The batch is first applied all together; a failure late in it undoes the whole attempt
/// and the batch is applied again message by message: no effect twice, none lost.
#[tokio::test]
async fn a_failure_late_in_a_batch_leaves_each_effect_once_and_two_copies_in_a_batch_apply_once() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::open(dir.path()).await;
    let db = svc.db.clone();
    let metrics = Metrics::new();
    let consumer = svc.consumer(&metrics);
    let labels = [("topic", "t"), ("group", "g")];

    let batch = [
        delivery("e1", "one"),
        delivery("e1", "one"),
        delivery("e2", "two"),
        delivery("e3", "busy three"),
    ];
    let outcomes = consumer.handle(&batch).await;
    assert_eq!(
        outcomes,
        [Outcome::Done, Outcome::Done, Outcome::Done, Outcome::Retry("try later".into())]
    );
    assert_eq!(effects(&db).await, ["one", "two"]);
    assert_eq!(metrics.get(metrics::DUPLICATES, &labels), 1.0);

    // All fine: the fast path alone, with a copy and an already-applied event.
    let outcomes = consumer
        .handle(&[delivery("e4", "four"), delivery("e4", "four"), delivery("e2", "two")])
        .await;
    assert_eq!(outcomes, [Outcome::Done, Outcome::Done, Outcome::Done]);
    assert_eq!(effects(&db).await, ["one", "two", "four"]);
    assert_eq!(metrics.get(metrics::DUPLICATES, &labels), 3.0);
    let inbox: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM inbox").fetch_one(db.reader()).await.unwrap();
    assert_eq!(inbox, 3, "e1, e2 and e4 recorded; e3 failed and is not");
    svc.stop().await;
}

fn redis_url() -> String {
    std::env::var("ORDERFLOW_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

#[tokio::test]
async fn with_redis_a_duplicate_is_acknowledged_without_the_database_and_the_key_lives_24_hours() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::open(dir.path()).await;
    let metrics = Metrics::new();
    let fast = RedisIdempotency::connect(&redis_url(), metrics.clone())
        .await
        .expect("Redis at ORDERFLOW_TEST_REDIS");
    let consumer = svc.consumer(&metrics).with_fast_path(Some(fast));
    let (e1, e2) = (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());

    assert_eq!(
        consumer.handle(&[delivery(&e1, "one"), delivery(&e2, "bad two")]).await[0],
        Outcome::Done
    );
    let mut redis =
        redis::Client::open(redis_url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("event:processed:g/x-in-0:{e1}"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!((86_000..=86_400).contains(&ttl), "the seed's 24 h TTL, got {ttl}");
    let bad: bool = redis::cmd("EXISTS")
        .arg(format!("event:processed:g/x-in-0:{e2}"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!bad, "no key for a message that was not applied");

    // The database is gone; the duplicate is still acknowledged (from Redis), a new one is not.
    svc.db.close().await;
    let outcomes = consumer.handle(&[delivery(&e1, "one again")]).await;
    assert_eq!(outcomes, [Outcome::Done]);
    assert_eq!(metrics.get(metrics::FAST_HITS, &[]), 1.0);
    let outcomes = consumer
        .handle(&[delivery(&e1, "one again"), delivery(&uuid::Uuid::new_v4().to_string(), "new")])
        .await;
    assert!(outcomes.iter().all(|o| matches!(o, Outcome::Retry(_))), "{outcomes:?}");
    svc.stop().await;
}

#[tokio::test]
async fn when_redis_goes_away_the_inbox_alone_keeps_every_event_applied_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server on PATH");
    let url = format!("redis://127.0.0.1:{port}");
    let metrics = Metrics::new();
    // Wait (up to 10 s) for the private server to accept connections.
    let mut tries = 0;
    let fast = loop {
        match RedisIdempotency::connect(&url, metrics.clone()).await {
            Ok(f) => break f,
            Err(_) if tries < 500 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the private redis-server never answered: {e}"),
        }
    };
    let svc = Service::open(dir.path()).await;
    let consumer = svc.consumer(&metrics).with_fast_path(Some(fast));
    assert_eq!(consumer.handle(&[delivery("r1", "one")]).await, [Outcome::Done]);

    server.kill().unwrap();
    server.wait().unwrap();
    let outcomes = consumer.handle(&[delivery("r1", "one"), delivery("r2", "two")]).await;
    assert_eq!(outcomes, [Outcome::Done, Outcome::Done]);
    assert_eq!(effects(&svc.db).await, ["one", "two"], "the inbox caught the duplicate");
    assert!(metrics.get(metrics::REDIS_ERRORS, &[]) >= 1.0, "the failure is counted");
    svc.stop().await;
}

#[tokio::test]
async fn an_event_over_one_mebibyte_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_sqlite(&dir.path().join("svc.db")).await.unwrap();
    db.migrate("outbox", stream::outbox::MIGRATIONS).await.unwrap();
    let mut m = delivery("big", "").message;
    m.body = vec![b'x'; stream::outbox::MAX_EVENT_BYTES + 1];
    let mut tx = Tx::begin(&db).await.unwrap();
    let err = stream::outbox::Outbox::enqueue(&mut tx, &m).await.unwrap_err();
    assert!(err.to_string().contains("over the 1048576-byte limit"), "{err}");
    drop(tx);
    assert_eq!(stream::outbox::Outbox::backlog(&db).await.unwrap(), 0, "nothing written");
    let handled: HandleError = err.into();
    assert!(matches!(handled, HandleError::Permanent(_)), "never retried");

    m.body.truncate(stream::outbox::MAX_EVENT_BYTES);
    let mut tx = Tx::begin(&db).await.unwrap();
    stream::outbox::Outbox::enqueue(&mut tx, &m).await.expect("exactly 1 MiB is accepted");
    tx.commit().await.unwrap();
    assert_eq!(stream::outbox::Outbox::backlog(&db).await.unwrap(), 1);
}

/// A write queued by one message fails only when the queue is sent, after the handler
/// returned: the careful path still pins it on that message alone.
#[tokio::test]
async fn a_queued_write_that_fails_later_fails_only_its_own_message() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::open(dir.path()).await;
    let db = svc.db.clone();
    let consumer = svc.consumer(&Metrics::new());

    let outcomes = consumer
        .handle(&[delivery("e1", "one"), delivery("e2", "clash two"), delivery("e3", "three")])
        .await;
    assert_eq!(outcomes[0], Outcome::Done);
    assert!(matches!(&outcomes[1], Outcome::Retry(e) if e.contains("UNIQUE")), "{:?}", outcomes[1]);
    assert_eq!(outcomes[2], Outcome::Done);
    assert_eq!(effects(&db).await, ["one", "three"], "the clashing message left no trace");
    svc.stop().await;
}

/// `Tx` queues writes until the next read: the read sees them (its placeholders bound after
/// theirs), a commit keeps them, a transaction dropped without commit keeps none.
#[tokio::test]
async fn queued_writes_are_seen_by_the_next_read_and_kept_only_on_commit() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_sqlite(&dir.path().join("svc.db")).await.unwrap();
    db.migrate(
        "test",
        &["CREATE TABLE effects (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL)"],
    )
    .await
    .unwrap();

    let mut tx = Tx::begin(&db).await.unwrap();
    for body in ["a", "b"] {
        tx.write(sqlx::query("INSERT INTO effects (body) VALUES ($1)").bind(body)).await.unwrap();
    }
    tx.write(sqlx::query("UPDATE effects SET body = $1 WHERE body = $2").bind("B").bind("b"))
        .await
        .unwrap();
    let rows = tx
        .fetch_all(sqlx::query("SELECT body FROM effects WHERE body <> $1 ORDER BY id").bind("a"))
        .await
        .unwrap();
    let seen: Vec<String> = rows.iter().map(|r| sqlx::Row::get(r, 0)).collect();
    assert_eq!(seen, ["B"], "the read ran after the three queued writes, with its own argument");
    tx.write(sqlx::query("INSERT INTO effects (body) VALUES ($1)").bind("c")).await.unwrap();
    drop(tx);
    assert!(effects(&db).await.is_empty(), "a dropped transaction wrote nothing");

    let mut tx = Tx::begin(&db).await.unwrap();
    tx.write(sqlx::query("INSERT INTO effects (body) VALUES ($1)").bind("kept")).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(effects(&db).await, ["kept"], "commit sent the queue");
}

/// On SQLite `BEGIN` and `COMMIT` travel with the statements: a transaction dropped before
/// it sent anything, or halfway through, leaves nothing written and the writer usable (its
/// next statement is not swallowed by the abandoned transaction); `fetch_and_commit` reads
/// and commits in one go, and a failure in it keeps nothing.
#[tokio::test]
async fn dropped_transactions_leave_the_writer_clean_and_fetch_and_commit_keeps_its_writes() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_sqlite(&dir.path().join("svc.db")).await.unwrap();
    db.migrate(
        "test",
        &["CREATE TABLE effects (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL)"],
    )
    .await
    .unwrap();
    let insert =
        |body: &'static str| sqlx::query("INSERT INTO effects (body) VALUES ($1)").bind(body);

    let mut tx = Tx::begin(&db).await.unwrap();
    tx.write(insert("never sent")).await.unwrap();
    drop(tx);
    let mut tx = Tx::begin(&db).await.unwrap();
    tx.write(insert("sent, not committed")).await.unwrap();
    tx.flush().await.unwrap();
    drop(tx);
    db.writer().await.unwrap().execute(insert("autocommit")).await.unwrap();
    assert_eq!(
        effects(&db).await,
        ["autocommit"],
        "the abandoned transaction was rolled back, the next write committed"
    );

    let mut tx = Tx::begin(&db).await.unwrap();
    tx.write(insert("read and committed")).await.unwrap();
    let rows =
        tx.fetch_and_commit(sqlx::query("SELECT body FROM effects ORDER BY id")).await.unwrap();
    let seen: Vec<String> = rows.iter().map(|r| sqlx::Row::get(r, 0)).collect();
    assert_eq!(seen, ["autocommit", "read and committed"]);
    assert_eq!(effects(&db).await, seen, "committed with the read");

    let mut tx = Tx::begin(&db).await.unwrap();
    tx.write(insert("lost with the clash")).await.unwrap();
    tx.write(sqlx::query("INSERT INTO effects (id, body) VALUES (1, 'clash')")).await.unwrap();
    assert!(
        tx.fetch_and_commit(sqlx::query("SELECT 1")).await.is_err(),
        "the clash fails the round trip"
    );
    let mut tx = Tx::begin(&db).await.unwrap();
    tx.write(insert("after the failure")).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(effects(&db).await, ["autocommit", "read and committed", "after the failure"]);
}
