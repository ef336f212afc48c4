//! `orderflow bench`: a load generator for a running system (embedded `up`, or the
//! distributed topology), over HTTP, and the two baselines it is judged against.
//!
//! - Load: `POST /api/orders` at a fixed rate (`--rate`, open loop: a slow system does not
//!   slow the schedule) or flat out (`--concurrency` clients), for `--count` orders or
//!   `--duration`. Every order buys one unit of one product (stock is topped up first), as a
//!   bench user of its own so its orders can be told apart.
//! - End to end: the run ends when every order is terminal (`orderflow_orders{status}` on the
//!   order service's `/metrics`); orders/s is orders over the time from the first create to
//!   the last terminal. Create latency is the client's HTTP round trip; create → PAID is the
//!   order's own `updatedAt - createdAt` (server clock; PAID is its last change).
//! - Messages/s per topic: `orderflow_messages_published_total{topic}` summed over the
//!   services' `/metrics`, before and after.
//! - CPU and memory of the processes listening on the services' ports (`/proc`), sampled
//!   every 250 ms: average CPU (100% = one core) and peak RSS.
//! - Baselines, in the same run: the raw embedded binder round trip (publish → consume, no
//!   business logic, one message per publish as the relay sends them; on RocketMQ with
//!   `--raw-name-server`) and the disk's durable commit rate (one-row SQLite commits, `synchronous=FULL`), on the same disk.
//!
//! The report is a table, or JSON with `--json`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use async_trait::async_trait;
use binding::{Binder, ConsumerBinding, Delivery, Message, MessageHandler, Metrics, Outcome};
use embedded::EmbeddedBinder;
use serde_json::Value;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The order service.
    pub order_url: String,
    /// One URL per process whose `/metrics` counts messages and whose CPU and memory are
    /// measured (`up`: one, its three ports share a registry; distributed: the three).
    pub service_urls: Vec<String>,
    pub stock_url: String,
    pub admin_token: String,
    /// Orders per second; `None`: flat out.
    pub rate: Option<f64>,
    pub concurrency: usize,
    pub count: Option<usize>,
    pub duration: Option<Duration>,
    pub product: i64,
    /// Where the baselines write (the disk the system uses).
    pub scratch_dir: PathBuf,
    /// Messages for the raw binder round trip (0: skip the baselines).
    pub baseline_messages: usize,
    /// Measure the raw round trip on this RocketMQ name server instead of the embedded binder.
    pub raw_name_server: Option<String>,
    pub settle_limit: Duration,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub samples: usize,
}

impl Latency {
    fn of(mut ms: Vec<f64>) -> Latency {
        if ms.is_empty() {
            return Latency::default();
        }
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
        Latency { p50: at(0.50), p90: at(0.90), p99: at(0.99), max: at(1.0), samples: ms.len() }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BenchReport {
    pub orders: usize,
    pub paid: usize,
    pub cancelled: usize,
    pub offered_rate: Option<f64>,
    pub create_rate: f64,
    /// Orders per second from the first create to the last terminal order.
    pub end_to_end_rate: f64,
    pub create_latency_ms: Latency,
    pub create_to_paid_ms: Latency,
    pub messages_per_second: BTreeMap<String, f64>,
    pub messages_per_order: f64,
    pub cpu_percent: Option<f64>,
    pub peak_rss_mb: Option<f64>,
    /// Raw binder publish → consume (embedded, or RocketMQ), messages per second.
    pub raw_binder_rate: Option<f64>,
    /// End-to-end rate over (raw rate / messages per order).
    pub ratio_to_raw: Option<f64>,
    /// Durable one-row SQLite commits per second on the same disk.
    pub disk_commit_rate: Option<f64>,
    pub seconds: f64,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let l = |x: &Latency| {
            format!(
                "p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1} ms ({} samples)",
                x.p50, x.p90, x.p99, x.max, x.samples
            )
        };
        let opt = |x: Option<f64>, unit: &str| {
            x.map(|v| format!("{v:.1}{unit}")).unwrap_or_else(|| "-".into())
        };
        writeln!(
            f,
            "orders                 {} ({} paid, {} cancelled)",
            self.orders, self.paid, self.cancelled
        )?;
        writeln!(
            f,
            "offered                {}",
            self.offered_rate
                .map(|r| format!("{r:.0} orders/s"))
                .unwrap_or_else(|| "flat out".into())
        )?;
        writeln!(f, "created                {:.1} orders/s", self.create_rate)?;
        writeln!(
            f,
            "end to end             {:.1} orders/s (create -> terminal)",
            self.end_to_end_rate
        )?;
        writeln!(f, "create latency         {}", l(&self.create_latency_ms))?;
        writeln!(f, "create -> PAID         {}", l(&self.create_to_paid_ms))?;
        writeln!(f, "messages per order     {:.2}", self.messages_per_order)?;
        for (topic, rate) in &self.messages_per_second {
            writeln!(f, "  {topic:<20} {rate:.1} msg/s")?;
        }
        writeln!(f, "CPU                    {}", opt(self.cpu_percent, " % (100 = one core)"))?;
        writeln!(f, "peak RSS               {}", opt(self.peak_rss_mb, " MB"))?;
        writeln!(f, "raw binder round trip  {}", opt(self.raw_binder_rate, " msg/s"))?;
        writeln!(
            f,
            "  end to end / (raw / messages per order) = {}",
            opt(self.ratio_to_raw.map(|r| r * 100.0), " %")
        )?;
        write!(f, "disk durable commits   {}", opt(self.disk_commit_rate, " commits/s"))
    }
}

/// Runs the load, then the baselines; `progress` gets a line now and then.
pub async fn run(
    cfg: &BenchConfig,
    progress: &(dyn Fn(String) + Sync),
) -> anyhow::Result<BenchReport> {
    let http =
        reqwest::Client::builder().pool_max_idle_per_host(cfg.concurrency.max(1) * 2).build()?;
    anyhow::ensure!(cfg.count.is_some() || cfg.duration.is_some(), "give a count or a duration");
    let planned = cfg.count.unwrap_or(usize::MAX);
    // Enough stock that every order can be paid.
    let units = cfg.count.map(|n| n as i64).unwrap_or_else(|| {
        (cfg.rate.unwrap_or(5_000.0) * cfg.duration.map(|d| d.as_secs_f64()).unwrap_or(60.0) * 2.0)
            as i64
    });
    let r = http
        .put(format!("{}/api/admin/stock/{}", cfg.stock_url, cfg.product))
        .bearer_auth(&cfg.admin_token)
        .json(&serde_json::json!({"available": units.max(1_000)}))
        .send()
        .await
        .with_context(|| format!("{}: no answer (is the system running?)", cfg.stock_url))?;
    anyhow::ensure!(
        r.status().is_success(),
        "topping up stock of product {}: {}",
        cfg.product,
        r.status()
    );

    let terminal_before = terminal_orders(&http, &cfg.order_url).await?;
    let published_before = published(&http, &cfg.service_urls).await?;
    let sampler = ProcessSampler::start(&cfg.service_urls);
    let user = 900_000_000 + i64::from(rand_u16());

    let started = Instant::now();
    let deadline = cfg.duration.map(|d| started + d);
    let next = Arc::new(AtomicUsize::new(0));
    let created: Arc<Mutex<Vec<(String, f64)>>> = Arc::new(Mutex::new(Vec::new()));
    let mut workers = tokio::task::JoinSet::new();
    let workers_n = cfg.concurrency.max(1);
    for _ in 0..workers_n {
        let (http, url, next, created) =
            (http.clone(), format!("{}/api/orders", cfg.order_url), next.clone(), created.clone());
        let (rate, product) = (cfg.rate, cfg.product);
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= planned || deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok::<_, anyhow::Error>(());
                }
                if let Some(rate) = rate {
                    // Open loop: order i is due at i / rate, however the earlier ones went.
                    let due = started + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let body = serde_json::json!({"userId": user, "items": [{"productId": product, "quantity": 1}]});
                let sent = Instant::now();
                let r = http.post(&url).json(&body).send().await.context("creating an order")?;
                anyhow::ensure!(r.status() == reqwest::StatusCode::CREATED, "creating an order: {}", r.status());
                let v: Value = r.json().await?;
                let no = v["orderNo"].as_str().unwrap_or_default().to_owned();
                let ms = sent.elapsed().as_secs_f64() * 1000.0;
                created.lock().unwrap_or_else(|p| p.into_inner()).push((no, ms));
            }
        });
    }
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                Some(r) => r.context("load worker")??,
                None => break,
            },
            _ = ticker.tick() => {
                let n = created.lock().unwrap_or_else(|p| p.into_inner()).len();
                progress(format!("created {n} orders, {:.0}/s", n as f64 / started.elapsed().as_secs_f64()));
            }
        }
    }
    let create_secs = started.elapsed().as_secs_f64();
    let created = std::mem::take(&mut *created.lock().unwrap_or_else(|p| p.into_inner()));
    let orders = created.len();
    progress(format!("created {orders} orders in {create_secs:.1} s; waiting for them to end"));

    let settle_start = Instant::now();
    let (paid, cancelled) = loop {
        let (p, c) = terminal_orders(&http, &cfg.order_url).await?;
        let done = (p + c).saturating_sub(terminal_before.0 + terminal_before.1);
        if done >= orders {
            break (p - terminal_before.0, c - terminal_before.1);
        }
        anyhow::ensure!(
            settle_start.elapsed() < cfg.settle_limit,
            "{} orders still not terminal after {:?}",
            orders - done,
            cfg.settle_limit
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let seconds = started.elapsed().as_secs_f64();
    let (cpu_percent, peak_rss_mb) = sampler.stop().await;
    let published_after = published(&http, &cfg.service_urls).await?;
    let mut messages_per_second = BTreeMap::new();
    let mut messages = 0.0;
    for (topic, after) in &published_after {
        let n = after - published_before.get(topic).copied().unwrap_or(0.0);
        if n > 0.0 {
            messages += n;
            messages_per_second.insert(topic.clone(), n / seconds);
        }
    }

    progress("reading the orders' timings".into());
    let mut to_paid = Vec::new();
    let step = (orders / 5_000).max(1);
    for (no, _) in created.iter().step_by(step) {
        let v: Value =
            http.get(format!("{}/api/orders/{no}", cfg.order_url)).send().await?.json().await?;
        if v["status"] == "PAID" {
            let (c, u) =
                (v["createdAt"].as_i64().unwrap_or(0), v["updatedAt"].as_i64().unwrap_or(0));
            to_paid.push((u - c) as f64);
        }
    }

    let (raw_binder_rate, disk_commit_rate) = if cfg.baseline_messages > 0 {
        progress(format!("baseline: raw binder round trip of {} messages", cfg.baseline_messages));
        let raw = raw_binder_rate(
            &cfg.scratch_dir,
            cfg.raw_name_server.as_deref(),
            cfg.baseline_messages,
        )
        .await?;
        progress("baseline: durable commits".into());
        (Some(raw), Some(disk_commit_rate(&cfg.scratch_dir, 500).await?))
    } else {
        (None, None)
    };
    let messages_per_order = if orders > 0 { messages / orders as f64 } else { 0.0 };
    let end_to_end_rate = orders as f64 / seconds;
    Ok(BenchReport {
        orders,
        paid,
        cancelled,
        offered_rate: cfg.rate,
        create_rate: orders as f64 / create_secs,
        end_to_end_rate,
        create_latency_ms: Latency::of(created.iter().map(|(_, ms)| *ms).collect()),
        create_to_paid_ms: Latency::of(to_paid),
        messages_per_second,
        messages_per_order,
        cpu_percent,
        peak_rss_mb,
        raw_binder_rate,
        ratio_to_raw: raw_binder_rate
            .filter(|_| messages_per_order > 0.0)
            .map(|raw| end_to_end_rate / (raw / messages_per_order)),
        disk_commit_rate,
        seconds,
    })
}

fn rand_u16() -> u16 {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        % 65_521) as u16
}

async fn metrics_text(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    Ok(http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .with_context(|| format!("{base}/metrics"))?
        .text()
        .await?)
}

/// The value of each `name{label="x"}` line, by x.
fn family(text: &str, name: &str, label: &str) -> BTreeMap<String, f64> {
    let prefix = format!("{name}{{");
    let key = format!("{label}=\"");
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with(&prefix)) {
        let Some((labels, value)) = line[prefix.len()..].split_once("} ") else { continue };
        let Some(start) = labels.find(&key) else { continue };
        let rest = &labels[start + key.len()..];
        let Some(end) = rest.find('"') else { continue };
        if let Ok(v) = value.trim().parse::<f64>() {
            *out.entry(rest[..end].to_owned()).or_default() += v;
        }
    }
    out
}

async fn terminal_orders(
    http: &reqwest::Client,
    order_url: &str,
) -> anyhow::Result<(usize, usize)> {
    let by_status = family(&metrics_text(http, order_url).await?, "orderflow_orders", "status");
    let n = |s: &str| by_status.get(s).copied().unwrap_or(0.0) as usize;
    Ok((n("PAID"), n("CANCELLED")))
}

async fn published(
    http: &reqwest::Client,
    urls: &[String],
) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut total = BTreeMap::new();
    for url in urls {
        let text = metrics_text(http, url).await?;
        for (topic, v) in family(&text, "orderflow_messages_published_total", "topic") {
            *total.entry(topic).or_default() += v;
        }
    }
    Ok(total)
}

/// Samples the CPU time and RSS of the processes listening on the services' ports.
struct ProcessSampler {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<(Option<f64>, Option<f64>)>,
}

impl ProcessSampler {
    fn start(urls: &[String]) -> ProcessSampler {
        let ports: Vec<u16> = urls
            .iter()
            .filter_map(|u| u.rsplit(':').next()?.trim_end_matches('/').parse().ok())
            .collect();
        let pids = listening_pids(&ports);
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            if pids.is_empty() {
                return (None, None);
            }
            let ticks = clock_ticks();
            let started = Instant::now();
            let cpu0: f64 = pids.iter().filter_map(|p| cpu_ticks(*p)).sum();
            let mut peak = 0.0f64;
            loop {
                peak = peak.max(pids.iter().filter_map(|p| rss_mb(*p)).sum());
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
            let cpu1: f64 = pids.iter().filter_map(|p| cpu_ticks(*p)).sum();
            (Some((cpu1 - cpu0) / ticks / started.elapsed().as_secs_f64() * 100.0), Some(peak))
        });
        ProcessSampler { stop, task }
    }

    async fn stop(self) -> (Option<f64>, Option<f64>) {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or((None, None))
    }
}

/// Processes with a listening TCP socket on one of `ports` (Linux `/proc`).
fn listening_pids(ports: &[u16]) -> Vec<u32> {
    let mut inodes = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (cols.get(1), cols.get(3), cols.get(9))
            else {
                continue;
            };
            let port = local.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if *state == "0A" && port.is_some_and(|p| ports.contains(&p)) {
                inodes.insert(format!("socket:[{inode}]"));
            }
        }
    }
    let mut pids = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else { return pids };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else { continue };
        if fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| inodes.contains(&*l.to_string_lossy()))
        }) {
            pids.push(pid);
        }
    }
    pids
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    Some(fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?)
}

fn rss_mb(pid: u32) -> Option<f64> {
    Some(binding::metrics::resident_bytes(&pid.to_string())? as f64 / 1_048_576.0)
}

/// Counts deliveries; signals when `target` were seen.
struct Counter {
    seen: AtomicUsize,
    target: usize,
    done: tokio::sync::Notify,
}

#[async_trait]
impl MessageHandler for Counter {
    async fn handle(&self, batch: &[Delivery]) -> Vec<Outcome> {
        if self.seen.fetch_add(batch.len(), Ordering::SeqCst) + batch.len() >= self.target {
            self.done.notify_one();
        }
        vec![Outcome::Done; batch.len()]
    }
}

/// The binder alone: `n` messages published one per call by 4 publishers, consumed by one
/// group with the seed's settings; messages per second from first publish to last ack. On
/// the embedded binder in a scratch file under `dir`, or on the RocketMQ cluster of
/// `name_server`.
pub async fn raw_binder_rate(
    dir: &Path,
    name_server: Option<&str>,
    n: usize,
) -> anyhow::Result<f64> {
    const TOPIC: &str = "orderflow-raw-bench";
    let scratch = tempfile::tempdir_in(dir).context("scratch directory for the baseline")?;
    let binder: Arc<dyn Binder> = match name_server {
        None => {
            Arc::new(EmbeddedBinder::open(&scratch.path().join("raw.db"), Metrics::new()).await?)
        }
        Some(ns) => {
            let settings = rocketmq_binder::RocketMqSettings {
                name_server: ns.to_owned(),
                producer_group: "orderflow-raw-bench-producer".into(),
                topics: vec![TOPIC.into()],
                max_consume_threads: 4,
            };
            Arc::new(rocketmq_binder::RocketMqBinder::connect(settings, Metrics::new()).await?)
        }
    };
    let counter = Arc::new(Counter {
        seen: AtomicUsize::new(0),
        target: n,
        done: tokio::sync::Notify::new(),
    });
    let group = format!("orderflow-raw-bench-{}", rand_u16());
    binder
        .bind_consumer(
            ConsumerBinding::with_defaults("raw-in-0", TOPIC, &group, "RAW"),
            counter.clone(),
        )
        .await?;
    binder.start().await?;
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut publishers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (binder, next) = (binder.clone(), next.clone());
        publishers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                let m = Message {
                    topic: TOPIC.into(),
                    tags: "RAW".into(),
                    keys: format!("k{i}"),
                    properties: Default::default(),
                    body: b"{}".to_vec(),
                };
                binder.publish(&[m]).await?;
            }
        });
    }
    while let Some(r) = publishers.join_next().await {
        r??;
    }
    let done = counter.done.notified();
    if counter.seen.load(Ordering::SeqCst) < n {
        tokio::time::timeout(Duration::from_secs(600), done)
            .await
            .context("raw binder round trip did not finish")?;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    binder.shutdown().await;
    Ok(rate)
}

/// Durable one-row commits per second on `dir`'s disk (SQLite WAL, `synchronous=FULL`).
pub async fn disk_commit_rate(dir: &Path, n: usize) -> anyhow::Result<f64> {
    let scratch = tempfile::tempdir_in(dir).context("scratch directory for the baseline")?;
    let db = storage::Db::open_sqlite(&scratch.path().join("commits.db")).await?;
    db.migrate(
        "bench",
        &["CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, v BIGINT NOT NULL)"],
    )
    .await?;
    let mut writer = db.writer().await?;
    let started = Instant::now();
    for i in 0..n {
        writer.execute(sqlx::query("INSERT INTO t (v) VALUES ($1)").bind(i as i64)).await?;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    drop(writer);
    db.close().await;
    Ok(rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_metric_families() {
        let l = Latency::of((1..=100).map(f64::from).collect());
        assert_eq!((l.p50, l.p90, l.p99, l.max, l.samples), (51.0, 90.0, 99.0, 100.0, 100));
        let text = "# HELP x\norderflow_orders{status=\"PAID\"} 3\norderflow_orders{status=\"CANCELLED\"} 1\nother 2\n";
        let f = family(text, "orderflow_orders", "status");
        assert_eq!(f.get("PAID"), Some(&3.0));
        assert_eq!(f.get("CANCELLED"), Some(&1.0));
    }
}
