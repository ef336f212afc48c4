//! A local RocketMQ cluster: one name server and one broker, as child processes.
//!
//! - Binaries: `rocketmq-namesrv-rust` and `rocketmq-broker-rust` from the crates
//!   `rocketmq-namesrv` and `rocketmq-broker`, looked up in `$ORDERFLOW_ROCKETMQ_BIN`, then
//!   `~/.cache/orderflow/rocketmq/bin` (where `scripts/install-rocketmq` puts them), then `PATH`.
//! - Ports: free loopback ports are chosen at start (the broker also needs its listen port
//!   minus 2, and an HA port); the store lives under the given directory, so a broker stopped
//!   or killed and started again on the same directory keeps its messages and offsets.
//! - Readiness: [`LocalCluster::start`] returns when the broker's health endpoint answers
//!   `/readyz` with `ready` — it waits on that, not on a sleep.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use tokio::process::{Child, Command};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{0} not found: run scripts/install-rocketmq (or set ORDERFLOW_ROCKETMQ_BIN)")]
    MissingBinary(&'static str),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("broker not ready after {0:?}; see {1}")]
    NotReady(Duration, String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

/// Ports of one cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub namesrv: u16,
    pub broker: u16,
    pub ha: u16,
    pub health: u16,
}

/// How a local cluster is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterOptions {
    /// The name server's port; a free one when `None`.
    pub namesrv_port: Option<u16>,
    /// The broker's `autoCreateTopicEnable`: with it off, a topic must be created
    /// (`updateTopic`) before anything is sent to it, as on most production brokers.
    pub auto_create_topics: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions { namesrv_port: None, auto_create_topics: true }
    }
}

pub struct LocalCluster {
    dir: PathBuf,
    ports: Ports,
    options: ClusterOptions,
    namesrv: Option<Child>,
    broker: Option<Child>,
}

const NAMESRV: &str = "rocketmq-namesrv-rust";
const BROKER: &str = "rocketmq-broker-rust";
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Finds a RocketMQ server binary.
pub fn binary(name: &'static str) -> Result<PathBuf, ClusterError> {
    let mut candidates = Vec::new();
    if let Ok(dir) = std::env::var("ORDERFLOW_ROCKETMQ_BIN") {
        candidates.push(PathBuf::from(dir).join(name));
    }
    if let Ok(home) = std::env::var("HOME") {
        candidates.push(PathBuf::from(home).join(".cache/orderflow/rocketmq/bin").join(name));
    }
    if let Ok(path) = std::env::var("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join(name)));
    }
    candidates.into_iter().find(|p| p.is_file()).ok_or(ClusterError::MissingBinary(name))
}

fn free_port() -> Result<u16, ClusterError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io("pick a free port"))?;
    Ok(l.local_addr().map_err(io("pick a free port"))?.port())
}

/// A broker port whose `port - 2` (the broker's fast-remoting port) is free too.
fn free_broker_port() -> Result<u16, ClusterError> {
    for _ in 0..50 {
        let p = free_port()?;
        if p > 1026 && TcpListener::bind(("127.0.0.1", p - 2)).is_ok() {
            return Ok(p);
        }
    }
    Err(ClusterError::Io {
        what: "pick a broker port".into(),
        source: std::io::Error::other("no free pair"),
    })
}

impl LocalCluster {
    /// Starts a name server and a broker storing under `dir`, and waits until the broker
    /// is ready.
    pub async fn start(dir: &Path) -> Result<LocalCluster, ClusterError> {
        Self::start_on(dir, None).await
    }

    /// As [`start`](Self::start), with the name server on `namesrv_port` when given. A
    /// broker that exits while starting (a port picked as free was taken meanwhile by
    /// another process) is started again on fresh ports, up to three times.
    pub async fn start_on(
        dir: &Path,
        namesrv_port: Option<u16>,
    ) -> Result<LocalCluster, ClusterError> {
        Self::start_with(dir, ClusterOptions { namesrv_port, ..ClusterOptions::default() }).await
    }

    /// As [`start_on`](Self::start_on), with every option.
    pub async fn start_with(
        dir: &Path,
        options: ClusterOptions,
    ) -> Result<LocalCluster, ClusterError> {
        let mut attempt = 1;
        loop {
            match Self::start_once(dir, options).await {
                Err(ClusterError::Io { what, .. })
                    if attempt < 3 && what.starts_with("broker exited") =>
                {
                    tracing::warn!(attempt, %what, "the local broker did not start; trying again on fresh ports");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn start_once(dir: &Path, options: ClusterOptions) -> Result<LocalCluster, ClusterError> {
        let namesrv = match options.namesrv_port {
            Some(p) => p,
            None => free_port()?,
        };
        let ports =
            Ports { namesrv, broker: free_broker_port()?, ha: free_port()?, health: free_port()? };
        let mut cluster =
            LocalCluster { dir: dir.to_owned(), ports, options, namesrv: None, broker: None };
        cluster.start_namesrv().await?;
        cluster.start_broker().await?;
        Ok(cluster)
    }

    /// `127.0.0.1:<port>` of the name server: what clients are given.
    pub fn name_server(&self) -> String {
        format!("127.0.0.1:{}", self.ports.namesrv)
    }

    pub fn ports(&self) -> Ports {
        self.ports
    }

    async fn start_namesrv(&mut self) -> Result<(), ClusterError> {
        let home = self.dir.join("namesrv");
        std::fs::create_dir_all(&home).map_err(io(format!("create {}", home.display())))?;
        let log = std::fs::File::create(self.dir.join("namesrv.log")).map_err(io("namesrv log"))?;
        let child = Command::new(binary(NAMESRV)?)
            .arg("--rocketmqHome")
            .arg(&home)
            .args(["--listenPort", &self.ports.namesrv.to_string(), "--bindAddress", "127.0.0.1"])
            .stdout(log.try_clone().map_err(io("namesrv log"))?)
            .stderr(log)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(io("start the name server"))?;
        self.namesrv = Some(child);
        Ok(())
    }

    /// Starts the broker (again) on the same store and ports, and waits until it is ready.
    pub async fn start_broker(&mut self) -> Result<(), ClusterError> {
        let home = self.dir.join("broker");
        let store = home.join("store");
        std::fs::create_dir_all(&store).map_err(io(format!("create {}", store.display())))?;
        let Ports { namesrv, broker, ha, health } = self.ports;
        let store = store.display();
        let auto_create = self.options.auto_create_topics;
        let config = format!(
            r#"[broker]
namesrvAddr = "127.0.0.1:{namesrv}"
brokerIp1 = "127.0.0.1"
listenPort = {broker}
storePathRootDir = "{store}"
autoCreateTopicEnable = {auto_create}
autoCreateSubscriptionGroup = true
[broker.brokerServerConfig]
bindAddress = "127.0.0.1"
[broker.brokerIdentity]
brokerName = "broker-a"
brokerClusterName = "DefaultCluster"
brokerId = 0
[broker.topicQueueConfig]
defaultTopicQueueNums = 4
[store]
storeType = "LocalFile"
brokerRole = "ASYNC_MASTER"
flushDiskType = "ASYNC_FLUSH"
storePathRootDir = "{store}"
haListenAddress = "127.0.0.1"
haListenPort = {ha}
mappedFileSizeCommitLog = 67108864
mappedFileSizeConsumeQueue = 600000
maxHashSlotNum = 50000
maxIndexNum = 200000
"#
        );
        let config_path = home.join("broker.toml");
        std::fs::write(&config_path, config).map_err(io("write broker.toml"))?;
        let log_path = self.dir.join("broker.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io("broker log"))?;
        let child = Command::new(binary(BROKER)?)
            .arg("-c")
            .arg(&config_path)
            .args(["-n", &format!("127.0.0.1:{namesrv}")])
            .env("ROCKETMQ_HOME", &home)
            .env("ROCKETMQ_HEALTH_BIND_ADDR", format!("127.0.0.1:{health}"))
            .stdout(log.try_clone().map_err(io("broker log"))?)
            .stderr(log)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(io("start the broker"))?;
        self.broker = Some(child);
        self.wait_ready(&log_path).await
    }

    async fn wait_ready(&mut self, log: &Path) -> Result<(), ClusterError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(child) = self.broker.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(ClusterError::Io {
                    what: format!("broker exited with {status}; see {}", log.display()),
                    source: std::io::Error::other("exited"),
                });
            }
            if readyz(self.ports.health).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(ClusterError::NotReady(READY_TIMEOUT, log.display().to_string()))
    }

    /// SIGKILL of the broker: no flush, no goodbye to the name server.
    pub async fn kill_broker(&mut self) {
        if let Some(mut child) = self.broker.take() {
            let _ = child.kill().await;
        }
    }

    /// Stops both servers.
    pub async fn stop(mut self) {
        self.kill_broker().await;
        if let Some(mut child) = self.namesrv.take() {
            let _ = child.kill().await;
        }
    }
}

/// True when the broker's health endpoint says ready.
async fn readyz(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return false };
    let request =
        format!("GET /readyz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if s.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut response = String::new();
    let read = tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut response)).await;
    matches!(read, Ok(Ok(_))) && response.starts_with("HTTP/1.1 200") && response.contains("ready")
}
