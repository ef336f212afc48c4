//! Reservation expiry: stock frozen for an order that is never paid goes back on sale.
//!
//! Every `interval`, a reservation FROZEN for longer than `reservation-expiry` is released
//! (movement `EXPIRE`) and `stock-freeze-failed` is announced with the reason, so the order
//! is cancelled and a capture that comes later is refunded; a `payment-success` arriving
//! after the release deducts nothing. This is the stock service's own backstop: it holds
//! even when the order service (whose deadline should come first) is gone. Counted in
//! `orderflow_reservations_expired_total`.
//!
//! Settings, in the stock service's YAML (seconds): `orderflow.compensation.reservation-expiry`
//! (default 1800, longer than the order's cancel deadline), `orderflow.compensation.interval`
//! (default 5).

use std::{sync::Arc, time::Duration};

use binding::{ConfigError, StreamConfig};
use stream::HandleError;
use tokio_util::sync::CancellationToken;

use crate::{StockService, domain::Fact, store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpirySettings {
    pub after: Duration,
    pub interval: Duration,
}

impl ExpirySettings {
    pub fn from_config(c: &StreamConfig) -> Result<ExpirySettings, ConfigError> {
        Ok(ExpirySettings {
            after: c.seconds("compensation.reservation-expiry", Duration::from_secs(1800))?,
            interval: c.seconds("compensation.interval", Duration::from_secs(5))?,
        })
    }
}

/// Runs passes until `token` is cancelled.
pub async fn run(svc: Arc<StockService>, settings: ExpirySettings, token: CancellationToken) {
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(settings.interval) => {}
        }
        if let Err(e) = pass(&svc, &settings, events::now_millis()).await {
            tracing::warn!(error = %e, "reservation expiry pass failed; will try again");
        }
    }
}

/// Releases the reservations frozen before `now - after`; returns how many.
pub async fn pass(
    svc: &StockService,
    settings: &ExpirySettings,
    now: i64,
) -> Result<usize, HandleError> {
    let host = &svc.host;
    let cutoff = now - settings.after.as_millis() as i64;
    let mut expired = 0;
    for order_no in store::frozen_before(host.db.reader(), cutoff, 200).await? {
        let mut tx = storage::Tx::begin(&host.db).await?;
        let (note, released) = svc
            .apply_fact(&mut tx, &order_no, Fact::Expired { after_secs: settings.after.as_secs() })
            .await?;
        tx.commit().await?;
        if released {
            tracing::warn!(%order_no, %note, "reservation expired");
            expired += 1;
        }
    }
    if expired > 0 {
        host.metrics.inc(binding::metrics::RESERVATIONS_EXPIRED, &[], expired as u64);
        host.relay.wake();
    }
    Ok(expired)
}
