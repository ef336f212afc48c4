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
//!
//! Group commit (SQLite): a `Tx` that commits while others wait to begin may hand its open
//! transaction on to them, so one durable commit covers many; `commit` still returns only
//! once its work is durable. The state machine is [`crate::writer`]'s.
//!
//! After-commit work ([`Tx::on_commit`]) runs only once the transaction is durable, and is
//! dropped with it, or with the savepoint it was registered after ([`Tx::savepoint`]): a
//! metric of something that committed is counted once, however often a batch is retried.
//!
//! PostgreSQL: rows a decision reads are locked with `FOR UPDATE` ([`lock_rows`]), always in
//! ascending key order ([`Tx::fetch_locked`]); a record that may not exist yet is guarded by
//! a transaction-scoped advisory lock on its business key ([`lock_key`]).

use sqlx::{
    Any, AssertSqlSafe, Transaction,
    any::{AnyQueryResult, AnyRow},
};

use crate::{
    Db,
    db::{Backend, TxWriter},
    rows,
    sqlite::{Batch, Reply, Statement},
    writer::{self, SqliteWriterGuard, WriterSlot},
};

/// Past this many queued values the queue is sent without waiting for a read (SQLite takes
/// at most 32,766 per statement; this bounds the queue's memory).
const MAX_QUEUED_ARGS: usize = 4096;

/// A write transaction on a service database's writer. See the module docs.
pub struct Tx {
    conn: Conn,
    /// Queued statements (SQLite only).
    queued: Batch,
    /// An event was enqueued (an outbox row written): its relay has work once this commits.
    enqueued: bool,
    /// Run, in order, once the commit succeeded.
    after_commit: Vec<Box<dyn FnOnce() + Send>>,
}

/// An open savepoint of a [`Tx`], closed by [`Tx::end_savepoint`].
#[must_use = "a savepoint is closed with Tx::end_savepoint"]
pub struct Savepoint {
    name: &'static str,
    /// `after_commit` hooks registered before it.
    hooks: usize,
}

enum Conn {
    Postgres(Transaction<'static, Any>),
    /// SQLite's writer, held until commit or drop; `slot` to queue for it again (group
    /// commit). `joins`: it held a group's open transaction when this began, so this runs in
    /// savepoint `tx` (opened in front of its first round trip, the writer's `joined`);
    /// else in a transaction of its own (`BEGIN` in front of its first round trip, the
    /// writer's `open`). If the `Tx` is dropped, the next holder undoes either.
    Sqlite {
        writer: SqliteWriterGuard,
        slot: WriterSlot,
        joins: bool,
    },
}

impl Tx {
    /// Begins a transaction on `db`'s writer.
    pub async fn begin(db: &Db) -> Result<Tx, sqlx::Error> {
        let conn = match db.tx_writer().await? {
            TxWriter::Sqlite(writer, slot) => {
                Conn::Sqlite { joins: writer.in_group(), writer, slot }
            }
            TxWriter::Pool(conn) => Conn::Postgres(Transaction::begin(conn, None).await?),
        };
        Ok(Tx { conn, queued: Batch::default(), enqueued: false, after_commit: Vec::new() })
    }

    pub fn backend(&self) -> Backend {
        match self.conn {
            Conn::Postgres(_) => Backend::Postgres,
            Conn::Sqlite { .. } => Backend::Sqlite,
        }
    }

    /// Whether the transaction enqueued an event (so its commit should wake the relay).
    pub fn enqueued(&self) -> bool {
        self.enqueued
    }

    /// Records that the transaction enqueued an event ([`Tx::enqueued`]).
    pub fn mark_enqueued(&mut self) {
        self.enqueued = true;
    }

    /// A write whose result is not needed: queued on SQLite, run at once on PostgreSQL.
    pub async fn write(&mut self, statement: Statement<'_>) -> Result<(), sqlx::Error> {
        match &mut self.conn {
            Conn::Postgres(tx) => {
                statement.execute(&mut **tx).await?;
            }
            Conn::Sqlite { .. } => {
                self.queued.push(statement)?;
                if self.queued.values() > MAX_QUEUED_ARGS {
                    self.flush().await?;
                }
            }
        }
        Ok(())
    }

    /// Runs `statement` after the queued writes, in one round trip; its rows.
    pub async fn fetch_all(
        &mut self,
        statement: Statement<'_>,
    ) -> Result<Vec<AnyRow>, sqlx::Error> {
        if let Conn::Postgres(tx) = &mut self.conn {
            return statement.fetch_all(&mut **tx).await;
        }
        self.queued.push(statement)?;
        Ok(self.send().await?.rows)
    }

    /// Runs `statement` after the queued writes, then commits; `statement`'s rows. One round
    /// trip on SQLite (two when deferring to a group commit, the second `COMMIT` alone).
    pub async fn fetch_and_commit(
        self,
        statement: Statement<'_>,
    ) -> Result<Vec<AnyRow>, sqlx::Error> {
        let Tx { conn, mut queued, after_commit, .. } = self;
        let rows = match conn {
            Conn::Postgres(mut tx) => {
                let rows = statement.fetch_all(&mut *tx).await?;
                tx.commit().await?;
                rows
            }
            Conn::Sqlite { writer, slot, joins } => {
                queued.push(statement)?;
                writer::finish(writer, slot, joins, queued).await?.rows
            }
        };
        after_commit.into_iter().for_each(|f| f());
        Ok(rows)
    }

    /// The rows `select` (which ends in `WHERE <key_column> IN`) finds for `keys`: many keys
    /// per statement ([`rows::chunks`]), sorted and deduplicated, the rows in ascending key
    /// order and on PostgreSQL locked in that order (`FOR UPDATE`), so transactions locking
    /// overlapping sets never wait on each other in a cycle.
    pub async fn fetch_locked<'k, K>(
        &mut self,
        select: &str,
        key_column: &str,
        keys: &[K],
    ) -> Result<Vec<AnyRow>, sqlx::Error>
    where
        K: Ord + Copy + Send + 'k + sqlx::Encode<'k, Any> + sqlx::Type<Any>,
    {
        let mut keys = keys.to_vec();
        keys.sort_unstable();
        keys.dedup();
        let mut out = Vec::with_capacity(keys.len());
        for chunk in rows::chunks(&keys) {
            let sql = format!("{} ORDER BY {key_column}", rows::in_list(select, 1, chunk.len()).0);
            let mut q = sqlx::query(lock_rows(self, sql));
            for key in chunk {
                q = q.bind(*key);
            }
            out.extend(self.fetch_all(q).await?);
        }
        Ok(out)
    }

    /// Like [`Tx::fetch_all`], for at most one row.
    pub async fn fetch_optional(
        &mut self,
        statement: Statement<'_>,
    ) -> Result<Option<AnyRow>, sqlx::Error> {
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
    pub async fn execute(
        &mut self,
        statement: Statement<'_>,
    ) -> Result<AnyQueryResult, sqlx::Error> {
        if let Conn::Postgres(tx) = &mut self.conn {
            return statement.execute(&mut **tx).await;
        }
        self.queued.push(statement)?;
        Ok(self.send().await?.result)
    }

    /// Runs `sql`, statements without values (a migration), after the queued writes.
    pub async fn execute_script(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        self.flush().await?;
        match &mut self.conn {
            Conn::Postgres(tx) => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut **tx).await?;
            }
            Conn::Sqlite { writer, .. } => writer.conn.script(sql.to_owned()).await?,
        }
        Ok(())
    }

    /// Sends the queued writes (and `BEGIN`, if not yet sent).
    pub async fn flush(&mut self) -> Result<(), sqlx::Error> {
        if matches!(self.conn, Conn::Sqlite { .. }) && !self.queued.is_empty() {
            self.send().await?;
        }
        Ok(())
    }

    /// Runs `f` once this transaction has committed; never if it does not.
    pub fn on_commit(&mut self, f: impl FnOnce() + Send + 'static) {
        self.after_commit.push(Box::new(f));
    }

    /// Opens savepoint `name` (an SQL identifier): what follows, up to
    /// [`Tx::end_savepoint`], can be undone alone.
    pub async fn savepoint(&mut self, name: &'static str) -> Result<Savepoint, sqlx::Error> {
        self.execute(sqlx::query(AssertSqlSafe(format!("SAVEPOINT {name}")))).await?;
        Ok(Savepoint { name, hooks: self.after_commit.len() })
    }

    /// Closes `sp`, keeping what was done since it or (`keep` false) undoing it: writes
    /// still queued, database changes and [`Tx::on_commit`] work alike.
    pub async fn end_savepoint(&mut self, sp: Savepoint, keep: bool) -> Result<(), sqlx::Error> {
        let Savepoint { name, hooks } = sp;
        if !keep {
            self.queued = Batch::default();
            self.after_commit.truncate(hooks);
            // ROLLBACK TO leaves the savepoint open; RELEASE below closes it.
            self.execute(sqlx::query(AssertSqlSafe(format!("ROLLBACK TO SAVEPOINT {name}"))))
                .await?;
        }
        self.execute(sqlx::query(AssertSqlSafe(format!("RELEASE SAVEPOINT {name}")))).await?;
        Ok(())
    }

    /// Sends the queue and commits (one round trip on SQLite; two when deferring to a
    /// group commit), then runs the [`Tx::on_commit`] work.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        let Tx { conn, queued, after_commit, .. } = self;
        match conn {
            Conn::Postgres(tx) => tx.commit().await?,
            Conn::Sqlite { writer, slot, joins } => {
                writer::finish(writer, slot, joins, queued).await.map(drop)?
            }
        }
        after_commit.into_iter().for_each(|f| f());
        Ok(())
    }

    /// Sends the queue (opening the transaction or savepoint in front, if not yet); the
    /// reply of the statement queued last.
    async fn send(&mut self) -> Result<Reply, sqlx::Error> {
        let Conn::Sqlite { writer, joins, .. } = &mut self.conn else {
            return Ok(Reply::default());
        };
        let mut batch = std::mem::take(&mut self.queued);
        writer.open(*joins, &mut batch);
        writer.conn.run(batch).await
    }
}

/// Serializes the transactions that touch `key` (e.g. an orderNo) until commit: a
/// transaction-scoped advisory lock on PostgreSQL; nothing on SQLite, whose single writer
/// already serializes.
pub async fn lock_key(tx: &mut Tx, key: &str) -> Result<(), sqlx::Error> {
    if tx.backend() == Backend::Postgres {
        tx.write(sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))").bind(key))
            .await?;
    }
    Ok(())
}

/// `select` with `FOR UPDATE` appended on PostgreSQL (on SQLite the single writer already
/// serializes read-decide-write transactions).
pub fn lock_rows(tx: &Tx, select: impl Into<String>) -> AssertSqlSafe<String> {
    let mut sql = select.into();
    if tx.backend() == Backend::Postgres {
        sql.push_str(" FOR UPDATE");
    }
    AssertSqlSafe(sql)
}
