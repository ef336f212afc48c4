//! `orderflow mqadmin ...`: RocketMQ's `mqadmin` commands under their own names and flags,
//! answered by the running services' admin API (`/admin/consumer-progress`), so the same
//! command works on the embedded binder and on RocketMQ (where a service reads the broker's
//! own offsets through the client's admin API).
//!
//! So far: `consumerProgress`.

use httpkit::ConsumerProgress;

use crate::admin_api::AdminApi;

/// `consumerProgress [-g GROUP]`: per consumer group and topic, and per queue on RocketMQ,
/// the broker offset, the group's offset and the difference (messages not yet acknowledged),
/// and the age of the oldest of those; a `Diff Total` per group. Each group and topic is
/// reported once, by the first service URL that consumes it.
pub async fn consumer_progress(
    urls: &[String],
    token: &str,
    group: Option<&str>,
    json: bool,
    now_millis: i64,
) -> anyhow::Result<String> {
    let api = AdminApi::new(token);
    let mut all: Vec<ConsumerProgress> = Vec::new();
    for base in urls {
        let url = format!("{base}/admin/consumer-progress");
        let body = api.expect_ok(reqwest::Method::GET, &url).await?;
        let found: Vec<ConsumerProgress> = serde_json::from_value(body)
            .map_err(|e| anyhow::anyhow!("{url}: unexpected answer: {e}"))?;
        for p in found {
            let wanted = group.is_none_or(|g| g == p.group);
            if wanted && !all.iter().any(|q| q.group == p.group && q.topic == p.topic) {
                all.push(p);
            }
        }
    }
    if let Some(g) = group
        && all.is_empty()
    {
        anyhow::bail!("no consumer group {g:?} at {}", urls.join(", "));
    }
    all.sort_by(|a, b| (&a.group, &a.topic).cmp(&(&b.group, &b.topic)));
    if json {
        return Ok(serde_json::to_string_pretty(&all)?);
    }
    Ok(table(&all, now_millis))
}

fn table(all: &[ConsumerProgress], now_millis: i64) -> String {
    let row = |cells: [&dyn std::fmt::Display; 7]| {
        let [group, topic, broker, queue, broker_offset, consumer_offset, diff] = cells;
        format!(
            "{group:<26} {topic:<20} {broker:<16} {queue:>4} {broker_offset:>14} {consumer_offset:>16} {diff:>8}\n"
        )
    };
    let mut out = row([
        &"#Group",
        &"#Topic",
        &"#Broker Name",
        &"#QID",
        &"#Broker Offset",
        &"#Consumer Offset",
        &"#Diff",
    ]);
    for p in all {
        if p.lag.queues.is_empty() {
            // The embedded binder keeps no per-queue offsets: one row for the topic.
            out.push_str(&row([
                &p.group,
                &p.topic,
                &"embedded",
                &"-",
                &"-",
                &"-",
                &p.lag.messages,
            ]));
        }
        for q in &p.lag.queues {
            out.push_str(&row([
                &p.group,
                &p.topic,
                &q.broker,
                &q.queue_id,
                &q.broker_offset,
                &q.consumer_offset,
                &q.lag(),
            ]));
        }
    }
    let mut groups: Vec<&str> = all.iter().map(|p| p.group.as_str()).collect();
    groups.dedup();
    for g in groups {
        let of_group = || all.iter().filter(|p| p.group == g);
        let diff: i64 = of_group().map(|p| p.lag.messages).sum();
        let oldest = match of_group().filter_map(|p| p.lag.oldest_born_at).min() {
            Some(born) => format!("{:.1} s", (now_millis - born).max(0) as f64 / 1000.0),
            None => "-".into(),
        };
        out.push_str(&format!("\n{g}: Diff Total: {diff}, oldest waiting: {oldest}"));
    }
    out
}
