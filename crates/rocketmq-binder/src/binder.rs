//! The RocketMQ binder: the [`Binder`] contract on a RocketMQ cluster through
//! `rocketmq-client-rust` (remoting protocol: the Apache RocketMQ Rust broker here, a Java
//! RocketMQ 4.x/5.x cluster in production).
//!
//! Mapping of the binding settings:
//! - publish: one producer (group from the YAML's producer binding), sync send; the queue is
//!   chosen by a hash of KEYS (the orderNo), so one order's messages share a queue and an
//!   `orderly` consumer sees them in order. TAGS, KEYS and the user properties (`eventId`,
//!   `eventType`, `contentType`) are set as the Java producers set them.
//! - bind: one push consumer per consumer *group*, started by [`Binder::start`] once every
//!   binding is known, subscribed to all the group's destinations and dispatching each batch
//!   to its binding's handler by topic. (RocketMQ requires one consistent subscription set
//!   per group: one consumer per binding with a shared group, as the seed's services have,
//!   makes the broker drop subscriptions — `SubscriptionNotExist`.) Clustering mode
//!   (instances of a group share the queues), from the first offset for a new group.
//!   Per group: `concurrency` → consume threads (the sum over its bindings), `batch-size`
//!   → consume batch size (the smallest), `max-attempts` → reconsume times
//!   (`max-attempts - 1`, the largest), after which the broker moves the message to
//!   `%DLQ%<group>`; `orderly` on any binding → the orderly listener.
//! - outcomes: the client's listener cannot acknowledge part of a batch (1.0.0 passes an
//!   immutable context), so a `Retry` answers the whole batch `ReconsumeLater`; the
//!   neighbours that did succeed come back and the inbox acknowledges them as duplicates (no
//!   second effect). A `DeadLetter` is published to `%DLQ%<group>` at once by the binder
//!   (permanent failures are not retried) and acknowledged.
//! - The listener is synchronous and runs on the client runtime's blocking pool: it hands
//!   the batch to an async task over a channel and waits for the outcomes on a std channel,
//!   so no Tokio worker is ever blocked. The client runtime's blocking lanes are sized for
//!   the sum of the bindings' concurrency.
//! - Topics are created at startup when missing, through the admin API on every master
//!   broker (what the seed's `mqadmin updateTopic` does), so a broker with automatic topic
//!   creation off serves them.
//! - Dead letters are read with the classic pull consumer (deprecated in the client in favour
//!   of the lite pull consumer, but the direct way to read a queue from offset to offset),
//!   and replayed on their origin topic marked `replayGroup=<group>`: this binder's
//!   consumers of other groups acknowledge such a message without handling it.
//! - Lag comes from the broker's own offsets through the client's admin API
//!   (`examine_consume_stats`, what `mqadmin consumerProgress` shows): per queue, its max
//!   offset against the group's committed offset. The oldest unacknowledged message of a
//!   queue is the one at the group's offset; the reader pulls it for its born timestamp.
#![allow(deprecated)]

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc as std_mpsc,
    },
};

use async_trait::async_trait;
use binding::{
    Binder, BinderError, BindingControl, ConsumerBinding, DeadLetter, Delivery, Lag,
    MessageHandler, Metrics, Outcome, QueueLag, dlq_topic, metrics,
};
use events::Message;
use rocketmq_client_rust::{
    ClientRuntime, ClientRuntimeConfig, ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus,
    ConsumeOrderlyContext, ConsumeOrderlyStatus, DefaultMQAdminExt, DefaultMQProducer,
    DefaultMQPullConsumer, DefaultMQPushConsumer, MQAdminReadExt, MQPushConsumer,
    MessageListenerConcurrently, MessageListenerOrderly,
};
use rocketmq_model::common::{
    consumer::consume_from_where::ConsumeFromWhere,
    message::{
        message_ext::MessageExt, message_queue::MessageQueue, message_single::Message as MqMessage,
    },
};
use rocketmq_runtime::{RuntimeConfig, RuntimeOwner};
use tokio::sync::{MappedMutexGuard, mpsc, watch};

/// User properties a dead letter published by this binder carries. (RocketMQ reserves the
/// upper-case names such as `DLQ_ORIGIN_TOPIC` for itself.)
pub const PROP_DLQ_ORIGIN_TOPIC: &str = "dlqOriginTopic";
pub const PROP_DLQ_ERROR: &str = "dlqError";
pub const PROP_DLQ_ATTEMPTS: &str = "dlqAttempts";
/// On a replayed dead letter: the one group that should handle it.
pub const PROP_REPLAY_GROUP: &str = "replayGroup";
/// System properties in which a broker-made dead letter keeps its origin topic.
const SYSTEM_ORIGIN_TOPIC: [&str; 2] = ["DLQ_ORIGIN_TOPIC", "RETRY_TOPIC"];

const SEND_TIMEOUT_MS: u64 = 3_000;
/// The pull consumer's group (it reads, never commits offsets).
pub(crate) const READER_GROUP_PREFIX: &str = "orderflow-dlq-reader-";
/// Queues per topic created at startup.
const QUEUES: u32 = 4;

/// Settings of a RocketMQ binder.
#[derive(Debug, Clone)]
pub struct RocketMqSettings {
    pub name_server: String,
    /// The producer group (the YAML's `...producer.group`).
    pub producer_group: String,
    /// Topics to create when missing.
    pub topics: Vec<String>,
    /// Upper bound of consume threads over all bindings (sizes the blocking lanes).
    pub max_consume_threads: usize,
}

pub struct RocketMqBinder {
    settings: RocketMqSettings,
    pub(crate) metrics: Metrics,
    owner: Mutex<Option<RuntimeOwner>>,
    client: Arc<ClientRuntime>,
    sender: Arc<Sender>,
    /// Bindings waiting for `start`, by group.
    pending: Mutex<BTreeMap<String, Vec<Bound>>>,
    /// The running push consumer of each group.
    pub(crate) groups: tokio::sync::Mutex<BTreeMap<String, Group>>,
    /// Reads dead letters and the messages at a group's offsets (started on first use).
    reader: tokio::sync::Mutex<Option<DefaultMQPullConsumer>>,
    /// Reads the broker's consume stats (started on first use).
    admin: tokio::sync::Mutex<Option<DefaultMQAdminExt>>,
    shutting_down: AtomicBool,
}

pub(crate) struct Group {
    /// The group's bindings, to start its consumer again after an offset reset.
    pub(crate) bound: Vec<Bound>,
    pub(crate) consumer: DefaultMQPushConsumer,
    /// Set when this consumer stops (an offset reset replaces it, or shutdown): a batch it
    /// handed out that a paused binding still holds is then given back unhandled instead of
    /// applied.
    pub(crate) retired: watch::Sender<bool>,
}

#[derive(Clone)]
pub(crate) struct Bound {
    binding: ConsumerBinding,
    handler: Arc<dyn MessageHandler>,
    control: BindingControl,
}

/// The producer, shared by `publish` and the consumers' dead-lettering.
struct Sender {
    producer: tokio::sync::Mutex<DefaultMQProducer>,
}

pub(crate) fn unavailable(what: &str, e: impl std::fmt::Display) -> BinderError {
    BinderError::Unavailable(format!("rocketmq {what}: {e}"))
}

impl RocketMqBinder {
    /// Connects a producer to the name server and creates the missing topics.
    pub async fn connect(
        settings: RocketMqSettings,
        metrics: Metrics,
    ) -> Result<RocketMqBinder, BinderError> {
        let runtime = RuntimeConfig {
            thread_name: "rocketmq-client".into(),
            max_blocking_threads: (settings.max_consume_threads * 2).max(16),
            ..Default::default()
        };
        let owner = RuntimeOwner::plan(runtime)
            .map_err(|e| unavailable("runtime plan", e))?
            .build()
            .map_err(|e| unavailable("runtime", e))?;
        let client = ClientRuntime::try_new(
            owner.root_context().component("client"),
            ClientRuntimeConfig::default(),
            rocketmq_observability::TelemetryHandle::default(),
        )
        .map_err(|e| unavailable("client runtime", e))?;
        let mut producer = DefaultMQProducer::builder(client.clone())
            .producer_group(settings.producer_group.clone())
            .name_server_addr(settings.name_server.clone())
            .build();
        producer.start().await.map_err(|e| unavailable("producer start", e))?;
        let binder = RocketMqBinder {
            settings,
            metrics,
            owner: Mutex::new(Some(owner)),
            client,
            sender: Arc::new(Sender { producer: tokio::sync::Mutex::new(producer) }),
            pending: Mutex::new(BTreeMap::new()),
            groups: tokio::sync::Mutex::new(BTreeMap::new()),
            reader: tokio::sync::Mutex::new(None),
            admin: tokio::sync::Mutex::new(None),
            shutting_down: AtomicBool::new(false),
        };
        // Boxed: the admin calls' futures are deep, and would make every caller's deeper.
        Box::pin(binder.ensure_topics(&binder.settings.topics, QUEUES)).await?;
        Ok(binder)
    }
}

impl Sender {
    async fn send(&self, m: &Message) -> Result<(), BinderError> {
        let message = build(m)?;
        let producer = self.producer.lock().await;
        let result = producer
            .send_with_selector_timeout(message, select_by_key, m.keys.clone(), SEND_TIMEOUT_MS)
            .await
            .map_err(|e| unavailable("send", e))?;
        match result {
            Some(r) if r.send_status == rocketmq_model::result::SendStatus::SendOk => Ok(()),
            Some(r) => Err(unavailable("send", format!("{:?}", r.send_status))),
            None => Err(unavailable("send", "no result")),
        }
    }
}

/// A RocketMQ message from ours: TAGS, KEYS and the user properties.
fn build(m: &Message) -> Result<MqMessage, BinderError> {
    let mut builder =
        MqMessage::builder().topic(m.topic.as_str()).tags(m.tags.as_str()).body_slice(&m.body);
    if !m.keys.is_empty() {
        builder = builder.key(m.keys.as_str());
    }
    for (k, v) in &m.properties {
        builder = builder
            .raw_property(k.as_str(), v.as_str())
            .map_err(|e| unavailable(&format!("message property {k:?}"), e))?;
    }
    builder.build().map_err(|e| unavailable("message", e))
}

/// The client a lazily started slot holds (`None` only after shutdown took it).
fn started<'a, T>(
    slot: tokio::sync::MutexGuard<'a, Option<T>>,
    what: &str,
) -> Result<MappedMutexGuard<'a, T>, BinderError> {
    tokio::sync::MutexGuard::try_map(slot, Option::as_mut).map_err(|_| unavailable(what, "stopped"))
}

impl RocketMqBinder {
    /// The pull consumer that reads queues from an offset, started on the first call and
    /// kept (starting one takes seconds).
    pub(crate) async fn reader(
        &self,
    ) -> Result<MappedMutexGuard<'_, DefaultMQPullConsumer>, BinderError> {
        let mut reader = self.reader.lock().await;
        if reader.is_none() {
            let r = DefaultMQPullConsumer::builder(self.client.clone())
                .consumer_group(format!("{READER_GROUP_PREFIX}{}", self.settings.producer_group))
                .name_server_addr(self.settings.name_server.clone())
                .build()
                .map_err(|e| unavailable("reader", e))?;
            r.start().await.map_err(|e| unavailable("reader", e))?;
            *reader = Some(r);
        }
        started(reader, "reader")
    }

    /// The admin client, started on the first call and kept.
    pub(crate) async fn admin_client(
        &self,
    ) -> Result<MappedMutexGuard<'_, DefaultMQAdminExt>, BinderError> {
        let mut admin = self.admin.lock().await;
        if admin.is_none() {
            let mut a = DefaultMQAdminExt::new(self.client.clone());
            a.set_namesrv_addr(self.settings.name_server.as_str());
            a.start().await.map_err(|e| unavailable("admin", e))?;
            *admin = Some(a);
        }
        started(admin, "admin")
    }

    /// One push consumer for `group`, subscribed to every destination of its bindings.
    pub(crate) async fn start_group(
        &self,
        group: &str,
        bound: Vec<Bound>,
    ) -> Result<(DefaultMQPushConsumer, watch::Sender<bool>), BinderError> {
        // The binder dead-letters permanent failures itself: the DLQ topic must exist first.
        Box::pin(self.ensure_topics(&[dlq_topic(group)], 1)).await?;
        let bindings: Vec<&ConsumerBinding> = bound.iter().map(|b| &b.binding).collect();
        // Each binding gets its own share of the group's consume threads, so a paused (or
        // slow) binding holds only its own.
        let threads = bindings.iter().map(|b| b.concurrency).sum::<usize>().max(1);
        let batch = bindings.iter().map(|b| b.batch_size).min().unwrap_or(1);
        let attempts = bindings.iter().map(|b| b.max_attempts).max().unwrap_or(3);
        let orderly = bindings.iter().any(|b| b.orderly);
        let threads = u32::try_from(threads).unwrap_or(1).max(1);
        let mut consumer = DefaultMQPushConsumer::builder(self.client.clone())
            .consumer_group(group.to_owned())
            .name_server_addr(self.settings.name_server.clone())
            .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
            .consume_thread_min(threads)
            .consume_thread_max(threads)
            .consume_message_batch_max_size(u32::try_from(batch).unwrap_or(1))
            .max_reconsume_times(i32::try_from(attempts).unwrap_or(3) - 1)
            .build();
        let mut jobs = HashMap::new();
        let retired = watch::Sender::new(false);
        for Bound { binding, handler, control } in bound {
            consumer
                .subscribe(binding.destination.clone(), binding.subscription.to_string())
                .await
                .map_err(|e| unavailable("subscribe", e))?;
            let (tx, queue) = mpsc::unbounded_channel::<Job>();
            jobs.insert(binding.destination.clone(), tx);
            tracing::info!(binding = %binding.name, group = %binding.group, topic = %binding.destination,
                subscription = %binding.subscription, orderly = binding.orderly, "rocketmq consumer bound");
            tokio::spawn(serve_binding(
                binding,
                handler,
                control,
                queue,
                retired.subscribe(),
                self.metrics.clone(),
                self.sender.clone(),
            ));
        }
        let bridge = Bridge { jobs };
        if orderly {
            consumer.register_message_listener_orderly(bridge);
        } else {
            consumer.register_message_listener_concurrently(bridge);
        }
        consumer.start().await.map_err(|e| unavailable("consumer start", e))?;
        Ok((consumer, retired))
    }
}

/// The async side of one binding: runs the handler, dead-letters permanent failures, counts.
async fn serve_binding(
    b: ConsumerBinding,
    handler: Arc<dyn MessageHandler>,
    control: BindingControl,
    mut queue: mpsc::UnboundedReceiver<Job>,
    mut retired: watch::Receiver<bool>,
    metrics: Metrics,
    sender: Arc<Sender>,
) {
    while let Some((mut batch, reply)) = queue.recv().await {
        tokio::select! {
            _ = control.running() => {}
            _ = retired.wait_for(|r| *r) => {}
        }
        if *retired.borrow() {
            // The consumer that handed this batch out has stopped (its offsets were moved,
            // or the binder is shutting down): give it back unhandled; the broker's offsets
            // decide what the group gets next.
            let _ = reply.send(vec![Outcome::Retry("consumer stopped".into()); batch.len()]);
            continue;
        }
        // A dead letter replayed for another group: acknowledge it unhandled.
        let others: Vec<bool> = batch
            .iter_mut()
            .map(|d| d.message.properties.remove(PROP_REPLAY_GROUP).is_some_and(|g| g != b.group))
            .collect();
        let mine: Vec<Delivery> =
            batch.iter().zip(&others).filter(|(_, o)| !**o).map(|(d, _)| d.clone()).collect();
        let mut handled =
            if mine.is_empty() { Vec::new() } else { handler.handle(&mine).await }.into_iter();
        let mut outcomes: Vec<Outcome> = others
            .iter()
            .map(|o| {
                if *o {
                    Outcome::Done
                } else {
                    handled.next().unwrap_or(Outcome::Retry("no outcome".into()))
                }
            })
            .collect();
        let labels = [("topic", b.destination.as_str()), ("group", b.group.as_str())];
        let now = events::now_millis();
        for (d, o) in batch.iter().zip(outcomes.iter_mut()) {
            match o {
                Outcome::Done => metrics.acknowledged(&labels, [metrics::age(d.born_at, now)]),
                Outcome::Retry(error) => {
                    metrics.inc(metrics::FAILED, &labels, 1);
                    metrics.inc(metrics::RETRIED, &labels, 1);
                    tracing::warn!(topic = %b.destination, group = %b.group, attempt = d.attempt,
                        key = %d.message.keys, %error, "message will be redelivered");
                }
                Outcome::DeadLetter(error) => {
                    metrics.inc(metrics::FAILED, &labels, 1);
                    let mut m = d.message.clone();
                    m.properties.insert(PROP_DLQ_ORIGIN_TOPIC.into(), m.topic.clone());
                    m.properties.insert(PROP_DLQ_ERROR.into(), error.clone());
                    m.properties.insert(PROP_DLQ_ATTEMPTS.into(), d.attempt.to_string());
                    m.topic = dlq_topic(&b.group);
                    match sender.send(&m).await {
                        Ok(()) => {
                            metrics.inc(metrics::DEAD_LETTERED, &labels, 1);
                            tracing::error!(topic = %b.destination, group = %b.group, key = %m.keys,
                                error = %error, "message moved to the dead-letter queue");
                            *o = Outcome::Done;
                        }
                        Err(e) => {
                            tracing::warn!(topic = %b.destination, group = %b.group, error = %e,
                                "dead-letter publish failed; the message will be redelivered");
                            *o = Outcome::Retry(format!("dead-letter publish failed: {e}"));
                        }
                    }
                }
            }
        }
        let _ = reply.send(outcomes);
    }
}

/// Picks the queue of a key: the same orderNo always lands on the same queue.
#[allow(clippy::ptr_arg)] // the client's selector signature is `Fn(&[MessageQueue], &M, &T)` with T = String
fn select_by_key(queues: &[MessageQueue], _m: &MqMessage, key: &String) -> Option<MessageQueue> {
    if queues.is_empty() {
        return None;
    }
    let hash = key.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    queues.get((hash % queues.len() as u64) as usize).cloned()
}

/// Our message from a RocketMQ one: TAGS, KEYS, and the user properties.
pub(crate) fn from_ext(m: &MessageExt) -> Message {
    let system = &rocketmq_model::common::message::STRING_HASH_SET;
    let properties: BTreeMap<String, String> = m
        .properties()
        .iter()
        .filter(|(k, _)| !system.contains(k.as_str()))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Message {
        topic: m.topic().to_string(),
        tags: m.get_tags().map(|t| t.to_string()).unwrap_or_default(),
        keys: m.properties().get("KEYS").map(|k| k.to_string()).unwrap_or_default(),
        properties,
        body: m.body().map(|b| b.to_vec()).unwrap_or_default(),
    }
}

type Job = (Vec<Delivery>, std_mpsc::SyncSender<Vec<Outcome>>);

/// The synchronous listener of a group: hands each batch to the async side of its topic's
/// binding and waits for the outcomes.
struct Bridge {
    jobs: HashMap<String, mpsc::UnboundedSender<Job>>,
}

impl Bridge {
    fn run(&self, msgs: &[&MessageExt]) -> Vec<Outcome> {
        let batch: Vec<Delivery> = msgs
            .iter()
            .map(|m| Delivery {
                message: from_ext(m),
                attempt: u32::try_from(m.reconsume_times()).unwrap_or(0) + 1,
                message_id: m.msg_id().to_string(),
                born_at: m.born_timestamp(),
            })
            .collect();
        let n = batch.len();
        // A batch comes from one queue, so from one topic.
        let Some(jobs) = batch.first().and_then(|d| self.jobs.get(&d.message.topic)) else {
            let topic = batch.first().map(|d| d.message.topic.as_str()).unwrap_or_default();
            tracing::warn!(
                topic,
                "a message on a topic no binding of the group consumes; it will be redelivered"
            );
            return vec![Outcome::Retry("no binding for this topic".into()); n];
        };
        let (reply, outcomes) = std_mpsc::sync_channel(1);
        if jobs.send((batch, reply)).is_err() {
            return vec![Outcome::Retry("binder is shutting down".into()); n];
        }
        outcomes
            .recv()
            .unwrap_or_else(|_| vec![Outcome::Retry("handler dropped the batch".into()); n])
    }
}

impl MessageListenerConcurrently for Bridge {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        _context: &ConsumeConcurrentlyContext,
    ) -> rocketmq_client_rust::ClientResult<ConsumeConcurrentlyStatus> {
        let retry = self.run(msgs).iter().any(|o| matches!(o, Outcome::Retry(_)));
        Ok(if retry {
            ConsumeConcurrentlyStatus::ReconsumeLater
        } else {
            ConsumeConcurrentlyStatus::ConsumeSuccess
        })
    }
}

impl MessageListenerOrderly for Bridge {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        _context: &mut ConsumeOrderlyContext,
    ) -> rocketmq_client_rust::ClientResult<ConsumeOrderlyStatus> {
        let retry = self.run(msgs).iter().any(|o| matches!(o, Outcome::Retry(_)));
        Ok(if retry {
            ConsumeOrderlyStatus::SuspendCurrentQueueAMoment
        } else {
            ConsumeOrderlyStatus::Success
        })
    }
}

#[async_trait]
impl Binder for RocketMqBinder {
    fn system(&self) -> &'static str {
        "rocketmq"
    }

    async fn publish(&self, messages: &[Message]) -> Result<(), BinderError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(BinderError::ShuttingDown);
        }
        for m in messages {
            self.sender.send(m).await?;
            self.metrics.inc(metrics::PUBLISHED, &[("topic", &m.topic)], 1);
        }
        Ok(())
    }

    async fn bind_consumer(
        &self,
        binding: ConsumerBinding,
        handler: Arc<dyn MessageHandler>,
    ) -> Result<BindingControl, BinderError> {
        let control = BindingControl::new(binding.clone());
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.entry(binding.group.clone()).or_default().push(Bound {
            binding,
            handler,
            control: control.clone(),
        });
        Ok(control)
    }

    async fn start(&self) -> Result<(), BinderError> {
        let groups = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        for (group, bound) in groups {
            let (consumer, retired) = self.start_group(&group, bound.clone()).await?;
            self.groups.lock().await.insert(group, Group { bound, consumer, retired });
        }
        Ok(())
    }

    /// Readiness: the broker's route for a topic is known to the running producer (no new
    /// client per probe).
    async fn check(&self) -> Result<(), BinderError> {
        let topic = self.settings.topics.first().cloned().unwrap_or_else(|| "TBW102".into());
        let queues = self.sender.producer.lock().await.fetch_publish_message_queues(&topic).await;
        match queues {
            Ok(q) if !q.is_empty() => Ok(()),
            Ok(_) => Err(unavailable("route", format!("no queue for {topic}"))),
            Err(e) => Err(unavailable("route", e)),
        }
    }

    async fn dead_letters(
        &self,
        group: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BinderError> {
        read_all(&*self.reader().await?, &dlq_topic(group), group, limit).await
    }

    /// Publishes the dead letter again on its origin topic, marked with [`PROP_REPLAY_GROUP`]:
    /// the consumers of this binder in other groups acknowledge it unhandled, so only
    /// `dead.group` applies it. (The group's retry topic would be the broker's own way,
    /// but the Apache RocketMQ Rust broker 1.0.0 moves every message a producer sends to a
    /// `%RETRY%` topic straight on to the DLQ.)
    async fn replay(&self, dead: &DeadLetter) -> Result<(), BinderError> {
        let mut properties = dead.properties.clone();
        properties.insert(PROP_REPLAY_GROUP.into(), dead.group.clone());
        let message = Message {
            topic: dead.origin_topic.clone(),
            tags: dead.tags.clone(),
            keys: dead.keys.clone(),
            properties,
            body: dead.body.clone().into_bytes(),
        };
        self.publish(std::slice::from_ref(&message)).await
    }

    async fn lag(&self, group: &str, topic: &str) -> Result<Lag, BinderError> {
        let stats = {
            self.admin_client()
                .await?
                .examine_consume_stats(group.into(), Some(topic.into()), None, None, None)
                .await
                .map_err(|e| unavailable("consume stats", e))?
        };
        let mut queues: Vec<(QueueLag, MessageQueue)> = stats
            .offset_table
            .into_iter()
            .filter(|(q, _)| q.topic_str() == topic)
            .map(|(q, w)| {
                let lag = QueueLag {
                    broker: q.broker_name().to_string(),
                    queue_id: q.queue_id(),
                    broker_offset: w.get_broker_offset(),
                    consumer_offset: w.get_consumer_offset(),
                };
                (lag, q)
            })
            .collect();
        queues.sort_by(|a, b| (&a.0.broker, a.0.queue_id).cmp(&(&b.0.broker, b.0.queue_id)));
        let mut oldest_born_at: Option<i64> = None;
        let reader = self.reader().await?;
        for (lag, q) in queues.iter().filter(|(l, _)| l.lag() > 0) {
            let pulled = reader
                .pull(q, "*", lag.consumer_offset.max(0), 1)
                .await
                .map_err(|e| unavailable("pull at the group's offset", e))?;
            let born = pulled.msg_found_list().into_iter().flatten().map(|m| m.born_timestamp());
            oldest_born_at = born.chain(oldest_born_at).min();
        }
        Ok(Lag {
            messages: queues.iter().map(|(l, _)| l.lag()).sum(),
            oldest_born_at,
            queues: queues.into_iter().map(|(l, _)| l).collect(),
        })
    }

    fn admin(&self) -> &dyn binding::BrokerAdmin {
        self
    }

    async fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        for (_, mut g) in std::mem::take(&mut *self.groups.lock().await) {
            g.retired.send_replace(true);
            g.consumer.shutdown().await;
        }
        if let Some(r) = self.reader.lock().await.take() {
            let _ = r.shutdown().await;
        }
        if let Some(mut a) = self.admin.lock().await.take() {
            a.shutdown().await;
        }
        self.sender.producer.lock().await.shutdown().await;
        let _ = self.client.shutdown().await;
        let owner = self.owner.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(owner) = owner {
            let _ = owner.shutdown_tasks().await;
            let _ = owner.shutdown_background();
        }
    }
}

/// Every message on `topic` (all queues, from the first offset), oldest first per queue.
async fn read_all(
    reader: &DefaultMQPullConsumer,
    topic: &str,
    group: &str,
    limit: usize,
) -> Result<Vec<DeadLetter>, BinderError> {
    let queues = match reader.fetch_subscribe_message_queues(topic).await {
        Ok(q) => q,
        // No such topic: nothing was ever dead-lettered.
        Err(_) => return Ok(Vec::new()),
    };
    let mut out = Vec::new();
    for q in queues {
        let mut offset =
            reader.min_offset(&q).await.map_err(|e| unavailable("dlq min offset", e))?;
        let max = reader.max_offset(&q).await.map_err(|e| unavailable("dlq max offset", e))?;
        while offset < max && out.len() < limit {
            let pulled =
                reader.pull(&q, "*", offset, 32).await.map_err(|e| unavailable("dlq pull", e))?;
            let next = i64::try_from(pulled.next_begin_offset()).unwrap_or(max);
            for m in pulled.msg_found_list().into_iter().flatten() {
                let mut msg = from_ext(m);
                let origin = msg
                    .properties
                    .remove(PROP_DLQ_ORIGIN_TOPIC)
                    .or_else(|| {
                        SYSTEM_ORIGIN_TOPIC
                            .iter()
                            .find_map(|k| m.properties().get(*k).map(|t| t.to_string()))
                    })
                    .unwrap_or_default();
                let attempts = msg
                    .properties
                    .remove(PROP_DLQ_ATTEMPTS)
                    .and_then(|a| a.parse().ok())
                    .unwrap_or_else(|| u32::try_from(m.reconsume_times()).unwrap_or(0) + 1);
                out.push(DeadLetter {
                    message_id: m.msg_id().to_string(),
                    group: group.to_owned(),
                    origin_topic: origin,
                    error: msg
                        .properties
                        .remove(PROP_DLQ_ERROR)
                        .unwrap_or_else(|| "max reconsume times exceeded".into()),
                    attempts,
                    tags: msg.tags,
                    keys: msg.keys,
                    properties: msg.properties,
                    body: String::from_utf8_lossy(&msg.body).into_owned(),
                    dead_at: m.store_timestamp(),
                });
            }
            if next <= offset {
                break;
            }
            offset = next;
        }
    }
    out.truncate(limit);
    Ok(out)
}
