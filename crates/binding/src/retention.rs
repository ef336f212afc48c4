//! How long what the flow leaves behind is kept: the `orderflow.retention` section of a
//! service's YAML, read and checked at startup.
//!
//! - `messages` (default `72h`, RocketMQ's `fileReservedTime`): a broker message older than
//!   this goes once every group subscribed to its topic has acknowledged it (the embedded
//!   binder removes it; a RocketMQ broker keeps its own commit log and is told this as a
//!   fact about it, for the check below).
//! - `dead-letters` (default: kept until purged): a dead letter older than this goes too,
//!   unless a replay of it is still waiting.
//! - `inbox` (default `7d`): how long a consumer remembers an eventId it handled. It must be
//!   longer than `messages` and `dead-letters`, the furthest back a reset or a replay can
//!   reach, so a redelivery the broker can still make always meets its inbox record; a
//!   setting that is not is refused, naming `orderflow.retention.inbox`.
//! - `interval` (default `30s`) between removal passes, and `batch` (default 1000) rows per
//!   statement, so removal holds a writer only briefly.

use std::time::Duration;

use crate::{ConfigError, StreamConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub messages: Duration,
    pub dead_letters: Option<Duration>,
    pub inbox: Duration,
    pub interval: Duration,
    pub batch: usize,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            messages: Duration::from_secs(72 * 3600),
            dead_letters: None,
            inbox: Duration::from_secs(7 * 24 * 3600),
            interval: Duration::from_secs(30),
            batch: 1000,
        }
    }
}

impl Retention {
    /// The `orderflow.retention` section of `config`, defaults filled in, checked.
    pub fn from_config(config: &StreamConfig) -> Result<Retention, ConfigError> {
        let d = Retention::default();
        let batch = match config.setting("retention.batch") {
            None => d.batch,
            Some(v) => {
                v.as_u64().filter(|n| (1..=100_000).contains(n)).map(|n| n as usize).ok_or_else(
                    || {
                        ConfigError::new(
                            "orderflow.retention.batch",
                            "must be a whole number from 1 to 100000",
                        )
                    },
                )?
            }
        };
        let r = Retention {
            messages: config.seconds("retention.messages", d.messages)?,
            dead_letters: config.duration("retention.dead-letters")?,
            inbox: config.seconds("retention.inbox", d.inbox)?,
            interval: config.seconds("retention.interval", d.interval)?,
            batch,
        };
        r.check_inbox(r)?;
        Ok(r)
    }

    /// Refuses an inbox window that is not longer than what `broker` keeps (messages and dead
    /// letters): past it, a redelivery could find its inbox record gone.
    pub fn check_inbox(&self, broker: Retention) -> Result<(), ConfigError> {
        let reach = broker.dead_letters.map_or(broker.messages, |d| d.max(broker.messages));
        if self.inbox <= reach {
            return Err(ConfigError::new(
                "orderflow.retention.inbox",
                format!(
                    "{} must be longer than the broker keeps messages and dead letters ({}): \
                     a redelivery within that time must still find its inbox record",
                    humantime::format_duration(self.inbox),
                    humantime::format_duration(reach),
                ),
            ));
        }
        Ok(())
    }

    /// The birth time (epoch millis) before which a message is old enough to go, as of
    /// `now_millis`.
    pub fn cutoff(now_millis: i64, keep: Duration) -> i64 {
        now_millis.saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX))
    }
}
