//! Versioned migrations, per component.
//!
//! Migrations are numbered per component (`outbox`, `inbox`, `order`, ...) and recorded in
//! `schema_migrations`; each is applied once, in its own transaction, at startup. They are
//! written in SQLite's dialect; for PostgreSQL `INTEGER PRIMARY KEY AUTOINCREMENT` becomes
//! `BIGSERIAL PRIMARY KEY` and `BLOB` becomes `BYTEA` (the only two differences we use).

use crate::{Db, DbError, Tx};

impl Db {
    /// Applies the not-yet-applied migrations of `component`, in order.
    pub async fn migrate(
        &self,
        component: &str,
        migrations: &[&'static str],
    ) -> Result<(), DbError> {
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
            let fail =
                |source| DbError::Migrate { component: component.to_owned(), version, source };
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
}
