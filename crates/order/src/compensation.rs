//! The compensation job (the seed's `compensateFailedOrders`, done right), run by the order
//! service every `interval`:
//!
//! - **Re-send**: an order still waiting on an event it announced gets that exact message
//!   again — same eventId, body and headers — once it is older than `resend-after` (and
//!   again every `resend-after` after that, at most `max-resends` times): `order-created`
//!   of a PENDING order,
//!   `order-cancelled` of a CANCELLED order whose captured payment is not refunded yet.
//!   Receivers that already applied it skip it (inbox); one that lost it (a dead letter, a
//!   broker that lost the message) applies it now.
//! - **Deadline**: a PENDING order older than `cancel-after` is cancelled like any other
//!   cancellation (reason recorded, `order-cancelled` announced: stock releases, payment
//!   refunds a capture or never takes one).
//!
//! The announced messages are kept in `order_messages` and pruned as orders settle
//! (`store::prune_messages`), so a pass reads only what is still awaited. Each order is
//! handled in its own transaction, under the same row lock as the consumers,
//! so a late event and the job never both decide. Counted in
//! `orderflow_compensation_total{action="resent"|"cancelled"}`.
//!
//! Settings, in the order service's YAML (seconds): `orderflow.compensation.resend-after`
//! (default 60), `orderflow.compensation.cancel-after` (default 600),
//! `orderflow.compensation.interval` (default 5); `orderflow.compensation.max-resends`
//! (default 10: a receiver that keeps ignoring a message — one whose answer was lost, say —
//! is not sent it forever).

use std::{sync::Arc, time::Duration};

use binding::{ConfigError, StreamConfig};
use events::OrderNo;
use stream::HandleError;
use tokio_util::sync::CancellationToken;

use crate::{
    OrderService,
    domain::{Fact, OrderStatus, decide},
    store,
};

/// Orders handled per pass and kind (the rest wait for the next pass).
const BATCH: i64 = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompensationSettings {
    pub resend_after: Duration,
    pub cancel_after: Duration,
    pub interval: Duration,
    pub max_resends: u32,
}

impl Default for CompensationSettings {
    fn default() -> Self {
        CompensationSettings {
            resend_after: Duration::from_secs(60),
            cancel_after: Duration::from_secs(600),
            interval: Duration::from_secs(5),
            max_resends: 10,
        }
    }
}

impl CompensationSettings {
    pub fn from_config(c: &StreamConfig) -> Result<CompensationSettings, ConfigError> {
        let d = CompensationSettings::default();
        let s = CompensationSettings {
            resend_after: c.seconds("compensation.resend-after", d.resend_after)?,
            cancel_after: c.seconds("compensation.cancel-after", d.cancel_after)?,
            interval: c.seconds("compensation.interval", d.interval)?,
            max_resends: match c.setting("compensation.max-resends") {
                None => d.max_resends,
                Some(v) => v
                    .as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| {
                        ConfigError::new(
                            "orderflow.compensation.max-resends",
                            "must be a whole number",
                        )
                    })?,
            },
        };
        if s.cancel_after <= s.resend_after {
            return Err(ConfigError::new(
                "orderflow.compensation.cancel-after",
                "must be longer than resend-after",
            ));
        }
        Ok(s)
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    pub resent: usize,
    pub cancelled: usize,
}

/// Runs passes until `token` is cancelled.
pub async fn run(svc: Arc<OrderService>, settings: CompensationSettings, token: CancellationToken) {
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(settings.interval) => {}
        }
        match pass(&svc, &settings, events::now_millis()).await {
            Ok(p) if p != Pass::default() => {
                tracing::warn!(resent = p.resent, cancelled = p.cancelled, "compensation pass")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "compensation pass failed; will try again"),
        }
    }
}

/// One pass at time `now` (milliseconds).
pub async fn pass(
    svc: &OrderService,
    settings: &CompensationSettings,
    now: i64,
) -> Result<Pass, HandleError> {
    let host = &svc.host;
    let mut done = Pass::default();
    let cutoff = now - settings.cancel_after.as_millis() as i64;
    for order_no in store::pending_before(host.db.reader(), cutoff, BATCH).await? {
        let mut tx = storage::Tx::begin(&host.db).await?;
        if cancel_late(svc, &mut tx, &order_no, settings.cancel_after).await? {
            tx.commit().await?;
            done.cancelled += 1;
        }
    }
    let cutoff = now - settings.resend_after.as_millis() as i64;
    for (order_no, message) in
        store::stale_messages(host.db.reader(), cutoff, i64::from(settings.max_resends), BATCH)
            .await?
    {
        let mut tx = storage::Tx::begin(&host.db).await?;
        stream::outbox::Outbox::enqueue(&mut tx, &message).await?;
        store::message_resent(&mut tx, &order_no, &message.tags).await?;
        store::record(
            &mut tx,
            &order_no,
            "COMPENSATION",
            &format!("{} sent again (same eventId)", message.tags),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(%order_no, event = %message.tags, "compensation: event sent again");
        done.resent += 1;
    }
    if done.cancelled > 0 {
        host.metrics.inc(
            binding::metrics::COMPENSATION,
            &[("action", "cancelled")],
            done.cancelled as u64,
        );
    }
    if done.resent > 0 {
        host.metrics.inc(
            binding::metrics::COMPENSATION,
            &[("action", "resent")],
            done.resent as u64,
        );
    }
    if done != Pass::default() {
        host.relay.wake();
    }
    Ok(done)
}

/// Cancels `order_no` if it is still PENDING (read under the row lock).
async fn cancel_late(
    svc: &OrderService,
    tx: &mut storage::Tx,
    order_no: &OrderNo,
    after: Duration,
) -> Result<bool, HandleError> {
    let Some(order) = store::load_state(tx, order_no).await? else {
        return Ok(false);
    };
    if order.state.status != OrderStatus::Pending {
        return Ok(false);
    }
    let d = decide(&order.state, Fact::DeadlinePassed { after_secs: after.as_secs() });
    let Some(reason) = d.cancel.clone() else { return Ok(false) };
    svc.apply(tx, order_no, &order, d, "COMPENSATION").await?;
    tracing::warn!(%order_no, %reason, "compensation: order cancelled");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(section: &str) -> StreamConfig {
        let yaml = format!(
            "spring:\n  cloud:\n    function:\n      definition: x\n    stream:\n      bindings: {{}}\norderflow:\n  compensation:\n{section}"
        );
        StreamConfig::from_yaml_with_env(&yaml, &|_| None).unwrap()
    }

    #[test]
    fn settings_default_and_the_deadline_must_come_after_the_resend() {
        assert_eq!(
            CompensationSettings::from_config(&config("    {}\n")).unwrap(),
            CompensationSettings::default()
        );
        let s = CompensationSettings::from_config(&config(
            "    resend-after: 10\n    cancel-after: 120\n    max-resends: 3\n",
        ))
        .unwrap();
        assert_eq!(
            (s.resend_after.as_secs(), s.cancel_after.as_secs(), s.max_resends),
            (10, 120, 3)
        );
        let err =
            CompensationSettings::from_config(&config("    max-resends: many\n")).unwrap_err();
        assert_eq!(err.key, "orderflow.compensation.max-resends");
        let err = CompensationSettings::from_config(&config(
            "    resend-after: 120\n    cancel-after: 60\n",
        ))
        .unwrap_err();
        assert_eq!(err.key, "orderflow.compensation.cancel-after");
    }
}
