//! Where `up`'s settings come from, lowest precedence first:
//! 1. built-in defaults (the seed's YAML files, compiled in; ports 8081–8083; `./data`);
//! 2. the YAML files in `--config-dir` (the seed's files unchanged, optionally with our own
//!    top-level `orderflow:` section: `http.address`, `payment.outcome`, `payment.delay-ms`);
//! 3. environment variables (`ORDERFLOW_*`, and `${VAR:default}` placeholders in the YAML);
//! 4. command-line flags.
//!
//! A bad value stops startup with a message naming the file and key.

use std::{net::SocketAddr, path::Path, time::Duration};

use anyhow::{Context, bail};
use binding::StreamConfig;
use payment::{PaymentSettings, domain::Completion};

pub const ORDER_YAML: &str = include_str!("../../../fixtures/config/order-service.yml");
pub const STOCK_YAML: &str = include_str!("../../../fixtures/config/stock-service.yml");
pub const PAYMENT_YAML: &str = include_str!("../../../fixtures/config/payment-service.yml");

/// The file names the services read from a config directory.
pub const FILES: [(&str, &str); 3] = [
    ("order-service.yml", ORDER_YAML),
    ("stock-service.yml", STOCK_YAML),
    ("payment-service.yml", PAYMENT_YAML),
];

/// Loads one service's YAML from `dir`, or the built-in copy when `dir` is `None`.
pub fn load_stream(dir: Option<&Path>, file: &str, builtin: &str) -> anyhow::Result<StreamConfig> {
    let (text, origin) = match dir {
        Some(d) => {
            let path = d.join(file);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            (text, path.display().to_string())
        }
        None => (builtin.to_owned(), format!("(built-in) {file}")),
    };
    StreamConfig::from_yaml(&text).with_context(|| format!("{origin}: invalid configuration"))
}

/// The HTTP address: the flag or environment, else the YAML's `orderflow.http.address`,
/// else `default`.
pub fn address(
    flag: Option<&str>,
    yaml: &StreamConfig,
    default: &str,
    what: &str,
) -> anyhow::Result<SocketAddr> {
    let (text, key) = match (flag, yaml.setting("http.address")) {
        (Some(f), _) => (f.to_owned(), format!("--{what}-addr")),
        (None, Some(v)) => (yaml_text(v), "orderflow.http.address".to_owned()),
        (None, None) => (default.to_owned(), "default".to_owned()),
    };
    text.parse().with_context(|| format!("{key}: {text:?} is not an address like 127.0.0.1:8081"))
}

/// The simulated payment provider's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PaymentOutcome {
    #[value(alias = "succeed")]
    Success,
    #[value(alias = "failure")]
    Fail,
}

impl std::str::FromStr for PaymentOutcome {
    type Err = String;

    fn from_str(s: &str) -> Result<PaymentOutcome, String> {
        <PaymentOutcome as clap::ValueEnum>::from_str(s, true)
            .map_err(|_| format!("{s:?} must be success or fail"))
    }
}

/// Payment simulation: flag/env, else the payment YAML's `orderflow.payment.*`.
pub fn payment(
    outcome: Option<PaymentOutcome>,
    delay_ms: Option<u64>,
    yaml: &StreamConfig,
) -> anyhow::Result<PaymentSettings> {
    let outcome = match outcome {
        Some(o) => o,
        None => match yaml.setting("payment.outcome") {
            None => PaymentOutcome::Success,
            Some(v) => yaml_text(v)
                .parse()
                .map_err(|e| anyhow::anyhow!("orderflow.payment.outcome: {e}"))?,
        },
    };
    let outcome = match outcome {
        PaymentOutcome::Success => Completion::Succeed,
        PaymentOutcome::Fail => {
            Completion::Fail { reason: "declined by the payment provider (simulated)".into() }
        }
    };
    let delay_ms = match delay_ms {
        Some(d) => d,
        None => match yaml.setting("payment.delay-ms") {
            Some(v) => yaml_text(v)
                .parse()
                .with_context(|| "orderflow.payment.delay-ms: must be a whole number")?,
            None => 0,
        },
    };
    if delay_ms > 3_600_000 {
        bail!("payment delay: {delay_ms} ms is over an hour");
    }
    Ok(PaymentSettings {
        outcome,
        delay: Duration::from_millis(delay_ms),
        ..PaymentSettings::default()
    })
}

/// The admin token: the flag or environment, else the YAML's `orderflow.admin.token`, else a
/// random one (returned with `true`: the caller prints it).
pub fn admin_token(flag: Option<&str>, yaml: &StreamConfig) -> anyhow::Result<(String, bool)> {
    let given = flag.map(str::to_owned).or_else(|| yaml.setting("admin.token").map(yaml_text));
    match given {
        Some(t) => Ok((token("admin token", &t)?, false)),
        None => Ok((format!("{:032x}", random_u128()), true)),
    }
}

/// A token as given (`what` names it in the error), trimmed: at least 16 characters.
pub fn token(what: &str, given: &str) -> anyhow::Result<String> {
    let t = given.trim();
    if t.len() < 16 {
        bail!("{what}: use at least 16 characters");
    }
    Ok(t.to_owned())
}

/// 128 random bits from the OS (via the standard library's hasher seeds) and the clock.
fn random_u128() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut out = 0u128;
    for i in 0..2u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        out = (out << 64) | u128::from(h.finish());
    }
    out
}

fn yaml_text(v: &yaml_serde::Value) -> String {
    match v {
        yaml_serde::Value::String(s) => s.clone(),
        other => yaml_serde::to_string(other).map(|s| s.trim().to_owned()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml_with(section: &str) -> StreamConfig {
        StreamConfig::from_yaml_with_env(&format!("{PAYMENT_YAML}\norderflow:\n{section}"), &|_| {
            None
        })
        .unwrap()
    }

    #[test]
    fn the_flag_beats_the_yaml_which_beats_the_default() {
        let plain = StreamConfig::from_yaml_with_env(PAYMENT_YAML, &|_| None).unwrap();
        let yaml = yaml_with("  http:\n    address: 127.0.0.1:9100\n");
        assert_eq!(address(None, &plain, "127.0.0.1:8083", "payment").unwrap().port(), 8083);
        assert_eq!(address(None, &yaml, "127.0.0.1:8083", "payment").unwrap().port(), 9100);
        assert_eq!(
            address(Some("127.0.0.1:9200"), &yaml, "127.0.0.1:8083", "payment").unwrap().port(),
            9200
        );
        let err =
            address(None, &yaml_with("  http:\n    address: nowhere\n"), "127.0.0.1:1", "payment")
                .unwrap_err();
        assert!(err.to_string().contains("orderflow.http.address"), "{err}");
    }

    #[test]
    fn payment_simulation_settings_layer_and_validate() {
        let yaml = yaml_with("  payment:\n    outcome: fail\n    delay-ms: 250\n");
        let s = payment(None, None, &yaml).unwrap();
        assert!(matches!(s.outcome, Completion::Fail { .. }));
        assert_eq!(s.delay, Duration::from_millis(250));
        let s = payment(Some(PaymentOutcome::Success), Some(0), &yaml).unwrap();
        assert_eq!((s.outcome, s.delay), (Completion::Succeed, Duration::ZERO));
        let err = payment(None, None, &yaml_with("  payment:\n    outcome: maybe\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("orderflow.payment.outcome") && err.contains("success or fail"),
            "{err}"
        );
        assert_eq!("FAILURE".parse(), Ok(PaymentOutcome::Fail));
        assert!(payment(None, Some(10_000_000), &yaml).is_err());
    }

    #[test]
    fn the_admin_token_is_given_or_generated_never_empty() {
        let plain = StreamConfig::from_yaml_with_env(PAYMENT_YAML, &|_| None).unwrap();
        let (a, generated) = admin_token(None, &plain).unwrap();
        let (b, _) = admin_token(None, &plain).unwrap();
        assert!(generated && a.len() == 32 && a != b, "random when not configured: {a} {b}");
        let yaml = yaml_with("  admin:\n    token: from-the-yaml-0123456\n");
        assert_eq!(admin_token(None, &yaml).unwrap(), ("from-the-yaml-0123456".to_owned(), false));
        assert_eq!(
            admin_token(Some("from-the-flag-0123456"), &yaml).unwrap().0,
            "from-the-flag-0123456"
        );
        assert!(
            admin_token(Some("short"), &yaml).unwrap_err().to_string().contains("16 characters")
        );
    }
}
