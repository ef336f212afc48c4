//! Signing in: a token exchanged for a session cookie, and who that session is.
//!
//! - The admin token signs in as [`Role::Admin`], the read-only token (when configured) as
//!   [`Role::ReadOnly`]; both compared in constant time. Anything else is refused and logged.
//! - The session id is 244 random bits in a cookie marked `HttpOnly` (scripts cannot read
//!   it) and `SameSite=Strict` (another site's page does not send it). Each session also has
//!   a CSRF token, given to the page when it signs in; every change must carry it in
//!   `X-CSRF-Token` ([`crate::proxy`]).
//! - Sessions live in memory for [`LIFETIME`]: a restart signs everyone out.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use httpkit::{ApiError, JsonBody};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::State as Console;

/// How long a session lasts after signing in.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept at once; the oldest go first.
const MAX_SESSIONS: usize = 10_000;
const COOKIE: &str = "orderflow_console";

/// What a signed-in session may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Look and act.
    Admin,
    /// Look only.
    ReadOnly,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::ReadOnly => "read-only",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Session {
    pub role: Role,
    pub csrf: String,
    started: Instant,
}

#[derive(Debug, Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
}

fn random() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

impl Sessions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start(&self, role: Role) -> (String, Session) {
        let mut map = self.map();
        map.retain(|_, s| s.started.elapsed() < LIFETIME);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.started).map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        let session = Session { role, csrf: random(), started: Instant::now() };
        let id = random();
        map.insert(id.clone(), session.clone());
        (id, session)
    }

    /// The live session named by the request's cookie.
    pub fn of(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie(headers)?;
        let mut map = self.map();
        match map.get(id) {
            Some(s) if s.started.elapsed() < LIFETIME => Some(s.clone()),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    fn end(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers) {
            self.map().remove(id);
        }
    }
}

fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// 401 in the services' error shape (theirs names the admin token, which a console user
/// does not send).
fn unauthorized(error: serde_json::Value) -> Response {
    (StatusCode::UNAUTHORIZED, Json(json!({ "error": error }))).into_response()
}

/// 401 for a request without a live session.
pub fn signed_out() -> Response {
    unauthorized(json!({"code": "unauthorized", "message": "sign in first"}))
}

#[derive(Debug, Deserialize)]
pub struct SignIn {
    token: String,
}

fn view(session: &Session) -> serde_json::Value {
    json!({"role": session.role, "csrf": session.csrf})
}

/// `POST /console/session {"token": ...}`.
pub async fn sign_in(
    State(console): State<Arc<Console>>,
    JsonBody(body): JsonBody<SignIn>,
) -> Result<Response, ApiError> {
    let given = body.token.as_bytes();
    let config = &console.config;
    let role = if httpkit::constant_time_eq(given, config.admin_token.as_bytes()) {
        Role::Admin
    } else if config
        .read_only_token
        .as_deref()
        .is_some_and(|t| httpkit::constant_time_eq(given, t.as_bytes()))
    {
        Role::ReadOnly
    } else {
        tracing::warn!("console sign-in refused: wrong token");
        return Ok(unauthorized(json!({
            "code": "unauthorized",
            "field": "token",
            "message": "that token is neither the admin token nor the read-only token",
        })));
    };
    let (id, session) = console.sessions.start(role);
    tracing::info!(role = role.as_str(), "console sign-in");
    let cookie =
        format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}", LIFETIME.as_secs());
    let mut response = Json(view(&session)).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    Ok(response)
}

/// `GET /console/session`: who is signed in (the page asks when it loads); `role` is null
/// when nobody is.
pub async fn show(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    match console.sessions.of(&headers) {
        Some(s) => Json(view(&s)).into_response(),
        None => Json(json!({"role": null})).into_response(),
    }
}

/// `DELETE /console/session`.
pub async fn sign_out(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    console.sessions.end(&headers);
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "orderflow_console=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
        ),
    );
    response
}

/// `GET /console/config`: what the pages need to know of the set-up.
pub async fn config(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    match console.sessions.of(&headers) {
        Some(_) => Json(json!({"traceUrl": console.config.trace_url})).into_response(),
        None => signed_out(),
    }
}
