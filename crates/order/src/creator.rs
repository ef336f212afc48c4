//! Group commit for order creation. Every `POST /api/orders` hands its validated request to
//! one creator task, which takes whatever requests are waiting (up to [`MAX_GROUP`]) and
//! writes them in one transaction: one durable commit for the group instead of one per order.
//! The group's prices are read once and its order ids taken at once ([`store::order_ids`]);
//! every order's writes are then queued and go to SQLite with the commit, so a group of any
//! size costs the writer two round trips ([`storage::tx`]). An order with an Idempotency-Key
//! adds one, the look-up of its key.
//!
//! A request that fails (unknown product, reused Idempotency-Key) rolls that attempt back,
//! and the group is written again with a savepoint per request, so the failure stands alone.
//! Each request is answered only after the commit, so a 201 still means the order and its
//! `order-created` event are on disk.
//!
//! Under light load a group is one request and nothing waits; under load the group grows
//! while the previous commit runs.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use events::{Event, Money, OrderCreatedEvent};
use httpkit::ApiError;
use storage::{Backend, Tx};
use stream::trace;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::{
    OrderService,
    domain::OrderRequest,
    store::{self, OrderView},
};

/// Most requests written in one transaction.
pub const MAX_GROUP: usize = 256;

/// A validated order request.
pub struct NewOrder {
    pub request: OrderRequest,
    /// The request's items as given (to name a bad line).
    pub items: Vec<(i64, i64)>,
    pub key: Option<String>,
    /// What an Idempotency-Key must be reused with.
    pub hash: String,
}

type Reply = oneshot::Sender<Result<(OrderView, bool), ApiError>>;

/// A request waiting for the creator, with the span and trace context it came in under (its
/// HTTP request's): the order is written within them, so its log lines and its
/// `order-created` event continue the request's trace.
type Queued = (NewOrder, (tracing::Span, stream::trace::Context), Reply);

/// The handle requests go through.
#[derive(Clone)]
pub struct Creator {
    queue: mpsc::Sender<Queued>,
}

impl Creator {
    pub fn new() -> (Creator, mpsc::Receiver<Queued>) {
        let (queue, rx) = mpsc::channel(4 * MAX_GROUP);
        (Creator { queue }, rx)
    }

    /// Creates the order (or finds the one its Idempotency-Key made: `true`).
    pub async fn create(&self, order: NewOrder) -> Result<(OrderView, bool), ApiError> {
        let (reply, answer) = oneshot::channel();
        let stopping = || ApiError::Unavailable("the order service is stopping".into());
        let caller = (tracing::Span::current(), stream::trace::current());
        self.queue.send((order, caller, reply)).await.map_err(|_| stopping())?;
        answer.await.map_err(|_| stopping())?
    }
}

/// The creator task: groups waiting requests into one transaction until `token` is
/// cancelled, then writes what is already queued and refuses the rest.
pub async fn run(svc: Arc<OrderService>, mut rx: mpsc::Receiver<Queued>, token: CancellationToken) {
    // The last order id given (SQLite; [`store::order_ids`]).
    let mut last_id = None;
    loop {
        let first = tokio::select! {
            biased;
            job = rx.recv() => match job { Some(j) => j, None => return },
            _ = token.cancelled() => {
                rx.close();
                match rx.recv().await { Some(j) => j, None => return }
            }
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        match write_group(&svc, &group, &mut last_id).await {
            Ok(results) => {
                svc.host.relay.wake();
                for ((_, _, reply), result) in group.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, orders = group.len(), "order group commit failed");
                for (_, _, reply) in group {
                    let _ = reply.send(Err(ApiError::internal(format!("storage: {e}"))));
                }
            }
        }
    }
}

type Outcomes = Vec<Result<(OrderView, bool), ApiError>>;

/// One transaction for the group; `Err` only when the transaction as a whole failed. First
/// all together; if any request fails (a bad product, a reused key), that is rolled back
/// and the group written again with a savepoint per request, so the failure stands alone.
async fn write_group(
    svc: &OrderService,
    group: &[Queued],
    last_id: &mut Option<i64>,
) -> Result<Outcomes, sqlx::Error> {
    let mut tx = Tx::begin(&svc.host.db).await?;
    let prices = group_prices(&mut tx, group).await?;
    let ids = store::order_ids(&mut tx, group.len(), last_id).await?;
    let mut results = Vec::with_capacity(group.len());
    for ((order, (span, cx), _), id) in group.iter().zip(ids) {
        match trace::within(span, cx, create_one(svc, &mut tx, &prices, id, order)).await {
            Ok(created) => results.push(Ok(created)),
            Err(_) => {
                // Rolled back when dropped; it holds the one writer connection.
                drop(tx);
                return write_each(svc, group, last_id).await;
            }
        }
    }
    // On SQLite the queued writes go with the commit, and one that fails belongs to some
    // request: the careful path finds which (a commit that fails for the group as a whole
    // fails there too). On PostgreSQL every write has run already, so a failed commit is the
    // group's, and its outcome may be unknown: it is not written a second time.
    let sqlite = tx.backend() == Backend::Sqlite;
    match tx.commit().await {
        Ok(()) => Ok(results),
        Err(_) if sqlite => write_each(svc, group, last_id).await,
        Err(e) => Err(e),
    }
}

/// The careful path: a savepoint per request.
async fn write_each(
    svc: &OrderService,
    group: &[Queued],
    last_id: &mut Option<i64>,
) -> Result<Outcomes, sqlx::Error> {
    let mut tx = Tx::begin(&svc.host.db).await?;
    let prices = group_prices(&mut tx, group).await?;
    let ids = store::order_ids(&mut tx, group.len(), last_id).await?;
    let mut results = Vec::with_capacity(group.len());
    for ((order, (span, cx), _), id) in group.iter().zip(ids) {
        let savepoint = tx.savepoint("new_order").await?;
        let mut result =
            trace::within(span, cx, create_one(svc, &mut tx, &prices, id, order)).await;
        if result.is_ok()
            && let Err(e) = tx.flush().await
        {
            result = Err(e.into());
        }
        tx.end_savepoint(savepoint, result.is_ok()).await?;
        results.push(result);
    }
    tx.commit().await?;
    Ok(results)
}

/// The prices of every product the group orders, read once.
async fn group_prices(tx: &mut Tx, group: &[Queued]) -> Result<BTreeMap<i64, Money>, sqlx::Error> {
    let ids: BTreeSet<i64> = group
        .iter()
        .flat_map(|(order, _, _)| order.request.lines.keys().map(|p| p.get()))
        .collect();
    store::prices(tx, &ids.into_iter().collect::<Vec<_>>()).await
}

/// Writes `order` as order `id`, or answers with the order its Idempotency-Key made.
async fn create_one(
    svc: &OrderService,
    tx: &mut Tx,
    prices: &BTreeMap<i64, Money>,
    id: i64,
    order: &NewOrder,
) -> Result<(OrderView, bool), ApiError> {
    let NewOrder { request, items, key, hash } = order;
    if let Some(key) = key
        && let Some((earlier_hash, order_no)) = store::idempotent(tx, key).await?
    {
        if earlier_hash != *hash {
            return Err(ApiError::Unprocessable(
                "Idempotency-Key was already used with a different request".into(),
            ));
        }
        let view = store::view_in(tx, &order_no)
            .await?
            .ok_or_else(|| ApiError::internal("keyed order vanished"))?;
        return Ok((view, true));
    }
    let total = request
        .total(items, |p| prices.get(&p).copied())
        .map_err(|i| ApiError::invalid(i.field, i.message))?;
    let created = store::insert_order(
        tx,
        id,
        request.user_id,
        total,
        &request.lines,
        request.remark.as_deref(),
    )
    .await?;
    let event = OrderCreatedEvent {
        order_id: created.order_id,
        order_no: created.order_no.clone(),
        user_id: request.user_id,
        total_amount: total,
        product_quantity_map: request.lines.clone(),
        remark: request.remark.clone(),
        timestamp: Some(created.created_at),
        event_id: events::new_event_id(),
    };
    svc.announce(tx, &created.order_no, &event.to_message_on(&svc.order_created_topic)).await?;
    let history = store::record(
        tx,
        &created.order_no,
        OrderCreatedEvent::TYPE.tag(),
        &format!("created, total {total}"),
    )
    .await?;
    if let Some(key) = key {
        store::remember_key(tx, key, hash, &created.order_no).await?;
    }
    let view =
        created.view(request.user_id, total, &request.lines, request.remark.as_deref(), history);
    Ok((view, false))
}
