//! Payment's table: one row per order (`order_no` is unique), including CANCELLED records
//! for orders cancelled before payment saw them.

use std::collections::{BTreeMap, HashMap};

use events::{Money, OrderNo};
use serde::Serialize;
use sqlx::{AnyPool, Row, any::AnyRow};
use storage::{Tx, decode, rows};

use crate::domain::PaymentStatus;

pub const MIGRATIONS: &[&str] = &["
CREATE TABLE payments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    order_no TEXT NOT NULL UNIQUE, order_id BIGINT NOT NULL, user_id BIGINT NOT NULL,
    amount TEXT, method TEXT NOT NULL, status TEXT NOT NULL, transaction_no TEXT,
    lines TEXT NOT NULL, reason TEXT, complete_at BIGINT,
    created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL);
CREATE INDEX payments_due ON payments (status, complete_at);
"];

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    pub payment_id: i64,
    pub order_id: i64,
    pub order_no: OrderNo,
    pub user_id: i64,
    pub amount: Option<Money>,
    pub payment_method: String,
    pub status: PaymentStatus,
    pub transaction_no: Option<String>,
    pub reason: Option<String>,
    #[serde(skip)]
    pub lines: String,
    pub created_at: i64,
    pub updated_at: i64,
}

macro_rules! select_payments {
    ($rest:literal) => {
        concat!(
            "SELECT id, order_no, order_id, user_id, amount, method, status, transaction_no, lines, reason,
                    created_at, updated_at FROM payments ",
            $rest
        )
    };
}

fn payment_of(r: &AnyRow) -> Result<Payment, sqlx::Error> {
    let id: i64 = r.try_get("id")?;
    let order_no: String = r.try_get("order_no")?;
    let order_no: OrderNo = decode::parse(&order_no, "payments", "order_no", format!("id {id}"))?;
    let status: String = r.try_get("status")?;
    let amount: Option<String> = r.try_get("amount")?;
    Ok(Payment {
        payment_id: id,
        order_id: r.try_get("order_id")?,
        user_id: r.try_get("user_id")?,
        amount: amount.map(|a| decode::parse(&a, "payments", "amount", &order_no)).transpose()?,
        payment_method: r.try_get("method")?,
        status: PaymentStatus::parse(&status).ok_or_else(|| {
            decode::corrupt("payments", "status", &order_no, format!("{status:?}"))
        })?,
        order_no,
        transaction_no: r.try_get("transaction_no")?,
        reason: r.try_get("reason")?,
        lines: r.try_get("lines")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// The order's payment, locked (PostgreSQL) for the rest of the transaction.
pub async fn by_order(tx: &mut Tx, order_no: &str) -> Result<Option<Payment>, sqlx::Error> {
    let select = storage::lock_rows(tx, select_payments!("WHERE order_no = $1"));
    let row = tx.fetch_optional(sqlx::query(select).bind(order_no)).await?;
    row.as_ref().map(payment_of).transpose()
}

pub struct NewPayment<'a> {
    pub order_no: &'a OrderNo,
    pub order_id: i64,
    pub user_id: i64,
    pub amount: Option<Money>,
    pub method: &'a str,
    pub status: PaymentStatus,
    pub lines: String,
    pub complete_at: Option<i64>,
}

/// Inserts the payment unless the order has one already; returns it as [`by_order`] would
/// read it back, or `None` when the order had one.
pub async fn insert(tx: &mut Tx, p: NewPayment<'_>) -> Result<Option<Payment>, sqlx::Error> {
    Ok(insert_new(tx, &[p]).await?.pop())
}

/// Inserts the payments of the orders that have none yet, one statement for many; returns
/// those inserted, in the order given, as [`by_order`] would read them back.
pub async fn insert_new(tx: &mut Tx, new: &[NewPayment<'_>]) -> Result<Vec<Payment>, sqlx::Error> {
    const COLUMNS: usize = 10;
    let now = events::now_millis();
    let mut ids: HashMap<String, i64> = HashMap::with_capacity(new.len());
    for chunk in rows::chunks(new) {
        let values = rows::values(
            "INSERT INTO payments (order_no, order_id, user_id, amount, method, status, lines, complete_at, created_at, updated_at) VALUES",
            COLUMNS,
            chunk.len(),
        );
        let sql = format!("{} ON CONFLICT (order_no) DO NOTHING RETURNING id, order_no", values.0);
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for p in chunk {
            q = q
                .bind(p.order_no.as_str())
                .bind(p.order_id)
                .bind(p.user_id)
                .bind(p.amount.map(|a| a.to_string()))
                .bind(p.method)
                .bind(p.status.as_str())
                .bind(p.lines.clone())
                .bind(p.complete_at)
                .bind(now)
                .bind(now);
        }
        for row in tx.fetch_all(q).await? {
            ids.insert(row.try_get("order_no")?, row.try_get("id")?);
        }
    }
    // An order named twice got one row: the first of its payments.
    Ok(new
        .iter()
        .filter_map(|p| {
            ids.remove(p.order_no.as_str()).map(|payment_id| Payment {
                payment_id,
                order_id: p.order_id,
                order_no: p.order_no.clone(),
                user_id: p.user_id,
                amount: p.amount,
                payment_method: p.method.to_owned(),
                status: p.status,
                transaction_no: None,
                reason: None,
                lines: p.lines.clone(),
                created_at: now,
                updated_at: now,
            })
        })
        .collect())
}

pub async fn set_status(
    tx: &mut Tx,
    id: i64,
    status: PaymentStatus,
    transaction_no: Option<&str>,
    reason: Option<&str>,
) -> Result<(), sqlx::Error> {
    tx.write(
        sqlx::query(
            "UPDATE payments SET status = $1, transaction_no = COALESCE($2, transaction_no), reason = COALESCE($3, reason),
                    updated_at = $4 WHERE id = $5",
        )
        .bind(status.as_str())
        .bind(transaction_no)
        .bind(reason)
        .bind(events::now_millis())
        .bind(id),
    )
    .await
}

/// Orders whose PENDING payment is due for completion.
pub async fn due(pool: &AnyPool, now: i64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT order_no FROM payments WHERE status = 'PENDING' AND complete_at <= $1 ORDER BY id LIMIT 256")
        .bind(now)
        .fetch_all(pool)
        .await
}

/// Payments still PENDING (waiting for their completion).
pub async fn pending(pool: &AnyPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM payments WHERE status = 'PENDING'")
        .fetch_one(pool)
        .await
}

pub async fn list(
    pool: &AnyPool,
    order_no: Option<&str>,
    limit: i64,
) -> Result<Vec<Payment>, sqlx::Error> {
    let rows = sqlx::query(select_payments!(
        "WHERE ($1 IS NULL OR order_no = $1) ORDER BY id DESC LIMIT $2"
    ))
    .bind(order_no)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(payment_of).collect()
}

// The checker's question (`orderflow check` and the invariant gauges), here beside the table
// it reads.

/// The status and amount of every payment of each order among `keys`.
pub async fn outcomes(
    pool: &AnyPool,
    keys: rows::Keys<'_>,
) -> Result<BTreeMap<OrderNo, Vec<(PaymentStatus, Option<Money>)>>, sqlx::Error> {
    let rows = rows::fetch_keys(pool, select_payments!("WHERE"), "order_no", keys).await?;
    let mut out: BTreeMap<OrderNo, Vec<(PaymentStatus, Option<Money>)>> = BTreeMap::new();
    for r in &rows {
        let p = payment_of(r)?;
        out.entry(p.order_no).or_default().push((p.status, p.amount));
    }
    Ok(out)
}
