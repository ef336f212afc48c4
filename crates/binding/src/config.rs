//! The seed's `application-rocketmq.yml`, read unchanged into typed bindings.
//!
//! What is read (Spring Cloud Stream's layout, relaxed key names: `max-attempts`,
//! `maxAttempts` and `max_attempts` are one key):
//! - `spring.cloud.stream.function.definition`: `a;b` — the consumer functions; each has the
//!   input binding `<fn>-in-0`.
//! - `spring.cloud.stream.bindings.<binding>`: `destination`, `group`, `content-type`, and
//!   under `consumer`: `max-attempts`, `concurrency`, `batch-size`, `back-off-initial-interval`,
//!   `back-off-multiplier`, `back-off-max-interval`.
//! - `spring.cloud.stream.rocketmq.binder.name-server`.
//! - `spring.cloud.stream.rocketmq.bindings.<binding>.producer`: `group`, `sync`;
//!   `.consumer`: `subscription`, `orderly`, and the consumer keys above (these win).
//!
//! `${VAR:default}` placeholders are resolved from the environment. Anything wrong — a
//! missing destination or group, a value of the wrong type, an unresolvable placeholder —
//! is a [`ConfigError`] naming the full key, so startup stops with a message a person can act
//! on. Keys we do not know are ignored, as Spring ignores them.

use std::{collections::BTreeMap, time::Duration};

use yaml_serde::{Mapping, Value};

use crate::tags::TagExpression;

/// Spring Cloud Stream's defaults.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
pub const DEFAULT_BACKOFF_INITIAL_MS: u64 = 1000;
pub const DEFAULT_BACKOFF_MULTIPLIER: f64 = 2.0;
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 10_000;

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{key}: {problem}")]
pub struct ConfigError {
    /// The full dotted key, e.g. `spring.cloud.stream.bindings.orderCreatedConsumer-in-0.group`.
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError { key: key.into(), problem: problem.into() }
    }
}

/// Retry delays between delivery attempts: initial, multiplied each time, capped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub multiplier: f64,
    pub max: Duration,
}

impl Backoff {
    /// The delay before attempt `next_attempt` (2 = the first retry).
    pub fn delay(&self, next_attempt: u32) -> Duration {
        let exp = next_attempt.saturating_sub(2).min(64) as i32;
        let ms = self.initial.as_millis() as f64 * self.multiplier.powi(exp);
        Duration::from_millis(ms.min(self.max.as_millis() as f64) as u64)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(DEFAULT_BACKOFF_INITIAL_MS),
            multiplier: DEFAULT_BACKOFF_MULTIPLIER,
            max: Duration::from_millis(DEFAULT_BACKOFF_MAX_MS),
        }
    }
}

/// An input binding: a consumer group reading a destination.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerBinding {
    /// `<function>-in-0`.
    pub name: String,
    pub destination: String,
    pub group: String,
    pub subscription: TagExpression,
    /// Per-key (orderNo) order: a key's next message waits until the previous one is settled.
    pub orderly: bool,
    /// Delivery attempts in all (first delivery included) before the dead-letter queue.
    pub max_attempts: u32,
    /// Batches handled at once for this binding.
    pub concurrency: usize,
    /// Messages handed to the handler together (one database transaction).
    pub batch_size: usize,
    pub backoff: Backoff,
}

impl ConsumerBinding {
    /// A binding with Spring's defaults, for the bindings our additions need when the YAML
    /// does not define them.
    pub fn with_defaults(name: &str, destination: &str, group: &str, tag: &str) -> Self {
        ConsumerBinding {
            name: name.to_owned(),
            destination: destination.to_owned(),
            group: group.to_owned(),
            subscription: TagExpression::AnyOf(vec![tag.to_owned()]),
            orderly: false,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            concurrency: 1,
            batch_size: 1,
            backoff: Backoff::default(),
        }
    }

    /// The function name: the binding name without `-in-N`.
    pub fn function(&self) -> &str {
        function_of(&self.name)
    }
}

/// An output binding.
#[derive(Debug, Clone, PartialEq)]
pub struct ProducerBinding {
    pub name: String,
    pub destination: String,
    pub group: Option<String>,
    pub sync: bool,
    pub content_type: String,
}

/// One service's stream configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamConfig {
    pub name_server: Option<String>,
    /// Consumer functions from `function.definition`, in order.
    pub functions: Vec<String>,
    pub consumers: BTreeMap<String, ConsumerBinding>,
    pub producers: BTreeMap<String, ProducerBinding>,
    /// The optional top-level `orderflow:` section (our own settings), placeholders resolved.
    pub orderflow: Value,
}

const ROOT: &str = "spring.cloud.stream";

impl StreamConfig {
    /// Parses YAML text, resolving placeholders from the process environment.
    pub fn from_yaml(text: &str) -> Result<StreamConfig, ConfigError> {
        Self::from_yaml_with_env(text, &|k| std::env::var(k).ok())
    }

    pub fn from_yaml_with_env(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<StreamConfig, ConfigError> {
        let mut doc: Value = yaml_serde::from_str(text)
            .map_err(|e| ConfigError::new("(document)", format!("not valid YAML: {e}")))?;
        resolve_placeholders(&mut doc, "", env)?;

        let stream = lookup(&doc, &["spring", "cloud", "stream"])
            .ok_or_else(|| ConfigError::new(ROOT, "missing"))?;
        let stream = as_map(stream, ROOT)?;

        let definition_key = format!("{ROOT}.function.definition");
        let functions: Vec<String> = match lookup_map(stream, &["function", "definition"]) {
            Some(v) => as_string(v, &definition_key)?
                .split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            None => Vec::new(),
        };

        let empty = Mapping::new();
        let generic = match get(stream, "bindings") {
            Some(v) => as_map(v, &format!("{ROOT}.bindings"))?,
            None => &empty,
        };
        let rocketmq = match get(stream, "rocketmq") {
            Some(v) => as_map(v, &format!("{ROOT}.rocketmq"))?,
            None => &empty,
        };
        let name_server = match lookup_map(rocketmq, &["binder", "name-server"]) {
            Some(v) => Some(as_string(v, &format!("{ROOT}.rocketmq.binder.name-server"))?),
            None => None,
        };
        let specific = match get(rocketmq, "bindings") {
            Some(v) => as_map(v, &format!("{ROOT}.rocketmq.bindings"))?,
            None => &empty,
        };

        let mut names: Vec<String> = generic
            .keys()
            .chain(specific.keys())
            .filter_map(|k| k.as_str().map(str::to_owned))
            .collect();
        names.sort();
        names.dedup();

        let mut consumers = BTreeMap::new();
        let mut producers = BTreeMap::new();
        for name in &names {
            if name.contains("-in-") {
                let b = parse_consumer(name, generic, specific)?;
                consumers.insert(name.clone(), b);
            } else if name.contains("-out-") {
                let b = parse_producer(name, generic, specific)?;
                producers.insert(name.clone(), b);
            }
        }
        for f in &functions {
            let name = format!("{f}-in-0");
            if !consumers.contains_key(&name) {
                return Err(ConfigError::new(
                    format!("{ROOT}.bindings.{name}.destination"),
                    format!(
                        "missing: function {f:?} is in function.definition but has no input binding"
                    ),
                ));
            }
        }
        let orderflow =
            get(as_map(&doc, "(document)")?, "orderflow").cloned().unwrap_or(Value::Null);
        Ok(StreamConfig { name_server, functions, consumers, producers, orderflow })
    }

    /// The consumer binding of `function` (`<function>-in-0`): the YAML's if it defines one,
    /// else `default` (used for the bindings our compensation events add).
    pub fn consumer_or(&self, default: ConsumerBinding) -> ConsumerBinding {
        self.consumers.get(&default.name).cloned().unwrap_or(default)
    }

    /// The input binding `<function>-in-0` for one of the topics we add (not in the seed's
    /// YAML): the YAML's if it defines one, else the event's topic and tag in the service's
    /// own group (`fallback_group` when the YAML names none).
    pub fn added_consumer(
        &self,
        function: &str,
        kind: events::EventType,
        fallback_group: &str,
    ) -> ConsumerBinding {
        let group = self.main_group().unwrap_or(fallback_group).to_owned();
        self.consumer_or(ConsumerBinding::with_defaults(
            &format!("{function}-in-0"),
            kind.topic(),
            &group,
            kind.tag(),
        ))
    }

    /// The consumer binding `<function>-in-0` the YAML must define.
    pub fn consumer(&self, function: &str) -> Result<&ConsumerBinding, ConfigError> {
        let name = format!("{function}-in-0");
        self.consumers.get(&name).ok_or_else(|| {
            ConfigError::new(format!("{ROOT}.bindings.{name}"), "missing: this service consumes it")
        })
    }

    /// The destination of output binding `name`, or the event's own topic when the YAML does
    /// not configure it.
    pub fn destination_of(&self, name: &str, kind: events::EventType) -> String {
        self.producers
            .get(name)
            .map(|p| p.destination.clone())
            .unwrap_or_else(|| kind.topic().to_owned())
    }

    /// The consumer group the service's seed bindings use (for bindings we add).
    pub fn main_group(&self) -> Option<&str> {
        self.functions
            .iter()
            .find_map(|f| self.consumers.get(&format!("{f}-in-0")))
            .map(|b| b.group.as_str())
    }

    /// A setting from the optional `orderflow:` section, by dotted path.
    pub fn setting(&self, path: &str) -> Option<&Value> {
        let parts: Vec<&str> = path.split('.').collect();
        lookup(&self.orderflow, &parts)
    }

    /// A duration of the `orderflow:` section: a number of seconds, or text such as `90s`,
    /// `72h`, `7d` (what `${ORDER_CANCEL_AFTER:600}` expands to counts too), or `default`
    /// when absent.
    pub fn seconds(&self, path: &str, default: Duration) -> Result<Duration, ConfigError> {
        Ok(self.duration(path)?.unwrap_or(default))
    }

    /// [`StreamConfig::seconds`] without a default: `None` when the key is absent.
    pub fn duration(&self, path: &str) -> Result<Option<Duration>, ConfigError> {
        let Some(v) = self.setting(path) else { return Ok(None) };
        let secs = match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        let parsed = match (secs, v) {
            (Some(secs), _) => Some(secs)
                .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
                .map(Duration::from_secs_f64),
            (None, Value::String(s)) => {
                humantime::parse_duration(s.trim()).ok().filter(|d| !d.is_zero())
            }
            _ => None,
        };
        parsed.map(Some).ok_or_else(|| {
            ConfigError::new(
                format!("orderflow.{path}"),
                format!(
                    "{} is not a duration: give a positive number of seconds or text such as 90s, 72h or 7d",
                    show(v)
                ),
            )
        })
    }
}

fn function_of(binding: &str) -> &str {
    binding.split("-in-").next().unwrap_or(binding)
}

fn parse_consumer(
    name: &str,
    generic: &Mapping,
    specific: &Mapping,
) -> Result<ConsumerBinding, ConfigError> {
    let g_key = format!("{ROOT}.bindings.{name}");
    let s_key = format!("{ROOT}.rocketmq.bindings.{name}");
    let g = opt_map(get(generic, name), &g_key)?;
    let g_consumer = opt_map(g.and_then(|m| get(m, "consumer")), &format!("{g_key}.consumer"))?;
    let s = opt_map(get(specific, name), &s_key)?;
    let s_consumer = opt_map(s.and_then(|m| get(m, "consumer")), &format!("{s_key}.consumer"))?;

    let destination = required_string(g, "destination", &g_key)?;
    let group = required_string(g, "group", &g_key)?;

    // A consumer key may sit under either map; the RocketMQ-specific one wins.
    let pick = |key: &str| -> Option<(&Value, String)> {
        s_consumer
            .and_then(|m| get(m, key).map(|v| (v, format!("{s_key}.consumer.{key}"))))
            .or_else(|| {
                g_consumer.and_then(|m| get(m, key).map(|v| (v, format!("{g_key}.consumer.{key}"))))
            })
    };
    let subscription = match pick("subscription") {
        Some((v, key)) => {
            TagExpression::parse(&as_string(v, &key)?).map_err(|e| ConfigError::new(key, e))?
        }
        None => TagExpression::All,
    };
    let orderly = match pick("orderly") {
        Some((v, key)) => as_bool(v, &key)?,
        None => false,
    };
    let int = |key: &str, default: u64, min: u64, max: u64| -> Result<u64, ConfigError> {
        match pick(key) {
            Some((v, k)) => as_int(v, &k, min, max),
            None => Ok(default),
        }
    };
    let max_attempts = int("max-attempts", DEFAULT_MAX_ATTEMPTS.into(), 1, 1000)? as u32;
    let concurrency = int("concurrency", 1, 1, 256)? as usize;
    let batch_size = int("batch-size", 1, 1, 1000)? as usize;
    let initial = int("back-off-initial-interval", DEFAULT_BACKOFF_INITIAL_MS, 0, 3_600_000)?;
    let max = int("back-off-max-interval", DEFAULT_BACKOFF_MAX_MS, 0, 3_600_000)?;
    let multiplier = match pick("back-off-multiplier") {
        Some((v, key)) => as_float(v, &key, 1.0, 100.0)?,
        None => DEFAULT_BACKOFF_MULTIPLIER,
    };
    Ok(ConsumerBinding {
        name: name.to_owned(),
        destination,
        group,
        subscription,
        orderly,
        max_attempts,
        concurrency,
        batch_size,
        backoff: Backoff {
            initial: Duration::from_millis(initial),
            multiplier,
            max: Duration::from_millis(max.max(initial)),
        },
    })
}

fn parse_producer(
    name: &str,
    generic: &Mapping,
    specific: &Mapping,
) -> Result<ProducerBinding, ConfigError> {
    let g_key = format!("{ROOT}.bindings.{name}");
    let s_key = format!("{ROOT}.rocketmq.bindings.{name}.producer");
    let g = opt_map(get(generic, name), &g_key)?;
    let s = opt_map(get(specific, name), &format!("{ROOT}.rocketmq.bindings.{name}"))?;
    let p = opt_map(s.and_then(|m| get(m, "producer")), &s_key)?;
    let destination = required_string(g, "destination", &g_key)?;
    let content_type = match g.and_then(|m| get(m, "content-type")) {
        Some(v) => as_string(v, &format!("{g_key}.content-type"))?,
        None => "application/json".to_owned(),
    };
    let group = match p.and_then(|m| get(m, "group")) {
        Some(v) => Some(as_string(v, &format!("{s_key}.group"))?),
        None => None,
    };
    let sync = match p.and_then(|m| get(m, "sync")) {
        Some(v) => as_bool(v, &format!("{s_key}.sync"))?,
        None => false,
    };
    Ok(ProducerBinding { name: name.to_owned(), destination, group, sync, content_type })
}

// ---- YAML helpers -------------------------------------------------------------------------

/// Spring's relaxed binding: case, `-` and `_` do not matter in property keys.
fn canonical(key: &str) -> String {
    key.chars().filter(|c| *c != '-' && *c != '_').flat_map(char::to_lowercase).collect()
}

fn get<'a>(map: &'a Mapping, key: &str) -> Option<&'a Value> {
    if let Some(v) = map.get(key) {
        return Some(v);
    }
    let want = canonical(key);
    map.iter().find(|(k, _)| k.as_str().is_some_and(|k| canonical(k) == want)).map(|(_, v)| v)
}

fn lookup<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, k| v.as_mapping().and_then(|m| get(m, k)))
}

fn lookup_map<'a>(map: &'a Mapping, path: &[&str]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    lookup(get(map, first)?, rest)
}

fn as_map<'a>(v: &'a Value, key: &str) -> Result<&'a Mapping, ConfigError> {
    v.as_mapping().ok_or_else(|| ConfigError::new(key, "expected a mapping"))
}

fn opt_map<'a>(v: Option<&'a Value>, key: &str) -> Result<Option<&'a Mapping>, ConfigError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => as_map(v, key).map(Some),
    }
}

fn required_string(
    map: Option<&Mapping>,
    field: &str,
    parent: &str,
) -> Result<String, ConfigError> {
    let key = format!("{parent}.{field}");
    match map.and_then(|m| get(m, field)) {
        Some(v) => {
            let s = as_string(v, &key)?;
            if s.trim().is_empty() {
                Err(ConfigError::new(key, "must not be empty"))
            } else {
                Ok(s)
            }
        }
        None => Err(ConfigError::new(key, "missing")),
    }
}

fn as_string(v: &Value, key: &str) -> Result<String, ConfigError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(ConfigError::new(key, "expected a string")),
    }
}

fn as_bool(v: &Value, key: &str) -> Result<bool, ConfigError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        other => Err(ConfigError::new(key, format!("expected true or false, got {}", show(other)))),
    }
}

fn as_int(v: &Value, key: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    match n {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ConfigError::new(
            key,
            format!("expected a whole number from {min} to {max}, got {}", show(v)),
        )),
    }
}

fn as_float(v: &Value, key: &str, min: f64, max: f64) -> Result<f64, ConfigError> {
    let n = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    match n {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ConfigError::new(
            key,
            format!("expected a number from {min} to {max}, got {}", show(v)),
        )),
    }
}

fn show(v: &Value) -> String {
    yaml_serde::to_string(v).map(|s| s.trim().to_owned()).unwrap_or_else(|_| "?".into())
}

/// Replaces `${VAR}` and `${VAR:default}` in every string scalar.
fn resolve_placeholders(
    v: &mut Value,
    key: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match v {
        Value::String(s) if s.contains("${") => {
            *s = expand(s, env).map_err(|p| ConfigError::new(key, p))?;
        }
        Value::Mapping(m) => {
            for (k, child) in m.iter_mut() {
                let name = k.as_str().map(str::to_owned).unwrap_or_else(|| show(k));
                let path = if key.is_empty() { name } else { format!("{key}.{name}") };
                resolve_placeholders(child, &path, env)?;
            }
        }
        Value::Sequence(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                resolve_placeholders(child, &format!("{key}[{i}]"), env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| format!("unclosed placeholder in {text:?}"))?;
        let inner = &after[..end];
        let (var, default) = match inner.split_once(':') {
            Some((v, d)) => (v, Some(d)),
            None => (inner, None),
        };
        match env(var.trim()).or_else(|| default.map(str::to_owned)) {
            Some(value) => out.push_str(&value),
            None => {
                return Err(format!("placeholder ${{{var}}} has no default and {var} is not set"));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn placeholders_take_the_environment_then_the_default() {
        assert_eq!(expand("${A:1.2.3.4:9876}", &env(&[])).unwrap(), "1.2.3.4:9876");
        assert_eq!(expand("x${A:d}y", &env(&[("A", "v")])).unwrap(), "xvy");
        assert!(expand("${A}", &env(&[])).unwrap_err().contains("A is not set"));
        assert!(expand("${A", &env(&[])).is_err());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff::default();
        assert_eq!(b.delay(2), Duration::from_millis(1000));
        assert_eq!(b.delay(3), Duration::from_millis(2000));
        assert_eq!(b.delay(30), Duration::from_millis(10_000));
    }
}
