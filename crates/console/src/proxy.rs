//! `/console/api/{order|stock|payment}/{path}`: the pages' one way to the services.
//!
//! - Only a signed-in session passes ([`crate::session`]); only the services' public API,
//!   admin API and metrics are reachable (`api/...`, `admin/...`, `metrics`).
//! - A change (anything but GET and HEAD) needs [`Role::Admin`] and the session's CSRF token
//!   in `X-CSRF-Token`; otherwise it is refused with 403 before anything is sent on, so a
//!   refused request changes nothing.
//! - The request goes on with the admin token and `X-Orderflow-Actor: console/<role>`, so
//!   the service's own log of admin actions names the console; the service's answer comes
//!   back as it is (503 when it does not answer).

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, Method, header},
    response::{IntoResponse, Response},
};
use httpkit::ApiError;

use crate::{Role, State as Console, session};

pub async fn forward(
    State(console): State<Arc<Console>>,
    Path((service, path)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(session) = console.sessions.of(&headers) else {
        return session::signed_out();
    };
    let config = &console.config;
    let base = match service.as_str() {
        "order" => &config.order_url,
        "stock" => &config.stock_url,
        "payment" => &config.payment_url,
        other => return ApiError::NotFound(format!("no service {other}")).into_response(),
    };
    if !(path.starts_with("api/") || path.starts_with("admin/") || path == "metrics") {
        return ApiError::NotFound(format!("no console route {path}")).into_response();
    }
    let change = method != Method::GET && method != Method::HEAD;
    if change {
        if session.role != Role::Admin {
            tracing::warn!(%method, path, "console change refused: read-only session");
            let why = "signed in with the read-only token: it may look, not change";
            return ApiError::Forbidden(why.into()).into_response();
        }
        let csrf = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or("");
        if !httpkit::constant_time_eq(csrf.as_bytes(), session.csrf.as_bytes()) {
            tracing::warn!(%method, path, "console change refused: missing or wrong CSRF token");
            let why = "missing or wrong CSRF token: reload the console and try again";
            return ApiError::Forbidden(why.into()).into_response();
        }
    }
    let mut url = format!("{}/{path}", base.trim_end_matches('/'));
    if let Some(q) = query {
        url.push('?');
        url.push_str(&q);
    }
    let mut request = console
        .http
        .request(method, &url)
        .bearer_auth(&config.admin_token)
        .header("x-orderflow-actor", format!("console/{}", session.role.as_str()));
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        request = request.header(header::CONTENT_TYPE, ct);
    }
    if change {
        request = request.body(body);
    }
    let answer = match request.send().await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(service, error = %e, "console: service does not answer");
            let why = format!("the {service} service at {base} does not answer");
            return ApiError::Unavailable(why).into_response();
        }
    };
    let status = answer.status();
    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
    match answer.bytes().await {
        Ok(bytes) => {
            let mut response = (status, bytes).into_response();
            if let Some(ct) = content_type {
                response.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            response
        }
        Err(e) => {
            let why = format!("the {service} service's answer was cut short: {e}");
            ApiError::Unavailable(why).into_response()
        }
    }
}
