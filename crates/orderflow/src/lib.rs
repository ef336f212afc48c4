//! The `orderflow` binary's library: the services wired into processes, and the commands.
//!
//! - [`mount`]: one service mounted in a process (database, host, handlers, demo data,
//!   routes), written once for `up` and `serve`.
//! - [`app`]: `orderflow up`, the three services and the embedded binder in one process
//!   (the builder tests drive).
//! - [`serving`]: `orderflow serve`, one service in its own process on RocketMQ.
//! - [`settings`]: where settings come from (YAML, environment, flags).
//! - [`check`], [`soak`], [`bench`], [`dlq`], [`mqadmin`]: the checker, the chaos run, the
//!   load driver, the dead-letter client and RocketMQ's admin commands, the last two through
//!   the services' admin API ([`admin_api`]).
//! - [`telemetry`]: logs, and traces exported over OTLP when configured.
//! - [`commands`]: each command's arguments and what it does; `main.rs` only dispatches.

pub mod admin_api;
pub mod app;
pub mod bench;
pub mod check;
pub mod commands;
pub mod dlq;
pub mod mount;
pub mod mqadmin;
pub mod serving;
pub mod settings;
pub mod soak;
pub mod telemetry;

pub use app::{App, AppConfig, BinderChoice, Storage};
pub use mount::DEMO_PRODUCTS;
pub use serving::{ServeConfig, Serving};

/// The three services, by the names the command line and the file names use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServiceName {
    Order,
    Stock,
    Payment,
}

impl ServiceName {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceName::Order => order::SERVICE,
            ServiceName::Stock => stock::SERVICE,
            ServiceName::Payment => payment::SERVICE,
        }
    }

    /// Where `serve` listens unless told otherwise.
    pub fn default_address(self) -> &'static str {
        match self {
            ServiceName::Order => "127.0.0.1:8081",
            ServiceName::Stock => "127.0.0.1:8082",
            ServiceName::Payment => "127.0.0.1:8083",
        }
    }
}

/// How log lines are written (standard error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}
