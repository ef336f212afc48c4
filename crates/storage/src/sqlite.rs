//! SQLite's writer connection on a thread of its own, one hand-off each way per round trip.
//!
//! sqlx runs each SQLite connection on a thread too, but sends the async side every
//! statement's result and every row as a message of its own: a queued batch of statements
//! was many thread wake-ups (51 `futex` calls per order, a fifth of the CPU; BENCHMARKS.md).
//! Here a round trip is one [`Batch`] — statements and their values, run in order on the
//! connection's thread — and one reply: the last statement's rows and row count (or an
//! earlier statement's, [`Batch::reply_here`]).
//!
//! Guarantees:
//! - A batch's statements run in order; the first error stops the batch and is the reply.
//!   The statements before it stay done (inside a transaction the caller rolls back).
//! - Rows come back as sqlx's [`AnyRow`], with the values sqlx's own SQLite driver gives
//!   (integer as BIGINT, real as DOUBLE, text, blob, null), so code reading them does not
//!   know which driver ran the statement. Errors are `sqlx::Error`s: SQLite's own as
//!   `Database` (message and extended code), a worker that died as `WorkerCrashed`.
//! - Prepared statements are cached per connection, by their SQL text.
//! - Each statement is prepared alone, so a statement's text holds one statement; a
//!   [`Connection::script`] runs several without values (migrations).
//! - The thread ends, closing the connection, at [`Connection::close`] or when the handle
//!   is dropped.
//! - Every SQLite page cache of the process, sqlx's readers' too, lives in one slab set aside
//!   before the first connection ([`configure_page_cache`]), so pages never go through
//!   malloc and resident memory stays flat under load.

use std::{
    borrow::Cow,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    thread,
};

use rusqlite::{
    OpenFlags,
    types::{ToSqlOutput, ValueRef},
};
use sqlx::{
    Execute,
    any::{AnyQueryResult, AnyRow, AnyTypeInfo, AnyTypeInfoKind, AnyValue},
    error::{DatabaseError, ErrorKind},
};
use sqlx_core::{
    any::{AnyColumn, AnyValueKind},
    ext::ustr::UStr,
};
use tokio::sync::oneshot;

/// A statement as `sqlx::query(..).bind(..)` builds it.
pub type Statement<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Page slots in the slab per database ([`configure_page_cache`]), 4.3 MB: its writer's
/// default 2 MB cache and four readers' smaller ones ([`READER_CACHE_PRAGMA`]). SQLite links
/// its free slots through their first bytes, so the whole slab is resident from the start.
const SLOTS_PER_DATABASE: usize = 1024;
/// The SQLite databases the process will open ([`plan_databases`]); `orderflow up`'s four
/// unless told otherwise.
static DATABASES: AtomicUsize = AtomicUsize::new(4);
/// The largest page the slab holds (SQLite's default page size); a bigger page, or a page
/// past the last slot, comes from malloc as without the slab.
const PAGE_SIZE: usize = 4096;
/// The bytes of one slab slot once the slab is set up (`None`: SQLite refused it).
static SLOT_BYTES: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();

/// A reader's page cache (512 KiB): a reader's cache is emptied whenever another connection
/// has committed, so under load a bigger one would hold pages that are never read again.
pub(crate) const READER_CACHE_PRAGMA: &str = "PRAGMA cache_size=-512;";

/// Distinct statement texts kept prepared per connection (sqlx's default is 100 texts, each
/// a whole multi-statement queue; here each statement is a text of its own).
const STATEMENT_CACHE: usize = 256;

/// Statements for one round trip.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// Run `BEGIN` first.
    pub(crate) begin: bool,
    /// Then open savepoint `tx` (a transaction joining a group commit, [`crate::writer`]).
    pub(crate) savepoint: bool,
    /// After the statements, release savepoint `tx`.
    pub(crate) release: bool,
    /// Run `COMMIT` last (the reply is still the last statement's, or `reply`'s).
    pub(crate) commit: bool,
    /// The statement whose rows and row count are the reply, if not the last.
    reply: Option<usize>,
    /// The statements' texts, one after another; `ends` marks where each ends.
    sql: String,
    /// Per statement: its end in `sql`, and the end of its values in `args`.
    ends: Vec<(usize, usize)>,
    args: Vec<AnyValueKind>,
}

impl Batch {
    /// A batch of one statement.
    pub(crate) fn of(statement: Statement<'_>) -> Result<Batch, sqlx::Error> {
        let mut b = Batch::default();
        b.push(statement)?;
        Ok(b)
    }

    /// Appends `statement`, its `$N` placeholders made anonymous (see [`anonymize`]).
    pub(crate) fn push(&mut self, mut statement: Statement<'_>) -> Result<(), sqlx::Error> {
        let args = statement
            .take_arguments()
            .map_err(sqlx::Error::Encode)?
            .map(|a| a.values.0)
            .unwrap_or_default();
        let sql = statement.sql();
        anonymize(
            sql.as_str().trim_end_matches([';', ' ', '\n']),
            &args,
            &mut self.sql,
            &mut self.args,
        )?;
        self.ends.push((self.sql.len(), self.args.len()));
        Ok(())
    }

    /// Makes the statement pushed last the one that replies, whatever is pushed after it.
    pub(crate) fn reply_here(&mut self) {
        self.reply = self.ends.len().checked_sub(1);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// How many values are queued.
    pub(crate) fn values(&self) -> usize {
        self.args.len()
    }
}

/// What a round trip returns: the last statement's rows, and how many rows it changed.
#[derive(Default)]
pub(crate) struct Reply {
    pub(crate) rows: Vec<AnyRow>,
    pub(crate) result: AnyQueryResult,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("rows", &self.rows.len())
            .field("result", &self.result)
            .finish()
    }
}

type Answer<T> = oneshot::Sender<Result<T, sqlx::Error>>;

enum Job {
    Run(Batch, Answer<Reply>),
    Script(String, Answer<()>),
    Close(oneshot::Sender<()>),
}

/// A handle on a connection's thread; the thread ends when it is dropped.
#[derive(Debug)]
pub(crate) struct Connection {
    jobs: mpsc::Sender<Job>,
}

impl Connection {
    /// Opens (creating if missing) the file at `path` on a new thread and runs `setup` (the
    /// PRAGMAs) on it.
    pub(crate) async fn open(path: &Path, setup: &str) -> Result<Connection, sqlx::Error> {
        SLOT_BYTES.get_or_init(configure_page_cache);
        let (jobs, queue) = mpsc::channel();
        let (ready, opened) = oneshot::channel();
        let path = path.to_owned();
        let setup = setup.to_owned();
        thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                let conn = rusqlite::Connection::open_with_flags(
                    &path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE
                        | OpenFlags::SQLITE_OPEN_CREATE
                        | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .and_then(|c| c.execute_batch(&setup).map(|()| c));
                match conn {
                    Ok(conn) => {
                        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
                        if ready.send(Ok(())).is_ok() {
                            let closing = serve(&conn, queue);
                            // Closed before `close` returns.
                            drop(conn);
                            if let Some(done) = closing {
                                let _ = done.send(());
                            }
                        }
                    }
                    Err(e) => {
                        let _ = ready.send(Err(error(e)));
                    }
                }
            })
            .map_err(sqlx::Error::Io)?;
        opened.await.map_err(|_| sqlx::Error::WorkerCrashed)??;
        Ok(Connection { jobs })
    }

    /// Runs `batch`; see the module docs.
    pub(crate) async fn run(&self, batch: Batch) -> Result<Reply, sqlx::Error> {
        self.ask(|answer| Job::Run(batch, answer)).await
    }

    /// Runs `sql`, any number of statements without values.
    pub(crate) async fn script(&self, sql: String) -> Result<(), sqlx::Error> {
        self.ask(|answer| Job::Script(sql, answer)).await
    }

    /// Closes the connection once the jobs sent before are done; returns when it is closed.
    pub(crate) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.jobs.send(Job::Close(done)).is_ok() {
            let _ = closed.await;
        }
    }

    async fn ask<T>(&self, job: impl FnOnce(Answer<T>) -> Job) -> Result<T, sqlx::Error> {
        let (answer, reply) = oneshot::channel();
        self.jobs.send(job(answer)).map_err(|_| sqlx::Error::WorkerCrashed)?;
        reply.await.map_err(|_| sqlx::Error::WorkerCrashed)?
    }
}

/// Sizes the page-cache slab for a process that opens `n` SQLite databases. Has an effect
/// only before the process's first connection.
pub(crate) fn plan_databases(n: usize) {
    DATABASES.store(n.max(1), Ordering::Relaxed);
}

/// Gives SQLite's page caches (every connection's, sqlx's readers too) one slab of
/// [`SLOTS_PER_DATABASE`] pages per planned database, allocated once, in place of a `malloc`
/// per page.
///
/// Why: a reader's cache is emptied whenever another connection has committed, which under
/// load is nearly every read, so pages were allocated and freed thousands of times a second
/// on some twenty threads. glibc keeps each thread's arena at its high-water mark, and those
/// freed pages, interleaved with longer-lived allocations, held tens of MB that never went
/// back (BENCHMARKS.md, "Memory over ten minutes"). The slab is resident from the start
/// and never grows; a page past its last slot comes from malloc, as before.
///
/// Must run before SQLite initializes, i.e. before the process's first connection, and once
/// (through [`SLOT_BYTES`]); later SQLite refuses it, which only costs the memory behaviour
/// above. Returns the slot size, if SQLite took the slab.
fn configure_page_cache() -> Option<usize> {
    use rusqlite::ffi;
    let mut header: std::os::raw::c_int = 0;
    // SAFETY: SQLITE_CONFIG_PCACHE_HDRSZ writes one int through the pointer given.
    if unsafe {
        ffi::sqlite3_config(
            ffi::SQLITE_CONFIG_PCACHE_HDRSZ,
            &mut header as *mut std::os::raw::c_int,
        )
    } != ffi::SQLITE_OK
    {
        return None;
    }
    // 8-byte aligned, as SQLite requires.
    let slot = (PAGE_SIZE + header as usize).next_multiple_of(8);
    let slots = SLOTS_PER_DATABASE * DATABASES.load(Ordering::Relaxed);
    let mut slab = vec![0_u64; slot * slots / 8];
    // SAFETY: the slab is `slot * slots` bytes, 8-byte aligned, and lives as long as the
    // process once SQLite has taken it (leaked below); SQLite only takes it before it
    // initializes, and nothing else touches it.
    let rc = unsafe {
        ffi::sqlite3_config(
            ffi::SQLITE_CONFIG_PAGECACHE,
            slab.as_mut_ptr().cast::<std::ffi::c_void>(),
            slot as std::os::raw::c_int,
            slots as std::os::raw::c_int,
        )
    };
    if rc != ffi::SQLITE_OK {
        tracing::debug!(rc, "SQLite was initialized before the page-cache slab could be set");
        return None;
    }
    slab.leak();
    Some(slot)
}

/// What SQLite holds in this process, in bytes: its heap allocations and the slab slots in
/// use.
pub fn memory_bytes() -> i64 {
    use rusqlite::ffi;
    let (mut slots, mut high) = (0_i64, 0_i64);
    // SAFETY: sqlite3_memory_used reads a global counter; SQLITE_STATUS_PAGECACHE_USED
    // writes two integers through the pointers given. Both are safe from any thread.
    let heap = unsafe { ffi::sqlite3_memory_used() };
    if unsafe { ffi::sqlite3_status64(ffi::SQLITE_STATUS_PAGECACHE_USED, &mut slots, &mut high, 0) }
        != ffi::SQLITE_OK
    {
        slots = 0;
    }
    heap + slots * SLOT_BYTES.get().copied().flatten().unwrap_or(0) as i64
}

/// The connection's thread: jobs in order until [`Job::Close`] (returned, to be answered
/// once the connection is closed) or until the handle is gone.
fn serve(conn: &rusqlite::Connection, queue: mpsc::Receiver<Job>) -> Option<oneshot::Sender<()>> {
    while let Ok(job) = queue.recv() {
        match job {
            Job::Run(batch, answer) => {
                let _ = answer.send(run(conn, &batch));
            }
            Job::Script(sql, answer) => {
                let _ = answer.send(conn.execute_batch(&sql).map_err(error));
            }
            Job::Close(done) => return Some(done),
        }
    }
    None
}

fn run(conn: &rusqlite::Connection, batch: &Batch) -> Result<Reply, sqlx::Error> {
    let control = |sql: &str| {
        conn.prepare_cached(sql).and_then(|mut s| s.raw_execute()).map(drop).map_err(error)
    };
    if batch.begin {
        control("BEGIN")?;
    }
    if batch.savepoint {
        control("SAVEPOINT tx")?;
    }
    let mut reply = Reply::default();
    let (mut sql_at, mut arg_at) = (0, 0);
    let reply_at = batch.reply.unwrap_or(batch.ends.len().saturating_sub(1));
    for (i, &(sql_end, arg_end)) in batch.ends.iter().enumerate() {
        let replies = i == reply_at;
        let mut stmt = conn.prepare_cached(&batch.sql[sql_at..sql_end]).map_err(error)?;
        for (n, value) in batch.args[arg_at..arg_end].iter().enumerate() {
            stmt.raw_bind_parameter(n + 1, ToSqlOutput::Borrowed(bindable(value)))
                .map_err(error)?;
        }
        let changes = !stmt.readonly();
        let names = replies.then(|| column_names(&stmt));
        let mut rows = stmt.raw_query();
        while let Some(row) = rows.next().map_err(error)? {
            if let Some((columns, names)) = &names {
                reply.rows.push(any_row(row, columns, names)?);
            }
        }
        if replies {
            reply.result.rows_affected = if changes { conn.changes() } else { 0 };
            reply.result.last_insert_id = Some(conn.last_insert_rowid());
        }
        (sql_at, arg_at) = (sql_end, arg_end);
    }
    if batch.release {
        control("RELEASE SAVEPOINT tx")?;
    }
    if batch.commit {
        control("COMMIT")?;
    }
    Ok(reply)
}

type Names = Arc<sqlx_core::HashMap<UStr, usize>>;

fn column_names(stmt: &rusqlite::Statement<'_>) -> (Vec<UStr>, Names) {
    let columns: Vec<UStr> = stmt.column_names().into_iter().map(UStr::new).collect();
    let names = columns.iter().enumerate().map(|(i, c)| (c.clone(), i)).collect();
    (columns, Arc::new(names))
}

/// A row as sqlx's SQLite driver maps it to `AnyRow`: by each value's storage class.
fn any_row(
    row: &rusqlite::Row<'_>,
    columns: &[UStr],
    names: &Names,
) -> Result<AnyRow, sqlx::Error> {
    let mut out = AnyRow {
        column_names: names.clone(),
        columns: Vec::with_capacity(columns.len()),
        values: Vec::with_capacity(columns.len()),
    };
    for (i, name) in columns.iter().enumerate() {
        let kind = match row.get_ref(i).map_err(error)? {
            ValueRef::Null => AnyValueKind::Null(AnyTypeInfoKind::Null),
            ValueRef::Integer(v) => AnyValueKind::BigInt(v),
            ValueRef::Real(v) => AnyValueKind::Double(v),
            ValueRef::Text(v) => {
                AnyValueKind::Text(Arc::new(String::from_utf8(v.to_vec()).map_err(|e| {
                    sqlx::Error::ColumnDecode { index: name.to_string(), source: Box::new(e) }
                })?))
            }
            ValueRef::Blob(v) => AnyValueKind::Blob(Arc::new(v.to_vec())),
        };
        let type_info = AnyTypeInfo { kind: type_kind(&kind) };
        out.columns.push(AnyColumn { ordinal: i, name: name.clone(), type_info });
        out.values.push(AnyValue { kind });
    }
    Ok(out)
}

fn type_kind(kind: &AnyValueKind) -> AnyTypeInfoKind {
    match kind {
        AnyValueKind::BigInt(_) => AnyTypeInfoKind::BigInt,
        AnyValueKind::Double(_) => AnyTypeInfoKind::Double,
        AnyValueKind::Text(_) => AnyTypeInfoKind::Text,
        AnyValueKind::Blob(_) => AnyTypeInfoKind::Blob,
        _ => AnyTypeInfoKind::Null,
    }
}

/// A bound value as sqlx's SQLite driver binds it.
fn bindable(value: &AnyValueKind) -> ValueRef<'_> {
    match value {
        AnyValueKind::Bool(b) => ValueRef::Integer(i64::from(*b)),
        AnyValueKind::SmallInt(i) => ValueRef::Integer(i64::from(*i)),
        AnyValueKind::Integer(i) => ValueRef::Integer(i64::from(*i)),
        AnyValueKind::BigInt(i) => ValueRef::Integer(*i),
        AnyValueKind::Real(r) => ValueRef::Real(f64::from(*r)),
        AnyValueKind::Double(d) => ValueRef::Real(*d),
        AnyValueKind::Text(t) => ValueRef::Text(t.as_bytes()),
        AnyValueKind::TextSlice(t) => ValueRef::Text(t.as_bytes()),
        AnyValueKind::Blob(b) => ValueRef::Blob(b),
        // Null, and any kind a later sqlx adds (the enum is non-exhaustive).
        _ => ValueRef::Null,
    }
}

/// SQLite's error as sqlx reports a database error.
fn error(e: rusqlite::Error) -> sqlx::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, message) => {
            sqlx::Error::Database(Box::new(SqliteError {
                code: code.extended_code,
                message: message.unwrap_or_else(|| code.to_string()),
            }))
        }
        other => sqlx::Error::Protocol(other.to_string()),
    }
}

#[derive(Debug)]
struct SqliteError {
    code: i32,
    message: String,
}

impl std::fmt::Display for SqliteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "(code: {}) {}", self.code, self.message)
    }
}

impl std::error::Error for SqliteError {}

impl DatabaseError for SqliteError {
    fn message(&self) -> &str {
        &self.message
    }
    fn code(&self) -> Option<Cow<'_, str>> {
        Some(self.code.to_string().into())
    }
    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }
    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }
    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }
    fn kind(&self) -> ErrorKind {
        use rusqlite::ffi;
        match self.code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                ErrorKind::UniqueViolation
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

/// Appends `sql` to `out` with every `$N` placeholder (outside string literals) written as
/// an anonymous `?`, and pushes `args[N - 1]` for it onto `values`: a placeholder used twice
/// gets its value twice. SQLite binds anonymous parameters by position, so a statement's
/// values are simply the next ones.
fn anonymize<V: Clone>(
    sql: &str,
    args: &[V],
    out: &mut String,
    values: &mut Vec<V>,
) -> Result<(), sqlx::Error> {
    let mut quoted = false;
    let mut chars = sql.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' => quoted = !quoted,
            '$' if !quoted => {
                let digits = sql[i + 1..].bytes().take_while(u8::is_ascii_digit).count();
                if let Ok(n) = sql[i + 1..i + 1 + digits].parse::<usize>() {
                    let value = n.checked_sub(1).and_then(|k| args.get(k)).ok_or_else(|| {
                        sqlx::Error::Encode(
                            format!("placeholder ${n} has no bound value ({} bound)", args.len())
                                .into(),
                        )
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
    use super::*;
    use sqlx::{Connection as _, Row};

    fn batch(statements: impl IntoIterator<Item = Statement<'static>>) -> Batch {
        let mut b = Batch::default();
        for s in statements {
            b.push(s).unwrap();
        }
        b
    }

    /// What the writer reads back is what sqlx's own SQLite driver reads from the same row.
    #[tokio::test]
    async fn rows_decode_as_sqlx_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path, "PRAGMA journal_mode=WAL;").await.unwrap();
        conn.script("CREATE TABLE t (i BIGINT, r DOUBLE, s TEXT, b BLOB, n TEXT, f BIGINT)".into())
            .await
            .unwrap();
        let insert = sqlx::query("INSERT INTO t VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(-9_007_199_254_740_993_i64)
            .bind(2.5_f64)
            .bind("ünïcode '$1'")
            .bind(vec![0_u8, 255, 7])
            .bind(Option::<String>::None)
            .bind(true);
        let reply = conn.run(batch([insert])).await.unwrap();
        assert_eq!(reply.result.rows_affected, 1);
        let select = "SELECT i, r, s, b, n, f FROM t";
        let mine = conn.run(batch([sqlx::query(select)])).await.unwrap().rows;
        sqlx::any::install_default_drivers();
        let mut sqlx_conn =
            sqlx::AnyConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
        let theirs = sqlx::query(select).fetch_all(&mut sqlx_conn).await.unwrap();
        assert_eq!((mine.len(), theirs.len()), (1, 1));
        for row in [&mine[0], &theirs[0]] {
            assert_eq!(row.try_get::<i64, _>("i").unwrap(), -9_007_199_254_740_993);
            assert_eq!(row.try_get::<f64, _>("r").unwrap(), 2.5);
            assert_eq!(row.try_get::<String, _>("s").unwrap(), "ünïcode '$1'");
            assert_eq!(row.try_get::<Vec<u8>, _>("b").unwrap(), [0, 255, 7]);
            assert_eq!(row.try_get::<Option<String>, _>("n").unwrap(), None);
            assert_eq!(row.try_get::<i64, _>("f").unwrap(), 1);
            assert!(row.try_get::<i64, _>("missing").is_err());
        }
        conn.close().await;
    }

    /// A batch stops at its first error, which sqlx callers can inspect as a database error;
    /// the statements before it stay done, the ones after it never run.
    #[tokio::test]
    async fn a_batch_stops_at_the_first_error() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(&dir.path().join("t.db"), "").await.unwrap();
        conn.script("CREATE TABLE t (id BIGINT PRIMARY KEY)".into()).await.unwrap();
        let insert = |id: i64| sqlx::query("INSERT INTO t (id) VALUES ($1)").bind(id);
        let err = conn.run(batch([insert(1), insert(1), insert(2)])).await.unwrap_err();
        let db_err = err.as_database_error().expect("a database error");
        assert!(db_err.is_unique_violation(), "{err}");
        assert!(db_err.message().contains("UNIQUE constraint failed: t.id"), "{err}");
        let ids: Vec<i64> = conn
            .run(batch([sqlx::query("SELECT id FROM t ORDER BY id")]))
            .await
            .unwrap()
            .rows
            .iter()
            .map(|r| r.get("id"))
            .collect();
        assert_eq!(ids, [1]);
        let err = conn.run(batch([sqlx::query("SELEC 1")])).await.unwrap_err();
        assert!(err.to_string().contains("syntax error"), "{err}");
        conn.close().await;
        assert!(
            matches!(conn.run(batch([insert(3)])).await, Err(sqlx::Error::WorkerCrashed)),
            "closed"
        );
    }

    #[test]
    fn placeholders_become_anonymous_in_text_order_outside_literals() {
        let args: Vec<i64> = (1..=10).map(|i| i * 100).collect();
        let (mut out, mut values) = (String::new(), Vec::new());
        anonymize(
            "UPDATE t SET a = $1, b = '$2' WHERE c = $10 AND d = $ AND e = $1",
            &args,
            &mut out,
            &mut values,
        )
        .unwrap();
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
