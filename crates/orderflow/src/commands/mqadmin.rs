//! `orderflow mqadmin`: RocketMQ's admin commands, under mqadmin's names and flags, asked of
//! the running services (so they work on either binder), or with `-n` of a RocketMQ name
//! server directly.

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::Context;
use binding::ResetTo;
use clap::ArgAction;

use rocketmq_binder::{RocketMqBinder, RocketMqSettings};

use super::ServiceAdmin;
use crate::{
    admin_api::AdminApi,
    mqadmin::{self, Direct, Mqadmin, Source},
};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    service: ServiceAdmin,
    /// Ask this RocketMQ name server (host:port) directly instead of the services, as
    /// mqadmin does: for a cluster with no services running, and for updateTopic. An offset
    /// reset this way is refused while the group has consumers online.
    #[arg(short = 'n', long = "namesrvAddr", global = true)]
    name_server: Option<String>,
    /// Read and change a stopped `orderflow up`'s embedded broker in this data directory
    /// (its broker.db) instead of asking the services; refused while a process has it open.
    #[arg(long, global = true, conflicts_with = "name_server")]
    data_dir: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Every topic the broker knows.
    #[command(name = "topicList")]
    TopicList,
    /// Creates a topic on every master broker of the cluster, or changes its queue counts
    /// (with -n).
    #[command(name = "updateTopic")]
    UpdateTopic {
        #[arg(short = 't', long = "topic")]
        topic: String,
        #[arg(short = 'r', long = "readQueueNums", default_value_t = 8)]
        read_queues: u32,
        #[arg(short = 'w', long = "writeQueueNums", default_value_t = 8)]
        write_queues: u32,
        /// The cluster [default: every cluster at the name server].
        #[arg(short = 'c', long = "clusterName")]
        cluster: Option<String>,
    },
    /// A topic's queues: min and max offset, last update.
    #[command(name = "topicStatus")]
    TopicStatus {
        #[arg(short = 't', long = "topic")]
        topic: String,
    },
    /// Per consumer group, topic and queue: the broker's offset, the group's offset and the
    /// difference (messages not yet acknowledged); a Diff Total per group.
    #[command(name = "consumerProgress")]
    ConsumerProgress {
        /// The consumer group [default: every group the services consume as].
        #[arg(short = 'g', long = "consumerGroup")]
        group: Option<String>,
    },
    /// A consumer group's instances online and its subscriptions.
    #[command(name = "consumerConnection")]
    ConsumerConnection {
        #[arg(short = 'g', long = "consumerGroup")]
        group: String,
    },
    /// Moves a group's offset on a topic to the first message stored at or after a time:
    /// every later message is delivered (again; the inbox absorbs what was handled), the
    /// earlier ones count as consumed. Safe while the services run.
    #[command(name = "resetOffsetByTime")]
    ResetOffsetByTime {
        #[arg(short = 'g', long = "group")]
        group: String,
        #[arg(short = 't', long = "topic")]
        topic: String,
        /// Milliseconds since the epoch, yyyy-MM-dd#HH:mm:ss:SSS (UTC), `now`, or -1 for
        /// past the last message.
        #[arg(short = 's', long = "timestamp", allow_hyphen_values = true)]
        timestamp: String,
        /// With false, a queue is only moved back, never forward.
        #[arg(short = 'f', long = "force", default_value_t = true, action = ArgAction::Set)]
        force: bool,
    },
    /// Moves a group's offset on a topic past its last message: what is waiting is skipped.
    #[command(name = "skipAccumulatedMessage")]
    SkipAccumulatedMessage {
        #[arg(short = 'g', long = "group")]
        group: String,
        #[arg(short = 't', long = "topic")]
        topic: String,
        #[arg(short = 'f', long = "force", default_value_t = true, action = ArgAction::Set)]
        force: bool,
    },
    /// A topic's messages whose KEYS is the key (for our events, the orderNo).
    #[command(name = "queryMsgByKey")]
    QueryMsgByKey {
        #[arg(short = 't', long = "topic")]
        topic: String,
        #[arg(short = 'k', long = "msgKey")]
        key: String,
    },
    /// One message: headers, properties, body, and which groups have consumed it.
    #[command(name = "queryMsgById")]
    QueryMsgById {
        #[arg(short = 'i', long = "msgId")]
        id: String,
    },
    /// Publishes a message. With a tag that names one of our events (`-c ORDER_CREATED`) it
    /// is completed as the Java service's producer sends it: eventType, the body's eventId,
    /// contentType, and KEYS = the body's orderNo, unless given.
    #[command(name = "sendMessage")]
    SendMessage {
        #[arg(short = 't', long = "topic")]
        topic: String,
        /// The body, or @FILE to read it from a file.
        #[arg(short = 'p', long = "body")]
        body: String,
        #[arg(short = 'c', long = "tags")]
        tags: Option<String>,
        #[arg(short = 'k', long = "key")]
        keys: Option<String>,
        /// A user property, KEY=VALUE (repeat the flag).
        #[arg(long = "property", value_parser = property)]
        properties: Vec<(String, String)>,
    },
}

fn property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{text:?}: expected KEY=VALUE")),
    }
}

/// `-s` as mqadmin reads it.
fn reset_to(text: &str, now_millis: i64) -> anyhow::Result<ResetTo> {
    match text.trim() {
        "now" => Ok(ResetTo::Time(now_millis)),
        "-1" => Ok(ResetTo::Latest),
        t => {
            if let Ok(millis) = t.parse::<i64>() {
                anyhow::ensure!(millis >= 0, "-s {t}: a time must be 0 or more (or -1)");
                return Ok(ResetTo::Time(millis));
            }
            let at = chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d#%H:%M:%S:%3f")
                .with_context(|| {
                    format!("-s {t:?}: expected milliseconds, yyyy-MM-dd#HH:mm:ss:SSS, now or -1")
                })?;
            Ok(ResetTo::Time(at.and_utc().timestamp_millis()))
        }
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let source = match (&args.name_server, &args.data_dir) {
        (Some(name_server), _) => {
            Source::Direct(Direct::RocketMq(Box::new(Box::pin(connect(name_server)).await?)))
        }
        (None, Some(dir)) => Source::Direct(Direct::Stored(Box::new(stored(dir).await?))),
        (None, None) => {
            let (urls, token) = args.service.urls_and_token()?;
            Source::Services { api: AdminApi::new(&token), urls }
        }
    };
    let m = Mqadmin { source, json: args.service.json, now_millis: events::now_millis() };
    let out = command(&m, args.command).await;
    if let Source::Direct(d) = &m.source {
        d.shutdown().await;
    }
    println!("{}", out?);
    Ok(())
}

/// The embedded broker of a stopped `up` in `dir`, opened as a binder with no consumers.
async fn stored(dir: &std::path::Path) -> anyhow::Result<embedded::EmbeddedBinder> {
    let file = dir.join("broker.db");
    anyhow::ensure!(
        file.is_file(),
        "--data-dir {}: no broker.db there (the data directory of `orderflow up` holds it)",
        dir.display()
    );
    match embedded::EmbeddedBinder::open(&file, binding::Metrics::new()).await {
        Ok(b) => Ok(b),
        Err(binding::BinderError::InUse(_)) => anyhow::bail!(
            "--data-dir {}: broker.db is open in a running orderflow; ask it instead              (the same command without --data-dir)",
            dir.display()
        ),
        Err(e) => Err(e).with_context(|| format!("--data-dir {}", dir.display())),
    }
}

/// A RocketMQ client with no consumers: admin, reader and producer.
async fn connect(name_server: &str) -> anyhow::Result<RocketMqBinder> {
    let settings = RocketMqSettings {
        name_server: name_server.to_owned(),
        producer_group: "orderflow-mqadmin".into(),
        topics: Vec::new(),
        max_consume_threads: 1,
    };
    RocketMqBinder::connect(settings, binding::Metrics::new())
        .await
        .with_context(|| format!("-n {name_server}: cannot reach the name server"))
}

async fn command(m: &Mqadmin, command: Command) -> anyhow::Result<String> {
    match command {
        Command::TopicList => m.topic_list().await,
        Command::UpdateTopic { topic, read_queues, write_queues, cluster } => {
            anyhow::ensure!(
                (1..=1024).contains(&read_queues) && (1..=1024).contains(&write_queues),
                "-r and -w: a queue count must be 1 to 1024"
            );
            m.update_topic(&topic, read_queues, write_queues, cluster.as_deref()).await
        }
        Command::TopicStatus { topic } => m.topic_status(&topic).await,
        Command::ConsumerProgress { group } => m.consumer_progress(group.as_deref()).await,
        Command::ConsumerConnection { group } => m.consumer_connection(&group).await,
        Command::ResetOffsetByTime { group, topic, timestamp, force } => {
            let to = reset_to(&timestamp, m.now_millis)?;
            m.reset_offset(&group, &topic, to, force).await
        }
        Command::SkipAccumulatedMessage { group, topic, force } => {
            m.reset_offset(&group, &topic, ResetTo::Latest, force).await
        }
        Command::QueryMsgByKey { topic, key } => m.query_by_key(&topic, &key).await,
        Command::QueryMsgById { id } => m.query_by_id(&id).await,
        Command::SendMessage { topic, body, tags, keys, properties } => {
            let body = match body.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("-p @{path}: cannot read the body"))?,
                None => body,
            };
            anyhow::ensure!(!body.is_empty(), "-p: the body is empty");
            let given: BTreeMap<String, String> = properties.into_iter().collect();
            m.send_message(mqadmin::java_message(&topic, body, tags, keys, given)).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_times_read_as_mqadmin_reads_them() {
        assert_eq!(reset_to("now", 42).unwrap(), ResetTo::Time(42));
        assert_eq!(reset_to("-1", 42).unwrap(), ResetTo::Latest);
        assert_eq!(reset_to("1736900000000", 42).unwrap(), ResetTo::Time(1_736_900_000_000));
        assert_eq!(
            reset_to("2025-01-15#00:13:20:000", 42).unwrap(),
            ResetTo::Time(1_736_900_000_000)
        );
        let e = reset_to("yesterday", 42).unwrap_err().to_string();
        assert!(e.contains("yyyy-MM-dd#HH:mm:ss:SSS"), "{e}");
        assert!(reset_to("-5", 42).is_err());
    }
}
