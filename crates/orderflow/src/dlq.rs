//! `orderflow dlq ...`: the dead letters of running services, through their admin API
//! (`/admin/dlq`), so the same commands work on the embedded binder and on RocketMQ.
//!
//! Each service answers for its own consumer groups; the command asks every service URL it
//! is given (by default the three of `orderflow up`) and, for one id, the first that has it.

use serde_json::Value;

use crate::admin_api::{AdminApi, error_message};

/// What to do.
#[derive(Debug, Clone)]
pub enum DlqAction {
    List { limit: usize },
    Show(String),
    Replay(String),
    Purge(String),
    PurgeAll,
}

/// Runs `action` against `urls`; returns what to print.
pub async fn run(
    action: &DlqAction,
    urls: &[String],
    token: &str,
    json: bool,
) -> anyhow::Result<String> {
    let api = AdminApi::new(token);
    match action {
        DlqAction::List { limit } => {
            let mut all = Vec::new();
            for base in urls {
                let url = format!("{base}/admin/dlq?limit={limit}");
                let body = api.expect_ok(reqwest::Method::GET, &url).await?;
                all.extend(body.as_array().cloned().unwrap_or_default());
            }
            if json {
                return Ok(serde_json::to_string_pretty(&all)?);
            }
            let mut out = format!("{} dead letters\n", all.len());
            if !all.is_empty() {
                out.push_str(&format!(
                    "{:<34} {:<26} {:<22} {:<22} {:>8} {:>7}  error\n",
                    "id", "group", "topic", "key", "attempts", "replays"
                ));
            }
            for d in &all {
                out.push_str(&format!(
                    "{:<34} {:<26} {:<22} {:<22} {:>8} {:>7}  {}\n",
                    text(d, "messageId"),
                    text(d, "group"),
                    text(d, "originTopic"),
                    text(d, "keys"),
                    text(d, "attempts"),
                    text(d, "replays"),
                    text(d, "error")
                ));
            }
            Ok(out.trim_end().to_owned())
        }
        DlqAction::PurgeAll => {
            let mut total = 0;
            for base in urls {
                let body =
                    api.expect_ok(reqwest::Method::DELETE, &format!("{base}/admin/dlq")).await?;
                total += body.get("purged").and_then(Value::as_u64).unwrap_or(0);
            }
            Ok(format!("purged {total} dead letters"))
        }
        DlqAction::Show(id) | DlqAction::Replay(id) | DlqAction::Purge(id) => {
            let (method, suffix, verb) = match action {
                DlqAction::Replay(_) => (reqwest::Method::POST, "/replay", "replayed"),
                DlqAction::Purge(_) => (reqwest::Method::DELETE, "", "purged"),
                _ => (reqwest::Method::GET, "", ""),
            };
            for base in urls {
                let url = format!("{base}/admin/dlq/{id}{suffix}");
                let (status, body) = api.call(method.clone(), &url).await?;
                if status == reqwest::StatusCode::NOT_FOUND {
                    continue;
                }
                if !status.is_success() {
                    anyhow::bail!("{base}: {status}: {}", error_message(&body));
                }
                let shown = serde_json::to_string_pretty(&body)?;
                return Ok(if verb.is_empty() || json {
                    shown
                } else {
                    format!("{verb} {id} ({})\n{shown}", text(&body, "group"))
                });
            }
            anyhow::bail!("no dead letter {id:?} at {}", urls.join(", "))
        }
    }
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}
