//! The test kit: what the workspace's tests share, in one dev-only crate.
//!
//! - waiting on a condition, never on a sleep alone ([`eventually`], [`until`]);
//! - the repository's fixtures: the Java services' YAML and event bodies ([`fixtures`]);
//! - writing rows behind a service's back ([`write`]);
//! - a PostgreSQL database per test ([`postgres_server`], [`TempDatabase`]);
//! - the real app, spawned per test on each binder and storage, with a RocketMQ name server
//!   and broker per test where the variant needs one ([`app`]).

pub mod app;

use std::{
    future::Future,
    path::PathBuf,
    time::{Duration, Instant},
};

pub use app::*;

/// Polls `f` until it yields `Some`, failing the test after 20 s.
pub async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, f: impl FnMut() -> F) -> T {
    eventually_within(what, Duration::from_secs(20), f).await
}

/// Polls `f` (every 10 ms) until it yields `Some`, failing the test after `limit`.
pub async fn eventually_within<T, F: Future<Output = Option<T>>>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `f` until it holds, failing the test after 20 s.
pub async fn until<F: Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    eventually(what, || {
        let done = f();
        async move { done.await.then_some(()) }
    })
    .await
}

/// The repository's `fixtures/` folder: `config/` (the Java services' YAML files) and
/// `events/` (their event bodies).
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// Runs `statement` on `db`'s writer, committed on its own (tests that set up or corrupt
/// rows behind a service's back).
pub async fn write(db: &storage::Db, statement: storage::Statement<'_>) {
    db.writer()
        .await
        .expect("the writer")
        .execute(statement)
        .await
        .unwrap_or_else(|e| panic!("test write failed: {e}"));
}

/// The PostgreSQL server the tests may create databases on (`ORDERFLOW_TEST_POSTGRES`,
/// default `postgres://postgres@127.0.0.1:5432/test`).
pub fn postgres_server() -> String {
    std::env::var("ORDERFLOW_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh PostgreSQL database for one test (`orderflow_t_<random>_<what>`), dropped by
/// [`TempDatabase::drop_now`]; `.ci/run` drops any a crashed run left behind.
pub struct TempDatabase {
    pub name: String,
    pub url: String,
}

impl TempDatabase {
    pub async fn create(what: &str) -> TempDatabase {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("orderflow_t_{}_{what}", &id[..12]);
        let url = storage::Db::create_postgres_database(&postgres_server(), &name)
            .await
            .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
        TempDatabase { name, url }
    }

    pub async fn drop_now(self) {
        storage::Db::drop_postgres_database(&postgres_server(), &self.name)
            .await
            .unwrap_or_else(|e| panic!("dropping database {}: {e}", self.name));
    }
}

/// The value of sample `name` whose labels include every one of `labels`, in Prometheus
/// text `text` (`None` when there is no such sample).
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(text, name, labels).into_iter().next()
}

/// The values of every sample `name` whose labels include every one of `labels`.
pub fn samples(text: &str, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (sample_name, rest) = series.split_once('{').unwrap_or((series, ""));
            let matches = sample_name == name
                && labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            if matches { value.parse().ok() } else { None }
        })
        .collect()
}
