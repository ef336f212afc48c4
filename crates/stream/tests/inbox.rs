//! The inbox on a real SQLite file: a batch is one transaction in which each message stands
//! alone (a failure rolls back only itself), and an eventId is applied once.

use std::sync::Arc;

use async_trait::async_trait;
use stream::{
    ConsumerBinding, Db, Delivery, HandleError, InboxConsumer, Message, MessageHandler, Metrics, Outcome,
    OutboxRelay, TxHandler, inbox, metrics,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Writes the body into `effects`; bodies starting with "bad" / "busy" fail permanently /
/// transiently *after* writing, so a rollback is observable.
struct Writer;

#[async_trait]
impl TxHandler for Writer {
    async fn apply(&self, tx: &mut sqlx::AnyConnection, m: &Message) -> Result<(), HandleError> {
        let body = String::from_utf8_lossy(&m.body).into_owned();
        sqlx::query("INSERT INTO effects (body) VALUES ($1)").bind(&body).execute(&mut *tx).await?;
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
    }
}

async fn effects(db: &Db) -> Vec<String> {
    sqlx::query_scalar("SELECT body FROM effects ORDER BY id").fetch_all(db.reader()).await.unwrap()
}

#[tokio::test]
async fn a_batch_commits_its_good_messages_and_rolls_back_only_the_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_sqlite(&dir.path().join("svc.db")).await.unwrap();
    db.migrate("inbox", inbox::MIGRATIONS).await.unwrap();
    db.migrate("outbox", stream::outbox::MIGRATIONS).await.unwrap();
    db.migrate("test", &["CREATE TABLE effects (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL)"]).await.unwrap();
    let (tracker, token) = (TaskTracker::new(), CancellationToken::new());
    let binder = stream::embedded::EmbeddedBinder::open(&dir.path().join("broker.db"), Metrics::new()).await.unwrap();
    let relay = OutboxRelay::spawn(db.clone(), Arc::new(binder), Metrics::new(), "test", &tracker, token.clone());
    let metrics = Metrics::new();
    let binding = ConsumerBinding::with_defaults("x-in-0", "t", "g", "T");
    let consumer = InboxConsumer::new(db.clone(), &binding, Arc::new(Writer), relay, metrics.clone());

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
    assert!(matches!(&outcomes[4], Outcome::DeadLetter(e) if e.contains("eventId")), "{:?}", outcomes[4]);
    assert_eq!(effects(&db).await, ["one", "four"], "failed messages left no trace");

    // Redelivery of the whole batch: the done ones are skipped, the failed ones retried.
    let outcomes = consumer.handle(&[delivery("e1", "one"), delivery("e3", "three, now fine"), delivery("e4", "four")]).await;
    assert_eq!(outcomes, [Outcome::Done, Outcome::Done, Outcome::Done]);
    assert_eq!(effects(&db).await, ["one", "four", "three, now fine"], "no second effect");
    assert_eq!(metrics.get(metrics::DUPLICATES, &[("topic", "t"), ("group", "g")]), 2.0);
    token.cancel();
    tracker.close();
    tracker.wait().await;
}

#[tokio::test]
async fn an_event_over_one_mebibyte_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_sqlite(&dir.path().join("svc.db")).await.unwrap();
    db.migrate("outbox", stream::outbox::MIGRATIONS).await.unwrap();
    let mut m = delivery("big", "").message;
    m.body = vec![b'x'; stream::outbox::MAX_EVENT_BYTES + 1];
    let mut tx = db.writer().begin().await.unwrap();
    let err = stream::outbox::Outbox::enqueue(&mut tx, &m).await.unwrap_err();
    assert!(err.to_string().contains("over the 1048576-byte limit"), "{err}");
    drop(tx);
    assert_eq!(stream::outbox::Outbox::backlog(&db).await.unwrap(), 0, "nothing written");
    let handled: HandleError = err.into();
    assert!(matches!(handled, HandleError::Permanent(_)), "never retried");

    m.body.truncate(stream::outbox::MAX_EVENT_BYTES);
    let mut tx = db.writer().begin().await.unwrap();
    stream::outbox::Outbox::enqueue(&mut tx, &m).await.expect("exactly 1 MiB is accepted");
    tx.commit().await.unwrap();
    assert_eq!(stream::outbox::Outbox::backlog(&db).await.unwrap(), 1);
}
