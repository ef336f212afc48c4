//! The process's metrics, kept and exposed by the Prometheus organization's
//! `prometheus-client` (text format 0.0.4; docs/decisions.md says why this library).
//!
//! Every family is declared once, in [`FAMILIES`], with its kind and help; the binders, the
//! outbox, the services and the checker count into them by name and labels. Gauges that are
//! a query (outbox backlog, consumer lag, dead letters, orders by status) are set by their
//! owner just before rendering, so a scrape always reads current values.
//!
//! Names are stable: dashboards, alert rules and existing scrapes depend on them. A counter
//! is declared without its `_total` suffix, which the library adds.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::{
    encoding::prometheus_text,
    metrics::{
        counter::Counter,
        family::{Family, MetricConstructor},
        gauge::Gauge,
        histogram::Histogram,
    },
    registry::Registry,
};

pub const PUBLISHED: &str = "orderflow_messages_published_total";
pub const PUBLISH_FAILURES: &str = "orderflow_publish_failures_total";
pub const PUBLISH_SECONDS: &str = "orderflow_publish_duration_seconds";
pub const CONSUMED: &str = "orderflow_messages_consumed_total";
pub const FAILED: &str = "orderflow_messages_failed_total";
pub const RETRIED: &str = "orderflow_messages_retried_total";
pub const DEAD_LETTERED: &str = "orderflow_messages_dead_lettered_total";
pub const SKIPPED: &str = "orderflow_messages_skipped_total";
pub const DUPLICATES: &str = "orderflow_messages_duplicates_total";
pub const CONSUME_LATENCY: &str = "orderflow_consume_latency_seconds";
pub const HANDLER_SECONDS: &str = "orderflow_handler_duration_seconds";
pub const LAG_MESSAGES: &str = "orderflow_consumer_lag_messages";
pub const LAG_OLDEST: &str = "orderflow_consumer_lag_oldest_age_seconds";
pub const QUEUE_LAG: &str = "orderflow_consumer_queue_lag_messages";
pub const OUTBOX_BACKLOG: &str = "orderflow_outbox_backlog";
pub const DEAD_LETTERS: &str = "orderflow_dead_letters";
pub const DEAD_LETTERS_REPLAYED: &str = "orderflow_dead_letters_replayed_total";
pub const FAST_HITS: &str = "orderflow_idempotency_fast_hits_total";
pub const REDIS_ERRORS: &str = "orderflow_idempotency_redis_errors_total";
pub const COMPENSATION: &str = "orderflow_compensation_total";
pub const RESERVATIONS_EXPIRED: &str = "orderflow_reservations_expired_total";
pub const ORDERS: &str = "orderflow_orders";
pub const ORDER_SECONDS: &str = "orderflow_order_completion_seconds";
pub const HTTP_SECONDS: &str = "orderflow_http_request_duration_seconds";
pub const VIOLATIONS: &str = "orderflow_invariant_violations";
pub const ORDERS_CHECKED: &str = "orderflow_invariant_orders_checked";
pub const CHECKED_AT: &str = "orderflow_invariant_checked_at_seconds";
pub const RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
pub const SQLITE_MEMORY: &str = "orderflow_sqlite_memory_bytes";
pub const RETENTION_REMOVED: &str = "orderflow_retention_removed_total";
pub const OLDEST_MESSAGE: &str = "orderflow_retention_oldest_message_age_seconds";
pub const DATABASE_SIZE: &str = "orderflow_database_size_bytes";

/// What a family is; a histogram says which buckets it has.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram(fn() -> Histogram),
}

/// Buckets for one step of the flow: a publish, a handler, a message's way through a
/// consumer group (1 ms to a minute).
fn step_seconds() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
}

/// Buckets for an order's life, created to PAID or CANCELLED (10 ms to a day: a cancelled
/// order may wait out its payment timeout).
fn order_seconds() -> Histogram {
    Histogram::new([
        0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0,
        3600.0, 86400.0,
    ])
}

/// Every family: name, kind, help.
pub const FAMILIES: &[(&str, Kind, &str)] = &[
    (PUBLISHED, Kind::Counter, "Messages the broker accepted, by topic."),
    (
        PUBLISH_FAILURES,
        Kind::Counter,
        "Outbox publishes the broker refused or did not answer, by topic (the relay tries again).",
    ),
    (
        PUBLISH_SECONDS,
        Kind::Histogram(step_seconds),
        "Time the broker took to accept a publish of the outbox relay, by topic.",
    ),
    (CONSUMED, Kind::Counter, "Messages acknowledged by a consumer group, by topic and group."),
    (FAILED, Kind::Counter, "Handler failures (retry or dead-letter), by topic and group."),
    (RETRIED, Kind::Counter, "Messages scheduled for redelivery, by topic and group."),
    (DEAD_LETTERED, Kind::Counter, "Messages moved to %DLQ%<group>, by topic and group."),
    (
        SKIPPED,
        Kind::Counter,
        "Messages a consumer group will never be given because an operator moved its offset past them (skipAccumulatedMessage, resetOffsetByTime forward), by topic and group.",
    ),
    (
        DUPLICATES,
        Kind::Counter,
        "Redelivered or duplicate messages skipped by the inbox, by topic and group.",
    ),
    (
        CONSUME_LATENCY,
        Kind::Histogram(step_seconds),
        "Time from a message's birth (its publish) to its acknowledgement by a consumer group, by topic and group.",
    ),
    (
        HANDLER_SECONDS,
        Kind::Histogram(step_seconds),
        "Time a binding's handler took for one delivery (a batch counts once), by binding and group.",
    ),
    (
        LAG_MESSAGES,
        Kind::Gauge,
        "Messages published to a topic and not yet acknowledged by a consumer group, by group and topic.",
    ),
    (
        LAG_OLDEST,
        Kind::Gauge,
        "Age of the oldest message a consumer group has not acknowledged (0 when none), by group and topic.",
    ),
    (
        QUEUE_LAG,
        Kind::Gauge,
        "Consumer lag of one RocketMQ queue: its max offset minus the group's offset, by group, topic, broker and queue.",
    ),
    (
        OUTBOX_BACKLOG,
        Kind::Gauge,
        "Events committed but not yet accepted by the broker, by service.",
    ),
    (DEAD_LETTERS, Kind::Gauge, "Dead letters of a group not yet purged, by group."),
    (DEAD_LETTERS_REPLAYED, Kind::Counter, "Dead letters replayed by an operator, by group."),
    (
        FAST_HITS,
        Kind::Counter,
        "Duplicates acknowledged by the Redis idempotency fast path without a database transaction.",
    ),
    (
        REDIS_ERRORS,
        Kind::Counter,
        "Redis idempotency calls that failed or timed out (the inbox decided alone).",
    ),
    (
        COMPENSATION,
        Kind::Counter,
        "Compensation job actions: events sent again (resent), orders cancelled past the deadline (cancelled).",
    ),
    (
        RESERVATIONS_EXPIRED,
        Kind::Counter,
        "Reservations whose frozen stock was released because the order was not paid in time.",
    ),
    (ORDERS, Kind::Gauge, "Orders by status."),
    (
        ORDER_SECONDS,
        Kind::Histogram(order_seconds),
        "Time from an order's creation to its end, by outcome (PAID or CANCELLED).",
    ),
    (
        HTTP_SECONDS,
        Kind::Histogram(step_seconds),
        "HTTP request duration, by service, route and status class (2xx, 4xx, 5xx).",
    ),
    (
        VIOLATIONS,
        Kind::Gauge,
        "Violations the invariant checker found at its last run, by kind (see `orderflow check`).",
    ),
    (ORDERS_CHECKED, Kind::Gauge, "Orders the invariant checker read at its last run."),
    (CHECKED_AT, Kind::Gauge, "When the invariant checker last ran (Unix time)."),
    (RESIDENT_MEMORY, Kind::Gauge, "Resident memory of this process, in bytes."),
    (
        SQLITE_MEMORY,
        Kind::Gauge,
        "Memory SQLite holds in this process (page caches, prepared statements), in bytes.",
    ),
    (
        RETENTION_REMOVED,
        Kind::Counter,
        "Rows removed by retention (orderflow.retention), by database and table: broker messages past their retention that every group had acknowledged, inbox records past the deduplication window.",
    ),
    (
        OLDEST_MESSAGE,
        Kind::Gauge,
        "Age of the oldest message the embedded broker still keeps, by topic: above the retention period, some group has not acknowledged it.",
    ),
    (
        DATABASE_SIZE,
        Kind::Gauge,
        "Size of a database, by database (broker, order, stock, payment): the SQLite file's pages, or PostgreSQL's pg_database_size; space freed by retention is reused before the file grows.",
    ),
];

type Labels = Vec<(&'static str, String)>;

enum Handle {
    Counter(Family<Labels, Counter>),
    Gauge(Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>),
    Histogram(Family<Labels, Histogram, fn() -> Histogram>),
}

struct Inner {
    registry: Registry,
    families: HashMap<&'static str, Handle>,
    /// The label sets each family has seen (the library does not list them), for `total`.
    seen: Mutex<HashMap<&'static str, HashSet<Labels>>>,
}

/// A shared registry; cheap to clone.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

fn labels(labels: &[(&'static str, &str)]) -> Labels {
    labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let mut families = HashMap::new();
        for &(name, kind, help) in FAMILIES {
            let handle = match kind {
                Kind::Counter => {
                    let family = Family::<Labels, Counter>::default();
                    let bare = name.strip_suffix("_total").unwrap_or(name);
                    registry.register(bare, help, family.clone());
                    Handle::Counter(family)
                }
                Kind::Gauge => {
                    let family = Family::default();
                    registry.register(name, help, family.clone());
                    Handle::Gauge(family)
                }
                Kind::Histogram(buckets) => {
                    let family = Family::new_with_constructor(buckets);
                    registry.register(name, help, family.clone());
                    Handle::Histogram(family)
                }
            };
            families.insert(name, handle);
        }
        Metrics(Arc::new(Inner { registry, families, seen: Mutex::default() }))
    }

    fn family(&self, name: &'static str) -> Option<&Handle> {
        let handle = self.0.families.get(name);
        debug_assert!(handle.is_some(), "metric {name} is not declared in FAMILIES");
        handle
    }

    /// Applies `f` to the metric of `family` under `l`, creating (and noting) it on first use.
    fn with<M: Clone, C: MetricConstructor<M>>(
        &self,
        name: &'static str,
        family: &Family<Labels, M, C>,
        l: &[(&'static str, &str)],
        f: impl FnOnce(&M),
    ) {
        let l = labels(l);
        if let Some(m) = family.get(&l) {
            return f(&m);
        }
        f(&family.get_or_create(&l));
        let mut seen = self.0.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.entry(name).or_default().insert(l);
    }

    /// Adds `by` to a counter.
    pub fn inc(&self, name: &'static str, l: &[(&'static str, &str)], by: u64) {
        if let Some(Handle::Counter(f)) = self.family(name) {
            self.with(name, f, l, |c| {
                c.inc_by(by);
            });
        }
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, l: &[(&'static str, &str)], value: f64) {
        if let Some(Handle::Gauge(f)) = self.family(name) {
            self.with(name, f, l, |g| {
                g.set(value);
            });
        }
    }

    /// Records one sample of a histogram, in seconds.
    pub fn observe(&self, name: &'static str, l: &[(&'static str, &str)], took: Duration) {
        if let Some(Handle::Histogram(f)) = self.family(name) {
            self.with(name, f, l, |h| h.observe(took.as_secs_f64()));
        }
    }

    /// `n` messages of `labels` (topic, group) acknowledged, `ages` after their birth (the
    /// consume latency of each).
    pub fn acknowledged(
        &self,
        labels: &[(&'static str, &str)],
        ages: impl IntoIterator<Item = Duration>,
    ) {
        // One look-up of the histogram for the whole batch, not one per message.
        let mut n = 0;
        if let Some(Handle::Histogram(f)) = self.family(CONSUME_LATENCY) {
            self.with(CONSUME_LATENCY, f, labels, |h| {
                for age in ages {
                    h.observe(age.as_secs_f64());
                    n += 1;
                }
            });
        }
        if n > 0 {
            self.inc(CONSUMED, labels, n);
        }
    }

    /// A counter's or gauge's value (0 when never touched, and for a histogram: read those
    /// from [`Metrics::render`]).
    pub fn get(&self, name: &'static str, l: &[(&'static str, &str)]) -> f64 {
        let l = labels(l);
        match self.family(name) {
            Some(Handle::Counter(f)) => f.get(&l).map(|c| c.get() as f64),
            Some(Handle::Gauge(f)) => f.get(&l).map(|g| g.get()),
            Some(Handle::Histogram(_)) | None => None,
        }
        .unwrap_or(0.0)
    }

    /// The sum of [`get`](Metrics::get) over every label set of `name`.
    pub fn total(&self, name: &'static str) -> f64 {
        let sets: Vec<Labels> = {
            let seen = self.0.seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.get(name).map(|s| s.iter().cloned().collect()).unwrap_or_default()
        };
        sets.iter()
            .map(|l| {
                let l: Vec<(&'static str, &str)> =
                    l.iter().map(|(k, v)| (*k, v.as_str())).collect();
                self.get(name, &l)
            })
            .sum()
    }

    /// Prometheus text exposition format (0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.0.registry);
        out
    }
}

/// The time from `born_at` (ms since the Unix epoch) to `now` (the same), never negative.
pub fn age(born_at: i64, now: i64) -> Duration {
    Duration::from_millis(u64::try_from(now.saturating_sub(born_at)).unwrap_or(0))
}

/// The `Content-Type` of [`Metrics::render`].
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text_under_the_declared_names() {
        let m = Metrics::new();
        let labels = [("topic", "order-created"), ("group", "stock-consumer-group")];
        m.inc(CONSUMED, &labels, 2);
        m.set(OUTBOX_BACKLOG, &[("service", "order")], 3.0);
        m.observe(CONSUME_LATENCY, &labels, Duration::from_millis(30));
        let text = m.render();
        assert!(text.contains("# TYPE orderflow_messages_consumed_total counter"), "{text}");
        assert!(text.contains(
            "orderflow_messages_consumed_total{topic=\"order-created\",group=\"stock-consumer-group\"} 2"
        ), "{text}");
        assert!(text.contains("orderflow_outbox_backlog{service=\"order\"} 3"), "{text}");
        assert!(text.contains("# TYPE orderflow_consume_latency_seconds histogram"), "{text}");
        assert!(text.contains(
            "orderflow_consume_latency_seconds_bucket{le=\"0.05\",topic=\"order-created\",group=\"stock-consumer-group\"} 1"
        ) || text.contains(
            "orderflow_consume_latency_seconds_bucket{topic=\"order-created\",group=\"stock-consumer-group\",le=\"0.05\"} 1"
        ), "{text}");
        assert_eq!(m.get(CONSUMED, &labels), 2.0);
        assert!(text.contains(
            "orderflow_consume_latency_seconds_count{topic=\"order-created\",group=\"stock-consumer-group\"} 1"
        ), "{text}");
    }

    #[test]
    fn total_sums_every_label_set() {
        let m = Metrics::new();
        m.inc(PUBLISHED, &[("topic", "a")], 2);
        m.inc(PUBLISHED, &[("topic", "b")], 3);
        m.inc(PUBLISHED, &[("topic", "a")], 1);
        assert_eq!(m.total(PUBLISHED), 6.0);
        assert_eq!(m.total(DUPLICATES), 0.0);
    }

    #[test]
    fn every_family_is_declared_once_with_help() {
        let mut names = HashSet::new();
        for (name, _, help) in FAMILIES {
            assert!(names.insert(*name), "{name} declared twice");
            assert!(help.ends_with('.') || help.ends_with(')'), "{name}: {help}");
        }
    }
}
