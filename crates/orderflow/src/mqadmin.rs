//! `orderflow mqadmin ...`: RocketMQ's `mqadmin` commands under their own names and flags.
//!
//! Asked of one of two [`Source`]s, rendered the same way:
//! - the running services' admin API (`crates/httpkit/src/broker.rs`), which works on either
//!   binder: broker-wide questions (topics, messages, sending) go to the first service that
//!   answers; an offset reset goes to the service that consumes the topic as that group, so
//!   its binder holds the group's deliveries while the offset moves;
//! - a RocketMQ name server (`-n`), through the client's admin API, as `mqadmin` itself: for
//!   a cluster with no services running, and for `updateTopic`;
//! - a stopped `up`'s data directory (`--data-dir`), its `broker.db` opened directly (refused
//!   while a process has it open: ask that process instead).

use std::collections::BTreeMap;

use binding::{Binder, GroupConnections, QueueOffset, QueueStatus, ResetTo, StoredMessage};
use embedded::EmbeddedBinder;
use httpkit::{ConsumerProgress, OffsetReset, Publish};
use rocketmq_binder::RocketMqBinder;
use serde_json::Value;

use crate::admin_api::{AdminApi, error_message};

/// Where the answers come from.
pub enum Source {
    /// The running services' admin API.
    Services { api: AdminApi, urls: Vec<String> },
    /// A broker asked directly.
    Direct(Direct),
}

/// A broker asked directly, as a binder with no consumers.
pub enum Direct {
    /// A RocketMQ cluster, through its name server.
    RocketMq(Box<RocketMqBinder>),
    /// The embedded broker's file of an `up` that is not running.
    Stored(Box<EmbeddedBinder>),
}

impl Direct {
    fn binder(&self) -> &dyn Binder {
        match self {
            Direct::RocketMq(b) => b.as_ref(),
            Direct::Stored(b) => b.as_ref(),
        }
    }

    pub async fn shutdown(&self) {
        self.binder().shutdown().await;
    }
}

/// The source, and how to answer.
pub struct Mqadmin {
    pub source: Source,
    pub json: bool,
    pub now_millis: i64,
}

/// `base` + `path` with the query pairs encoded (topic names such as `%DLQ%group` hold `%`).
fn url(base: &str, path: &str, query: &[(&str, &str)]) -> anyhow::Result<String> {
    let mut u = reqwest::Url::parse(&format!("{}{path}", base.trim_end_matches('/')))
        .map_err(|e| anyhow::anyhow!("{base}: not a URL: {e}"))?;
    if !query.is_empty() {
        u.query_pairs_mut().extend_pairs(query);
    }
    Ok(u.to_string())
}

/// A time as mqadmin prints it (UTC): `2026-12-02 14:24:39,123`.
fn time(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S,%3f").to_string())
        .unwrap_or_else(|| millis.to_string())
}

fn decode<T: serde::de::DeserializeOwned>(body: Value, what: &str) -> anyhow::Result<T> {
    serde_json::from_value(body).map_err(|e| anyhow::anyhow!("{what}: unexpected answer: {e}"))
}

impl Source {
    /// `path` asked of the first service that answers at all; any status but success is an
    /// error naming the URL.
    async fn first_answer(
        api: &AdminApi,
        urls: &[String],
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        json: Option<&Value>,
    ) -> anyhow::Result<Value> {
        for base in urls {
            let url = url(base, path, query)?;
            if let Some((status, body)) = api.try_send(method.clone(), &url, json).await? {
                if !status.is_success() {
                    anyhow::bail!("{url}: {status}: {}", error_message(&body));
                }
                return Ok(body);
            }
        }
        anyhow::bail!("no answer from {} (are the services running?)", urls.join(", "))
    }

    /// GET `path` of the first service that answers it.
    async fn get_any(
        api: &AdminApi,
        urls: &[String],
        path: &str,
        query: &[(&str, &str)],
    ) -> anyhow::Result<Value> {
        Self::first_answer(api, urls, reqwest::Method::GET, path, query, None).await
    }

    async fn topics(&self) -> anyhow::Result<Vec<String>> {
        match self {
            Source::Services { api, urls } => {
                decode(Self::get_any(api, urls, "/admin/topics", &[]).await?, "topics")
            }
            Source::Direct(d) => Ok(d.binder().admin().topics().await?),
        }
    }

    async fn topic_status(&self, topic: &str) -> anyhow::Result<Vec<QueueStatus>> {
        match self {
            Source::Services { api, urls } => {
                let body =
                    Self::get_any(api, urls, "/admin/topic-status", &[("topic", topic)]).await?;
                decode(body, "topic status")
            }
            Source::Direct(d) => Ok(d.binder().admin().topic_status(topic).await?),
        }
    }

    /// Each consumer binding's progress, of `group` or of every group.
    async fn progress(&self, group: Option<&str>) -> anyhow::Result<Vec<ConsumerProgress>> {
        let mut all: Vec<ConsumerProgress> = Vec::new();
        match self {
            Source::Services { api, urls } => {
                for base in urls {
                    let url = url(base, "/admin/consumer-progress", &[])?;
                    let found: Vec<ConsumerProgress> =
                        decode(api.expect_ok(reqwest::Method::GET, &url).await?, &url)?;
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
            }
            Source::Direct(Direct::Stored(b)) => {
                for (g, topic) in b.subscribed() {
                    if group.is_none_or(|wanted| wanted == g) {
                        let lag = b.lag(&g, &topic).await?;
                        all.push(ConsumerProgress { binding: String::new(), group: g, topic, lag });
                    }
                }
                if let Some(g) = group {
                    anyhow::ensure!(!all.is_empty(), "no consumer group {g:?} in broker.db");
                }
            }
            Source::Direct(Direct::RocketMq(b)) => {
                let Some(group) = group else {
                    anyhow::bail!("consumerProgress with -n needs -g <consumer group>");
                };
                for (topic, lag) in Box::pin(b.group_progress(group)).await? {
                    all.push(ConsumerProgress {
                        binding: String::new(),
                        group: group.to_owned(),
                        topic,
                        lag,
                    });
                }
                anyhow::ensure!(!all.is_empty(), "no consumer group {group:?} at the name server");
            }
        }
        all.sort_by(|a, b| (&a.group, &a.topic).cmp(&(&b.group, &b.topic)));
        Ok(all)
    }

    async fn connections(&self, group: &str) -> anyhow::Result<GroupConnections> {
        match self {
            Source::Services { api, urls } => {
                let mut merged: Option<GroupConnections> = None;
                for base in urls {
                    let url = url(base, "/admin/consumer-connection", &[("group", group)])?;
                    let (status, body) = api.call(reqwest::Method::GET, &url).await?;
                    if status == reqwest::StatusCode::NOT_FOUND {
                        continue;
                    }
                    if !status.is_success() {
                        anyhow::bail!("{url}: {status}: {}", error_message(&body));
                    }
                    let found: GroupConnections = decode(body, &url)?;
                    match &mut merged {
                        None => merged = Some(found),
                        Some(m) => {
                            for c in found.connections {
                                if !m.connections.iter().any(|x| x.client_id == c.client_id) {
                                    m.connections.push(c);
                                }
                            }
                            for s in found.subscriptions {
                                if !m.subscriptions.contains(&s) {
                                    m.subscriptions.push(s);
                                }
                            }
                        }
                    }
                }
                merged.ok_or_else(|| {
                    anyhow::anyhow!(
                        "no consumer of group {group:?} is online at {}",
                        urls.join(", ")
                    )
                })
            }
            Source::Direct(d) => Ok(d.binder().admin().consumer_connection(group).await?),
        }
    }

    async fn reset(
        &self,
        group: &str,
        topic: &str,
        to: ResetTo,
        force: bool,
    ) -> anyhow::Result<Vec<QueueOffset>> {
        match self {
            Source::Services { api, urls } => {
                let request = serde_json::to_value(OffsetReset {
                    group: group.to_owned(),
                    topic: topic.to_owned(),
                    reset_to: to,
                    force,
                })?;
                for base in urls {
                    let url = url(base, "/admin/consumer-offsets", &[])?;
                    let (status, body) =
                        api.send(reqwest::Method::POST, &url, Some(&request)).await?;
                    if status == reqwest::StatusCode::NOT_FOUND {
                        continue;
                    }
                    if !status.is_success() {
                        anyhow::bail!("{url}: {status}: {}", error_message(&body));
                    }
                    return decode(body, &url);
                }
                anyhow::bail!(
                    "no service at {} consumes topic {topic:?} as group {group:?}",
                    urls.join(", ")
                )
            }
            Source::Direct(d) => {
                Ok(d.binder().admin().reset_offset(group, topic, to, force).await?)
            }
        }
    }

    async fn by_key(&self, topic: &str, key: &str) -> anyhow::Result<Vec<StoredMessage>> {
        match self {
            Source::Services { api, urls } => {
                let body =
                    Self::get_any(api, urls, "/admin/messages", &[("topic", topic), ("key", key)])
                        .await?;
                decode(body, "messages")
            }
            Source::Direct(d) => Ok(d.binder().admin().messages_by_key(topic, key).await?),
        }
    }

    async fn by_id(&self, id: &str) -> anyhow::Result<StoredMessage> {
        match self {
            Source::Services { api, urls } => {
                let body =
                    Self::get_any(api, urls, &format!("/admin/messages/{}", encode(id)), &[])
                        .await?;
                decode(body, "message")
            }
            Source::Direct(d) => d
                .binder()
                .admin()
                .message_by_id(id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no message {id:?}")),
        }
    }

    async fn send(&self, message: &Publish) -> anyhow::Result<()> {
        match self {
            Source::Services { api, urls } => {
                let request = serde_json::to_value(message)?;
                let post = reqwest::Method::POST;
                Self::first_answer(api, urls, post, "/admin/messages", &[], Some(&request)).await?;
                Ok(())
            }
            Source::Direct(d) => {
                let m = binding::Message {
                    topic: message.topic.clone(),
                    tags: message.tags.clone(),
                    keys: message.keys.clone(),
                    properties: message.properties.clone(),
                    body: message.body.clone().into_bytes(),
                };
                Ok(d.binder().publish(std::slice::from_ref(&m)).await?)
            }
        }
    }
}

impl Mqadmin {
    fn to_json(&self, value: &impl serde::Serialize) -> anyhow::Result<String> {
        Ok(serde_json::to_string_pretty(value)?)
    }

    /// `topicList`: every topic the broker knows, one a line.
    pub async fn topic_list(&self) -> anyhow::Result<String> {
        let topics = self.source.topics().await?;
        if self.json {
            return self.to_json(&topics);
        }
        Ok(topics.join("\n"))
    }

    /// `topicStatus -t TOPIC`: per queue, the min and max offset and the last update.
    pub async fn topic_status(&self, topic: &str) -> anyhow::Result<String> {
        let queues = self.source.topic_status(topic).await?;
        if self.json {
            return self.to_json(&queues);
        }
        let mut out = format!(
            "{:<32} {:>4} {:>20} {:>20} {}\n",
            "#Broker Name", "#QID", "#Min Offset", "#Max Offset", "#Last Updated"
        );
        for q in &queues {
            let updated = q.last_updated.map(time).unwrap_or_default();
            out.push_str(&format!(
                "{:<32} {:>4} {:>20} {:>20} {updated}\n",
                q.broker, q.queue_id, q.min_offset, q.max_offset
            ));
        }
        Ok(out.trim_end().to_owned())
    }

    /// `consumerProgress [-g GROUP]`: per consumer group and topic, and per queue on
    /// RocketMQ, the broker offset, the group's offset and the difference (messages not yet
    /// acknowledged), and the age of the oldest of those; a `Diff Total` per group. Each
    /// group and topic is reported once, by the first service URL that consumes it.
    pub async fn consumer_progress(&self, group: Option<&str>) -> anyhow::Result<String> {
        let all = self.source.progress(group).await?;
        if self.json {
            return self.to_json(&all);
        }
        Ok(table(&all, self.now_millis))
    }

    /// `consumerConnection -g GROUP`: the group's instances and subscriptions.
    pub async fn consumer_connection(&self, group: &str) -> anyhow::Result<String> {
        let c = self.source.connections(group).await?;
        if self.json {
            return self.to_json(&c);
        }
        let mut out = format!(
            "{:<4} {:<48} {:<24} {:<10} {}\n",
            "#", "#ClientId", "#ClientAddr", "#Language", "#Version"
        );
        for (i, x) in c.connections.iter().enumerate() {
            out.push_str(&format!(
                "{:<4} {:<48} {:<24} {:<10} {}\n",
                i + 1,
                x.client_id,
                x.client_addr,
                x.language,
                x.version
            ));
        }
        out.push_str("\nBelow is subscription:\n");
        for (i, s) in c.subscriptions.iter().enumerate() {
            out.push_str(&format!(
                "{:<4} Topic: {:<32} SubExpression: {}\n",
                i + 1,
                s.topic,
                s.expression
            ));
        }
        out.push_str(&format!(
            "\nConsumeType: {}\nMessageModel: {}",
            c.consume_type, c.message_model
        ));
        Ok(out)
    }

    /// `resetOffsetByTime` / `skipAccumulatedMessage`.
    pub async fn reset_offset(
        &self,
        group: &str,
        topic: &str,
        to: ResetTo,
        force: bool,
    ) -> anyhow::Result<String> {
        let moved = self.source.reset(group, topic, to, force).await?;
        if self.json {
            return self.to_json(&moved);
        }
        let mut out = format!("{:<32} {:>8} {:>20}\n", "#brokerName", "#queueId", "#offset");
        for q in &moved {
            out.push_str(&format!("{:<32} {:>8} {:>20}\n", q.broker, q.queue_id, q.offset));
        }
        Ok(out.trim_end().to_owned())
    }

    /// `queryMsgByKey -t TOPIC -k KEY`: the topic's messages with that KEYS.
    pub async fn query_by_key(&self, topic: &str, key: &str) -> anyhow::Result<String> {
        let found = self.source.by_key(topic, key).await?;
        if self.json {
            return self.to_json(&found);
        }
        let mut out = format!("{:<40} {:>4} {:>20}\n", "#Message ID", "#QID", "#Offset");
        for m in &found {
            out.push_str(&format!(
                "{:<40} {:>4} {:>20}\n",
                m.message_id, m.queue_id, m.queue_offset
            ));
        }
        Ok(out.trim_end().to_owned())
    }

    /// `queryMsgById -i ID`: the message's headers, properties and body, and which groups
    /// have consumed it.
    pub async fn query_by_id(&self, id: &str) -> anyhow::Result<String> {
        let m = self.source.by_id(id).await?;
        if self.json {
            return self.to_json(&m);
        }
        let field = |name: &str, value: &dyn std::fmt::Display| {
            format!("{:<21}{value}\n", format!("{name}:"))
        };
        let mut out = String::new();
        out.push_str(&field("OffsetID", &m.message_id));
        out.push_str(&field("Topic", &m.topic));
        out.push_str(&field("Tags", &format!("[{}]", m.tags)));
        out.push_str(&field("Keys", &format!("[{}]", m.keys)));
        out.push_str(&field("Broker Name", &m.broker));
        out.push_str(&field("Queue ID", &m.queue_id));
        out.push_str(&field("Queue Offset", &m.queue_offset));
        out.push_str(&field("Born Timestamp", &time(m.born_at)));
        out.push_str(&field("Properties", &serde_json::to_string(&m.properties)?));
        out.push_str(&field("Message Body", &m.body));
        out.push_str(&format!("\n{:<40} {}\n", "#ConsumerGroup", "#TrackType"));
        for g in &m.groups {
            let track = if g.consumed { "CONSUMED" } else { "NOT_CONSUME_YET" };
            out.push_str(&format!("{:<40} {track}\n", g.group));
        }
        Ok(out.trim_end().to_owned())
    }

    /// `sendMessage`: publishes the message.
    pub async fn send_message(&self, message: Publish) -> anyhow::Result<String> {
        self.source.send(&message).await?;
        if self.json {
            return self
                .to_json(&serde_json::json!({ "topic": message.topic, "sendStatus": "SEND_OK" }));
        }
        Ok(format!(
            "{:<24} {:<24} {:<24} {}\n{:<24} {:<24} {:<24} SEND_OK",
            "#Topic", "#Tags", "#Keys", "#Send Result", message.topic, message.tags, message.keys
        ))
    }

    /// `updateTopic -t TOPIC [-r N] [-w N] [-c CLUSTER]` (with `-n` only).
    pub async fn update_topic(
        &self,
        topic: &str,
        read_queues: u32,
        write_queues: u32,
        cluster: Option<&str>,
    ) -> anyhow::Result<String> {
        let Source::Direct(Direct::RocketMq(b)) = &self.source else {
            anyhow::bail!(
                "updateTopic needs -n <name server>: it creates the topic on RocketMQ's brokers \
                 (the embedded binder needs no topics made)"
            );
        };
        let brokers = Box::pin(b.update_topic(topic, read_queues, write_queues, cluster)).await?;
        if self.json {
            return self
                .to_json(&serde_json::json!({ "topic": topic, "readQueueNums": read_queues,
                "writeQueueNums": write_queues, "brokers": brokers }));
        }
        Ok(brokers
            .iter()
            .map(|b| format!("create topic to {b} success.\nTopicConfig [topicName={topic}, readQueueNums={read_queues}, writeQueueNums={write_queues}, perm=RW-]"))
            .collect::<Vec<_>>()
            .join("\n"))
    }
}

/// A path segment, percent-encoded.
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The message `sendMessage` publishes: what the flags give, completed as a Java service's
/// producer sends an event when the tag names one (`ORDER_CREATED`, ...): `eventType` = the
/// tag, `eventId` = the body's `eventId`, `contentType=application/json`, and KEYS = the
/// body's `orderNo`. A property or key given on the command line is never replaced.
pub fn java_message(
    topic: &str,
    body: String,
    tags: Option<String>,
    keys: Option<String>,
    given: BTreeMap<String, String>,
) -> Publish {
    let tags = tags.unwrap_or_default();
    let json: Option<Value> = serde_json::from_str(&body).ok();
    let field = |name: &str| {
        json.as_ref().and_then(|j| j.get(name)).and_then(Value::as_str).map(str::to_owned)
    };
    let mut properties = BTreeMap::new();
    if events::EventType::from_tag(&tags).is_some() {
        properties.insert(events::PROP_EVENT_TYPE.to_owned(), tags.clone());
        if let Some(id) = field("eventId") {
            properties.insert(events::PROP_EVENT_ID.to_owned(), id);
        }
        properties.insert(events::PROP_CONTENT_TYPE.to_owned(), "application/json".to_owned());
    }
    properties.extend(given);
    let keys = keys.or_else(|| field("orderNo")).unwrap_or_default();
    Publish { topic: topic.to_owned(), tags, keys, properties, body }
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
