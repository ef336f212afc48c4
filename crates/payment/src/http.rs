//! The payment service's HTTP API.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Query, State},
    response::{IntoResponse, Response},
    routing::get,
};
use httpkit::ApiError;
use serde::Deserialize;

use crate::{PaymentService, store};

pub fn routes(svc: Arc<PaymentService>) -> Router {
    Router::new().route("/api/payments", get(list)).with_state(svc)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    order_no: Option<String>,
}

async fn list(
    State(svc): State<Arc<PaymentService>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let order_no = q.order_no.as_deref().map(str::trim).filter(|s| !s.is_empty());
    Ok(Json(store::list(svc.host.db.reader(), order_no, 100).await?).into_response())
}
