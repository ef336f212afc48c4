//! Deletes that ride on the next commit (SQLite).
//!
//! Some deletes must become durable but need not cost a durable commit of their own: the
//! outbox relay's, of rows the broker has accepted. The database handle keeps them here, by
//! table and id, and the next transaction any writer commits on that database carries them
//! in front of its `COMMIT` ([`crate::writer`]). If that commit fails they come back, to
//! ride on the one after.
//!
//! It also remembers, per table, the highest id ever deferred, so a reader can skip rows
//! whose delete is already on its way ([`DeferredDeletes::through`]).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

use crate::{rows, sqlite::Statement};

#[derive(Debug, Default)]
pub struct DeferredDeletes {
    tables: Mutex<BTreeMap<&'static str, Table>>,
}

#[derive(Debug, Default)]
struct Table {
    ids: Vec<i64>,
    through: i64,
}

impl DeferredDeletes {
    fn tables(&self) -> MutexGuard<'_, BTreeMap<&'static str, Table>> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Defers the delete of rows `ids` of `table` (whose key column is `id`) to the next
    /// commit.
    pub fn record(&self, table: &'static str, ids: &[i64]) {
        let mut tables = self.tables();
        let t = tables.entry(table).or_default();
        t.ids.extend_from_slice(ids);
        if let Some(&last) = ids.iter().max() {
            t.through = t.through.max(last);
        }
    }

    /// The highest id of `table` ever deferred (0 if none).
    pub fn through(&self, table: &str) -> i64 {
        self.tables().get(table).map_or(0, |t| t.through)
    }

    /// Whether no delete waits for a commit.
    pub fn is_empty(&self) -> bool {
        self.tables().values().all(|t| t.ids.is_empty())
    }

    /// The deletes still to commit, for a transaction about to commit; they come back here
    /// unless that commit succeeds ([`Deletes::committed`]).
    pub(crate) fn take(self: &Arc<Self>) -> Option<Deletes> {
        let mut taken = Vec::new();
        for (table, t) in self.tables().iter_mut() {
            if !t.ids.is_empty() {
                taken.push((*table, std::mem::take(&mut t.ids)));
            }
        }
        (!taken.is_empty()).then(|| Deletes { taken, owner: self.clone() })
    }
}

/// Deletes riding on some transaction's commit; given back to [`DeferredDeletes`] when
/// dropped before [`Deletes::committed`].
pub(crate) struct Deletes {
    taken: Vec<(&'static str, Vec<i64>)>,
    owner: Arc<DeferredDeletes>,
}

impl Deletes {
    pub(crate) fn statements(&self) -> impl Iterator<Item = Statement<'_>> {
        self.taken.iter().flat_map(|(table, ids)| delete_statements(table, ids))
    }

    pub(crate) fn committed(mut self) {
        self.taken.clear();
    }
}

impl Drop for Deletes {
    fn drop(&mut self) {
        if self.taken.is_empty() {
            return;
        }
        let mut tables = self.owner.tables();
        for (table, mut ids) in self.taken.drain(..) {
            tables.entry(table).or_default().ids.append(&mut ids);
        }
    }
}

/// `DELETE FROM <table> WHERE id IN (...)` for exactly `ids`, many per statement.
pub fn delete_statements<'a>(
    table: &str,
    ids: &'a [i64],
) -> impl Iterator<Item = Statement<'a>> + use<'a> {
    let head = format!("DELETE FROM {table} WHERE id IN");
    rows::chunks(ids).into_iter().map(move |chunk| {
        let mut q = sqlx::query(rows::in_list(&head, 1, chunk.len()));
        for id in chunk {
            q = q.bind(*id);
        }
        q
    })
}
