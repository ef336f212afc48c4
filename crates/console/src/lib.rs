//! The web console: what happened to an order, how the flow is doing, and the operator's
//! actions on it, in a browser.
//!
//! - Served by the system itself: `up` runs it beside the services; `orderflow console` runs
//!   it alone against three service URLs. Every asset is compiled in ([`assets`]): no CDN,
//!   no build step, nothing to install.
//! - It holds no data of its own. The pages ask [`proxy`], which forwards to the services'
//!   own APIs (`/api/...`, `/admin/...`, `/metrics`) with the admin token; the browser never
//!   sees that token.
//! - Nothing is readable without signing in ([`session`]): the admin token may act, an
//!   optional read-only token may only look. The session is a cookie scripts cannot read
//!   (`HttpOnly`, `SameSite=Strict`), and every change also needs the session's CSRF token
//!   in a header, which another site cannot read. Each action is logged by the service that
//!   carries it out, with the console's role as its actor.

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, routing::get};
use tokio_util::sync::CancellationToken;

mod assets;
mod proxy;
mod session;

pub use session::Role;

/// What the console talks to and who may use it.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    pub order_url: String,
    pub stock_url: String,
    pub payment_url: String,
    /// The services' admin token: signs an operator in with [`Role::Admin`], and is what the
    /// console sends the services.
    pub admin_token: String,
    /// Signs in with [`Role::ReadOnly`] when set.
    pub read_only_token: Option<String>,
    /// A link to an order's trace: `{traceId}` is replaced (e.g.
    /// `http://127.0.0.1:16686/trace/{traceId}`).
    pub trace_url: Option<String>,
}

struct State {
    config: ConsoleConfig,
    sessions: session::Sessions,
    http: reqwest::Client,
}

/// The console's routes.
pub fn router(config: ConsoleConfig) -> Router {
    let state = Arc::new(State {
        config,
        sessions: session::Sessions::default(),
        http: reqwest::Client::new(),
    });
    Router::new()
        .route(
            "/console/session",
            get(session::show).post(session::sign_in).delete(session::sign_out),
        )
        .route("/console/config", get(session::config))
        .route("/console/api/{service}/{*path}", axum::routing::any(proxy::forward))
        .merge(assets::routes())
        .with_state(state)
}

/// Serves the console on `listener` until `token` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: ConsoleConfig,
    token: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(config).into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move { token.cancelled().await })
        .await
}
