//! A write transaction that costs SQLite fewer round trips.
//!
//! Every statement sent to SQLite's writer is a round trip to the connection's own thread
//! ([`crate::sqlite`]): two thread wake-ups, where SQLite itself needs a microsecond or two.
//! Most writes a handler makes (a history line, an outbox row, a counter update) return
//! nothing it reads. [`Tx`] queues those ([`Tx::write`]) and sends them in front of the next
//! statement that does read, as one round trip; [`Tx::commit`] sends what is still queued
//! first.
//!
//! Guarantees:
//! - Order: statements run in the order they were issued, so a read sees every write issued
//!   before it, exactly as without the queue.
//! - Nothing is lost: the only way to commit is [`Tx::commit`], which sends the queue first.
//!   A `Tx` dropped without it rolls back, queue and all.
//! - What does change: a queued write's error surfaces at the next read, [`Tx::execute`],
//!   [`Tx::flush`] or commit, and fails that call. Code that must know which write failed
//!   flushes first (the inbox does, inside each message's savepoint). A queued write's row
//!   count is not known.
//! - PostgreSQL runs every write at once (its extended protocol takes one statement at a
//!   time), so there nothing changes.
//! - On SQLite `BEGIN` and `COMMIT` travel in the same round trips: `BEGIN` in front of the
//!   first statements sent, `COMMIT` after the last ([`Tx::commit`], [`Tx::fetch_and_commit`]).
//!   A transaction of writes is one round trip; a read and its writes, two.

use sqlx::{
    Any, Transaction,
    any::{AnyArguments, AnyQueryResult, AnyRow},
    query::Query,
};

use crate::{
    Db,
    db::{Backend, SqliteWriterGuard, WriterConn},
    rows,
    sqlite::{Batch, Reply},
};

/// A statement as `sqlx::query(..).bind(..)` builds it.
pub type Statement<'q> = Query<'q, Any, AnyArguments>;

/// Past this many queued values the queue is sent without waiting for a read (SQLite takes
/// at most 32,766 per statement; this bounds the queue's memory).
const MAX_QUEUED_ARGS: usize = 4096;

/// A write transaction on a service database's writer. See the module docs.
pub struct Tx {
    conn: Conn,
    /// Queued statements (SQLite only).
    queued: Batch,
    /// An outbox row was written: the relay has work once this commits.
    pub(crate) enqueued: bool,
}

enum Conn {
    Postgres(Transaction<'static, Any>),
    /// The writer's `open`: `BEGIN` has been sent (else it goes in front of the next round
    /// trip). Until `COMMIT` succeeds; if the `Tx` is dropped, the next writer rolls back.
    Sqlite(SqliteWriterGuard),
}

impl Tx {
    /// Begins a transaction on `db`'s writer.
    pub async fn begin(db: &Db) -> Result<Tx, sqlx::Error> {
        let conn = match db.writer().await?.into_inner() {
            WriterConn::Pool(conn) => Conn::Postgres(Transaction::begin(conn, None).await?),
            WriterConn::Sqlite(writer) => Conn::Sqlite(writer),
        };
        Ok(Tx { conn, queued: Batch::default(), enqueued: false })
    }

    pub fn backend(&self) -> Backend {
        match self.conn {
            Conn::Postgres(_) => Backend::Postgres,
            Conn::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Whether the transaction wrote an outbox row (so its commit should wake the relay).
    pub fn enqueued(&self) -> bool {
        self.enqueued
    }

    /// A write whose result is not needed: queued on SQLite, run at once on PostgreSQL.
    pub async fn write(&mut self, statement: Statement<'_>) -> Result<(), sqlx::Error> {
        match &mut self.conn {
            Conn::Postgres(tx) => {
                statement.execute(&mut **tx).await?;
            }
            Conn::Sqlite(_) => {
                self.queued.push(statement)?;
                if self.queued.values() > MAX_QUEUED_ARGS {
                    self.flush().await?;
                }
            }
        }
        Ok(())
    }

    /// Runs `statement` after the queued writes, in one round trip; its rows.
    pub async fn fetch_all(&mut self, statement: Statement<'_>) -> Result<Vec<AnyRow>, sqlx::Error> {
        if let Conn::Postgres(tx) = &mut self.conn {
            return statement.fetch_all(&mut **tx).await;
        }
        self.queued.push(statement)?;
        Ok(self.send(false).await?.rows)
    }

    /// Runs `statement` after the queued writes, then commits; `statement`'s rows. One round
    /// trip on SQLite.
    pub async fn fetch_and_commit(mut self, statement: Statement<'_>) -> Result<Vec<AnyRow>, sqlx::Error> {
        if let Conn::Postgres(tx) = &mut self.conn {
            let rows = statement.fetch_all(&mut **tx).await?;
            self.commit().await?;
            return Ok(rows);
        }
        self.queued.push(statement)?;
        Ok(self.send(true).await?.rows)
    }

    /// The rows `select` (which ends in `WHERE <key_column> IN`) finds for `keys`: many keys
    /// per statement ([`rows::chunks`]), sorted and deduplicated, the rows in ascending key
    /// order and on PostgreSQL locked in that order (`FOR UPDATE`), so transactions locking
    /// overlapping sets never wait on each other in a cycle.
    pub async fn fetch_locked<'k, K>(&mut self, select: &str, key_column: &str, keys: &[K]) -> Result<Vec<AnyRow>, sqlx::Error>
    where
        K: Ord + Copy + Send + 'k + sqlx::Encode<'k, Any> + sqlx::Type<Any>,
    {
        let mut keys = keys.to_vec();
        keys.sort_unstable();
        keys.dedup();
        let mut out = Vec::with_capacity(keys.len());
        for chunk in rows::chunks(&keys) {
            let sql = format!("{} ORDER BY {key_column}", rows::in_list(select, 1, chunk.len()).0);
            let mut q = sqlx::query(crate::db::lock_rows(self, sql));
            for key in chunk {
                q = q.bind(*key);
            }
            out.extend(self.fetch_all(q).await?);
        }
        Ok(out)
    }

    /// Like [`Tx::fetch_all`], for at most one row.
    pub async fn fetch_optional(&mut self, statement: Statement<'_>) -> Result<Option<AnyRow>, sqlx::Error> {
        if let Conn::Postgres(tx) = &mut self.conn {
            return statement.fetch_optional(&mut **tx).await;
        }
        Ok(self.fetch_all(statement).await?.into_iter().next())
    }

    /// Like [`Tx::fetch_all`], for exactly one row.
    pub async fn fetch_one(&mut self, statement: Statement<'_>) -> Result<AnyRow, sqlx::Error> {
        self.fetch_optional(statement).await?.ok_or(sqlx::Error::RowNotFound)
    }

    /// Runs a write whose row count is needed, after the queued writes (in the same round
    /// trip on SQLite).
    pub async fn execute(&mut self, statement: Statement<'_>) -> Result<AnyQueryResult, sqlx::Error> {
        if let Conn::Postgres(tx) = &mut self.conn {
            return statement.execute(&mut **tx).await;
        }
        self.queued.push(statement)?;
        Ok(self.send(false).await?.result)
    }

    /// Runs `sql`, statements without values (a migration), after the queued writes.
    pub async fn execute_script(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        self.flush().await?;
        match &mut self.conn {
            Conn::Postgres(tx) => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut **tx).await?;
            }
            Conn::Sqlite(writer) => writer.conn.script(sql.to_owned()).await?,
        }
        Ok(())
    }

    /// Sends the queued writes (and `BEGIN`, if not yet sent).
    pub async fn flush(&mut self) -> Result<(), sqlx::Error> {
        if matches!(self.conn, Conn::Sqlite(_)) && !self.queued.is_empty() {
            self.send(false).await?;
        }
        Ok(())
    }

    /// Drops the queued writes: before rolling back to a savepoint they belong after.
    pub fn discard(&mut self) {
        self.queued = Batch::default();
    }

    /// Sends the queue and commits (one round trip on SQLite).
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        match self.conn {
            Conn::Postgres(tx) => tx.commit().await,
            // A transaction that sent and queued nothing has nothing to commit.
            Conn::Sqlite(ref writer) if !writer.open && self.queued.is_empty() => Ok(()),
            Conn::Sqlite(_) => self.send(true).await.map(drop),
        }
    }

    /// Sends the queue (`BEGIN` in front unless sent, `COMMIT` after it if `commit`); the
    /// reply of the statement queued last.
    async fn send(&mut self, commit: bool) -> Result<Reply, sqlx::Error> {
        let Conn::Sqlite(writer) = &mut self.conn else {
            return Ok(Reply::default());
        };
        let mut batch = std::mem::take(&mut self.queued);
        batch.begin = !writer.open;
        batch.commit = commit;
        // From here a failed round trip may have begun the transaction: the next writer
        // rolls it back.
        writer.open = true;
        let reply = writer.conn.run(batch).await?;
        writer.open = !commit;
        Ok(reply)
    }
}
