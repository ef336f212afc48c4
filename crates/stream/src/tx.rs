//! A write transaction that costs SQLite fewer round trips.
//!
//! Every statement sqlx runs on SQLite is a round trip to the connection's own thread: two
//! thread wake-ups, about 40 µs, where SQLite itself needs one or two. Most writes a handler
//! makes (a history line, an outbox row, a counter update) return nothing it reads. [`Tx`]
//! queues those ([`Tx::write`]) and sends them in front of the next statement that does
//! read, as one multi-statement round trip; [`Tx::commit`] sends what is still queued first.
//!
//! Guarantees:
//! - Order: statements run in the order they were issued, so a read sees every write issued
//!   before it, exactly as without the queue.
//! - Nothing is lost: the only way to commit is [`Tx::commit`], which sends the queue first.
//!   A `Tx` dropped without it rolls back, queue and all.
//! - What does change: a queued write's error surfaces at the next read, [`Tx::flush`] or
//!   commit, and fails that call. Code that must know which write failed flushes first (the
//!   inbox does, inside each message's savepoint). A queued write's row count is not known.
//! - PostgreSQL runs every write at once (its extended protocol takes one statement at a
//!   time), so there nothing changes.
//! - On SQLite `BEGIN` and `COMMIT` travel in the same round trips: `BEGIN` in front of the
//!   first statements sent, `COMMIT` after the last ([`Tx::commit`], [`Tx::fetch_and_commit`]),
//!   where sqlx's own transaction costs a round trip for each (and its pool one more, a ping
//!   when the connection is returned). A transaction of writes is one round trip; a read and
//!   its writes, two.
//!
//! sqlx 0.9 deprecates multi-statement queries (only its SQLite driver runs them); the
//! `Tx` tests in `tests/inbox.rs` fail if a later version stops.

use sqlx::{
    Any, AnyConnection, AssertSqlSafe, Execute, Transaction,
    any::{AnyArguments, AnyQueryResult, AnyRow},
    query::Query,
};

use crate::{
    Db,
    db::{Backend, SqliteWriterGuard, WriterConn},
    rows,
};

/// A statement as `sqlx::query(..).bind(..)` builds it.
pub type Statement<'q> = Query<'q, Any, AnyArguments>;

/// Past this many queued arguments the queue is sent without waiting for a read (SQLite
/// takes at most 32,766 per statement).
const MAX_QUEUED_ARGS: usize = 4096;

/// A write transaction on a service database's writer. See the module docs.
pub struct Tx {
    conn: Conn,
    /// Queued statements, `;`-separated, their placeholders anonymous (`?`), bound in
    /// order from `args`.
    queued: String,
    args: AnyArguments,
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
        Ok(Tx { conn, queued: String::new(), args: AnyArguments::default(), enqueued: false })
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
                self.queue(statement)?;
                if self.args.values.0.len() > MAX_QUEUED_ARGS {
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
        self.queue(statement)?;
        self.send_fetch().await
    }

    /// Runs `statement` after the queued writes, then commits; `statement`'s rows. One round
    /// trip on SQLite.
    pub async fn fetch_and_commit(mut self, statement: Statement<'_>) -> Result<Vec<AnyRow>, sqlx::Error> {
        if let Conn::Postgres(tx) = &mut self.conn {
            let rows = statement.fetch_all(&mut **tx).await?;
            self.commit().await?;
            return Ok(rows);
        }
        self.queue(statement)?;
        self.queued.push_str("COMMIT;\n");
        let rows = self.send_fetch().await?;
        if let Conn::Sqlite(writer) = &mut self.conn {
            writer.open = false;
        }
        Ok(rows)
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

    /// Runs a write whose row count is needed, after sending the queue.
    pub async fn execute(&mut self, statement: Statement<'_>) -> Result<AnyQueryResult, sqlx::Error> {
        self.flush().await?;
        statement.execute(self.raw()).await
    }

    /// Sends the queued writes (and `BEGIN`, if not yet sent).
    pub async fn flush(&mut self) -> Result<(), sqlx::Error> {
        if let Some((sql, args)) = self.take() {
            sqlx::query_with(AssertSqlSafe(sql), args).execute(self.raw()).await?;
        }
        Ok(())
    }

    /// Drops the queued writes: before rolling back to a savepoint they belong after.
    pub fn discard(&mut self) {
        self.queued.clear();
        self.args = AnyArguments::default();
    }

    /// The connection, with the queue sent: for SQL that is not a [`Statement`].
    pub async fn conn(&mut self) -> Result<&mut AnyConnection, sqlx::Error> {
        self.flush().await?;
        Ok(self.raw())
    }

    /// Sends the queue and commits (one round trip on SQLite).
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        // On SQLite, a transaction that sent and queued nothing has nothing to commit.
        if let Conn::Sqlite(writer) = &self.conn
            && (writer.open || !self.queued.is_empty())
        {
            self.queued.push_str("COMMIT;\n");
            self.flush().await?;
        }
        match self.conn {
            Conn::Postgres(tx) => tx.commit().await,
            Conn::Sqlite(mut writer) => {
                writer.open = false;
                Ok(())
            }
        }
    }

    fn raw(&mut self) -> &mut AnyConnection {
        match &mut self.conn {
            Conn::Postgres(tx) => tx,
            Conn::Sqlite(writer) => &mut writer.conn,
        }
    }

    async fn send_fetch(&mut self) -> Result<Vec<AnyRow>, sqlx::Error> {
        match self.take() {
            // Only the statement queued last returns rows: the ones before it are writes.
            Some((sql, args)) => sqlx::query_with(AssertSqlSafe(sql), args).fetch_all(self.raw()).await,
            None => Ok(Vec::new()),
        }
    }

    fn queue(&mut self, mut statement: Statement<'_>) -> Result<(), sqlx::Error> {
        let args = statement.take_arguments().map_err(sqlx::Error::Encode)?.map(|a| a.values.0).unwrap_or_default();
        let sql = statement.sql();
        anonymize(sql.as_str().trim_end_matches([';', ' ', '\n']), &args, &mut self.queued, &mut self.args.values.0)?;
        self.queued.push_str(";\n");
        Ok(())
    }

    /// The queue to send, `BEGIN` in front if it has not gone yet; `None` if there is none.
    fn take(&mut self) -> Option<(String, AnyArguments)> {
        let mut sql = std::mem::take(&mut self.queued);
        if let Conn::Sqlite(writer) = &mut self.conn
            && !writer.open
        {
            sql.insert_str(0, "BEGIN;\n");
            writer.open = true;
        }
        (!sql.is_empty()).then(|| (sql, std::mem::take(&mut self.args)))
    }
}

/// Appends `sql` to `out` with every `$N` placeholder (outside string literals) written as
/// an anonymous `?`, and pushes `args[N - 1]` for it onto `values`: a placeholder used twice
/// gets its value twice. sqlx binds anonymous parameters in order, continuing from the
/// statement before, so the queue needs no renumbering; and its SQL text is the same each
/// time the same statements are queued, so sqlx's statement cache keeps it prepared.
/// (sqlx looks up the name of every numbered parameter, a scan of the statement's parameter
/// list in SQLite: quadratic in a many-row statement's parameters.)
fn anonymize<V: Clone>(sql: &str, args: &[V], out: &mut String, values: &mut Vec<V>) -> Result<(), sqlx::Error> {
    let mut quoted = false;
    let mut chars = sql.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' => quoted = !quoted,
            '$' if !quoted => {
                let digits = sql[i + 1..].bytes().take_while(u8::is_ascii_digit).count();
                if let Ok(n) = sql[i + 1..i + 1 + digits].parse::<usize>() {
                    let value = n.checked_sub(1).and_then(|k| args.get(k)).ok_or_else(|| {
                        sqlx::Error::Encode(format!("placeholder ${n} has no bound value ({} bound)", args.len()).into())
                    })?;
                    values.push(value.clone());
                    out.push('?');
                    for _ in 0..digits {
                        chars.next();
                    }
                    continue;
                }
            }
            _ => {}
        }
        out.push(c);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::anonymize;

    #[test]
    fn placeholders_become_anonymous_in_text_order_outside_literals() {
        let args: Vec<i64> = (1..=10).map(|i| i * 100).collect();
        let (mut out, mut values) = (String::new(), Vec::new());
        anonymize("UPDATE t SET a = $1, b = '$2' WHERE c = $10 AND d = $ AND e = $1", &args, &mut out, &mut values).unwrap();
        assert_eq!(out, "UPDATE t SET a = ?, b = '$2' WHERE c = ? AND d = $ AND e = ?");
        assert_eq!(values, [100, 1000, 100]);
    }

    #[test]
    fn a_placeholder_without_a_value_is_an_error() {
        let (mut out, mut values) = (String::new(), Vec::new());
        let err = anonymize("SELECT $2", &[1], &mut out, &mut values).unwrap_err();
        assert!(err.to_string().contains("$2"), "{err}");
    }
}
