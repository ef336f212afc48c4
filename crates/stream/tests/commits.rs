//! How durable commits are shared on SQLite: transactions waiting behind a commit share it
//! (group commit), a member that fails is undone alone, and the outbox rows the relay has
//! published are deleted without a commit of their own.

use std::sync::Arc;

use binding::{Binder, Message, Metrics};
use embedded::EmbeddedBinder;
use storage::{Db, Tx};
use stream::{OutboxRelay, outbox::Outbox};
use testkit::until;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// A database with table `t`, its commits so far, and a first transaction holding the
/// writer with row `id` written.
async fn first_holding_the_writer(dir: &tempfile::TempDir, id: i64) -> (Db, u64, Tx) {
    let db = Db::open_sqlite(&dir.path().join("c.db")).await.expect("open");
    db.migrate("test", &["CREATE TABLE t (id BIGINT PRIMARY KEY, who TEXT NOT NULL)"])
        .await
        .expect("migrate");
    let before = db.commits();
    let mut first = Tx::begin(&db).await.expect("begin");
    first.write(insert(id, "first")).await.expect("write");
    (db, before, first)
}

fn insert(id: i64, who: &str) -> storage::Statement<'static> {
    sqlx::query("INSERT INTO t (id, who) VALUES ($1, $2)").bind(id).bind(who.to_owned())
}

async fn rows(db: &Db) -> Vec<(i64, String)> {
    sqlx::query_as("SELECT id, who FROM t ORDER BY id").fetch_all(db.reader()).await.expect("read")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_waiting_behind_a_commit_share_one_and_each_returns_once_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, before, first) = first_holding_the_writer(&dir, 0).await;
    let mut others = tokio::task::JoinSet::new();
    for id in 1..=20 {
        let db = db.clone();
        others.spawn(async move {
            let mut tx = Tx::begin(&db).await?;
            tx.write(insert(id, "waiting")).await?;
            tx.commit().await?;
            // Returned: durable, so a reader sees it.
            let seen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t WHERE id = $1")
                .bind(id)
                .fetch_one(db.reader())
                .await?;
            Ok::<_, sqlx::Error>(seen)
        });
    }
    until("all twenty wait for the writer", || async { db.waiting_transactions() == 20 }).await;
    first.commit().await.expect("the first commits with the others");
    while let Some(seen) = others.join_next().await {
        assert_eq!(
            seen.expect("task").expect("commit"),
            1,
            "a transaction whose commit returned is visible"
        );
    }
    assert_eq!(rows(&db).await.len(), 21, "all 21 transactions committed");
    assert_eq!(db.commits() - before, 1, "the 21 transactions shared one durable commit");
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_fails_is_undone_alone_and_the_group_commits_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, before, first) = first_holding_the_writer(&dir, 1).await;

    let failing = {
        let db = db.clone();
        tokio::spawn(async move {
            let mut tx = Tx::begin(&db).await?;
            tx.write(insert(2, "failing")).await?;
            // Row 1 is the first transaction's, not yet committed but in the shared one.
            tx.execute(insert(1, "failing")).await?;
            tx.commit().await
        })
    };
    until("the failing one waits", || async { db.waiting_transactions() == 1 }).await;
    let last = {
        let db = db.clone();
        tokio::spawn(async move {
            let mut tx = Tx::begin(&db).await?;
            tx.write(insert(3, "last")).await?;
            tx.commit().await
        })
    };
    until("both wait", || async { db.waiting_transactions() == 2 }).await;
    first.commit().await.expect("first commits");

    let err = failing.await.expect("task").expect_err("the duplicate key fails its transaction");
    assert!(err.to_string().contains("UNIQUE"), "{err}");
    last.await.expect("task").expect("the last one commits");
    assert_eq!(
        rows(&db).await,
        [(1, "first".to_owned()), (3, "last".to_owned())],
        "the failed member left no row"
    );
    assert_eq!(db.commits() - before, 1, "the first and the last shared one commit");
    db.close().await;
}

#[tokio::test]
async fn published_outbox_rows_are_deleted_and_published_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open_sqlite(&dir.path().join("svc.db")).await.expect("open");
    db.migrate("outbox", stream::outbox::MIGRATIONS).await.expect("migrate");
    let binder =
        EmbeddedBinder::open(&dir.path().join("broker.db"), Metrics::new()).await.expect("broker");
    let (tracker, token) = (TaskTracker::new(), CancellationToken::new());
    let relay = OutboxRelay::spawn(
        db.clone(),
        Arc::new(binder.clone()),
        Metrics::new(),
        "test",
        &tracker,
        token.clone(),
    );
    let outbox_rows = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM outbox")
            .fetch_one(db.reader())
            .await
            .expect("count")
    };

    let mut sent = 0;
    for round in 0..2 {
        let mut tx = Tx::begin(&db).await.expect("begin");
        for i in 0..5 {
            let m = Message {
                topic: "t".into(),
                tags: "T".into(),
                keys: format!("{round}-{i}"),
                properties: Default::default(),
                body: b"{}".to_vec(),
            };
            Outbox::enqueue(&mut tx, &m).await.expect("enqueue");
        }
        tx.commit().await.expect("commit");
        relay.wake();
        sent += 5;
        until("published", || async {
            binder.topic_messages("t").await.expect("topic").len() >= sent
        })
        .await;
        assert_eq!(
            Outbox::backlog(&db).await.expect("backlog"),
            0,
            "published rows are not counted as waiting"
        );
        // Nobody else commits here: the relay deletes what it published on its own.
        until("the published rows are deleted", || async { outbox_rows().await == 0 }).await;
    }
    let keys: Vec<String> =
        binder.topic_messages("t").await.expect("topic").into_iter().map(|m| m.keys).collect();
    assert_eq!(keys.len(), 10, "each row published once: {keys:?}");
    token.cancel();
    tracker.close();
    tracker.wait().await;
    binder.shutdown().await;
    db.close().await;
}
