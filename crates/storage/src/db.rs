//! Opening a service database: one writer and a pool of readers, on SQLite or PostgreSQL.
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
//!   [`Tx`](crate::Tx) is rolled back by the next holder.
//! - Group commit: a `Tx` that commits while others wait to begin hands its open
//!   transaction on to them instead of committing, and one durable commit covers them all
//!   ([`crate::writer`]). [`Db::writer`] (statements outside a `Tx`) commits such a group before
//!   it runs anything, so it never reads what is not yet durable.
//!
//! PostgreSQL (several instances may share the database):
//! - one pool for reads and writes; rows a decision reads are locked with `FOR UPDATE`
//!   ([`crate::lock_rows`]), always in ascending key order, so concurrent instances serialize per
//!   order and per product instead of racing;
//! - a record that may not exist yet (stock's reservation, payment's payment) cannot be
//!   locked, so handlers first take a transaction-scoped advisory lock on the business key
//!   ([`crate::lock_key`]): two events of one order never decide at the same time.
//!
//! Migrations: [`crate::migrate`].

use std::{
    path::Path,
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use crate::{
    deferred::DeferredDeletes,
    sqlite::{self, Batch, Statement},
    writer::{self, SqliteWriter, SqliteWriterGuard, WriterSlot},
};
use sqlx::{
    Any, AnyPool, AssertSqlSafe, Executor,
    any::{AnyConnectOptions, AnyPoolOptions, AnyQueryResult, AnyRow},
    pool::PoolConnection,
};
use tokio::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

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
    /// Deletes riding on the next commit (SQLite, [`crate::deferred`]).
    deferred: Arc<DeferredDeletes>,
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
    pub async fn execute(
        &mut self,
        statement: Statement<'_>,
    ) -> Result<AnyQueryResult, sqlx::Error> {
        match &mut self.0 {
            WriterConn::Pool(conn) => statement.execute(&mut **conn).await,
            WriterConn::Sqlite(w) => Ok(w.conn.run(Batch::of(statement)?).await?.result),
        }
    }

    /// Runs `statement` (a read, or a write committed on its own); its rows.
    pub async fn fetch_all(
        &mut self,
        statement: Statement<'_>,
    ) -> Result<Vec<AnyRow>, sqlx::Error> {
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
        Ok(Db {
            writer: Writers::Pool(pool.clone()),
            reader: pool,
            backend: Backend::Postgres,
            deferred: Arc::default(),
            joiners: Arc::default(),
            commits: Arc::default(),
        })
    }

    /// Creates database `name` on the PostgreSQL server of `server_url` (any database URL on
    /// that server) unless it exists; returns its URL.
    pub async fn create_postgres_database(server_url: &str, name: &str) -> Result<String, DbError> {
        sqlx::any::install_default_drivers();
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(DbError::Open {
                path: name.into(),
                source: sqlx::Error::Configuration("database names are [A-Za-z0-9_]".into()),
            });
        }
        let admin = AnyPoolOptions::new()
            .max_connections(1)
            .connect(server_url)
            .await
            .map_err(|source| DbError::Open { path: redact(server_url), source })?;
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
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
        let admin = AnyPoolOptions::new()
            .max_connections(1)
            .connect(server_url)
            .await
            .map_err(|source| DbError::Open { path: redact(server_url), source })?;
        admin
            .execute(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
            .await?;
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
        let deferred = Arc::new(DeferredDeletes::default());
        let joiners = Arc::new(AtomicUsize::new(0));
        let commits = Arc::new(AtomicU64::new(0));
        let writer = SqliteWriter::new(writer, deferred.clone(), joiners.clone(), commits.clone());
        Ok(Db {
            writer: Writers::Sqlite(Arc::new(Mutex::new(Some(writer)))),
            reader,
            backend: Backend::Sqlite,
            deferred,
            joiners,
            commits,
        })
    }

    /// The writer connection, for writes outside a [`Tx`] (each statement commits on its
    /// own). Waits while another holds it (on SQLite there is one).
    pub async fn writer(&self) -> Result<Writer, sqlx::Error> {
        match &self.writer {
            Writers::Pool(pool) => Ok(Writer(WriterConn::Pool(pool.acquire().await?))),
            Writers::Sqlite(slot) => {
                let mut w = writer::lock(slot).await?;
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
        let w = writer::lock(slot).await?;
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

    /// Deletes riding on the next commit on this database (SQLite; unused on PostgreSQL).
    pub fn deferred(&self) -> &DeferredDeletes {
        &self.deferred
    }

    /// The pool for read-only queries (HTTP reads, metrics).
    pub fn reader(&self) -> &AnyPool {
        &self.reader
    }

    pub(crate) fn dialect(&self, sql: &str) -> String {
        match self.backend {
            Backend::Sqlite => sql.to_owned(),
            Backend::Postgres => sql
                .replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")
                .replace(" BLOB", " BYTEA"),
        }
    }

    /// Readiness: the database answers a query.
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    /// How much space the database takes, in bytes: the SQLite file's pages (free ones, which
    /// it reuses before growing, included; the WAL is not), or PostgreSQL's
    /// `pg_database_size`.
    pub async fn size_bytes(&self) -> Result<i64, DbError> {
        let sql = match self.backend {
            Backend::Sqlite => {
                "SELECT p.page_count * s.page_size FROM pragma_page_count() p, pragma_page_size() s"
            }
            Backend::Postgres => "SELECT pg_database_size(current_database())",
        };
        Ok(sqlx::query_scalar(sql).fetch_one(&self.reader).await?)
    }

    pub async fn close(&self) {
        match &self.writer {
            Writers::Pool(pool) => pool.close().await,
            Writers::Sqlite(slot) => {
                if let Ok(mut w) = writer::lock(slot).await {
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
        assert_eq!(
            replace_database("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(replace_database("postgres://h:5432", "x"), "postgres://h:5432/x");
    }
}
