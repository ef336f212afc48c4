//! Stock's tables. Product counters carry CHECK constraints (never negative) as a last line
//! of defence; every counter change writes a `stock_movements` row, so each product's
//! counters can be recomputed from its history.

use std::collections::{BTreeMap, HashMap};

use events::{OrderNo, ProductQuantities};
use serde::Serialize;
use sqlx::{AnyPool, Row, any::AnyRow};
use storage::{Tx, rows};

use crate::domain::{Counters, Movement, MovementKind, Reservation, ReservationState};

pub const MIGRATIONS: &[&str] = &["
CREATE TABLE products (
    id BIGINT PRIMARY KEY,
    available BIGINT NOT NULL CHECK (available >= 0),
    frozen BIGINT NOT NULL DEFAULT 0 CHECK (frozen >= 0),
    sold BIGINT NOT NULL DEFAULT 0 CHECK (sold >= 0),
    updated_at BIGINT NOT NULL);
CREATE TABLE reservations (
    order_no TEXT PRIMARY KEY, order_id BIGINT NOT NULL, state TEXT NOT NULL,
    lines TEXT NOT NULL, reason TEXT, updated_at BIGINT NOT NULL);
CREATE TABLE stock_movements (
    id INTEGER PRIMARY KEY AUTOINCREMENT, product_id BIGINT NOT NULL, order_no TEXT,
    kind TEXT NOT NULL, d_available BIGINT NOT NULL, d_frozen BIGINT NOT NULL, d_sold BIGINT NOT NULL,
    at BIGINT NOT NULL);
CREATE INDEX stock_movements_by_product ON stock_movements (product_id, id);
", "
CREATE INDEX reservations_frozen ON reservations (updated_at) WHERE state = 'FROZEN';
"];

#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StockView {
    pub product_id: i64,
    pub available: i64,
    pub frozen: i64,
    pub sold: i64,
}

fn view_of(r: &AnyRow) -> Result<StockView, sqlx::Error> {
    Ok(StockView {
        product_id: r.try_get("id")?,
        available: r.try_get("available")?,
        frozen: r.try_get("frozen")?,
        sold: r.try_get("sold")?,
    })
}

pub async fn product(pool: &AnyPool, id: i64) -> Result<Option<StockView>, sqlx::Error> {
    let row = sqlx::query("SELECT id, available, frozen, sold FROM products WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(view_of).transpose()
}

pub async fn all(pool: &AnyPool) -> Result<Vec<StockView>, sqlx::Error> {
    let rows = sqlx::query("SELECT id, available, frozen, sold FROM products ORDER BY id")
        .fetch_all(pool)
        .await?;
    rows.iter().map(view_of).collect()
}

/// Counters of the given products, read (and on PostgreSQL locked, in ascending id order)
/// inside the write transaction: one statement for a whole batch.
pub async fn counters(tx: &mut Tx, ids: &[i64]) -> Result<BTreeMap<i64, Counters>, sqlx::Error> {
    tx.fetch_locked("SELECT id, available, frozen, sold FROM products WHERE id IN", "id", ids)
        .await?
        .iter()
        .map(|r| {
            Ok((
                r.try_get("id")?,
                Counters {
                    available: r.try_get("available")?,
                    frozen: r.try_get("frozen")?,
                    sold: r.try_get("sold")?,
                },
            ))
        })
        .collect()
}

pub async fn apply(tx: &mut Tx, order_no: Option<&str>, m: &Movement) -> Result<(), sqlx::Error> {
    let now = events::now_millis();
    tx.write(
        sqlx::query(
            "UPDATE products SET available = available + $1, frozen = frozen + $2, sold = sold + $3, updated_at = $4
             WHERE id = $5",
        )
        .bind(m.available)
        .bind(m.frozen)
        .bind(m.sold)
        .bind(now)
        .bind(m.product_id),
    )
    .await?;
    tx.write(
        sqlx::query(
            "INSERT INTO stock_movements (product_id, order_no, kind, d_available, d_frozen, d_sold, at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(m.product_id)
        .bind(order_no)
        .bind(m.kind.as_str())
        .bind(m.available)
        .bind(m.frozen)
        .bind(m.sold)
        .bind(now),
    )
    .await
}

/// Sets a product's available units (creating it), recording the difference as `ADJUST`.
pub async fn set_available(tx: &mut Tx, id: i64, available: i64) -> Result<StockView, sqlx::Error> {
    let select = storage::lock_rows(tx, "SELECT available FROM products WHERE id = $1");
    let current: Option<i64> =
        tx.fetch_optional(sqlx::query(select).bind(id)).await?.map(|r| r.try_get(0)).transpose()?;
    if current.is_none() {
        tx.write(
            sqlx::query("INSERT INTO products (id, available, updated_at) VALUES ($1, 0, $2)")
                .bind(id)
                .bind(events::now_millis()),
        )
        .await?;
    }
    let delta = available - current.unwrap_or(0);
    apply(
        tx,
        None,
        &Movement {
            product_id: id,
            kind: MovementKind::Adjust,
            available: delta,
            frozen: 0,
            sold: 0,
        },
    )
    .await?;
    let row = tx
        .fetch_one(
            sqlx::query("SELECT id, available, frozen, sold FROM products WHERE id = $1").bind(id),
        )
        .await?;
    view_of(&row)
}

const RESERVATION: &str =
    "SELECT order_no, order_id, state, lines, reason FROM reservations WHERE order_no = $1";

/// The reservations of `order_nos` that exist, read (and on PostgreSQL locked, in ascending
/// orderNo order) inside the write transaction: one statement for a whole batch.
pub async fn reservations(
    tx: &mut Tx,
    order_nos: &[&str],
) -> Result<HashMap<String, Reservation>, sqlx::Error> {
    tx.fetch_locked(
        "SELECT order_no, order_id, state, lines, reason FROM reservations WHERE order_no IN",
        "order_no",
        order_nos,
    )
    .await?
    .iter()
    .map(|r| Ok((r.try_get("order_no")?, reservation_of(r)?)))
    .collect()
}

/// The order's reservation as committed.
pub async fn read_reservation(
    pool: &AnyPool,
    order_no: &str,
) -> Result<Option<Reservation>, sqlx::Error> {
    sqlx::query(RESERVATION)
        .bind(order_no)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(reservation_of)
        .transpose()
}

fn reservation_of(r: &AnyRow) -> Result<Reservation, sqlx::Error> {
    let order_no: String = r.try_get("order_no")?;
    let state: String = r.try_get("state")?;
    let lines: String = r.try_get("lines")?;
    Ok(Reservation {
        order_id: r.try_get("order_id")?,
        state: ReservationState::parse(&state).ok_or_else(|| {
            storage::decode::corrupt("reservations", "state", &order_no, format!("{state:?}"))
        })?,
        lines: storage::decode::json::<ProductQuantities>(
            &lines,
            "reservations",
            "lines",
            order_no,
        )?,
        reason: r.try_get("reason")?,
    })
}

/// Orders whose reservation has been FROZEN since before `cutoff`, oldest first (from the
/// partial index `reservations_frozen`, so a tick costs the expired rows, not the table).
pub async fn frozen_before(
    pool: &AnyPool,
    cutoff: i64,
    limit: i64,
) -> Result<Vec<OrderNo>, sqlx::Error> {
    let found: Vec<String> = sqlx::query_scalar("SELECT order_no FROM reservations WHERE state = 'FROZEN' AND updated_at < $1 ORDER BY updated_at LIMIT $2")
        .bind(cutoff)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    found.iter().map(|s| storage::decode::parse(s, "reservations", "order_no", s)).collect()
}

pub async fn save_reservation(
    tx: &mut Tx,
    order_no: &str,
    r: &Reservation,
) -> Result<(), sqlx::Error> {
    tx.write(
        sqlx::query(
            "INSERT INTO reservations (order_no, order_id, state, lines, reason, updated_at) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (order_no) DO UPDATE SET state = excluded.state, lines = excluded.lines,
                                                  reason = excluded.reason, updated_at = excluded.updated_at",
        )
        .bind(order_no)
        .bind(r.order_id)
        .bind(r.state.as_str())
        .bind(serde_json::to_string(&r.lines).unwrap_or_default())
        .bind(r.reason.as_deref())
        .bind(events::now_millis()),
    )
    .await
}

// The checker's questions (`orderflow check` and the invariant gauges): one function each,
// here beside the tables they read.

/// The reservation state of each order among `keys` that has a reservation.
pub async fn reservation_states(
    pool: &AnyPool,
    keys: rows::Keys<'_>,
) -> Result<BTreeMap<OrderNo, ReservationState>, sqlx::Error> {
    let rows =
        rows::fetch_keys(pool, "SELECT order_no, state FROM reservations WHERE", "order_no", keys)
            .await?;
    rows.iter()
        .map(|r| {
            let order_no: String = r.try_get("order_no")?;
            let order_no: OrderNo =
                storage::decode::parse(&order_no, "reservations", "order_no", &order_no)?;
            let state: String = r.try_get("state")?;
            let state = ReservationState::parse(&state).ok_or_else(|| {
                storage::decode::corrupt("reservations", "state", &order_no, format!("{state:?}"))
            })?;
            Ok((order_no, state))
        })
        .collect()
}

/// A product's counters beside the sums of its stock movements (conservation: they are
/// equal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    pub product_id: i64,
    /// available, frozen, sold.
    pub counters: [i64; 3],
    /// The same, summed over the product's movements.
    pub movements: [i64; 3],
}

/// Every product's [`Balance`], in id order: one aggregate over the movements.
pub async fn balances(pool: &AnyPool) -> Result<Vec<Balance>, sqlx::Error> {
    // The movements are summed per product in index order, a row at a time: grouping the
    // join itself made SQLite sort every movement in memory, on each pass.
    balances_of(pool, "stock_movements", 0).await
}

/// Every product's counters beside the sums of its movements after movement `after` only
/// (the conservation gauges add the sums up to it, [`movement_sums`]), read in one
/// statement so both are of the same instant. Costs the movements after `after`.
pub async fn balances_after(pool: &AnyPool, after: i64) -> Result<Vec<Balance>, sqlx::Error> {
    balances_of(pool, "stock_movements WHERE id > $1", after).await
}

/// [`Balance`]s over the movements of `movements`, a table with an optional `WHERE` (which
/// may use `$1`, bound to `after`).
async fn balances_of(
    pool: &AnyPool,
    movements: &str,
    after: i64,
) -> Result<Vec<Balance>, sqlx::Error> {
    // Sums are cast to BIGINT: PostgreSQL's SUM of BIGINT is NUMERIC.
    let sql = format!(
        "SELECT p.id, p.available, p.frozen, p.sold,
                CAST(COALESCE(m.ma, 0) AS BIGINT) AS ma,
                CAST(COALESCE(m.mf, 0) AS BIGINT) AS mf,
                CAST(COALESCE(m.ms, 0) AS BIGINT) AS ms
         FROM products p LEFT JOIN (
             SELECT product_id, SUM(d_available) AS ma, SUM(d_frozen) AS mf, SUM(d_sold) AS ms
             FROM {movements} GROUP BY product_id) m ON m.product_id = p.id
         ORDER BY p.id"
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    if movements.contains("$1") {
        q = q.bind(after);
    }
    let rows = q.fetch_all(pool).await?;
    rows.iter()
        .map(|r| {
            Ok(Balance {
                product_id: r.try_get("id")?,
                counters: [r.try_get("available")?, r.try_get("frozen")?, r.try_get("sold")?],
                movements: [r.try_get("ma")?, r.try_get("mf")?, r.try_get("ms")?],
            })
        })
        .collect()
}

/// Per product, the sums (available, frozen, sold) of its movements with id in
/// `(after, through]`.
pub async fn movement_sums(
    pool: &AnyPool,
    after: i64,
    through: i64,
) -> Result<BTreeMap<i64, [i64; 3]>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT product_id, CAST(SUM(d_available) AS BIGINT) AS ma,
                CAST(SUM(d_frozen) AS BIGINT) AS mf, CAST(SUM(d_sold) AS BIGINT) AS ms
         FROM stock_movements WHERE id > $1 AND id <= $2 GROUP BY product_id",
    )
    .bind(after)
    .bind(through)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((r.try_get("product_id")?, [r.try_get("ma")?, r.try_get("mf")?, r.try_get("ms")?]))
        })
        .collect()
}

/// The last movement after `after` made before `at` (epoch millis): a checkpoint the
/// conservation gauges may fold up to, its movements long committed.
pub async fn movement_before(
    pool: &AnyPool,
    after: i64,
    at: i64,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM stock_movements WHERE id > $1 AND at < $2 ORDER BY id DESC LIMIT 1",
    )
    .bind(after)
    .bind(at)
    .fetch_optional(pool)
    .await
}
