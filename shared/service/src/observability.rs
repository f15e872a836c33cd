//! Logging and Prometheus set-up shared by the binaries.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds: 10 µs to 10 s, enough resolution for tiny models.
const LATENCY_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];
/// Buckets for counts of rows, samples and the like.
const COUNT_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0];

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use; `describe` registers the
/// binary's metric descriptions once. Histograms ending `_seconds` get latency buckets,
/// those ending `_rows` count buckets.
///
/// A process has one global recorder; when something else installed one first (a test
/// harness, an embedding program), the handle still renders this recorder, which then only
/// sees metrics recorded through it.
pub fn prometheus(describe: fn()) -> PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_rows".into()), COUNT_BUCKETS))
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::debug!("A metrics recorder was already installed.");
            }
            describe();
            handle
        })
        .clone()
}

/// Sets up `tracing` to stderr; `RUST_LOG` overrides `default_filter`. Panics are logged
/// through it too (one line with the thread and location), whether or not something catches
/// them: a caught engine panic is still a bug worth seeing.
pub fn init_logging(default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let message = edgefleet_shared::panic_message(info.payload());
        let location = info.location().map(ToString::to_string).unwrap_or_default();
        tracing::error!(thread = thread.name().unwrap_or("unnamed"), %location, panic = %message, "A thread panicked.");
    }));
}
