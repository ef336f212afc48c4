//! SQLite's one writer connection and group commit: the state machine behind every write
//! transaction on SQLite, with one commit path.
//!
//! A durable commit is an fsync, and every transaction of a database queues for its one
//! writer. A [`Tx`](crate::Tx) that commits while others wait to begin does not commit: it
//! sends its statements, leaves the transaction open, lets the next one in and queues for
//! the writer again ([`finish`]). The next runs inside that transaction, in savepoint `tx` of
//! its own (so its rollback undoes only its part), and does the same if others still wait.
//! The first of the group back at the writer commits for all of them (at most
//! [`MAX_GROUP`]), one fsync; each member's `commit` returns that commit's outcome. So:
//! - `commit` returns only once the work is durable, or fails if it is not;
//! - a member's failure before its commit undoes only its savepoint;
//! - a failed shared commit fails every member (each retries as after any failed commit);
//! - members read each other's uncommitted work, which commits or fails with theirs;
//! - statements outside a `Tx` ([`crate::Db::writer`]) commit an open group first
//!   ([`SqliteWriter::commit_group`]).
//!
//! Every commit — a lone `Tx`'s, a group's, or the one `Db::writer` makes first — goes
//! through [`SqliteWriter::commit`], which also carries the deletes deferred to the next
//! commit ([`crate::deferred`]) and settles the group. Under light load nobody waits and
//! each `Tx` commits alone.

use std::sync::{
    Arc, OnceLock,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};

use tokio::sync::{Mutex, OwnedMappedMutexGuard, OwnedMutexGuard};

use crate::{
    deferred::DeferredDeletes,
    sqlite::{self, Batch, Reply},
};

/// Most transactions that share one group commit.
const MAX_GROUP: usize = 32;

/// How long a transaction waits for SQLite's one writer connection: waiting longer than
/// this is a bug, so say so (as the pool it replaced did).
const WRITER_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The writer, behind its mutex; `None` once closed.
pub(crate) type WriterSlot = Arc<Mutex<Option<SqliteWriter>>>;

pub(crate) type SqliteWriterGuard = OwnedMappedMutexGuard<Option<SqliteWriter>, SqliteWriter>;

/// Transactions whose work shares one open SQLite transaction: each deferred its commit to
/// those waiting behind it, and the first of them back at the writer commits for all.
#[derive(Debug, Default)]
pub(crate) struct Group {
    /// The shared commit's outcome, once it ran.
    outcome: OnceLock<Result<(), String>>,
}

impl Group {
    /// The shared commit's outcome, once it ran.
    fn outcome(&self) -> Option<Result<(), sqlx::Error>> {
        self.outcome.get().map(|r| {
            r.clone().map_err(|e| sqlx::Error::Protocol(format!("group commit failed: {e}")))
        })
    }

    fn settle(&self, result: Result<(), String>) {
        let _ = self.outcome.set(result);
    }
}

#[derive(Debug)]
pub(crate) struct SqliteWriter {
    pub(crate) conn: sqlite::Connection,
    /// `BEGIN` was sent on it and the transaction not (known to be) ended.
    open: bool,
    /// Deletes that ride on the next commit ([`crate::deferred`]).
    deferred: Arc<DeferredDeletes>,
    /// The open transaction holds the work of this group's transactions, and how many.
    group: Option<(Arc<Group>, usize)>,
    /// A `Tx` that joined `group` has its savepoint open (it runs, or was dropped).
    joined: bool,
    /// Transactions waiting to begin ([`crate::Db::waiting_transactions`]).
    joiners: Arc<AtomicUsize>,
    /// Durable commits ([`crate::Db::commits`]).
    commits: Arc<AtomicU64>,
}

impl SqliteWriter {
    pub(crate) fn new(
        conn: sqlite::Connection,
        deferred: Arc<DeferredDeletes>,
        joiners: Arc<AtomicUsize>,
        commits: Arc<AtomicU64>,
    ) -> SqliteWriter {
        SqliteWriter { conn, open: false, deferred, group: None, joined: false, joiners, commits }
    }

    /// Whether a group's transaction is open: a `Tx` beginning now joins it.
    pub(crate) fn in_group(&self) -> bool {
        self.group.is_some()
    }

    /// Commits the group's open transaction, with the deferred deletes; every member learns
    /// the outcome. Nothing to do without a group.
    pub(crate) async fn commit_group(&mut self) -> Result<(), sqlx::Error> {
        if self.group.is_none() {
            return Ok(());
        }
        self.commit(Batch::default()).await.map(drop)
    }

    /// The one commit path: sends `batch` with `COMMIT` last and the deferred deletes in
    /// front of it, settles the group (if any) with the outcome, and counts the commit. The
    /// reply is `batch`'s. After a failure the next holder rolls back whatever is left, and
    /// the deletes go back to wait for the next commit.
    async fn commit(&mut self, mut batch: Batch) -> Result<Reply, sqlx::Error> {
        batch.commit = true;
        let deletes = self.deferred.take();
        if let Some(deletes) = &deletes {
            batch.reply_here();
            for statement in deletes.statements() {
                batch.push(statement)?;
            }
        }
        let result = self.conn.run(batch).await;
        self.open = result.is_err();
        self.joined = false;
        if let Some((group, _)) = self.group.take() {
            group.settle(result.as_ref().map(drop).map_err(|e| e.to_string()));
        }
        if result.is_ok() {
            self.commits.fetch_add(1, Ordering::Relaxed);
            if let Some(deletes) = deletes {
                deletes.committed();
            }
        }
        result
    }

    /// Whether a committing `Tx` should hand its transaction on instead (group commit): others
    /// wait to begin, and the group is not yet at its size limit.
    fn should_defer(&self) -> bool {
        self.joiners.load(Ordering::SeqCst) > 0
            && self.group.as_ref().is_none_or(|(_, n)| *n < MAX_GROUP)
    }

    /// Opens what a `Tx` runs in, in front of `batch` unless already open: savepoint `tx` if
    /// it joined a group, else a transaction.
    pub(crate) fn open(&mut self, joins: bool, batch: &mut Batch) {
        if joins {
            batch.savepoint = !self.joined;
            self.joined = true;
        } else {
            batch.begin = !self.open;
        }
        self.open = true;
    }
}

/// Locks SQLite's writer. A `Tx` dropped inside its transaction left it open: that part is
/// undone first, only its own savepoint if it had joined a group.
pub(crate) async fn lock(slot: &WriterSlot) -> Result<SqliteWriterGuard, sqlx::Error> {
    let guard: OwnedMutexGuard<Option<SqliteWriter>> =
        tokio::time::timeout(WRITER_WAIT, slot.clone().lock_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?;
    let mut w =
        OwnedMutexGuard::try_map(guard, Option::as_mut).map_err(|_| sqlx::Error::PoolClosed)?;
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

/// A `Tx`'s commit on SQLite: sends `batch` (its queue) and commits, or defers to those
/// waiting to begin (module docs); the reply of the statement queued last.
pub(crate) async fn finish(
    mut writer: SqliteWriterGuard,
    slot: WriterSlot,
    joins: bool,
    mut batch: Batch,
) -> Result<Reply, sqlx::Error> {
    let sent = if joins { writer.joined } else { writer.open };
    if !sent && batch.is_empty() && (joins || writer.deferred.is_empty()) {
        // Nothing sent or queued, nothing to commit (unless deferred deletes wait for a
        // commit).
        return Ok(Reply::default());
    }
    writer.open(joins, &mut batch);
    batch.release = joins;
    if !writer.should_defer() {
        return writer.commit(batch).await;
    }
    // From here a failed round trip leaves this transaction's part for the next holder to
    // undo.
    let reply = writer.conn.run(batch).await?;
    writer.joined = false;
    let (group, members) = writer.group.get_or_insert_with(Default::default);
    *members += 1;
    let group = group.clone();
    drop(writer);
    let mut writer = lock(&slot).await?;
    if let Some(outcome) = group.outcome() {
        return outcome.map(|()| reply);
    }
    // Not committed yet, so still the writer's open group: commit it for everyone.
    if !writer.group.as_ref().is_some_and(|(g, _)| Arc::ptr_eq(g, &group)) {
        return Err(sqlx::Error::Protocol("group commit: the group is gone".into()));
    }
    writer.commit_group().await?;
    Ok(reply)
}
