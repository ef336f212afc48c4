//! The order service's HTTP API.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use httpkit::{ApiError, JsonBody};
use serde::Deserialize;

use crate::{
    OrderService,
    domain::{OrderRequest, OrderStatus},
    store::{self, Product},
};

const MAX_IDEMPOTENCY_KEY: usize = 200;

pub fn routes(svc: Arc<OrderService>) -> Router {
    Router::new()
        .route("/api/orders", post(create).get(list))
        .route("/api/orders/{order_no}", get(show))
        .route("/api/products", get(products))
        .route("/api/admin/products/{id}", put(put_product))
        .with_state(svc)
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateOrder {
    pub user_id: i64,
    pub items: Vec<Item>,
    #[serde(default)]
    pub remark: Option<String>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    pub product_id: i64,
    pub quantity: i64,
}

fn invalid(i: crate::domain::Invalid) -> ApiError {
    ApiError::invalid(i.field, i.message)
}

#[tracing::instrument(skip_all, fields(user_id = body.user_id))]
async fn create(
    State(svc): State<Arc<OrderService>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateOrder>,
) -> Result<Response, ApiError> {
    let items: Vec<(i64, i64)> = body.items.iter().map(|i| (i.product_id, i.quantity)).collect();
    let request =
        OrderRequest::parse(body.user_id, &items, body.remark.clone()).map_err(invalid)?;
    let key = match headers.get("idempotency-key") {
        Some(v) => {
            let k = v
                .to_str()
                .map_err(|_| ApiError::invalid("Idempotency-Key", "must be visible ASCII"))?
                .trim();
            if k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY {
                return Err(ApiError::invalid(
                    "Idempotency-Key",
                    format!("must be 1 to {MAX_IDEMPOTENCY_KEY} characters"),
                ));
            }
            Some(k.to_owned())
        }
        None => None,
    };
    let hash = serde_json::to_string(&(request.user_id, &request.lines, &request.remark))
        .unwrap_or_default();
    let (view, replayed) =
        svc.creator.create(crate::creator::NewOrder { request, items, key, hash }).await?;
    if replayed {
        return Ok(
            (StatusCode::CREATED, [("idempotent-replayed", "true")], Json(view)).into_response()
        );
    }
    tracing::info!(order_no = %view.order_no, total = %view.total_amount, "order created");
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn show(
    State(svc): State<Arc<OrderService>>,
    Path(order_no): Path<String>,
) -> Result<Response, ApiError> {
    let mut conn = svc.host.db.reader().acquire().await?;
    match store::view(&mut conn, &order_no).await? {
        Some(v) => Ok(Json(v).into_response()),
        None => Err(ApiError::NotFound(format!("no order {order_no}"))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    user_id: Option<String>,
    status: Option<String>,
    /// Paging: only orders with a smaller orderId (the list is newest first).
    before: Option<String>,
    limit: Option<String>,
}

async fn list(
    State(svc): State<Arc<OrderService>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let user_id = match q.user_id.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(
            s.parse::<i64>().map_err(|_| ApiError::invalid("userId", "must be a whole number"))?,
        ),
        None => None,
    };
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(
            OrderStatus::parse(s)
                .ok_or_else(|| ApiError::invalid("status", "must be PENDING, PAID or CANCELLED"))?,
        ),
        None => None,
    };
    let limit = match q.limit.as_deref() {
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::invalid("limit", "must be 1 to 1000"))?,
        None => 100,
    };
    let before = match q.before.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(
            s.parse::<i64>().map_err(|_| ApiError::invalid("before", "must be a whole number"))?,
        ),
        None => None,
    };
    Ok(Json(store::list(svc.host.db.reader(), user_id, status, before, limit).await?)
        .into_response())
}

async fn products(State(svc): State<Arc<OrderService>>) -> Result<Response, ApiError> {
    Ok(Json(store::products(svc.host.db.reader()).await?).into_response())
}

#[derive(Debug, Deserialize)]
struct PutProduct {
    name: String,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    price: rust_decimal::Decimal,
}

async fn put_product(
    State(svc): State<Arc<OrderService>>,
    Path(id): Path<i64>,
    JsonBody(body): JsonBody<PutProduct>,
) -> Result<Response, ApiError> {
    if id <= 0 {
        return Err(ApiError::invalid("id", "must be a positive id"));
    }
    if body.name.trim().is_empty() || body.name.chars().count() > 200 {
        return Err(ApiError::invalid("name", "must be 1 to 200 characters"));
    }
    let price = match events::Money::new(body.price) {
        Ok(price) if !body.price.is_zero() && body.price.scale() <= 4 => price,
        _ => return Err(ApiError::invalid("price", "must be positive, with at most 4 decimals")),
    };
    let product = Product { id, name: body.name, price };
    let mut tx = storage::Tx::begin(&svc.host.db).await?;
    store::upsert_product(&mut tx, &product).await?;
    tx.commit().await?;
    Ok(Json(product).into_response())
}
