//! The `orderflow` command line. Parsing and dispatch only: each command is a module of
//! `orderflow::commands`.

use clap::{Parser, Subcommand};
use orderflow::{LogFormat, commands};

#[derive(Parser)]
#[command(
    name = "orderflow",
    version,
    about = "Order, stock and payment services over an event stream"
)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "ORDERFLOW_LOG_FORMAT",
        value_enum,
        ignore_case = true,
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the three services and the embedded binder in one process.
    Up(commands::up::Args),
    /// Run one service in its own process, on RocketMQ (name server from the YAML's
    /// `spring.cloud.stream.rocketmq.binder.name-server`, e.g. via ROCKETMQ_NAME_SERVER).
    Serve(commands::serve::Args),
    /// Run a local RocketMQ name server and broker (for `serve` on one machine; needs
    /// scripts/install-rocketmq). Prints the name server address.
    Rocketmq(commands::rocketmq::Args),
    /// Check the guarantees across the three services' databases; prints violations by
    /// order and product, and exits non-zero when there are any.
    Check(commands::check::Args),
    /// Run the chaos scenario on a fresh system (embedded binder) and report orders, lost,
    /// double effects, invariant violations and time to quiesce; exits 1 unless clean.
    Soak(commands::soak::Args),
    /// Drive a running system with orders over HTTP and report throughput, latency,
    /// messages/s, CPU and memory, against the raw binder and disk baselines.
    Bench(commands::bench::Args),
    /// Serve the web console against running services (`up` serves it itself).
    Console(commands::console::Args),
    /// Work with the dead letters of running services (through their admin API).
    Dlq(commands::dlq::Args),
    /// RocketMQ's admin commands (mqadmin's names and flags), asked of the running services:
    /// consumerProgress.
    Mqadmin(commands::mqadmin::Args),
    /// Validate service YAML files (the Java services' application-rocketmq.yml) and print
    /// their bindings.
    CheckConfig(commands::check_config::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // A soak run injects failures on purpose: only errors are worth a log line there; a
    // bench prints its own progress.
    let default_filter = match cli.command {
        Command::Soak(_) => "error",
        Command::Bench(_) => "warn",
        // An operator command prints its answer; the RocketMQ client's own chatter is noise.
        Command::Mqadmin(_) | Command::Dlq(_) => "warn,rocketmq_client_rust=error",
        _ => "info,sqlx=warn",
    };
    // The name traces are exported under (unless OTEL_SERVICE_NAME says otherwise).
    let service = match &cli.command {
        Command::Serve(a) => a.service.as_str(),
        _ => "orderflow",
    };
    let telemetry = orderflow::telemetry::init(cli.log_format, default_filter, service);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(a) => commands::up::run(a).await,
            Command::Serve(a) => commands::serve::run(a).await,
            Command::Rocketmq(a) => commands::rocketmq::run(a).await,
            Command::Check(a) => commands::check::run(a).await,
            Command::Soak(a) => commands::soak::run(a).await,
            Command::Bench(a) => commands::bench::run(a).await,
            Command::Console(a) => commands::console::run(a).await,
            Command::Dlq(a) => commands::dlq::run(a).await,
            Command::Mqadmin(a) => commands::mqadmin::run(a).await,
            Command::CheckConfig(a) => commands::check_config::run(a),
        }
    });
    drop(runtime);
    telemetry.shutdown();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
