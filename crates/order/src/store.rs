//! The order service's tables and the SQL over them. Every write takes the caller's open
//! transaction, so an order change, its history line, its outgoing event (outbox) and the
//! incoming eventId (inbox) commit together.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Display,
};

use events::{Money, OrderNo, ProductId, ProductQuantities, Quantity};
use serde::Serialize;
use sqlx::{AnyConnection, AnyPool, Row, any::AnyRow};
use storage::{Statement, Tx, decode, rows};

use crate::domain::{OrderState, OrderStatus, PaymentRef};

pub const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE products (
    id BIGINT PRIMARY KEY, name TEXT NOT NULL, price TEXT NOT NULL, updated_at BIGINT NOT NULL);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    order_no TEXT UNIQUE, user_id BIGINT NOT NULL, total TEXT NOT NULL, lines TEXT NOT NULL,
    remark TEXT, status TEXT NOT NULL,
    payment_id BIGINT, transaction_no TEXT, paid_amount TEXT,
    stock_deducted BIGINT NOT NULL DEFAULT 0, refunded BIGINT NOT NULL DEFAULT 0,
    cancel_reason TEXT, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL);
CREATE INDEX orders_by_user ON orders (user_id, status, id);
CREATE INDEX orders_by_status ON orders (status, id);
CREATE TABLE order_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, order_no TEXT NOT NULL, at BIGINT NOT NULL,
    event TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX order_history_by_order ON order_history (order_no, id);
CREATE TABLE idempotency_keys (
    idem_key TEXT PRIMARY KEY, request_hash TEXT NOT NULL, order_no TEXT NOT NULL,
    created_at BIGINT NOT NULL);
",
    "
CREATE TABLE order_messages (
    order_no TEXT NOT NULL, tags TEXT NOT NULL, topic TEXT NOT NULL, keys TEXT NOT NULL,
    properties TEXT NOT NULL, body TEXT NOT NULL,
    sent_at BIGINT NOT NULL, resends BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (order_no, tags));
CREATE INDEX orders_by_status_age ON orders (status, created_at);
",
    "
CREATE INDEX orders_by_update ON orders (updated_at);
",
];

/// An amount stored as text in `table.col` of the row keyed `key`.
fn money(row: &AnyRow, table: &str, col: &str, key: impl Display) -> Result<Money, sqlx::Error> {
    let text: String = row.try_get(col)?;
    decode::parse(&text, table, col, key)
}

/// [`money`], for a column that may be NULL.
fn opt_money(
    row: &AnyRow,
    table: &str,
    col: &str,
    key: impl Display,
) -> Result<Option<Money>, sqlx::Error> {
    let text: Option<String> = row.try_get(col)?;
    text.map(|t| decode::parse(&t, table, col, key)).transpose()
}

/// An orderNo stored in `table.col` of the row keyed `key`.
fn order_no(
    row: &AnyRow,
    table: &str,
    col: &str,
    key: impl Display,
) -> Result<OrderNo, sqlx::Error> {
    let text: String = row.try_get(col)?;
    decode::parse(&text, table, col, key)
}

/// A product of the catalogue the order service prices from.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    pub id: i64,
    pub name: String,
    pub price: Money,
}

pub async fn upsert_product(tx: &mut Tx, p: &Product) -> Result<(), sqlx::Error> {
    tx.write(
        sqlx::query(
            "INSERT INTO products (id, name, price, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, price = excluded.price, updated_at = excluded.updated_at",
        )
        .bind(p.id)
        .bind(&p.name)
        .bind(p.price.to_string())
        .bind(events::now_millis()),
    )
    .await
}

pub async fn products(pool: &AnyPool) -> Result<Vec<Product>, sqlx::Error> {
    let rows =
        sqlx::query("SELECT id, name, price FROM products ORDER BY id").fetch_all(pool).await?;
    rows.iter()
        .map(|r| {
            let id: i64 = r.try_get("id")?;
            Ok(Product { id, name: r.try_get("name")?, price: money(r, "products", "price", id)? })
        })
        .collect()
}

/// The prices of those of `ids` the catalogue has.
pub async fn prices(tx: &mut Tx, ids: &[i64]) -> Result<BTreeMap<i64, Money>, sqlx::Error> {
    let mut out = BTreeMap::new();
    for chunk in rows::chunks(ids) {
        let mut q = sqlx::query(rows::in_list(
            "SELECT id, price FROM products WHERE id IN",
            1,
            chunk.len(),
        ));
        for id in chunk {
            q = q.bind(*id);
        }
        for r in tx.fetch_all(q).await? {
            let id: i64 = r.try_get("id")?;
            out.insert(id, money(&r, "products", "price", id)?);
        }
    }
    Ok(out)
}

/// A new order's identity.
pub struct Created {
    pub order_id: i64,
    pub order_no: OrderNo,
    pub created_at: i64,
}

/// Ids for `n` new orders, taken inside the write transaction, so each order's insert can
/// carry its number and need no reply (it is queued with the group's other writes,
/// [`storage::tx`]). PostgreSQL: the column's own sequence, one round trip (shared safely by
/// several instances). SQLite: after `last`, the last id this process gave, read the first
/// time from the file (the largest id ever given, `sqlite_sequence`, as AUTOINCREMENT
/// would): one process owns the file and only its one creator inserts orders, so no round
/// trip after the first. Ids of an order that is then not written are skipped.
pub async fn order_ids(
    tx: &mut Tx,
    n: usize,
    last: &mut Option<i64>,
) -> Result<Vec<i64>, sqlx::Error> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if tx.backend() == storage::Backend::Postgres {
        return tx
            .fetch_all(sqlx::query("SELECT nextval(pg_get_serial_sequence('orders', 'id')) FROM generate_series(1, $1)").bind(n as i64))
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect();
    }
    let from = match *last {
        Some(id) => id,
        None => tx
            .fetch_one(sqlx::query(
                "SELECT MAX(COALESCE((SELECT MAX(id) FROM orders), 0),
                            COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'orders'), 0))",
            ))
            .await?
            .try_get(0)?,
    };
    *last = Some(from + n as i64);
    Ok((1..=n as i64).map(|i| from + i).collect())
}

/// Inserts PENDING order `order_id` (from [`order_ids`]) with its number: `ORD` + epoch
/// millis + id (unique, as the millis are always 13 digits). A queued write: no round trip.
pub async fn insert_order(
    tx: &mut Tx,
    order_id: i64,
    user_id: i64,
    total: Money,
    lines: &ProductQuantities,
    remark: Option<&str>,
) -> Result<Created, sqlx::Error> {
    let now = events::now_millis();
    let order_no = OrderNo::parse(format!("ORD{now}{order_id}"))
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    tx.write(
        sqlx::query(
            "INSERT INTO orders (id, order_no, user_id, total, lines, remark, status, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
        )
        .bind(order_id)
        .bind(order_no.as_str())
        .bind(user_id)
        .bind(total.to_string())
        .bind(serde_json::to_string(lines).unwrap_or_default())
        .bind(remark)
        .bind(OrderStatus::Pending.as_str())
        .bind(now),
    )
    .await?;
    Ok(Created { order_id, order_no, created_at: now })
}

/// The order's id, user and decision state, read inside the write transaction.
pub async fn load_state(tx: &mut Tx, order_no: &str) -> Result<Option<Loaded>, sqlx::Error> {
    Ok(load_states(tx, &[order_no]).await?.remove(order_no))
}

/// An order as a decision sees it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub order_id: i64,
    pub user_id: i64,
    /// When it was created (ms since the Unix epoch).
    pub created_at: i64,
    pub state: OrderState,
}

const STATE_COLUMNS: &str =
    "SELECT order_no, id, user_id, created_at, total, status, payment_id, transaction_no, paid_amount, stock_deducted, refunded, cancel_reason
     FROM orders WHERE order_no IN";

/// The orders of `order_nos` that exist, read (and on PostgreSQL locked, in ascending
/// orderNo order) inside the write transaction: one statement for a whole batch.
pub async fn load_states(
    tx: &mut Tx,
    order_nos: &[&str],
) -> Result<HashMap<String, Loaded>, sqlx::Error> {
    tx.fetch_locked(STATE_COLUMNS, "order_no", order_nos)
        .await?
        .iter()
        .map(|r| {
            let loaded = Loaded {
                order_id: r.try_get("id")?,
                user_id: r.try_get("user_id")?,
                created_at: r.try_get("created_at")?,
                state: state_of(r)?,
            };
            Ok((r.try_get("order_no")?, loaded))
        })
        .collect()
}

fn state_of(r: &AnyRow) -> Result<OrderState, sqlx::Error> {
    let id: i64 = r.try_get("id")?;
    let key = || format!("id {id}");
    let status: String = r.try_get("status")?;
    let payment_id: Option<i64> = r.try_get("payment_id")?;
    let payment = match payment_id {
        Some(payment_id) => Some(PaymentRef {
            payment_id,
            transaction_no: decode::required(
                r.try_get("transaction_no")?,
                "orders",
                "transaction_no",
                key(),
            )?,
            amount: decode::required(
                opt_money(r, "orders", "paid_amount", key())?,
                "orders",
                "paid_amount",
                key(),
            )?,
        }),
        None => None,
    };
    Ok(OrderState {
        status: OrderStatus::parse(&status)
            .ok_or_else(|| decode::corrupt("orders", "status", key(), format!("{status:?}")))?,
        total: money(r, "orders", "total", key())?,
        payment,
        stock_deducted: r.try_get::<i64, _>("stock_deducted")? != 0,
        refunded: r.try_get::<i64, _>("refunded")? != 0,
        cancel_reason: r.try_get("cancel_reason")?,
    })
}

pub async fn save_state(tx: &mut Tx, order_no: &str, s: &OrderState) -> Result<(), sqlx::Error> {
    tx.write(
        sqlx::query(
            "UPDATE orders SET status = $1, payment_id = $2, transaction_no = $3, paid_amount = $4,
                    stock_deducted = $5, refunded = $6, cancel_reason = $7, updated_at = $8
             WHERE order_no = $9",
        )
        .bind(s.status.as_str())
        .bind(s.payment.as_ref().map(|p| p.payment_id))
        .bind(s.payment.as_ref().map(|p| p.transaction_no.clone()))
        .bind(s.payment.as_ref().map(|p| p.amount.to_string()))
        .bind(i64::from(s.stock_deducted))
        .bind(i64::from(s.refunded))
        .bind(s.cancel_reason.as_deref())
        .bind(events::now_millis())
        .bind(order_no),
    )
    .await
}

/// Adds a line to the order's history; returns it.
pub async fn record(
    tx: &mut Tx,
    order_no: &str,
    event: &str,
    detail: &str,
) -> Result<HistoryEntry, sqlx::Error> {
    let at = events::now_millis();
    tx.write(
        sqlx::query(
            "INSERT INTO order_history (order_no, at, event, detail) VALUES ($1, $2, $3, $4)",
        )
        .bind(order_no)
        .bind(at)
        .bind(event)
        .bind(detail),
    )
    .await?;
    Ok(HistoryEntry { at, event: event.to_owned(), detail: detail.to_owned() })
}

/// Appends a history line unless the order has this very line (event and detail) already: a
/// fact that changed nothing is recorded once, however often it arrives.
pub async fn record_once(
    tx: &mut Tx,
    order_no: &str,
    event: &str,
    detail: &str,
) -> Result<(), sqlx::Error> {
    tx.write(
        sqlx::query(
            "INSERT INTO order_history (order_no, at, event, detail)
             SELECT $1, $2, $3, $4 WHERE NOT EXISTS (
                 SELECT 1 FROM order_history WHERE order_no = $1 AND event = $3 AND detail = $4)",
        )
        .bind(order_no)
        .bind(events::now_millis())
        .bind(event)
        .bind(detail),
    )
    .await
}

/// Keeps the exact message the order announced (same eventId), for the compensation job to
/// send again.
pub async fn save_message(
    tx: &mut Tx,
    order_no: &str,
    m: &events::Message,
) -> Result<(), sqlx::Error> {
    tx.write(
        sqlx::query(
            "INSERT INTO order_messages (order_no, tags, topic, keys, properties, body, sent_at) VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (order_no, tags) DO NOTHING",
        )
        .bind(order_no)
        .bind(&m.tags)
        .bind(&m.topic)
        .bind(&m.keys)
        .bind(serde_json::to_string(&m.properties).unwrap_or_else(|_| "{}".into()))
        .bind(String::from_utf8_lossy(&m.body).into_owned())
        .bind(events::now_millis()),
    )
    .await
}

/// Announced messages of orders that are still waiting on them, last sent before `cutoff`
/// and sent again fewer than `max_resends` times: `ORDER_CREATED` of a PENDING order,
/// `ORDER_CANCELLED` of a CANCELLED order whose captured payment is not refunded yet.
pub async fn stale_messages(
    pool: &AnyPool,
    cutoff: i64,
    max_resends: i64,
    limit: i64,
) -> Result<Vec<(OrderNo, events::Message)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT m.order_no, m.tags, m.topic, m.keys, m.properties, m.body
         FROM order_messages m JOIN orders o ON o.order_no = m.order_no
         WHERE m.sent_at < $1 AND m.resends < $3
           AND ((o.status = 'PENDING' AND m.tags = 'ORDER_CREATED')
             OR (o.status = 'CANCELLED' AND m.tags = 'ORDER_CANCELLED' AND o.payment_id IS NOT NULL AND o.refunded = 0))
         ORDER BY m.sent_at LIMIT $2",
    )
    .bind(cutoff)
    .bind(limit)
    .bind(max_resends)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let tags: String = r.try_get("tags")?;
            let order_no = order_no(r, "order_messages", "order_no", &tags)?;
            let properties: String = r.try_get("properties")?;
            let body: String = r.try_get("body")?;
            let properties = decode::json(
                &properties,
                "order_messages",
                "properties",
                format!("{order_no}/{tags}"),
            )?;
            Ok((
                order_no,
                events::Message {
                    topic: r.try_get("topic")?,
                    tags,
                    keys: r.try_get("keys")?,
                    properties,
                    body: body.into_bytes(),
                },
            ))
        })
        .collect()
}

/// Forgets the announced messages an order no longer waits on: all of them once PAID or
/// refunded, `order-created` once CANCELLED. (What remains is what the compensation job may
/// have to send again, so its scan stays as small as the orders in flight.)
pub async fn prune_messages(
    tx: &mut Tx,
    order_no: &str,
    s: &OrderState,
) -> Result<(), sqlx::Error> {
    let sql = match s.status {
        OrderStatus::Paid => "DELETE FROM order_messages WHERE order_no = $1",
        OrderStatus::Cancelled if s.refunded => "DELETE FROM order_messages WHERE order_no = $1",
        OrderStatus::Cancelled => {
            "DELETE FROM order_messages WHERE order_no = $1 AND tags = 'ORDER_CREATED'"
        }
        OrderStatus::Pending => return Ok(()),
    };
    tx.write(sqlx::query(sql).bind(order_no)).await
}

/// Marks a message as sent again now.
pub async fn message_resent(tx: &mut Tx, order_no: &str, tags: &str) -> Result<(), sqlx::Error> {
    tx.write(
        sqlx::query("UPDATE order_messages SET sent_at = $1, resends = resends + 1 WHERE order_no = $2 AND tags = $3")
            .bind(events::now_millis())
            .bind(order_no)
            .bind(tags),
    )
    .await
}

/// PENDING orders created before `cutoff`, oldest first.
pub async fn pending_before(
    pool: &AnyPool,
    cutoff: i64,
    limit: i64,
) -> Result<Vec<OrderNo>, sqlx::Error> {
    let found: Vec<String> = sqlx::query_scalar("SELECT order_no FROM orders WHERE status = 'PENDING' AND created_at < $1 ORDER BY created_at LIMIT $2")
        .bind(cutoff)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    order_nos(found)
}

/// Order numbers read from `orders.order_no`, each parsed.
fn order_nos(found: Vec<String>) -> Result<Vec<OrderNo>, sqlx::Error> {
    found.iter().map(|s| decode::parse(s, "orders", "order_no", s)).collect()
}

/// An earlier request under the same Idempotency-Key: its request hash and order.
pub async fn idempotent(tx: &mut Tx, key: &str) -> Result<Option<(String, OrderNo)>, sqlx::Error> {
    let row = tx
        .fetch_optional(
            sqlx::query("SELECT request_hash, order_no FROM idempotency_keys WHERE idem_key = $1")
                .bind(key),
        )
        .await?;
    row.map(|r| {
        Ok((r.try_get("request_hash")?, order_no(&r, "idempotency_keys", "order_no", key)?))
    })
    .transpose()
}

pub async fn remember_key(
    tx: &mut Tx,
    key: &str,
    hash: &str,
    order_no: &str,
) -> Result<(), sqlx::Error> {
    tx.write(
        sqlx::query("INSERT INTO idempotency_keys (idem_key, request_hash, order_no, created_at) VALUES ($1, $2, $3, $4)")
            .bind(key)
            .bind(hash)
            .bind(order_no)
            .bind(events::now_millis()),
    )
    .await
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub at: i64,
    pub event: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Line {
    pub product_id: ProductId,
    pub quantity: Quantity,
}

/// An order as the API shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OrderView {
    pub order_id: i64,
    pub order_no: OrderNo,
    pub user_id: i64,
    pub status: OrderStatus,
    pub total_amount: Money,
    pub items: Vec<Line>,
    pub remark: Option<String>,
    pub cancel_reason: Option<String>,
    pub payment_id: Option<i64>,
    pub transaction_no: Option<String>,
    pub stock_deducted: bool,
    pub refunded: bool,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<HistoryEntry>,
}

const VIEW_COLUMNS: &str =
    "id, order_no, user_id, total, lines, remark, status, payment_id, transaction_no, paid_amount,
                            stock_deducted, refunded, cancel_reason, created_at, updated_at";

fn view_of(r: &AnyRow) -> Result<OrderView, sqlx::Error> {
    let state = state_of(r)?;
    let id: i64 = r.try_get("id")?;
    let lines: String = r.try_get("lines")?;
    let lines: ProductQuantities = decode::json(&lines, "orders", "lines", format!("id {id}"))?;
    Ok(OrderView {
        order_id: id,
        order_no: {
            let text: Option<String> = r.try_get("order_no")?;
            let text = decode::required(text, "orders", "order_no", format!("id {id}"))?;
            decode::parse(&text, "orders", "order_no", format!("id {id}"))?
        },
        user_id: r.try_get("user_id")?,
        status: state.status,
        total_amount: state.total,
        items: lines
            .into_iter()
            .map(|(product_id, quantity)| Line { product_id, quantity })
            .collect(),
        remark: r.try_get("remark")?,
        cancel_reason: state.cancel_reason,
        payment_id: state.payment.as_ref().map(|p| p.payment_id),
        transaction_no: state.payment.map(|p| p.transaction_no),
        stock_deducted: state.stock_deducted,
        refunded: state.refunded,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        events: Vec::new(),
    })
}

impl Created {
    /// The new order as [`view`] would read it back, without reading it back.
    pub fn view(
        &self,
        user_id: i64,
        total: Money,
        lines: &ProductQuantities,
        remark: Option<&str>,
        created: HistoryEntry,
    ) -> OrderView {
        OrderView {
            order_id: self.order_id,
            order_no: self.order_no.clone(),
            user_id,
            status: OrderStatus::Pending,
            total_amount: total,
            items: lines
                .iter()
                .map(|(&product_id, &quantity)| Line { product_id, quantity })
                .collect(),
            remark: remark.map(str::to_owned),
            cancel_reason: None,
            payment_id: None,
            transaction_no: None,
            stock_deducted: false,
            refunded: false,
            created_at: self.created_at,
            updated_at: self.created_at,
            events: vec![created],
        }
    }
}

/// One order with its history.
pub async fn view(
    conn: &mut AnyConnection,
    order_no: &str,
) -> Result<Option<OrderView>, sqlx::Error> {
    let Some(order) = order_query(order_no).fetch_optional(&mut *conn).await? else {
        return Ok(None);
    };
    with_history(&order, &history_query(order_no).fetch_all(&mut *conn).await?).map(Some)
}

/// [`view`], inside `tx` (which may have written the order).
pub async fn view_in(tx: &mut Tx, order_no: &str) -> Result<Option<OrderView>, sqlx::Error> {
    let Some(order) = tx.fetch_optional(order_query(order_no)).await? else {
        return Ok(None);
    };
    with_history(&order, &tx.fetch_all(history_query(order_no)).await?).map(Some)
}

fn order_query(order_no: &str) -> Statement<'_> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {VIEW_COLUMNS} FROM orders WHERE order_no = $1"
    )))
    .bind(order_no)
}

fn history_query(order_no: &str) -> Statement<'_> {
    sqlx::query("SELECT at, event, detail FROM order_history WHERE order_no = $1 ORDER BY id")
        .bind(order_no)
}

fn with_history(order: &AnyRow, history: &[AnyRow]) -> Result<OrderView, sqlx::Error> {
    let mut v = view_of(order)?;
    v.events = history
        .iter()
        .map(|r| {
            Ok(HistoryEntry {
                at: r.try_get("at")?,
                event: r.try_get("event")?,
                detail: r.try_get("detail")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(v)
}

/// Orders, newest first, optionally of one user and one status.
pub async fn list(
    pool: &AnyPool,
    user_id: Option<i64>,
    status: Option<OrderStatus>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<OrderView>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {VIEW_COLUMNS} FROM orders
         WHERE ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR status = $2)
           AND ($4 IS NULL OR id < $4)
         ORDER BY id DESC LIMIT $3"
    )))
    .bind(user_id)
    .bind(status.map(|s| s.as_str()))
    .bind(limit)
    .bind(before)
    .fetch_all(pool)
    .await?;
    rows.iter().map(view_of).collect()
}

/// Order counts by status (for `/metrics`).
pub async fn count_by_status(pool: &AnyPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM orders GROUP BY status")
        .fetch_all(pool)
        .await?;
    rows.iter().map(|r| Ok((r.try_get("status")?, r.try_get("n")?))).collect()
}

// The checker's questions (`orderflow check` and the invariant gauges): one function each,
// here beside the table they read.

/// What the checker judges of an order.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderAudit {
    pub order_no: OrderNo,
    pub status: OrderStatus,
    pub total: Money,
    pub created_at: i64,
    pub updated_at: i64,
}

const AUDIT_SELECT: &str = "SELECT id, order_no, status, total, created_at, updated_at FROM orders";

fn audit_of(r: &AnyRow) -> Result<OrderAudit, sqlx::Error> {
    let id: i64 = r.try_get("id")?;
    let order_no = order_no(r, "orders", "order_no", format!("id {id}"))?;
    let status: String = r.try_get("status")?;
    Ok(OrderAudit {
        status: OrderStatus::parse(&status)
            .ok_or_else(|| decode::corrupt("orders", "status", &order_no, format!("{status:?}")))?,
        total: money(r, "orders", "total", &order_no)?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        order_no,
    })
}

/// Up to `limit` orders after `after` in orderNo order: a page of a full check.
pub async fn audit_page(
    pool: &AnyPool,
    after: &str,
    limit: i64,
) -> Result<Vec<OrderAudit>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{AUDIT_SELECT} WHERE order_no > $1 ORDER BY order_no LIMIT $2"
    )))
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(audit_of).collect()
}

/// The named orders (those of them that exist).
pub async fn audit(pool: &AnyPool, order_nos: &[&str]) -> Result<Vec<OrderAudit>, sqlx::Error> {
    let select = format!("{AUDIT_SELECT} WHERE");
    let rows = rows::fetch_keys(pool, &select, "order_no", rows::Keys::Named(order_nos)).await?;
    rows.iter().map(audit_of).collect()
}

/// Orders last changed in `(since, until]` (by `updated_at`, indexed).
pub async fn changed_between(
    pool: &AnyPool,
    since: i64,
    until: i64,
) -> Result<Vec<OrderNo>, sqlx::Error> {
    let found = sqlx::query_scalar(
        "SELECT order_no FROM orders WHERE updated_at > $1 AND updated_at <= $2 AND order_no IS NOT NULL",
    )
    .bind(since)
    .bind(until)
    .fetch_all(pool)
    .await?;
    order_nos(found)
}
