//! Opening a database and applying versioned migrations.
//!
//! Storage goes through `sqlx::Any`, so the same SQL (`$N` placeholders, `ON CONFLICT`,
//! `RETURNING`) serves SQLite now and PostgreSQL later. For SQLite:
//! - WAL journal with `synchronous=FULL`: a commit is fsync-durable before it returns.
//! - All writes go through one connection, so write transactions never race for SQLite's
//!   single write lock; reads use a separate small pool and see committed data (WAL).
//!
//! Migrations are numbered per component (`outbox`, `inbox`, `order`, ...) and recorded in
//! `schema_migrations`; each is applied once, in its own transaction, at startup.

use std::{path::Path, str::FromStr, time::Duration};

use sqlx::{
    AnyPool, Executor,
    any::{AnyConnectOptions, AnyPoolOptions},
};

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
    writer: AnyPool,
    reader: AnyPool,
}

impl Db {
    /// Opens (creating if missing) the SQLite file at `path`.
    pub async fn open_sqlite(path: &Path) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let open_err = |source| DbError::Open { path: path.display().to_string(), source };
        let options = AnyConnectOptions::from_str(&url).map_err(open_err)?;
        let pragmas = |pool: AnyPoolOptions| {
            pool.after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute(
                        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; \
                         PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON;",
                    )
                    .await?;
                    Ok(())
                })
            })
        };
        let writer = pragmas(AnyPoolOptions::new().max_connections(1).min_connections(1))
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(options.clone())
            .await
            .map_err(open_err)?;
        let reader = pragmas(AnyPoolOptions::new().max_connections(4))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(open_err)?;
        Ok(Db { writer, reader })
    }

    /// The pool every write transaction uses.
    pub fn writer(&self) -> &AnyPool {
        &self.writer
    }

    /// The pool for read-only queries (HTTP reads, metrics).
    pub fn reader(&self) -> &AnyPool {
        &self.reader
    }

    /// Applies the not-yet-applied migrations of `component`, in order.
    pub async fn migrate(&self, component: &str, migrations: &[&'static str]) -> Result<(), DbError> {
        self.writer
            .execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                    component TEXT NOT NULL, version BIGINT NOT NULL,
                    PRIMARY KEY (component, version))",
            )
            .await?;
        for (i, sql) in migrations.iter().enumerate() {
            let version = i + 1;
            let fail = |source| DbError::Migrate {
                component: component.to_owned(),
                version,
                source,
            };
            let mut tx = self.writer.begin().await.map_err(fail)?;
            let done: Option<i64> = sqlx::query_scalar(
                "SELECT version FROM schema_migrations WHERE component = $1 AND version = $2",
            )
            .bind(component)
            .bind(version as i64)
            .fetch_optional(&mut *tx)
            .await
            .map_err(fail)?;
            if done.is_some() {
                continue;
            }
            tx.execute(*sql).await.map_err(fail)?;
            sqlx::query("INSERT INTO schema_migrations (component, version) VALUES ($1, $2)")
                .bind(component)
                .bind(version as i64)
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
            tx.commit().await.map_err(fail)?;
        }
        Ok(())
    }

    /// Readiness: the database answers a query.
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}
