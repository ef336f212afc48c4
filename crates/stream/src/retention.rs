//! Inbox retention: a consumer's record of an eventId goes once it is older than the
//! deduplication window (`orderflow.retention.inbox`, [`Retention`]).
//!
//! - Removal runs in the background, a pass every `interval`, each statement removing at most
//!   `batch` records (oldest first, found through the `processed_at` index), each in its own
//!   short transaction: a consumer's commit waits for at most one batch. Rows are named by
//!   their physical address (SQLite's `rowid`, PostgreSQL's `ctid`), read from the index.
//! - Nothing of the flow depends on a removed record: the window is longer than the broker
//!   can redeliver from ([`Retention::check_inbox`]), and a duplicate that still arrives later
//!   meets the business keys (one reservation, deduction, payment and refund per order; the
//!   order state machine), which give it no second effect.
//! - Freed pages are reused by the next inserts (SQLite's free list, PostgreSQL's vacuum), so
//!   under steady load the table stops growing at about a window's worth of records.

use std::time::Duration;

use binding::{Metrics, Retention, metrics};
use storage::{Backend, Db, Tx};
use tokio_util::sync::CancellationToken;

/// Removes up to `batch` inbox records processed before `before` (epoch millis); how many.
pub async fn prune_inbox(db: &Db, before: i64, batch: usize) -> Result<u64, sqlx::Error> {
    // The rows are named by their physical address, which the `processed_at` index carries:
    // the batch is found in the index alone, without a read of each row and a search of the
    // primary key. The limit is part of the text: SQLite plans a bound LIMIT again at every
    // bind.
    let row = match db.backend() {
        Backend::Sqlite => "rowid",
        Backend::Postgres => "ctid",
    };
    let sql = format!(
        "DELETE FROM inbox WHERE {row} IN (
             SELECT {row} FROM inbox WHERE processed_at < $1
             ORDER BY processed_at LIMIT {batch})"
    );
    let mut tx = Tx::begin(db).await?;
    let removed =
        tx.execute(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(before)).await?.rows_affected();
    tx.commit().await?;
    Ok(removed)
}

/// One pass: every inbox record past the window, a batch at a time; how many went.
pub async fn inbox_pass(
    db: &Db,
    retention: &Retention,
    now_millis: i64,
) -> Result<u64, sqlx::Error> {
    let before = Retention::cutoff(now_millis, retention.inbox);
    let mut total = 0;
    loop {
        let removed = prune_inbox(db, before, retention.batch).await?;
        total += removed;
        if removed < retention.batch as u64 {
            return Ok(total);
        }
        // Let the consumers' transactions in between batches.
        tokio::task::yield_now().await;
    }
}

/// Runs [`inbox_pass`] every `retention.interval` until `token` is cancelled, counting what
/// it removes as `orderflow_retention_removed_total{database=<service>, table="inbox"}`.
pub async fn run_inbox(
    db: Db,
    service: &'static str,
    retention: Retention,
    metrics: Metrics,
    token: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(retention.interval) => {}
        }
        match inbox_pass(&db, &retention, events::now_millis()).await {
            Ok(0) => {}
            Ok(n) => {
                metrics.inc(
                    metrics::RETENTION_REMOVED,
                    &[("database", service), ("table", "inbox")],
                    n,
                );
                tracing::debug!(service, removed = n, "inbox records past the window removed");
            }
            Err(e) => {
                tracing::warn!(service, error = %e, "inbox retention pass failed; will try again");
                // A failing database is not hammered.
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    }
}
