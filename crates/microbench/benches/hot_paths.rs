//! The hot paths an order goes through, each alone:
//! - `event/encode`, `event/decode`: an `order-created` event to a message and back (the
//!   seed's fixture body);
//! - `domain/order`, `domain/stock`: one decision of each state machine;
//! - `inbox/duplicate`: a redelivered event acknowledged by the inbox (one transaction,
//!   eventId already there) on a real SQLite file;
//! - `outbox/relay-100`: 100 events committed in one transaction and relayed to the
//!   embedded binder until the outbox is empty (durable commits included);
//! - `statement-100`: 100 `SELECT 1` on a database's writer, the cost of a round trip to
//!   its connection thread (`storage::sqlite`) with no work in SQLite; `statement-100-sqlx`
//!   the same on a reader, a connection of sqlx's SQLite driver.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use async_trait::async_trait;
use binding::{ConsumerBinding, Delivery, Message, MessageHandler, Metrics};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use events::{Event, OrderCreatedEvent};
use storage::Db;
use stream::{HandleError, InboxConsumer, OutboxRelay, TxHandler};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

fn fixture() -> String {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/events/order-created.json");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn events(c: &mut Criterion) {
    let event: OrderCreatedEvent = serde_json::from_str(&fixture()).expect("fixture decodes");
    let message = event.to_message();
    let mut g = c.benchmark_group("event");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode", |b| b.iter(|| std::hint::black_box(&event).to_message()));
    g.bench_function("decode", |b| {
        b.iter(|| std::hint::black_box(&message).decode::<OrderCreatedEvent>().expect("decodes"))
    });
    g.finish();
}

fn domain(c: &mut Criterion) {
    use order::domain as o;
    use stock::domain as s;
    let mut g = c.benchmark_group("domain");
    let pending = o::OrderState::new(
        events::Money::new(rust_decimal::Decimal::new(14980, 2)).expect("amount"),
    );
    let paid = o::PaymentRef {
        payment_id: 1,
        transaction_no: "TXN1".into(),
        amount: events::Money::new(rust_decimal::Decimal::new(14980, 2)).expect("amount"),
    };
    g.bench_function("order", |b| {
        b.iter(|| {
            o::decide(std::hint::black_box(&pending), o::Fact::PaymentSucceeded(paid.clone()))
        })
    });
    let counters: BTreeMap<i64, s::Counters> = [
        (1001, s::Counters { available: 100, frozen: 0, sold: 0 }),
        (1002, s::Counters { available: 500, frozen: 0, sold: 0 }),
    ]
    .into();
    let line = |p, q| {
        (events::ProductId::new(p).expect("id"), events::Quantity::new(q).expect("quantity"))
    };
    let lines: events::ProductQuantities = [line(1001, 2), line(1002, 1)].into();
    g.bench_function("stock", |b| {
        b.iter(|| {
            s::decide(
                None,
                std::hint::black_box(&counters),
                s::Fact::OrderCreated { order_id: 1, lines: lines.clone() },
            )
        })
    });
    g.finish();
}

struct Nothing;

#[async_trait]
impl TxHandler for Nothing {
    async fn apply(&self, _: &mut storage::Tx, _: &Message) -> Result<(), HandleError> {
        Ok(())
    }
}

/// A service database with inbox and outbox, its relay feeding an embedded broker.
async fn service(
    dir: &std::path::Path,
    tracker: &TaskTracker,
    token: &CancellationToken,
) -> (Db, OutboxRelay) {
    let db = Db::open_sqlite(&dir.join("svc.db")).await.expect("db");
    db.migrate("inbox", stream::inbox::MIGRATIONS).await.expect("inbox");
    db.migrate("outbox", stream::outbox::MIGRATIONS).await.expect("outbox");
    let binder = embedded::EmbeddedBinder::open(&dir.join("broker.db"), Metrics::new())
        .await
        .expect("broker");
    let relay = OutboxRelay::spawn(
        db.clone(),
        Arc::new(binder),
        Metrics::new(),
        "bench",
        tracker,
        token.clone(),
    );
    (db, relay)
}

fn storage(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let (tracker, token) = (TaskTracker::new(), CancellationToken::new());
    let (db, relay) = rt.block_on(service(dir.path(), &tracker, &token));
    let binding = ConsumerBinding::with_defaults("bench-in-0", "t", "g", "T");
    let consumer =
        InboxConsumer::new(db.clone(), &binding, Arc::new(Nothing), relay.clone(), Metrics::new());
    let event: OrderCreatedEvent = serde_json::from_str(&fixture()).expect("fixture decodes");
    let delivery =
        Delivery { message: event.to_message(), attempt: 2, message_id: "1".into(), born_at: 0 };
    rt.block_on(consumer.handle(std::slice::from_ref(&delivery)));

    let mut g = c.benchmark_group("storage");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    g.bench_function("inbox/duplicate", |b| {
        b.to_async(&rt).iter(|| consumer.handle(std::slice::from_ref(&delivery)))
    });
    g.throughput(Throughput::Elements(100));
    g.bench_function("statement-100", |b| {
        b.to_async(&rt).iter(|| async {
            let mut conn = db.writer().await.expect("writer");
            for _ in 0..100 {
                conn.execute(sqlx::query("SELECT 1")).await.expect("select");
            }
        })
    });
    g.bench_function("statement-100-sqlx", |b| {
        b.to_async(&rt).iter(|| async {
            let mut conn = db.reader().acquire().await.expect("reader");
            for _ in 0..100 {
                sqlx::query("SELECT 1").execute(&mut *conn).await.expect("select");
            }
        })
    });
    g.bench_function("outbox/relay-100", |b| {
        b.to_async(&rt).iter(|| async {
            let mut tx = storage::Tx::begin(&db).await.expect("begin");
            for i in 0..100 {
                let mut e = event.clone();
                e.event_id = format!("bench-{i}");
                stream::outbox::Outbox::enqueue(&mut tx, &e.to_message()).await.expect("enqueue");
            }
            tx.commit().await.expect("commit");
            relay.wake();
            while stream::outbox::Outbox::backlog(&db).await.expect("backlog") > 0 {
                tokio::task::yield_now().await;
            }
        })
    });
    g.finish();
    token.cancel();
}

criterion_group!(benches, events, domain, storage);
criterion_main!(benches);
