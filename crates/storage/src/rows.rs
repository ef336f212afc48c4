//! Many rows per SQL statement. With sqlx's SQLite driver every statement is a round trip to
//! the connection's worker thread (two thread wake-ups), which costs more CPU than SQLite's
//! own work on a small row; the hot paths therefore insert and delete many rows at once.
//!
//! Statements are cut into chunks of a power of two up to [`MAX_ROWS`] rows, so each table
//! needs at most eight distinct SQL texts and sqlx's per-connection statement cache keeps
//! them all prepared; only numbered placeholders are ever added to the SQL.

use sqlx::AssertSqlSafe;

/// Most rows in one statement (SQLite allows 32,766 parameters: 128 rows of 7 is 896).
pub const MAX_ROWS: usize = 128;

/// `items` cut into consecutive chunks whose lengths are powers of two, at most [`MAX_ROWS`].
pub fn chunks<T>(mut items: &[T]) -> Vec<&[T]> {
    let mut out = Vec::new();
    while !items.is_empty() {
        let n = items.len().min(MAX_ROWS);
        let n = 1 << (usize::BITS - 1 - n.leading_zeros());
        let (head, rest) = items.split_at(n);
        out.push(head);
        items = rest;
    }
    out
}

/// `head` followed by `rows` groups of `columns` numbered placeholders:
/// `values("INSERT ... VALUES", 2, 2)` is `... VALUES ($1, $2), ($3, $4)`.
pub fn values(head: &str, columns: usize, rows: usize) -> AssertSqlSafe<String> {
    values_with(
        head,
        rows,
        |r, out| {
            for c in 0..columns {
                if c > 0 {
                    out.push_str(", ");
                }
                placeholder(out, r * columns + c + 1);
            }
        },
        "",
    )
}

/// `head`, then one `( ... )` per row written by `row(r, sql)`, then `tail`.
pub fn values_with(
    head: &str,
    rows: usize,
    row: impl Fn(usize, &mut String),
    tail: &str,
) -> AssertSqlSafe<String> {
    let mut sql = String::with_capacity(head.len() + tail.len() + rows * 24);
    sql.push_str(head);
    for r in 0..rows {
        sql.push_str(if r == 0 { " (" } else { ", (" });
        row(r, &mut sql);
        sql.push(')');
    }
    sql.push_str(tail);
    AssertSqlSafe(sql)
}

/// `head` followed by `(${first}, ..., ${first + n - 1})`: a list for `IN`.
pub fn in_list(head: &str, first: usize, n: usize) -> AssertSqlSafe<String> {
    let mut sql = String::from(head);
    sql.push_str(" (");
    for i in 0..n {
        if i > 0 {
            sql.push_str(", ");
        }
        placeholder(&mut sql, first + i);
    }
    sql.push(')');
    AssertSqlSafe(sql)
}

pub fn placeholder(sql: &mut String, n: usize) {
    sql.push('$');
    sql.push_str(&n.to_string());
}

/// Rows picked by a text key (an orderNo): those in `(after, through]`, or the named ones.
#[derive(Debug, Clone, Copy)]
pub enum Keys<'a> {
    Range { after: &'a str, through: &'a str },
    Named(&'a [&'a str]),
}

/// The rows `select` (a query ending in `WHERE`) finds for `keys` in its `column`: one
/// statement for a range; for names, many per statement ([`chunks`]).
pub async fn fetch_keys(
    pool: &sqlx::AnyPool,
    select: &str,
    column: &str,
    keys: Keys<'_>,
) -> Result<Vec<sqlx::any::AnyRow>, sqlx::Error> {
    match keys {
        Keys::Range { after, through } => {
            sqlx::query(AssertSqlSafe(format!("{select} {column} > $1 AND {column} <= $2")))
                .bind(after)
                .bind(through)
                .fetch_all(pool)
                .await
        }
        Keys::Named(names) => {
            let mut out = Vec::with_capacity(names.len());
            for chunk in chunks(names) {
                let mut q = sqlx::query(in_list(&format!("{select} {column} IN"), 1, chunk.len()));
                for name in chunk {
                    q = q.bind(name);
                }
                out.extend(q.fetch_all(pool).await?);
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_powers_of_two_in_order() {
        let items: Vec<usize> = (0..300).collect();
        let lens: Vec<usize> = chunks(&items).iter().map(|c| c.len()).collect();
        assert_eq!(lens, vec![128, 128, 32, 8, 4]);
        assert_eq!(chunks(&items).concat(), items);
        assert!(chunks::<u8>(&[]).is_empty());
        assert_eq!(chunks(&[1, 2, 3]).iter().map(|c| c.len()).collect::<Vec<_>>(), vec![2, 1]);
    }

    #[test]
    fn sql_texts() {
        assert_eq!(
            values("INSERT INTO t (a, b) VALUES", 2, 2).0,
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)"
        );
        assert_eq!(
            in_list("DELETE FROM t WHERE id IN", 2, 3).0,
            "DELETE FROM t WHERE id IN ($2, $3, $4)"
        );
        let sql = values_with(
            "INSERT INTO t VALUES",
            2,
            |r, s| s.push_str(&format!("$1, ${}", r + 2)),
            " RETURNING x",
        );
        assert_eq!(sql.0, "INSERT INTO t VALUES ($1, $2), ($1, $3) RETURNING x");
    }
}
