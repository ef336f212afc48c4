//! The seed's Redis `IdempotentService`, as an optional fast path in front of the inbox.
//!
//! The inbox table stays the source of truth: an effect and its eventId commit together, so
//! nothing is ever applied twice whatever Redis says or loses. Redis only lets a consumer
//! acknowledge a duplicate it has already seen without opening a database transaction:
//! - before a batch, one pipelined `EXISTS` per message; a hit is acknowledged at once
//!   (counted in `orderflow_messages_duplicates_total` and `orderflow_idempotency_fast_hits_total`);
//! - after the batch commits, `SET <key> 1 EX 86400` for each message it applied or found
//!   already applied (the seed's 24 h TTL);
//! - Redis down or slow (over 500 ms): the batch goes through the inbox alone, and
//!   `orderflow_idempotency_redis_errors_total` counts it. A key is written only after the
//!   commit, so a key never exists for an effect that was rolled back.
//!
//! Key: `event:processed:<group>/<binding>:<eventId>`. The seed's `event:processed:<eventId>`
//! is not enough when services share a Redis: stock marking `order-created` done would make
//! payment skip the same event.
//!
//! Enabled per service with `orderflow.idempotency.redis: redis://127.0.0.1:6379` in its YAML.

use std::time::Duration;

use redis::aio::ConnectionManager;

use binding::metrics::{self, Metrics};

/// The seed's `EVENT_TTL_SECONDS`.
pub const TTL_SECONDS: u64 = 86_400;
const TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct RedisIdempotency {
    conn: ConnectionManager,
    metrics: Metrics,
}

impl RedisIdempotency {
    /// Connects (and fails) at once: a service configured for Redis does not start without it.
    pub async fn connect(url: &str, metrics: Metrics) -> Result<RedisIdempotency, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis {url}: {e}"))?;
        let conn = tokio::time::timeout(Duration::from_secs(5), ConnectionManager::new(client))
            .await
            .map_err(|_| format!("redis {url}: no answer within 5 s"))?
            .map_err(|e| format!("redis {url}: {e}"))?;
        Ok(RedisIdempotency { conn, metrics })
    }

    pub fn key(consumer: &str, event_id: &str) -> String {
        format!("event:processed:{consumer}:{event_id}")
    }

    /// Which of `keys` are marked processed; all `false` when Redis does not answer.
    pub async fn processed(&self, keys: &[String]) -> Vec<bool> {
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.exists(k);
        }
        let mut conn = self.conn.clone();
        let error =
            match tokio::time::timeout(TIMEOUT, pipe.query_async::<Vec<bool>>(&mut conn)).await {
                Ok(Ok(seen)) if seen.len() == keys.len() => {
                    let hits = seen.iter().filter(|s| **s).count() as u64;
                    if hits > 0 {
                        self.metrics.inc(metrics::FAST_HITS, &[], hits);
                    }
                    return seen;
                }
                Ok(Ok(_)) => "unexpected reply".to_owned(),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timeout".to_owned(),
            };
        self.failed("check", &error);
        vec![false; keys.len()]
    }

    /// Marks `keys` processed for [`TTL_SECONDS`]; a failure is counted, never fatal.
    pub async fn mark(&self, keys: &[String]) {
        if keys.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.set_ex(k, 1, TTL_SECONDS).ignore();
        }
        let mut conn = self.conn.clone();
        match tokio::time::timeout(TIMEOUT, pipe.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.failed("mark", &e.to_string()),
            Err(_) => self.failed("mark", "timeout"),
        }
    }

    fn failed(&self, what: &str, error: &str) {
        self.metrics.inc(metrics::REDIS_ERRORS, &[], 1);
        tracing::warn!(what, error, "redis idempotency unavailable; the inbox decides alone");
    }
}
