//! `orderflow console`: the web console on its own, against the three services' APIs (the
//! distributed topology; `up` serves it itself).

use super::{AdminArgs, ConsoleArgs, shutdown_signal};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The order service's base URL.
    #[arg(long, env = "ORDERFLOW_ORDER_URL", default_value = "http://127.0.0.1:8081")]
    order_url: String,
    /// The stock service's base URL.
    #[arg(long, env = "ORDERFLOW_STOCK_URL", default_value = "http://127.0.0.1:8082")]
    stock_url: String,
    /// The payment service's base URL.
    #[arg(long, env = "ORDERFLOW_PAYMENT_URL", default_value = "http://127.0.0.1:8083")]
    payment_url: String,
    #[command(flatten)]
    console: ConsoleArgs,
    #[command(flatten)]
    admin: AdminArgs,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let admin_token = args.admin.admin_token.as_deref().ok_or_else(|| {
        anyhow::anyhow!(
            "the services' admin token is needed (--admin-token or ORDERFLOW_ADMIN_TOKEN): the console signs operators in with it and acts with it"
        )
    })?;
    let admin_token = crate::settings::token("admin token", admin_token)?;
    for (flag, url) in [
        ("--order-url", &args.order_url),
        ("--stock-url", &args.stock_url),
        ("--payment-url", &args.payment_url),
    ] {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            anyhow::bail!("{flag}: {url:?} is not an http:// or https:// URL");
        }
    }
    let settings = args.console.settings(&admin_token)?;
    let config = settings.against([args.order_url, args.stock_url, args.payment_url], &admin_token);
    let listener = tokio::net::TcpListener::bind(settings.addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} for the console: {e}", settings.addr))?;
    println!(
        "orderflow console at http://{}/ (sign in with the admin token)",
        listener.local_addr()?
    );
    let token = tokio_util::sync::CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.cancel();
    });
    console::serve(listener, config, token).await?;
    println!("stopped.");
    Ok(())
}
