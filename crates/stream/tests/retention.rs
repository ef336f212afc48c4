//! Inbox retention on both databases: records past the window go, a batch at a time; the
//! ones inside it stay.

use std::time::Duration;

use binding::Retention;
use storage::Db;
use stream::{inbox, retention};

async fn records(db: &Db) -> Vec<String> {
    sqlx::query_scalar("SELECT event_id FROM inbox ORDER BY event_id")
        .fetch_all(db.reader())
        .await
        .unwrap()
}

/// Seven records processed at 1..=7 s past `t0`, for two consumers.
async fn seed(db: &Db, t0: i64) {
    db.migrate("inbox", inbox::MIGRATIONS).await.unwrap();
    for i in 1..=7i64 {
        let consumer = if i % 2 == 0 { "g/a-in-0" } else { "h/b-in-0" };
        testkit::write(
            db,
            sqlx::query("INSERT INTO inbox (consumer, event_id, processed_at) VALUES ($1, $2, $3)")
                .bind(consumer)
                .bind(format!("e{i}"))
                .bind(t0 + i * 1000),
        )
        .await;
    }
}

async fn removes_only_what_is_past_the_window(db: &Db) {
    let t0 = 1_700_000_000_000;
    seed(db, t0).await;
    let r = Retention { inbox: Duration::from_secs(10), batch: 2, ..Retention::default() };
    // As of t0 + 15 s the window reaches back to t0 + 5 s: e1..e4 are past it.
    assert_eq!(retention::inbox_pass(db, &r, t0 + 15_000).await.unwrap(), 4);
    assert_eq!(records(db).await, ["e5", "e6", "e7"]);
    assert_eq!(retention::inbox_pass(db, &r, t0 + 15_000).await.unwrap(), 0, "nothing twice");
    assert_eq!(retention::inbox_pass(db, &r, t0 + 60_000).await.unwrap(), 3);
    assert!(records(db).await.is_empty());
}

#[tokio::test]
async fn inbox_records_past_the_window_go_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_sqlite(&dir.path().join("svc.db")).await.unwrap();
    removes_only_what_is_past_the_window(&db).await;
    db.close().await;
}

#[tokio::test]
async fn inbox_records_past_the_window_go_on_postgres() {
    let temp = testkit::TempDatabase::create("inbox_retention").await;
    let db = Db::open(&temp.url).await.unwrap();
    removes_only_what_is_past_the_window(&db).await;
    db.close().await;
    temp.drop_now().await;
}
