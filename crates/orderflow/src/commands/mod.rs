//! The command line's commands, one module each: its arguments (clap) and what it does.
//! `main.rs` only parses and dispatches here.

pub mod bench;
pub mod check;
pub mod check_config;
pub mod console;
pub mod dlq;
pub mod mqadmin;
pub mod rocketmq;
pub mod serve;
pub mod soak;
pub mod up;

/// The web console's settings (`up` and `console`).
#[derive(clap::Args, Debug)]
pub struct ConsoleArgs {
    /// Where the console listens.
    #[arg(long, env = "ORDERFLOW_CONSOLE_ADDR", default_value = "127.0.0.1:8080")]
    pub console_addr: std::net::SocketAddr,
    /// A second token that signs in to the console to look only (at least 16 characters).
    #[arg(long, env = "ORDERFLOW_READ_ONLY_TOKEN", hide_env_values = true)]
    pub read_only_token: Option<String>,
    /// Link to a trace from an order's timeline: `{traceId}` is replaced, e.g.
    /// http://127.0.0.1:16686/trace/{traceId}.
    #[arg(long, env = "ORDERFLOW_TRACE_URL")]
    pub trace_url: Option<String>,
}

impl ConsoleArgs {
    /// The settings, checked against the admin token.
    pub fn settings(&self, admin_token: &str) -> anyhow::Result<crate::app::ConsoleSettings> {
        const READ_ONLY: &str = "--read-only-token (ORDERFLOW_READ_ONLY_TOKEN)";
        let read_only = match &self.read_only_token {
            Some(t) => Some(crate::settings::token(READ_ONLY, t)?),
            None => None,
        };
        if read_only.as_deref() == Some(admin_token) {
            anyhow::bail!("{READ_ONLY} must differ from the admin token");
        }
        if let Some(u) = &self.trace_url
            && !u.contains("{traceId}")
        {
            anyhow::bail!(
                "--trace-url (ORDERFLOW_TRACE_URL) must contain {{traceId}}, e.g. http://127.0.0.1:16686/trace/{{traceId}}"
            );
        }
        Ok(crate::app::ConsoleSettings {
            addr: self.console_addr,
            read_only_token: read_only,
            trace_url: self.trace_url.clone(),
        })
    }
}

/// How `dlq` and `mqadmin` reach the running services' admin API.
#[derive(clap::Args, Debug)]
pub struct ServiceAdmin {
    /// Service base URLs to ask (repeat the flag) [default: the three of `orderflow up`].
    #[arg(long = "url", global = true)]
    urls: Vec<String>,
    /// The services' admin token.
    #[arg(long, env = "ORDERFLOW_ADMIN_TOKEN", hide_env_values = true, global = true)]
    admin_token: Option<String>,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
}

impl ServiceAdmin {
    /// The URLs to ask (those given, or the three of `orderflow up`) and the admin token.
    fn urls_and_token(&self) -> anyhow::Result<(Vec<String>, String)> {
        const DEFAULT_URLS: [&str; 3] =
            ["http://127.0.0.1:8081", "http://127.0.0.1:8082", "http://127.0.0.1:8083"];
        let urls = if self.urls.is_empty() {
            DEFAULT_URLS.map(String::from).to_vec()
        } else {
            self.urls.clone()
        };
        let token = self.admin_token.clone().ok_or_else(|| {
            anyhow::anyhow!("the admin token is needed: --admin-token or ORDERFLOW_ADMIN_TOKEN")
        })?;
        Ok((urls, token))
    }
}

/// Waits for Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Token for `/admin/...` and `/api/admin/...` (`Authorization: Bearer <token>`).
#[derive(clap::Args, Debug)]
pub struct AdminArgs {
    /// At least 16 characters [default: the YAML's orderflow.admin.token, else random, printed at start].
    #[arg(long, env = "ORDERFLOW_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

/// The simulated payment provider (payment service).
#[derive(clap::Args, Debug)]
pub struct PaymentArgs {
    /// Simulated payment outcome [default: success].
    #[arg(long, env = "ORDERFLOW_PAYMENT_OUTCOME", value_enum, ignore_case = true)]
    pub payment_outcome: Option<crate::settings::PaymentOutcome>,
    /// Simulated payment time in milliseconds [default: 0].
    #[arg(long, env = "ORDERFLOW_PAYMENT_DELAY_MS")]
    pub payment_delay_ms: Option<u64>,
}
