//! The stock service's HTTP API.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State},
    response::{IntoResponse, Response},
    routing::{get, put},
};
use httpkit::{ApiError, JsonBody};
use serde::Deserialize;

use crate::{StockService, store};

/// Most units one product may hold.
pub const MAX_UNITS: i64 = 1_000_000_000;

pub fn routes(svc: Arc<StockService>) -> Router {
    Router::new()
        .route("/api/stock", get(list))
        .route("/api/stock/{product_id}", get(show))
        .route("/api/stock/reservations/{order_no}", get(reservation))
        .route("/api/admin/stock/{product_id}", put(set))
        .with_state(svc)
}

fn product_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::invalid("productId", "must be a positive id"))
}

async fn list(State(svc): State<Arc<StockService>>) -> Result<Response, ApiError> {
    Ok(Json(store::all(svc.host.db.reader()).await?).into_response())
}

async fn show(
    State(svc): State<Arc<StockService>>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = product_id(&raw)?;
    match store::product(svc.host.db.reader(), id).await? {
        Some(v) => Ok(Json(v).into_response()),
        None => Err(ApiError::NotFound(format!("no stock for product {id}"))),
    }
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ReservationView {
    order_no: String,
    order_id: i64,
    state: &'static str,
    items: events::ProductQuantities,
    reason: Option<String>,
}

async fn reservation(
    State(svc): State<Arc<StockService>>,
    Path(order_no): Path<String>,
) -> Result<Response, ApiError> {
    match store::read_reservation(svc.host.db.reader(), &order_no).await? {
        Some(r) => Ok(Json(ReservationView {
            order_no,
            order_id: r.order_id,
            state: r.state.as_str(),
            items: r.lines,
            reason: r.reason,
        })
        .into_response()),
        None => Err(ApiError::NotFound(format!("no reservation for order {order_no}"))),
    }
}

#[derive(Deserialize)]
struct SetStock {
    available: i64,
}

async fn set(
    State(svc): State<Arc<StockService>>,
    Path(raw): Path<String>,
    JsonBody(body): JsonBody<SetStock>,
) -> Result<Response, ApiError> {
    let id = product_id(&raw)?;
    if !(0..=MAX_UNITS).contains(&body.available) {
        return Err(ApiError::invalid("available", format!("must be 0 to {MAX_UNITS}")));
    }
    let mut tx = storage::Tx::begin(&svc.host.db).await?;
    let view = store::set_available(&mut tx, id, body.available).await?;
    tx.commit().await?;
    tracing::info!(product_id = id, available = body.available, "stock set");
    Ok(Json(view).into_response())
}
