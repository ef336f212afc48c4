//! Opening a database and applying versioned migrations.
//!
//! Storage goes through `sqlx::Any`, so the same SQL (`$N` placeholders, `ON CONFLICT`,
//! `RETURNING`) serves SQLite and PostgreSQL.
//!
//! SQLite (one process owns the file):
//! - WAL journal with `synchronous=FULL`: a commit is fsync-durable before it returns.
//! - All writes go through one connection, so write transactions never race for SQLite's
//!   single write lock and a read-decide-write inside a transaction cannot interleave with
//!   another; reads use a separate small pool (sqlx's) and see committed data (WAL).
//! - The writer connection is ours ([`crate::sqlite`]: one thread hand-off each way per
//!   round trip), held behind a mutex, not in a pool. A transaction left open by a dropped
//!   [`Tx`] is rolled back by the next holder.
//! - Group commit: a [`Tx`] that commits while others wait to begin hands its open
//!   transaction on to them instead of committing, and one durable commit covers them all
//!   ([`crate::tx`]). [`Db::writer`] (statements outside a `Tx`) commits such a group before
//!   it runs anything, so it never reads what is not yet durable.
//!
//! PostgreSQL (several instances may share the database):
//! - one pool for reads and writes; rows a decision reads are locked with `FOR UPDATE`
//!   ([`lock_rows`]), always in ascending key order, so concurrent instances serialize per
//!   order and per product instead of racing;
//! - a record that may not exist yet (stock's reservation, payment's payment) cannot be
//!   locked, so handlers first take a transaction-scoped advisory lock on the business key
//!   ([`lock_key`]): two events of one order never decide at the same time.
//!
//! Migrations are numbered per component (`outbox`, `inbox`, `order`, ...) and recorded in
//! `schema_migrations`; each is applied once, in its own transaction, at startup. They are
//! written in SQLite's dialect; for PostgreSQL `INTEGER PRIMARY KEY AUTOINCREMENT` becomes
//! `BIGSERIAL PRIMARY KEY` and `BLOB` becomes `BYTEA` (the only two differences we use).

use std::{
    path::Path,
    str::FromStr,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use crate::{
    Tx,
    outbox::Published,
    sqlite::{self, Batch},
    tx::Statement,
};
use sqlx::{
    Any, AnyPool, AssertSqlSafe, Executor,
    any::{AnyConnectOptions, AnyPoolOptions, AnyQueryResult, AnyRow},
    pool::PoolConnection,
};
use tokio::sync::{Mutex, OwnedMappedMutexGuard, OwnedMutexGuard};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Serializes the transactions that touch `key` (e.g. an orderNo) until commit: a
/// transaction-scoped advisory lock on PostgreSQL; nothing on SQLite, whose single writer
/// already serializes.
pub async fn lock_key(tx: &mut Tx, key: &str) -> Result<(), sqlx::Error> {
    if tx.backend() == Backend::Postgres {
        tx.write(sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))").bind(key)).await?;
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

/// How long [`Db::writer`] waits for SQLite's one writer connection.
const WRITER_WAIT: Duration = Duration::from_secs(60);

const PRAGMAS: &str = "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY;";

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migration {component} #{version}: {source}")]
    Migrate {
        component: String,
        version: usize,
        #[source]
        source: sqlx::Error,
    },
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// A service's database: one writer connection and a pool of readers.
#[derive(Clone, Debug)]
pub struct Db {
    writer: Writers,
    reader: AnyPool,
    backend: Backend,
    published: Arc<Published>,
    /// Transactions waiting for SQLite's writer to begin ([`Db::tx_writer`]).
    joiners: Arc<AtomicUsize>,
    /// Durable commits of transactions on SQLite's writer.
    commits: Arc<AtomicU64>,
}

#[derive(Clone, Debug)]
enum Writers {
    /// SQLite's one writer connection; `None` once closed.
    Sqlite(WriterSlot),
    Pool(AnyPool),
}

pub(crate) type WriterSlot = Arc<Mutex<Option<SqliteWriter>>>;

/// Transactions whose work shares one open SQLite transaction: each deferred its commit to
/// those waiting behind it, and the first of them back at the writer commits for all
/// ([`crate::tx`]).
#[derive(Debug, Default)]
pub(crate) struct Group {
    /// The shared commit's outcome, once it ran.
    outcome: OnceLock<Result<(), String>>,
}

impl Group {
    /// The shared commit's outcome, once it ran.
    pub(crate) fn outcome(&self) -> Option<Result<(), sqlx::Error>> {
        self.outcome.get().map(|r| r.clone().map_err(|e| sqlx::Error::Protocol(format!("group commit failed: {e}"))))
    }

    pub(crate) fn settle(&self, result: Result<(), String>) {
        let _ = self.outcome.set(result);
    }
}

#[derive(Debug)]
pub(crate) struct SqliteWriter {
    pub(crate) conn: sqlite::Connection,
    /// `BEGIN` was sent on it and the transaction not (known to be) ended.
    pub(crate) open: bool,
    /// The outbox rows whose deletes ride on the next commit ([`crate::outbox`]).
    pub(crate) published: Arc<Published>,
    /// The open transaction holds the work of this group's transactions, and how many.
    pub(crate) group: Option<(Arc<Group>, usize)>,
    /// A `Tx` that joined `group` has its savepoint open (it runs, or was dropped).
    pub(crate) joined: bool,
    /// Transactions waiting to begin ([`Db::tx_writer`]).
    joiners: Arc<AtomicUsize>,
    /// Durable commits ([`Db::commits`]).
    commits: Arc<AtomicU64>,
}

pub(crate) type SqliteWriterGuard = OwnedMappedMutexGuard<Option<SqliteWriter>, SqliteWriter>;

/// What a [`Tx`] runs on ([`Db::tx_writer`]): SQLite's writer, with its slot to queue for it
/// again, or one of PostgreSQL's pool.
pub(crate) enum TxWriter {
    Sqlite(SqliteWriterGuard, WriterSlot),
    Pool(PoolConnection<Any>),
}

/// The writer connection, held until dropped: SQLite's one connection, or one of
/// PostgreSQL's pool.
#[derive(Debug)]
pub struct Writer(WriterConn);

#[derive(Debug)]
pub(crate) enum WriterConn {
    Sqlite(SqliteWriterGuard),
    Pool(PoolConnection<Any>),
}

impl Writer {
    /// Runs `statement`, committed on its own; its row count.
    pub async fn execute(&mut self, statement: Statement<'_>) -> Result<AnyQueryResult, sqlx::Error> {
        match &mut self.0 {
            WriterConn::Pool(conn) => statement.execute(&mut **conn).await,
            WriterConn::Sqlite(w) => Ok(w.conn.run(Batch::of(statement)?).await?.result),
        }
    }

    /// Runs `statement` (a read, or a write committed on its own); its rows.
    pub async fn fetch_all(&mut self, statement: Statement<'_>) -> Result<Vec<AnyRow>, sqlx::Error> {
        match &mut self.0 {
            WriterConn::Pool(conn) => statement.fetch_all(&mut **conn).await,
            WriterConn::Sqlite(w) => Ok(w.conn.run(Batch::of(statement)?).await?.rows),
        }
    }
}

impl Db {
    /// Opens `location`: a `postgres://` URL, else a SQLite file path (created if missing).
    pub async fn open(location: &str) -> Result<Db, DbError> {
        if location.starts_with("postgres://") || location.starts_with("postgresql://") {
            Db::open_postgres(location).await
        } else {
            Db::open_sqlite(Path::new(location.strip_prefix("sqlite://").unwrap_or(location))).await
        }
    }

    /// Connects to an existing PostgreSQL database.
    pub async fn open_postgres(url: &str) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let shown = redact(url);
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await
            .map_err(|source| DbError::Open { path: shown, source })?;
        Ok(Db { writer: Writers::Pool(pool.clone()), reader: pool, backend: Backend::Postgres, published: Arc::default(), joiners: Arc::default(), commits: Arc::default() })
    }

    /// Creates database `name` on the PostgreSQL server of `server_url` (any database URL on
    /// that server) unless it exists; returns its URL.
    pub async fn create_postgres_database(server_url: &str, name: &str) -> Result<String, DbError> {
        sqlx::any::install_default_drivers();
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(DbError::Open { path: name.into(), source: sqlx::Error::Configuration("database names are [A-Za-z0-9_]".into()) });
        }
        let admin = AnyPoolOptions::new().max_connections(1).connect(server_url).await
            .map_err(|source| DbError::Open { path: redact(server_url), source })?;
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(name)
            .fetch_optional(&admin)
            .await?;
        if exists.is_none() {
            admin.execute(AssertSqlSafe(format!("CREATE DATABASE {name}"))).await?;
        }
        admin.close().await;
        Ok(replace_database(server_url, name))
    }

    /// Drops database `name` on the server of `server_url` (tests clean up with this).
    pub async fn drop_postgres_database(server_url: &str, name: &str) -> Result<(), DbError> {
        let admin = AnyPoolOptions::new().max_connections(1).connect(server_url).await
            .map_err(|source| DbError::Open { path: redact(server_url), source })?;
        admin.execute(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).await?;
        admin.close().await;
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Tells SQLite's page-cache slab how many SQLite databases this process will open
    /// (four if not told: `orderflow up`'s). Call it before the first is opened; after, it
    /// changes nothing.
    pub fn plan_sqlite_databases(n: usize) {
        sqlite::plan_databases(n);
    }

    /// Opens (creating if missing) the SQLite file at `path`.
    pub async fn open_sqlite(path: &Path) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let open_err = |source| DbError::Open { path: path.display().to_string(), source };
        let options = AnyConnectOptions::from_str(&url).map_err(open_err)?;
        // The writer first: it creates the file and sets WAL mode before the readers open.
        let writer = sqlite::Connection::open(path, PRAGMAS).await.map_err(open_err)?;
        // A file connection does not go stale: no ping (a round trip) before each acquire.
        let reader = AnyPoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute(PRAGMAS).await?;
                    conn.execute(sqlite::READER_CACHE_PRAGMA).await?;
                    Ok(())
                })
            })
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(open_err)?;
        let published = Arc::new(Published::default());
        let joiners = Arc::new(AtomicUsize::new(0));
        let commits = Arc::new(AtomicU64::new(0));
        let writer = SqliteWriter {
            conn: writer,
            open: false,
            published: published.clone(),
            group: None,
            joined: false,
            joiners: joiners.clone(),
            commits: commits.clone(),
        };
        Ok(Db { writer: Writers::Sqlite(Arc::new(Mutex::new(Some(writer)))), reader, backend: Backend::Sqlite, published, joiners, commits })
    }

    /// The writer connection, for writes outside a [`Tx`] (each statement commits on its
    /// own). Waits while another holds it (on SQLite there is one).
    pub async fn writer(&self) -> Result<Writer, sqlx::Error> {
        match &self.writer {
            Writers::Pool(pool) => Ok(Writer(WriterConn::Pool(pool.acquire().await?))),
            Writers::Sqlite(slot) => {
                let mut w = lock_sqlite(slot).await?;
                // Its statements commit on their own, and must not read a group's work
                // before it is durable: the group commits first.
                w.commit_group().await?;
                Ok(Writer(WriterConn::Sqlite(w)))
            }
        }
    }

    /// The writer for a [`Tx`]: a pool connection on PostgreSQL; on SQLite the one writer,
    /// counted as waiting while it waits, so a committing `Tx` can defer to it (group
    /// commit, [`crate::tx`]).
    pub(crate) async fn tx_writer(&self) -> Result<TxWriter, sqlx::Error> {
        let slot = match &self.writer {
            Writers::Pool(pool) => return Ok(TxWriter::Pool(pool.acquire().await?)),
            Writers::Sqlite(slot) => slot,
        };
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.joiners.fetch_add(1, Ordering::SeqCst);
        let waiting = Waiting(&self.joiners);
        let w = lock_sqlite(slot).await?;
        drop(waiting);
        Ok(TxWriter::Sqlite(w, slot.clone()))
    }

    /// SQLite: transactions ([`Tx`]) waiting for the writer to begin.
    pub fn waiting_transactions(&self) -> usize {
        self.joiners.load(Ordering::SeqCst)
    }

    /// SQLite: durable commits of transactions so far (a group commit counts once); 0 on
    /// PostgreSQL.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// What the outbox relay has published and not yet deleted (SQLite).
    pub(crate) fn published(&self) -> &Arc<Published> {
        &self.published
    }

    /// The pool for read-only queries (HTTP reads, metrics).
    pub fn reader(&self) -> &AnyPool {
        &self.reader
    }

    /// Applies the not-yet-applied migrations of `component`, in order.
    pub async fn migrate(&self, component: &str, migrations: &[&'static str]) -> Result<(), DbError> {
        self.writer()
            .await?
            .execute(sqlx::query(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                    component TEXT NOT NULL, version BIGINT NOT NULL,
                    PRIMARY KEY (component, version))",
            ))
            .await?;
        for (i, sql) in migrations.iter().enumerate() {
            let version = i + 1;
            let fail = |source| DbError::Migrate {
                component: component.to_owned(),
                version,
                source,
            };
            let mut tx = Tx::begin(self).await.map_err(fail)?;
            let done = tx
                .fetch_optional(
                    sqlx::query("SELECT version FROM schema_migrations WHERE component = $1 AND version = $2")
                        .bind(component)
                        .bind(version as i64),
                )
                .await
                .map_err(fail)?;
            if done.is_some() {
                continue;
            }
            tx.execute_script(&self.dialect(sql)).await.map_err(fail)?;
            tx.write(
                sqlx::query("INSERT INTO schema_migrations (component, version) VALUES ($1, $2)")
                    .bind(component)
                    .bind(version as i64),
            )
            .await
            .map_err(fail)?;
            tx.commit().await.map_err(fail)?;
        }
        Ok(())
    }

    fn dialect(&self, sql: &str) -> String {
        match self.backend {
            Backend::Sqlite => sql.to_owned(),
            Backend::Postgres => sql.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY").replace(" BLOB", " BYTEA"),
        }
    }

    /// Readiness: the database answers a query.
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    pub async fn close(&self) {
        match &self.writer {
            Writers::Pool(pool) => pool.close().await,
            Writers::Sqlite(slot) => {
                if let Ok(mut w) = lock_sqlite(slot).await {
                    let _ = w.commit_group().await;
                }
                if let Some(w) = slot.lock().await.take() {
                    w.conn.close().await;
                }
            }
        }
        self.reader.close().await;
    }
}

/// Locks SQLite's writer. A `Tx` dropped inside its transaction left it open: that part is
/// undone first, only its own savepoint if it had joined a group.
pub(crate) async fn lock_sqlite(slot: &WriterSlot) -> Result<SqliteWriterGuard, sqlx::Error> {
    // As the pool it replaces did: waiting longer than this is a bug, so say so.
    let guard: OwnedMutexGuard<Option<SqliteWriter>> =
        tokio::time::timeout(WRITER_WAIT, slot.clone().lock_owned()).await.map_err(|_| sqlx::Error::PoolTimedOut)?;
    let mut w = OwnedMutexGuard::try_map(guard, Option::as_mut).map_err(|_| sqlx::Error::PoolClosed)?;
    if w.joined {
        // (If the round trip carrying SAVEPOINT failed first, there is none to go back to.)
        let mut undo = Batch::of(sqlx::query("ROLLBACK TO SAVEPOINT tx"))?;
        undo.push(sqlx::query("RELEASE SAVEPOINT tx"))?;
        let _ = w.conn.run(undo).await;
        w.joined = false;
    } else if w.open && w.group.is_none() {
        // (If the round trip carrying BEGIN failed first, SQLite says there is nothing to
        // roll back.)
        let _ = w.conn.run(Batch::of(sqlx::query("ROLLBACK"))?).await;
        w.open = false;
    }
    Ok(w)
}

impl SqliteWriter {
    /// Commits the group's open transaction, with the deletes of published outbox rows;
    /// every member learns the outcome. Nothing to do without a group.
    pub(crate) async fn commit_group(&mut self) -> Result<(), sqlx::Error> {
        let Some((group, _)) = self.group.take() else {
            return Ok(());
        };
        let deletes = self.published.take();
        let mut batch = Batch::default();
        batch.commit = true;
        if let Some(deletes) = &deletes {
            for statement in deletes.statements() {
                batch.push(statement)?;
            }
        }
        let result = self.conn.run(batch).await.map(drop);
        // After a failed commit the next holder rolls back whatever is left.
        self.open = result.is_err();
        group.settle(result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        if result.is_ok() {
            self.count_commit();
            if let Some(deletes) = deletes {
                deletes.committed();
            }
        }
        result
    }

    /// Counts a durable commit ([`Db::commits`]).
    pub(crate) fn count_commit(&self) {
        self.commits.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a committing `Tx` should hand its transaction on instead (group commit): others
    /// wait to begin, and the group is not yet at its size limit.
    pub(crate) fn should_defer(&self) -> bool {
        self.joiners.load(Ordering::SeqCst) > 0 && self.group.as_ref().is_none_or(|(_, n)| *n < MAX_GROUP)
    }
}

/// Most transactions that share one group commit.
const MAX_GROUP: usize = 32;

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// `url` with its database path replaced by `name` (query string kept).
fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let host_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let server = match base[host_start..].find('/') {
        Some(i) => &base[..host_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted_and_retargeted() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
        assert_eq!(replace_database("postgres://h:5432/test", "x"), "postgres://h:5432/x");
        assert_eq!(replace_database("postgres://u@h/test?sslmode=disable", "x"), "postgres://u@h/x?sslmode=disable");
        assert_eq!(replace_database("postgres://h:5432", "x"), "postgres://h:5432/x");
    }
}
