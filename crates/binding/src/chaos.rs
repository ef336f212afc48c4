//! Fault injection around any binder, for tests and `orderflow up --chaos ...`.
//!
//! Each fault has a rate (0.0–1.0), drawn from a seeded generator so a run can be repeated:
//! - `duplicate`: a published message is published twice;
//! - `reorder`: a published batch goes out in reverse order;
//! - `delay`: a delivery waits up to `delay-ms` before its handler runs;
//! - `fail`: a delivery is answered `Retry` without running the handler (a handler crash);
//! - `crash`: the handler runs and commits, then the acknowledgement is lost (`Retry`): the
//!   crash between the database commit and the broker acknowledgement.
//!
//! None of these may change the outcome of an order: the inbox absorbs duplicates and
//! redeliveries, the decision tables absorb any arrival order.

use std::{
    str::FromStr,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use events::Message;

use crate::{
    Binder, BinderError, BindingControl, ConsumerBinding, DeadLetter, Delivery, MessageHandler,
    Outcome, config::ConfigError,
};

#[derive(Debug, Clone, PartialEq)]
pub struct ChaosConfig {
    pub duplicate: f64,
    pub reorder: f64,
    pub delay: f64,
    pub delay_max: Duration,
    pub fail: f64,
    pub crash: f64,
    pub seed: u64,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        ChaosConfig {
            duplicate: 0.0,
            reorder: 0.0,
            delay: 0.0,
            delay_max: Duration::from_millis(50),
            fail: 0.0,
            crash: 0.0,
            seed: 1,
        }
    }
}

impl FromStr for ChaosConfig {
    type Err = ConfigError;

    /// `duplicate=0.1,reorder=0.1,delay=0.05,delay-ms=20,fail=0.1,crash=0.1,seed=7`.
    fn from_str(text: &str) -> Result<ChaosConfig, ConfigError> {
        let mut c = ChaosConfig::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| ConfigError::new(format!("chaos.{part}"), "expected key=value"))?;
            let key = key.trim();
            let bad = |what: &str| {
                ConfigError::new(format!("chaos.{key}"), format!("{what}, got {value:?}"))
            };
            let rate = || {
                value
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| bad("expected a rate from 0 to 1"))
            };
            match key {
                "duplicate" => c.duplicate = rate()?,
                "reorder" => c.reorder = rate()?,
                "delay" => c.delay = rate()?,
                "fail" => c.fail = rate()?,
                "crash" => c.crash = rate()?,
                "delay-ms" => {
                    c.delay_max = Duration::from_millis(
                        value.trim().parse().map_err(|_| bad("expected milliseconds"))?,
                    )
                }
                "seed" => {
                    c.seed = value.trim().parse().map_err(|_| bad("expected a whole number"))?
                }
                _ => {
                    return Err(ConfigError::new(
                        format!("chaos.{key}"),
                        "unknown fault (duplicate, reorder, delay, delay-ms, fail, crash, seed)",
                    ));
                }
            }
        }
        Ok(c)
    }
}

/// xorshift64*: small, seeded, good enough to pick faults.
#[derive(Debug)]
struct Dice(Mutex<u64>);

impl Dice {
    fn new(seed: u64) -> Dice {
        Dice(Mutex::new(seed.max(1)))
    }

    /// A number in [0, 1).
    fn roll(&self) -> f64 {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn hit(&self, rate: f64) -> bool {
        rate > 0.0 && self.roll() < rate
    }
}

/// A binder that injects the configured faults into `inner`.
pub struct ChaosBinder {
    inner: Arc<dyn Binder>,
    config: ChaosConfig,
    dice: Arc<Dice>,
}

impl ChaosBinder {
    pub fn new(inner: Arc<dyn Binder>, config: ChaosConfig) -> ChaosBinder {
        let dice = Arc::new(Dice::new(config.seed));
        ChaosBinder { inner, config, dice }
    }
}

struct ChaosHandler {
    inner: Arc<dyn MessageHandler>,
    config: ChaosConfig,
    dice: Arc<Dice>,
}

#[async_trait]
impl MessageHandler for ChaosHandler {
    async fn handle(&self, batch: &[Delivery]) -> Vec<Outcome> {
        if self.dice.hit(self.config.delay) {
            let ms = (self.dice.roll() * self.config.delay_max.as_millis() as f64) as u64;
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let failed: Vec<bool> = batch.iter().map(|_| self.dice.hit(self.config.fail)).collect();
        let kept: Vec<Delivery> =
            batch.iter().zip(&failed).filter(|(_, f)| !**f).map(|(d, _)| d.clone()).collect();
        let mut handled =
            if kept.is_empty() { Vec::new() } else { self.inner.handle(&kept).await }.into_iter();
        failed
            .iter()
            .map(|f| match f {
                true => Outcome::Retry("chaos: handler failed".into()),
                false => match handled
                    .next()
                    .unwrap_or_else(|| Outcome::Retry("handler returned no outcome".into()))
                {
                    Outcome::Done if self.dice.hit(self.config.crash) => {
                        Outcome::Retry("chaos: crashed between commit and acknowledgement".into())
                    }
                    other => other,
                },
            })
            .collect()
    }
}

#[async_trait]
impl Binder for ChaosBinder {
    fn system(&self) -> &'static str {
        self.inner.system()
    }

    async fn publish(&self, messages: &[Message]) -> Result<(), BinderError> {
        let mut out: Vec<Message> = Vec::with_capacity(messages.len() * 2);
        for m in messages {
            out.push(m.clone());
            if self.dice.hit(self.config.duplicate) {
                out.push(m.clone());
            }
        }
        if self.dice.hit(self.config.reorder) {
            out.reverse();
        }
        self.inner.publish(&out).await
    }

    async fn bind_consumer(
        &self,
        binding: ConsumerBinding,
        handler: Arc<dyn MessageHandler>,
    ) -> Result<BindingControl, BinderError> {
        let handler = Arc::new(ChaosHandler {
            inner: handler,
            config: self.config.clone(),
            dice: self.dice.clone(),
        });
        self.inner.bind_consumer(binding, handler).await
    }

    async fn start(&self) -> Result<(), BinderError> {
        self.inner.start().await
    }

    async fn check(&self) -> Result<(), BinderError> {
        self.inner.check().await
    }

    async fn dead_letters(
        &self,
        group: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BinderError> {
        self.inner.dead_letters(group, limit).await
    }

    async fn replay(&self, dead: &DeadLetter) -> Result<(), BinderError> {
        self.inner.replay(dead).await
    }

    async fn lag(&self, group: &str, topic: &str) -> Result<crate::Lag, BinderError> {
        self.inner.lag(group, topic).await
    }
    fn admin(&self) -> &dyn crate::BrokerAdmin {
        self.inner.admin()
    }
    async fn shutdown(&self) {
        self.inner.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates_and_names_the_bad_key() {
        let c: ChaosConfig =
            "duplicate=0.2, reorder=0.1,delay=0.05,delay-ms=10,fail=0.1,crash=0.3,seed=9"
                .parse()
                .unwrap();
        assert_eq!(
            (c.duplicate, c.reorder, c.delay, c.fail, c.crash, c.seed),
            (0.2, 0.1, 0.05, 0.1, 0.3, 9)
        );
        assert_eq!(c.delay_max, Duration::from_millis(10));
        assert_eq!("fail=2".parse::<ChaosConfig>().unwrap_err().key, "chaos.fail");
        assert_eq!("explode=0.1".parse::<ChaosConfig>().unwrap_err().key, "chaos.explode");
        assert_eq!("fail".parse::<ChaosConfig>().unwrap_err().key, "chaos.fail");
    }

    #[test]
    fn the_dice_are_seeded_and_roughly_fair() {
        let (a, b) = (Dice::new(7), Dice::new(7));
        let xs: Vec<f64> = (0..5).map(|_| a.roll()).collect();
        let ys: Vec<f64> = (0..5).map(|_| b.roll()).collect();
        assert_eq!(xs, ys, "same seed, same faults");
        let d = Dice::new(42);
        let hits = (0..10_000).filter(|_| d.hit(0.1)).count();
        assert!((800..1200).contains(&hits), "about 10%: {hits}");
        assert!(!d.hit(0.0));
    }
}
