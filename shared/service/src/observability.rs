//! Logging and Prometheus set-up shared by the binaries.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds: 10 µs to 10 s, enough resolution for tiny models.
const LATENCY_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];
/// Buckets for counts of rows, samples and the like.
const COUNT_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0];

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// How a metric is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Set to the current value.
    Gauge,
    /// A distribution (Prometheus buckets).
    Histogram,
}

/// One metric a binary emits. Each binary's catalog module lists every one it emits, and its
/// emit sites name the catalog's constants.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// Full name, e.g. `edgefleet_agent_activations_total`.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// Unit, when it has one.
    pub unit: Option<metrics::Unit>,
    /// Label names it carries.
    pub labels: &'static [&'static str],
    /// What it counts, for `# HELP` and the README.
    pub help: &'static str,
}

/// Defines a binary's metric catalog: one `pub const NAME: &str` per metric (documented with its
/// help), `ALL` (the [`Metric`]s, in order) and `CONSTANTS` (the constants' own names, for the
/// catalog test).
///
/// ```
/// edgefleet_service::metric_catalog! {
///     REQUESTS = "edgefleet_example_requests_total", Counter, None, ["route"], "Requests answered, by route.";
///     LATENCY = "edgefleet_example_request_seconds", Histogram, Seconds, [], "Time to answer.";
/// }
/// assert_eq!(ALL.len(), 2);
/// assert_eq!(CONSTANTS, ["REQUESTS", "LATENCY"]);
/// ```
#[macro_export]
macro_rules! metric_catalog {
    ($($constant:ident = $name:literal, $kind:ident, $unit:ident, [$($label:literal),*], $help:literal;)*) => {
        $(
            #[doc = $help]
            pub const $constant: &str = $name;
        )*
        /// The catalog, in the order the README lists it.
        pub const ALL: &[$crate::observability::Metric] = &[$(
            $crate::observability::Metric {
                name: $constant,
                kind: $crate::observability::Kind::$kind,
                unit: $crate::metric_catalog!(@unit $unit),
                labels: &[$($label),*],
                help: $help,
            },
        )*];
        /// The names of the constants above.
        pub const CONSTANTS: &[&str] = &[$(stringify!($constant)),*];
    };
    (@unit None) => { None };
    (@unit $unit:ident) => { Some($crate::observability::Unit::$unit) };
}

pub use metrics::Unit;

/// Describes every metric of `catalog`, and registers those without labels at zero, so a
/// fresh process's `/metrics` already lists them.
pub fn describe(catalog: &[Metric]) {
    for m in catalog {
        match (m.kind, m.unit) {
            (Kind::Counter, Some(unit)) => metrics::describe_counter!(m.name, unit, m.help),
            (Kind::Counter, None) => metrics::describe_counter!(m.name, m.help),
            (Kind::Gauge, Some(unit)) => metrics::describe_gauge!(m.name, unit, m.help),
            (Kind::Gauge, None) => metrics::describe_gauge!(m.name, m.help),
            (Kind::Histogram, Some(unit)) => metrics::describe_histogram!(m.name, unit, m.help),
            (Kind::Histogram, None) => metrics::describe_histogram!(m.name, m.help),
        }
        if m.labels.is_empty() {
            match m.kind {
                Kind::Counter => metrics::counter!(m.name).absolute(0),
                Kind::Gauge => metrics::gauge!(m.name).increment(0.0),
                Kind::Histogram => {}
            }
        }
    }
}

/// Checks a catalog's names: unique, under `prefix`, counters ending `_total`, units matching
/// the `_seconds`/`_bytes` suffixes. For each binary's catalog test.
pub fn check_catalog(prefix: &str, catalog: &[Metric]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for m in catalog {
        if !seen.insert(m.name) {
            return Err(format!("{} is listed twice", m.name));
        }
        if !m.name.starts_with(prefix) || !m.name[prefix.len()..].bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return Err(format!("{} is not {prefix}<snake_case>", m.name));
        }
        if (m.kind == Kind::Counter) != m.name.ends_with("_total") {
            return Err(format!("{}: counters, and only counters, end in _total", m.name));
        }
        let base = m.name.trim_end_matches("_total");
        let unit = if base.ends_with("_seconds") {
            Some(metrics::Unit::Seconds)
        } else if base.ends_with("_bytes") {
            Some(metrics::Unit::Bytes)
        } else {
            None
        };
        if unit.is_some() && m.unit != unit {
            return Err(format!("{}: its unit is {:?}, its name says {unit:?}", m.name, m.unit));
        }
        if m.help.is_empty() || !m.help.ends_with('.') {
            return Err(format!("{}: help must be a sentence", m.name));
        }
    }
    Ok(())
}

/// Everything a binary's catalog test checks, given the catalog and its constants' names (both
/// from [`metric_catalog!`](crate::metric_catalog)) and the crate's directory: the names are well
/// formed ([`check_catalog`]), no metric macro in `src/` names anything but a constant of the
/// `metric` module ([`uncatalogued_emits`]), and `readme` lists every name.
pub fn check_catalog_module(
    prefix: &str,
    catalog: &[Metric],
    constants: &[&str],
    crate_dir: &std::path::Path,
    readme: &std::path::Path,
) -> Result<(), String> {
    check_catalog(prefix, catalog)?;
    let stray = uncatalogued_emits(&crate_dir.join("src"), "metric", constants);
    if !stray.is_empty() {
        return Err(format!("metrics emitted outside the catalog:\n{}", stray.join("\n")));
    }
    let readme = std::fs::read_to_string(readme).map_err(|e| format!("{}: {e}", readme.display()))?;
    let missing: Vec<&str> = catalog.iter().map(|m| m.name).filter(|n| !readme.contains(&format!("`{n}`"))).collect();
    if !missing.is_empty() {
        return Err(format!("not in the README: {missing:?}"));
    }
    Ok(())
}

/// The metric macro calls in the Rust sources under `src` that do not name one of `consts`
/// (the catalog module's constants): a string literal, or an unknown constant. Each binary's
/// catalog test asserts this is empty.
pub fn uncatalogued_emits(src: &std::path::Path, module: &str, consts: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for (i, line) in text.lines().enumerate() {
                for mac in ["counter!(", "gauge!(", "histogram!("] {
                    let mut rest = line;
                    while let Some(at) = rest.find(mac) {
                        rest = &rest[at + mac.len()..];
                        let arg = rest.trim_start();
                        if arg.is_empty() || arg.starts_with("m.name") {
                            continue;
                        }
                        let ident: String = arg
                            .trim_start_matches(&format!("{module}::"))
                            .trim_start_matches(&format!("crate::{module}::"))
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        if !consts.contains(&ident.as_str()) {
                            out.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
                        }
                    }
                }
            }
        }
    }
    out
}

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
            spawn_upkeep(handle.clone());
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::debug!("A metrics recorder was already installed.");
            }
            describe();
            handle
        })
        .clone()
}

/// How often recorded histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Folds histogram samples into their buckets every [`UPKEEP_EVERY`] (what the exporter's own
/// `install` does on a runtime): the recorder keeps every sample until upkeep or a scrape of
/// `/metrics`, so a process that nobody scrapes, as most devices are, grew by 8 bytes per sample
/// without bound (476 MB of the agent's RSS after the serving benchmark's few million requests).
/// A thread rather than a task: the recorder is made before, and lives beyond, any runtime.
fn spawn_upkeep(handle: PrometheusHandle) {
    let upkeep = move || {
        loop {
            std::thread::sleep(UPKEEP_EVERY);
            handle.run_upkeep();
        }
    };
    if let Err(e) = std::thread::Builder::new().name("metrics-upkeep".into()).stack_size(256 * 1024).spawn(upkeep) {
        tracing::warn!(error = %e, "Cannot start the metrics upkeep thread; histograms grow until /metrics is scraped.");
    }
}

/// Sets up `tracing` to stderr (coloured only on a terminal, and not with `NO_COLOR`);
/// `RUST_LOG` overrides `default_filter`. Panics are logged
/// through it too (one line with the thread and location), whether or not something catches
/// them: a caught engine panic is still a bug worth seeing.
pub fn init_logging(default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Colour only for a person at a terminal: journald, files and pipes get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).try_init();
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let message = edgefleet_shared::panic_message(info.payload());
        let location = info.location().map(ToString::to_string).unwrap_or_default();
        tracing::error!(thread = thread.name().unwrap_or("unnamed"), %location, panic = %message, "A thread panicked.");
    }));
}
