//! The real app (port 0, a temp dir, real databases) driven over HTTP, configured from the
//! YAML fixtures. Waits are on conditions, never on sleeps alone.
//!
//! The end-to-end scenarios are written once, as `async fn scenario(v: Variant)`, and
//! [`variants!`] instantiates each for every binder/storage combination: the embedded binder
//! or a real RocketMQ name server + broker (started per test), on SQLite or on PostgreSQL
//! (`ORDERFLOW_TEST_POSTGRES`, default `postgres://postgres@127.0.0.1:5432/test`; each test
//! gets fresh databases, dropped after).

use crate::{TempDatabase, eventually_within, fixtures};
use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use binding::{
    Binder, BinderError, BindingControl, ConsumerBinding, DeadLetter, Delivery, Message,
    MessageHandler, Outcome, StreamConfig,
};
use order::store::OrderView;
use orderflow::{App, AppConfig, BinderChoice, Storage};
use payment::{PaymentSettings, store::Payment};
use rocketmq_binder::LocalCluster;
use serde_json::{Value, json};
use stock::store::StockView;

pub fn fixture_stream(file: &str) -> StreamConfig {
    let path = fixtures().join("config").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    StreamConfig::from_yaml(&text).unwrap()
}

/// The storage the services of a test run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    EmbeddedSqlite,
    EmbeddedPostgres,
    RocketMqSqlite,
    RocketMqPostgres,
}

impl Variant {
    fn postgres(self) -> bool {
        matches!(self, Variant::EmbeddedPostgres | Variant::RocketMqPostgres)
    }
    /// Whether the variant runs on a RocketMQ name server and broker.
    pub fn rocketmq(self) -> bool {
        matches!(self, Variant::RocketMqSqlite | Variant::RocketMqPostgres)
    }
}

/// Instantiates each named `async fn(Variant)` scenario as one test per variant.
#[macro_export]
macro_rules! variants {
    ($($name:ident),* $(,)?) => {
        mod embedded_sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::Variant::EmbeddedSqlite).await } )*
        }
        mod embedded_postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::Variant::EmbeddedPostgres).await } )*
        }
        mod rocketmq_sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::Variant::RocketMqSqlite).await } )*
        }
        mod rocketmq_postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::Variant::RocketMqPostgres).await } )*
        }
    };
}

/// Fresh databases for the three services (PostgreSQL variants).
async fn storage(v: Variant) -> (Storage, Vec<TempDatabase>) {
    if !v.postgres() {
        return (Storage::Sqlite, Vec::new());
    }
    let (order, stock, payment) = (
        TempDatabase::create("order").await,
        TempDatabase::create("stock").await,
        TempDatabase::create("payment").await,
    );
    let storage = Storage::Postgres {
        order: order.url.clone(),
        stock: stock.url.clone(),
        payment: payment.url.clone(),
    };
    (storage, vec![order, stock, payment])
}

/// The admin token of every test app (and of the processes the tests start).
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// An HTTP client that presents the admin token.
pub fn admin_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers
        .insert(reqwest::header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}").parse().unwrap());
    reqwest::Client::builder().default_headers(headers).build().unwrap()
}

pub fn config(dir: &Path, payment: PaymentSettings) -> AppConfig {
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    AppConfig {
        admin_token: ADMIN_TOKEN.into(),
        data_dir: dir.to_owned(),
        storage: orderflow::Storage::Sqlite,
        binder: orderflow::BinderChoice::Embedded,
        order_addr: any,
        stock_addr: any,
        payment_addr: any,
        order_stream: fixture_stream("order-service.yml"),
        stock_stream: fixture_stream("stock-service.yml"),
        payment_stream: fixture_stream("payment-service.yml"),
        payment,
        demo_products: true,
        console: None,
    }
}

pub struct TestApp {
    pub app: App,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    pub variant: Variant,
    /// PostgreSQL databases to drop at shutdown.
    databases: Vec<TempDatabase>,
    config: AppConfig,
    /// The RocketMQ name server and broker of a RocketMQ variant.
    pub cluster: Option<LocalCluster>,
}

pub async fn spawn(v: Variant) -> TestApp {
    spawn_with(v, PaymentSettings::default(), |b| b).await
}

pub async fn spawn_with(
    v: Variant,
    payment: PaymentSettings,
    wrap: impl FnOnce(Arc<dyn Binder>) -> Arc<dyn Binder>,
) -> TestApp {
    if let Ok(filter) = std::env::var("ORDERFLOW_TEST_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
    let dir = tempfile::tempdir().unwrap();
    let base = config(dir.path(), payment);
    spawn_in(v, dir, base, wrap).await
}

/// Starts the app of variant `v` with `base` (its storage and binder are set here).
pub async fn spawn_config(
    v: Variant,
    base: AppConfig,
    wrap: impl FnOnce(Arc<dyn Binder>) -> Arc<dyn Binder>,
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    spawn_in(v, dir, base, wrap).await
}

/// Starts the app on SQLite over `cluster` (which stores under `dir`), a RocketMQ cluster
/// the test started itself.
pub async fn spawn_on(dir: tempfile::TempDir, cluster: LocalCluster) -> TestApp {
    let base = config(dir.path(), PaymentSettings::default());
    spawn_in_cluster(Variant::RocketMqSqlite, dir, base, |b| b, Some(cluster)).await
}

async fn spawn_in(
    v: Variant,
    dir: tempfile::TempDir,
    base: AppConfig,
    wrap: impl FnOnce(Arc<dyn Binder>) -> Arc<dyn Binder>,
) -> TestApp {
    let cluster = match v.rocketmq() {
        true => Some(
            LocalCluster::start(&dir.path().join("rocketmq")).await.expect("local RocketMQ starts"),
        ),
        false => None,
    };
    spawn_in_cluster(v, dir, base, wrap, cluster).await
}

async fn spawn_in_cluster(
    v: Variant,
    dir: tempfile::TempDir,
    base: AppConfig,
    wrap: impl FnOnce(Arc<dyn Binder>) -> Arc<dyn Binder>,
    cluster: Option<LocalCluster>,
) -> TestApp {
    let (storage, databases) = storage(v).await;
    let binder = match &cluster {
        Some(c) => BinderChoice::RocketMq { name_server: c.name_server() },
        None => BinderChoice::Embedded,
    };
    let config = AppConfig { storage, binder, data_dir: dir.path().to_owned(), ..base };
    let app = App::start_with(config.clone(), wrap).await.unwrap();
    TestApp { app, dir, http: admin_client(), variant: v, databases, config, cluster }
}

/// A [`TestApp`] stopped with its data kept ([`TestApp::stop`]).
pub struct Stopped {
    pub dir: tempfile::TempDir,
    http: reqwest::Client,
    variant: Variant,
    databases: Vec<TempDatabase>,
    config: AppConfig,
    cluster: Option<LocalCluster>,
}

impl Stopped {
    /// Starts the app again on the same data (with `payment`).
    pub async fn start(self, payment: PaymentSettings) -> TestApp {
        let Stopped { dir, http, variant, databases, config, cluster } = self;
        let config = AppConfig { payment, ..config };
        let app = App::start(config.clone()).await.unwrap();
        TestApp { app, dir, http, variant, databases, config, cluster }
    }
}

impl TestApp {
    /// Stops the app gracefully and drops its PostgreSQL databases.
    pub async fn shutdown(self) {
        self.app.shutdown().await;
        if let Some(c) = self.cluster {
            c.stop().await;
        }
        for db in self.databases {
            db.drop_now().await;
        }
    }

    /// Stops the app gracefully and starts it again on the same data (with `payment`).
    pub async fn restart(self, payment: PaymentSettings) -> TestApp {
        self.stop().await.start(payment).await
    }

    /// Stops the app gracefully, keeping its data (and its RocketMQ cluster) to start again.
    pub async fn stop(self) -> Stopped {
        let TestApp { app, dir, http, variant, databases, config, cluster } = self;
        app.shutdown().await;
        Stopped { dir, http, variant, databases, config, cluster }
    }

    /// Messages the binder accepted for `topic` (counted by either binder).
    pub fn published(&self, topic: &str) -> f64 {
        self.app.metrics.get(binding::metrics::PUBLISHED, &[("topic", topic)])
    }

    pub fn order_url(&self, path: &str) -> String {
        format!("{}{path}", self.app.order_url)
    }

    /// POSTs raw JSON to /api/orders; returns status and body.
    pub async fn post_order(&self, body: &Value) -> (u16, Value) {
        let r = self.http.post(self.order_url("/api/orders")).json(body).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn create_order(&self, user_id: i64, items: &[(i64, i64)]) -> OrderView {
        let items: Vec<Value> =
            items.iter().map(|(p, q)| json!({"productId": p, "quantity": q})).collect();
        let (status, body) =
            self.post_order(&json!({"userId": user_id, "items": items, "remark": "test"})).await;
        assert_eq!(status, 201, "create failed: {body}");
        serde_json::from_value(body).unwrap()
    }

    pub async fn order(&self, order_no: &str) -> OrderView {
        let r =
            self.http.get(self.order_url(&format!("/api/orders/{order_no}"))).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// Waits until the order is PAID, or CANCELLED with every consequence in (a captured
    /// payment refunded).
    pub async fn settled(&self, order_no: &str) -> OrderView {
        eventually_within(&format!("order {order_no} settled"), self.flow_limit(), || async {
            let o = self.order(order_no).await;
            let done = match o.status {
                order::domain::OrderStatus::Paid => true,
                order::domain::OrderStatus::Cancelled => o.payment_id.is_none() || o.refunded,
                order::domain::OrderStatus::Pending => false,
            };
            done.then_some(o)
        })
        .await
    }

    /// Waits until nothing is in flight anywhere.
    pub async fn quiesce(&self) {
        eventually_within("system quiet", self.flow_limit(), || async {
            self.app.is_quiet().await.unwrap().then_some(())
        })
        .await
    }

    /// How long a message may take to reach its consumers: on RocketMQ a consumer may wait
    /// for the client's route refresh or rebalance (up to 30 s) on a loaded machine.
    fn flow_limit(&self) -> Duration {
        Duration::from_secs(if self.variant.rocketmq() { 60 } else { 20 })
    }

    pub async fn stock(&self, product_id: i64) -> StockView {
        let r = self
            .http
            .get(format!("{}/api/stock/{product_id}", self.app.stock_url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    pub async fn set_stock(&self, product_id: i64, available: i64) {
        let r = self
            .http
            .put(format!("{}/api/admin/stock/{product_id}", self.app.stock_url))
            .json(&json!({"available": available}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    pub async fn payments(&self, order_no: &str) -> Vec<Payment> {
        let r = self
            .http
            .get(format!("{}/api/payments?orderNo={order_no}", self.app.payment_url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    pub async fn reservation(&self, order_no: &str) -> Option<Value> {
        let r = self
            .http
            .get(format!("{}/api/stock/reservations/{order_no}", self.app.stock_url))
            .send()
            .await
            .unwrap();
        if r.status() == 404 { None } else { Some(r.json().await.unwrap()) }
    }

    /// Pauses or resumes a consumer binding of the service at `base`.
    pub async fn binding(&self, base: &str, name: &str, state: &str) {
        let r = self
            .http
            .put(format!("{base}/admin/bindings/{name}"))
            .json(&json!({"state": state}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "binding {name} -> {state}");
    }

    pub async fn metrics(&self, base: &str) -> String {
        self.http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap()
    }
}

/// A binder with faults a test can fix later: the first `refused_publishes` publishes are
/// refused (the broker is down for a while), and the first `n` messages of
/// `dead_letter.0`'s topic `dead_letter.1` are answered `DeadLetter` without running the
/// real handler (a failure an operator can fix, then replay).
pub struct Faulty {
    pub inner: Arc<dyn Binder>,
    pub refused_publishes: AtomicUsize,
    pub dead_letter: Option<(&'static str, &'static str, usize)>,
}

impl Faulty {
    pub fn refusing_publishes(inner: Arc<dyn Binder>, n: usize) -> Arc<dyn Binder> {
        Arc::new(Faulty { inner, refused_publishes: AtomicUsize::new(n), dead_letter: None })
    }

    pub fn dead_lettering_first(
        inner: Arc<dyn Binder>,
        group: &'static str,
        topic: &'static str,
        n: usize,
    ) -> Arc<dyn Binder> {
        Arc::new(Faulty {
            inner,
            refused_publishes: AtomicUsize::new(0),
            dead_letter: Some((group, topic, n)),
        })
    }
}

struct FailingHandler {
    inner: Arc<dyn MessageHandler>,
    left: AtomicUsize,
}

/// Takes one from `left` if any is left.
fn take_one(left: &AtomicUsize) -> bool {
    left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
}

#[async_trait]
impl MessageHandler for FailingHandler {
    async fn handle(&self, batch: &[Delivery]) -> Vec<Outcome> {
        if take_one(&self.left) {
            let mut outcomes =
                vec![Outcome::DeadLetter("stock database was read-only (test)".into())];
            if batch.len() > 1 {
                outcomes.extend(self.inner.handle(&batch[1..]).await);
            }
            return outcomes;
        }
        self.inner.handle(batch).await
    }
}

#[async_trait]
impl Binder for Faulty {
    fn system(&self) -> &'static str {
        self.inner.system()
    }

    async fn publish(&self, messages: &[Message]) -> Result<(), BinderError> {
        if take_one(&self.refused_publishes) {
            return Err(BinderError::Unavailable("broker down (test)".into()));
        }
        self.inner.publish(messages).await
    }
    async fn bind_consumer(
        &self,
        b: ConsumerBinding,
        h: Arc<dyn MessageHandler>,
    ) -> Result<BindingControl, BinderError> {
        let h: Arc<dyn MessageHandler> = match self.dead_letter {
            Some((group, topic, n)) if b.group == group && b.destination == topic => {
                Arc::new(FailingHandler { inner: h, left: AtomicUsize::new(n) })
            }
            _ => h,
        };
        self.inner.bind_consumer(b, h).await
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
    async fn lag(&self, group: &str, topic: &str) -> Result<binding::Lag, BinderError> {
        self.inner.lag(group, topic).await
    }
    fn admin(&self) -> &dyn binding::BrokerAdmin {
        self.inner.admin()
    }
    async fn shutdown(&self) {
        self.inner.shutdown().await
    }
}
