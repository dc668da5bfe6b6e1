//! One process-wide subscriber for the tests that look at logs and traces: the JSON log layer
//! under test, writing into a buffer, and a slot for an OTLP layer. A scoped subscriber per test
//! (`set_default`) missed spans and events whenever another test thread hit a callsite first:
//! tracing caches each callsite's interest process-wide. A global subscriber has no such race.

use std::io;
use std::sync::{Arc, Mutex, OnceLock};

use certbridge::telemetry::{LogFormat, log_layer};
use serde_json::Value;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry, reload};

/// Collects what the log layer writes.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

impl Capture {
    /// Every line so far, parsed (every test's: pick yours by its objects' names).
    pub fn lines(&self) -> Vec<Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
    }
}

type Slot = Option<Box<dyn Layer<Registry> + Send + Sync>>;

pub struct Global {
    pub logs: Capture,
    /// Where a test puts its OTLP layer (and takes it out again).
    pub traces: reload::Handle<Slot, Registry>,
}

/// The process-wide subscriber, installed on first use.
pub fn global() -> &'static Global {
    static GLOBAL: OnceLock<Global> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        let logs = Capture::default();
        let (traces, handle) = reload::Layer::new(Slot::None);
        tracing_subscriber::registry()
            .with(traces)
            .with(
                tracing_subscriber::filter::Targets::new()
                    .with_target("certbridge", tracing::Level::DEBUG)
                    .with_target("controllers", tracing::Level::INFO),
            )
            .with(log_layer(LogFormat::Json, logs.clone()))
            .try_init()
            .expect("no other global subscriber in this test binary");
        Global { logs, traces: handle }
    })
}
