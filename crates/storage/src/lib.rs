//! A service's database: SQLite (our own writer connection, group commit) or PostgreSQL,
//! behind one API.
//!
//! - [`db`]: opening a database ([`Db`]): one writer, a pool of readers, durability settings.
//! - [`tx`]: a write transaction ([`Tx`]) that queues writes nobody reads and sends them to
//!   SQLite with the next read, one round trip; row and key locks on PostgreSQL.
//! - [`writer`]: SQLite's one writer connection and group commit, with one commit path.
//! - [`deferred`]: deletes that ride on the next commit instead of costing one of their own.
//! - [`migrate`]: versioned migrations per component.
//! - [`decode`]: stored values that must parse; corrupt data is an error naming table and key.
//! - [`rows`]: many rows per SQL statement on the hot paths.
//! - [`sqlite`]: the writer connection on a thread of its own, and SQLite's page-cache slab.

pub mod db;
pub mod decode;
pub mod deferred;
pub mod migrate;
pub mod rows;
mod sqlite;
pub mod tx;
mod writer;

pub use db::{Backend, Db, DbError, Writer};
pub use sqlite::{Statement, memory_bytes as sqlite_memory_bytes};
pub use tx::{Savepoint, Tx, lock_key, lock_rows};
