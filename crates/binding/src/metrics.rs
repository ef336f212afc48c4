//! Counters and gauges by label, rendered in the Prometheus text format.
//!
//! The binders and the outbox count here: `orderflow_messages_published_total{topic}`,
//! `orderflow_messages_consumed_total{topic,group}` (acknowledged), `..._failed_total`
//! (handler said retry or dead-letter), `..._retried_total`, `..._dead_lettered_total`,
//! `..._duplicates_total` (skipped by the inbox). Gauges that are a query (outbox backlog,
//! orders by status) are set by their owner just before rendering.

use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::{Arc, Mutex},
};

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Family {
    help: &'static str,
    kind: &'static str,
    values: BTreeMap<Labels, f64>,
}

/// A shared registry; cheap to clone.
#[derive(Clone, Default)]
pub struct Metrics {
    families: Arc<Mutex<BTreeMap<&'static str, Family>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

pub const PUBLISHED: &str = "orderflow_messages_published_total";
pub const CONSUMED: &str = "orderflow_messages_consumed_total";
pub const FAILED: &str = "orderflow_messages_failed_total";
pub const RETRIED: &str = "orderflow_messages_retried_total";
pub const DEAD_LETTERED: &str = "orderflow_messages_dead_lettered_total";
pub const DUPLICATES: &str = "orderflow_messages_duplicates_total";
pub const OUTBOX_BACKLOG: &str = "orderflow_outbox_backlog";
/// Dead letters of a group not purged (refreshed when they are listed).
pub const DEAD_LETTERS: &str = "orderflow_dead_letters";
pub const DEAD_LETTERS_REPLAYED: &str = "orderflow_dead_letters_replayed_total";
/// Duplicates acknowledged by the Redis fast path without a database transaction.
pub const FAST_HITS: &str = "orderflow_idempotency_fast_hits_total";
/// Redis calls of the fast path that failed (the inbox decided alone).
pub const REDIS_ERRORS: &str = "orderflow_idempotency_redis_errors_total";
/// The order service's compensation job, by action (`resent`, `cancelled`).
pub const COMPENSATION: &str = "orderflow_compensation_total";
/// Frozen stock released because its order was never paid in time.
pub const RESERVATIONS_EXPIRED: &str = "orderflow_reservations_expired_total";
/// The process's resident memory (Linux; absent elsewhere).
pub const RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
/// Memory SQLite holds in this process: page caches (in their slab or on the heap),
/// prepared statements, schemas.
pub const SQLITE_MEMORY: &str = "orderflow_sqlite_memory_bytes";

fn help(name: &str) -> &'static str {
    match name {
        PUBLISHED => "Messages the broker accepted, by topic.",
        CONSUMED => "Messages acknowledged by a consumer group, by topic and group.",
        FAILED => "Handler failures (retry or dead-letter), by topic and group.",
        RETRIED => "Messages scheduled for redelivery, by topic and group.",
        DEAD_LETTERED => "Messages moved to %DLQ%<group>, by topic and group.",
        DUPLICATES => "Redelivered or duplicate messages skipped by the inbox, by topic and group.",
        OUTBOX_BACKLOG => "Events committed but not yet accepted by the broker.",
        DEAD_LETTERS => "Dead letters of a group not purged (as of the last listing), by group.",
        DEAD_LETTERS_REPLAYED => "Dead letters replayed by an operator, by group.",
        FAST_HITS => {
            "Duplicates acknowledged by the Redis idempotency fast path without a database transaction."
        }
        REDIS_ERRORS => {
            "Redis idempotency calls that failed or timed out (the inbox decided alone)."
        }
        COMPENSATION => {
            "Compensation job actions: events sent again (resent), orders cancelled past the deadline (cancelled)."
        }
        RESERVATIONS_EXPIRED => {
            "Reservations whose frozen stock was released because the order was not paid in time."
        }
        RESIDENT_MEMORY => "Resident memory of this process, in bytes.",
        SQLITE_MEMORY => {
            "Memory SQLite holds in this process (page caches, prepared statements), in bytes."
        }
        _ => "",
    }
}

/// Sets the process's resident-memory gauge (Linux; nothing elsewhere).
pub fn set_resident_memory(metrics: &Metrics) {
    if let Some(bytes) = resident_bytes("self") {
        metrics.set(RESIDENT_MEMORY, &[], bytes as f64);
    }
}

/// Resident memory of process `pid` (a number, or "self"), in bytes: VmRSS from
/// /proc/<pid>/status. `None` where there is no /proc.
pub fn resident_bytes(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    fn with(
        &self,
        name: &'static str,
        kind: &'static str,
        labels: &[(&'static str, &str)],
        f: impl FnOnce(&mut f64),
    ) {
        let key: Labels = labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let family = families.entry(name).or_insert_with(|| Family {
            help: help(name),
            kind,
            values: BTreeMap::new(),
        });
        f(family.values.entry(key).or_insert(0.0));
    }

    pub fn inc(&self, name: &'static str, labels: &[(&'static str, &str)], by: u64) {
        self.with(name, "counter", labels, |v| *v += by as f64);
    }

    pub fn set(&self, name: &'static str, labels: &[(&'static str, &str)], value: f64) {
        self.with(name, "gauge", labels, |v| *v = value);
    }

    /// Declares a gauge's help text (for gauges not listed above).
    pub fn gauge(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        value: f64,
    ) {
        self.with(name, "gauge", labels, |v| *v = value);
        let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = families.get_mut(name) {
            f.help = help;
        }
    }

    /// The current value (0 when never touched).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        families
            .get(name)
            .and_then(|f| {
                f.values.iter().find(|(k, _)| {
                    k.len() == labels.len()
                        && k.iter().zip(labels).all(|((a, b), (c, d))| a == c && b == d)
                })
            })
            .map(|(_, v)| *v)
            .unwrap_or(0.0)
    }

    /// The sum over every label set of `name`.
    pub fn total(&self, name: &str) -> f64 {
        let families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        families.get(name).map(|f| f.values.values().sum()).unwrap_or(0.0)
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        for (name, family) in families.iter() {
            let _ = writeln!(out, "# HELP {name} {}", family.help);
            let _ = writeln!(out, "# TYPE {name} {}", family.kind);
            for (labels, value) in &family.values {
                let labels: Vec<String> =
                    labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
                if labels.is_empty() {
                    let _ = writeln!(out, "{name} {value}");
                } else {
                    let _ = writeln!(out, "{name}{{{}}} {value}", labels.join(","));
                }
            }
        }
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.inc(CONSUMED, &[("topic", "order-created"), ("group", "stock-consumer-group")], 2);
        m.set(OUTBOX_BACKLOG, &[], 3.0);
        let text = m.render();
        assert!(text.contains("# TYPE orderflow_messages_consumed_total counter"));
        assert!(text.contains(
            "orderflow_messages_consumed_total{topic=\"order-created\",group=\"stock-consumer-group\"} 2"
        ));
        assert!(text.contains("orderflow_outbox_backlog 3"));
        assert_eq!(
            m.get(CONSUMED, &[("topic", "order-created"), ("group", "stock-consumer-group")]),
            2.0
        );
    }
}
