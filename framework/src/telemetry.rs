//! Logs and traces: the `tracing` subscriber `certbridge::run` installs, from the `run` flags
//! `--log-format` and `--otlp-endpoint`.
//!
//! Every log line of a request's reconcile carries the request and its issuer (the span fields of
//! `controllers::request::span`); `--log-format json` writes them flattened onto the line under
//! stable names (README "Logs"). With an OTLP endpoint, the same spans — one `reconcile` per pass
//! with a child `sign` (requests) or `check` (issuers) per call into the adapter, and whatever spans
//! the adapter opens inside them — are exported to an OpenTelemetry collector over OTLP/HTTP.

use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::registry::LookupSpan;

/// The log line format (`--log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// tracing-subscriber's human-readable lines.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message`, the event's fields and
    /// the fields of every span it is in, all at the top level (README "Logs").
    Json,
}

/// The `run` flags of this module.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct TelemetryArgs {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Export traces over OTLP/HTTP (protobuf) to this collector, e.g. `http://otel-collector:4318`;
    /// spans are posted to `<url>/v1/traces`. Off when neither this nor the standard
    /// OTEL_EXPORTER_OTLP_ENDPOINT is set. OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are honoured.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

/// The log layer of `format`, writing to `writer`. JSON lines flatten the fields of the event and
/// of every span it is in onto the top level (json-subscriber; tracing-subscriber's own JSON
/// formatter nests span fields under `span`/`spans`, where a log query cannot address them by one
/// stable name). Span field names never repeat an event field name in certbridge.
///
/// Text lines carry no colour escape codes: `writer` may be a file or a buffer.
pub fn log_layer<S, W>(format: LogFormat, writer: W) -> Box<dyn Layer<S> + Send + Sync + 'static>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    log_layer_with(format, writer, false)
}

/// Whether text lines on stderr are coloured: only on a terminal, and never with `NO_COLOR` set
/// (no-color.org). A container's stderr is a pipe, so `kubectl logs` and log shippers get plain
/// lines; tracing-subscriber's default colours every line wherever it goes, and formatting the
/// escape codes into every span's fields was about 3 % of the controller's CPU samples in a profile
/// of the scale benchmark (BENCHMARKS.md).
fn stderr_ansi() -> bool {
    use std::io::IsTerminal as _;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn log_layer_with<S, W>(format: LogFormat, writer: W, ansi: bool) -> Box<dyn Layer<S> + Send + Sync + 'static>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(ansi).boxed(),
        LogFormat::Json => {
            let mut layer = json_subscriber::JsonLayer::new(writer);
            layer
                .with_timer("timestamp", tracing_subscriber::fmt::time::SystemTime)
                .with_level("level")
                .with_target("target")
                .with_flattened_event()
                .with_top_level_flattened_span_list();
            layer.boxed()
        }
    }
}

/// Flushes and stops the trace exporter when dropped (at process exit), so the last passes'
/// spans are sent.
#[must_use = "dropping the guard stops the trace exporter"]
pub struct TracingGuard {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TracingGuard {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("error: cannot flush the OTLP trace exporter: {e}");
        }
    }
}

/// The OTLP trace layer for `endpoint` (a collector's base URL; spans go to `<endpoint>/v1/traces`)
/// and the guard that flushes it. `service` is the `service.name` unless OTEL_SERVICE_NAME is set.
/// Spans are batched and sent from the exporter's own thread, never from a reconcile.
#[cfg(feature = "otlp")]
pub fn otlp_layer<S>(
    endpoint: &str,
    service: &str,
) -> anyhow::Result<(Box<dyn Layer<S> + Send + Sync + 'static>, TracingGuard)>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;

    // The exporter's reqwest client is built without a TLS provider of its own (as the adapters' are).
    crate::runtime::install_crypto_provider();
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter =
        opentelemetry_otlp::SpanExporter::builder().with_http().with_endpoint(url.clone()).build().map_err(|e| {
            anyhow::anyhow!("--otlp-endpoint {endpoint}: cannot build the OTLP exporter for {url}: {e}")
        })?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service.to_owned());
    }
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("certbridge")).boxed();
    Ok((layer, TracingGuard { provider: Some(provider) }))
}

/// Installs the process's subscriber: `RUST_LOG` (else `default_filter`) filters the log lines of
/// `format` on stderr; with `otlp_endpoint`, spans are also exported (the filter applies to them
/// too). Without the `otlp` feature an endpoint is an error.
pub(crate) fn init(
    format: LogFormat,
    default_filter: &str,
    otlp_endpoint: Option<&str>,
    service: &str,
) -> anyhow::Result<TracingGuard> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let logs = log_layer_with(format, std::io::stderr, stderr_ansi());
    type Traces = Option<Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync + 'static>>;
    let (traces, guard): (Traces, TracingGuard) = match otlp_endpoint.filter(|e| !e.is_empty()) {
        #[cfg(feature = "otlp")]
        Some(endpoint) => {
            let (layer, guard) = otlp_layer(endpoint, service)?;
            (Some(layer), guard)
        }
        #[cfg(not(feature = "otlp"))]
        Some(_) => anyhow::bail!("--otlp-endpoint: this binary was built without the `otlp` feature"),
        None => (
            None,
            TracingGuard {
                #[cfg(feature = "otlp")]
                provider: None,
            },
        ),
    };
    let _ = service;
    // A subscriber already installed (a test harness, an adapter's own main) is kept.
    let _ = tracing_subscriber::registry().with(traces).with(filter).with(logs).try_init();
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Parser)]
    struct Run {
        #[command(flatten)]
        telemetry: TelemetryArgs,
    }

    #[test]
    fn flags_default_to_text_logs_and_no_traces() {
        let run =
            Run::try_parse_from(["run", "--log-format=json", "--otlp-endpoint", "http://collector:4318"]).unwrap();
        assert_eq!(run.telemetry.log_format, LogFormat::Json);
        assert_eq!(run.telemetry.otlp_endpoint.as_deref(), Some("http://collector:4318"));
        assert!(Run::try_parse_from(["run", "--log-format=xml"]).is_err());
        // The standard variable turns export on too (not set here: tests share the environment).
        let command = Run::command();
        let otlp = command.get_arguments().find(|a| a.get_id() == "otlp_endpoint").unwrap();
        assert_eq!(otlp.get_env().and_then(|e| e.to_str()), Some("OTEL_EXPORTER_OTLP_ENDPOINT"));
    }

    /// A writer that keeps what it is given.
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn text_lines_carry_span_fields_and_no_colour_codes() {
        use tracing_subscriber::layer::SubscriberExt as _;

        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(log_layer(LogFormat::Text, move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let _span = tracing::info_span!("reconcile", request.name = "r1").entered();
            tracing::warn!(reason = "x", "cannot sign");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("reconcile{request.name=\"r1\"}") && text.contains("cannot sign reason=\"x\""), "{text}");
        assert!(!text.contains('\u{1b}'), "escape codes in {text:?}");
    }

    #[cfg(feature = "otlp")]
    #[test]
    fn a_bad_endpoint_names_the_flag() {
        let err = otlp_layer::<tracing_subscriber::Registry>("not a url", "svc").err().expect("an invalid URL");
        assert!(err.to_string().contains("--otlp-endpoint not a url"), "{err}");
    }
}
