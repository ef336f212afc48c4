//! Logs and traces of the process. Logs go to standard error (text or JSON), filtered by
//! `ORDERFLOW_LOG` (or `RUST_LOG`). When `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the spans of
//! [`stream::trace`] (HTTP requests, publishes, consumes) are exported there over OTLP
//! (HTTP, protobuf; the standard `OTEL_*` variables apply), under `OTEL_SERVICE_NAME` or the
//! process's own name; unset, tracing is off and costs nothing.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_subscriber::{Layer, filter::Targets, layer::SubscriberExt, util::SubscriberInitExt};

use crate::LogFormat;

/// What must be flushed before the process exits.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans not yet exported (waits for the exporter, a few seconds at most).
    pub fn shutdown(self) {
        if let Some(p) = self.provider
            && let Err(e) = p.shutdown()
        {
            eprintln!("warning: could not flush traces: {e}");
        }
    }
}

/// Installs logging in `format` (`default_filter` unless the environment says otherwise)
/// and, when an OTLP endpoint is configured, the trace exporter for `service`.
pub fn init(format: LogFormat, default_filter: &str, service: &str) -> Telemetry {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ORDERFLOW_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Json => logs.json().boxed(),
        LogFormat::Text => logs.boxed(),
    };
    let (traces, provider) = match exporter(service) {
        Ok(Some(provider)) => {
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("orderflow"))
                .with_filter(Targets::new().with_target("stream::trace", tracing::Level::INFO));
            (Some(layer), Some(provider))
        }
        Ok(None) => (None, None),
        Err(e) => {
            eprintln!("warning: traces are off: {e}");
            (None, None)
        }
    };
    tracing_subscriber::registry().with(logs.with_filter(filter)).with(traces).init();
    if provider.is_some() {
        stream::trace::enable();
    }
    Telemetry { provider }
}

/// The tracer provider exporting to `OTEL_EXPORTER_OTLP_ENDPOINT`, if it is set.
fn exporter(service: &str) -> Result<Option<SdkTracerProvider>, String> {
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_default();
    let traces_endpoint = std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").unwrap_or_default();
    if endpoint.trim().is_empty() && traces_endpoint.trim().is_empty() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| format!("OTEL_EXPORTER_OTLP_ENDPOINT: {e}"))?;
    let service =
        std::env::var("OTEL_SERVICE_NAME").ok().filter(|s| !s.is_empty()).unwrap_or(service.into());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    Ok(Some(provider))
}
