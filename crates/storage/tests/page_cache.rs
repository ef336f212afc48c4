//! SQLite's page caches live in the slab the first `Db::open_sqlite` gives SQLite, not on
//! the heap, and the memory figure counts them. A test binary of its own: SQLite takes the
//! slab only before it initializes, at the process's first connection.

use rusqlite::ffi;
use storage::{Db, sqlite_memory_bytes};

/// (current, highest) of one of SQLite's process-wide counters.
fn status(op: i32) -> (i64, i64) {
    let (mut current, mut highest) = (0_i64, 0_i64);
    // SAFETY: writes two integers through the pointers given.
    let rc = unsafe { ffi::sqlite3_status64(op, &mut current, &mut highest, 0) };
    assert_eq!(rc, ffi::SQLITE_OK);
    (current, highest)
}

#[tokio::test]
async fn page_caches_use_the_slab_and_the_memory_gauge_counts_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open_sqlite(&dir.path().join("p.db")).await.expect("open");
    db.writer()
        .await
        .expect("writer")
        .execute(sqlx::query("CREATE TABLE t (id BIGINT PRIMARY KEY, b BLOB NOT NULL)"))
        .await
        .expect("create");
    // About 100 pages of rows, read back through a reader.
    db.writer()
        .await
        .expect("writer")
        .execute(sqlx::query(
            "INSERT INTO t WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
             SELECT i, randomblob(200) FROM n",
        ))
        .await
        .expect("insert");
    let bytes: i64 = sqlx::query_scalar("SELECT SUM(LENGTH(b)) FROM t")
        .fetch_one(db.reader())
        .await
        .expect("read");
    assert_eq!(bytes, 400_000);

    let (slots, _) = status(ffi::SQLITE_STATUS_PAGECACHE_USED);
    let (_, overflow_high) = status(ffi::SQLITE_STATUS_PAGECACHE_OVERFLOW);
    assert!(
        slots >= 100,
        "the pages read and written are cached in the slab: {slots} slots in use"
    );
    assert_eq!(overflow_high, 0, "no page came from the heap");

    let sqlite = sqlite_memory_bytes();
    assert!(sqlite >= slots * 4096, "the gauge's figure counts the slab's pages");
    let resident = binding::metrics::resident_bytes("self").expect("/proc/self/status");
    assert!(resident > sqlite as u64, "resident memory {resident} holds SQLite's {sqlite}");
    db.close().await;
}
