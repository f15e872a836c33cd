//! Command-line interface of `edgefleet-agent`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{AgentConfig, ConfigError, ModelConfig};
use crate::engine::BackendKind;
use crate::worker::BatchingConfig;

/// The edgefleet device agent.
#[derive(Debug, Parser)]
#[command(name = "edgefleet-agent", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve local ONNX files over KServe v2 HTTP, without a controller.
    Serve(ServeArgs),
    /// Fleet mode: enroll with a controller and follow its signed desired state.
    Run(Box<RunArgs>),
    /// Print the default configuration file, with every option documented.
    PrintDefaultConfig,
    /// Check a signed deployment document offline, as a device would (exit 0 verified,
    /// 1 refused, 66 unreadable input).
    Verify(VerifyArgs),
}

/// `verify` options.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Trust file with the controller keys the device trusts.
    #[arg(long)]
    pub trust: PathBuf,
    /// The device's id.
    #[arg(long)]
    pub device_id: String,
    /// Last sequence the device accepted (replay and rollback checks).
    #[arg(long)]
    pub last_sequence: Option<u64>,
    /// The document, exactly as signed.
    #[arg(long)]
    pub document: PathBuf,
    /// The detached signature (JSON with key_id and signature).
    #[arg(long)]
    pub signature: PathBuf,
    /// Also verify the artifacts in this directory (NAME.zst as transferred, or NAME).
    #[arg(long)]
    pub artifacts: Option<PathBuf>,
    /// Check expiry at this time (unix seconds) instead of now.
    #[arg(long)]
    pub now: Option<u64>,
}

impl VerifyArgs {
    /// The request for [`crate::inspect::verify`].
    pub fn into_request(self) -> crate::inspect::VerifyRequest {
        let now = self.now.unwrap_or_else(edgefleet_shared::clock::unix_secs);
        crate::inspect::VerifyRequest {
            trust: self.trust,
            device_id: self.device_id,
            last_sequence: self.last_sequence,
            document: self.document,
            signature: self.signature,
            artifacts: self.artifacts,
            now,
        }
    }
}

/// Options both daemon modes take; flags override the config file.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// TOML configuration file (see `print-default-config`).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Listen address of the inference API [default: 127.0.0.1:8500].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Listen address of the gRPC inference API, or `off` [default: 127.0.0.1:8501].
    #[arg(long, value_name = "ADDR|off", value_parser = crate::config::parse_grpc_listen)]
    pub grpc_listen: Option<crate::config::GrpcListen>,
    /// Inference engine: tract, ort or auto [default: auto].
    #[arg(long, value_parser = str::parse::<BackendKind>)]
    pub backend: Option<BackendKind>,
    /// libonnxruntime.so for the ort backend (else ORT_DYLIB_PATH).
    #[arg(long, value_name = "PATH")]
    pub ort_library: Option<PathBuf>,
    /// Longest an inference request waits for its answer before 504 [default: 30000].
    #[arg(long, value_name = "MS")]
    pub request_timeout_ms: Option<u64>,
}

impl CommonArgs {
    /// The config file (or defaults) with these flags applied.
    fn load(self) -> Result<AgentConfig, ConfigError> {
        let mut config = match &self.config {
            Some(path) => AgentConfig::from_file(path)?,
            None => AgentConfig::default(),
        };
        if let Some(listen) = self.listen {
            config.server.listen = listen;
        }
        if let Some(grpc) = self.grpc_listen {
            config.server.grpc_listen = grpc.0;
        }
        if let Some(kind) = self.backend {
            config.backend.kind = kind;
        }
        if let Some(lib) = self.ort_library {
            config.backend.ort.library_path = Some(lib);
        }
        if let Some(ms) = self.request_timeout_ms {
            config.server.request_timeout_ms = ms;
        }
        Ok(config)
    }
}

/// `serve` options; flags override the config file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Config file, listen address, backend.
    #[command(flatten)]
    pub common: CommonArgs,
    /// A model to serve, as NAME=PATH.onnx; repeat for several.
    #[arg(long = "model", value_name = "NAME=PATH", value_parser = parse_model)]
    pub models: Vec<(String, PathBuf)>,
    /// Worker threads per model given with --model.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Queue capacity per model given with --model.
    #[arg(long)]
    pub queue_capacity: Option<usize>,
    /// Models given with --model whose warm-up runs take at most this many microseconds run on
    /// the request's own thread (default 100; 0: always on their worker threads).
    #[arg(long, value_name = "MICROS")]
    pub inline_below_us: Option<u64>,
    /// Enable dynamic batching up to this many rows for models given with --model.
    #[arg(long)]
    pub max_batch_size: Option<usize>,
    /// With --max-batch-size: how long to wait for a batch to fill, in microseconds.
    #[arg(long, default_value_t = 500)]
    pub max_queue_delay_us: u64,
    /// Largest request body in bytes.
    #[arg(long)]
    pub max_body_bytes: Option<usize>,
}

/// `run` options; flags override the config file's `[fleet]` and `[server]` values.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Config file, listen address, backend.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Controller URL.
    #[arg(long)]
    pub controller: Option<String>,
    /// Enrollment token (first start only).
    #[arg(long)]
    pub enroll_token: Option<String>,
    /// File with the enrollment token; deleted after enrolling.
    #[arg(long)]
    pub enroll_token_file: Option<PathBuf>,
    /// Trust file with the controller keys to accept.
    #[arg(long)]
    pub trust: Option<PathBuf>,
    /// CA certificates (PEM) for an https:// controller and an mqtts:// broker.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Allow plain http:// and mqtt:// to non-loopback hosts (never in production).
    #[arg(long)]
    pub insecure: bool,
    /// State directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Label reported at enrollment, `k=v`; repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// File of `k=v` lines with more labels for enrollment (used when present).
    #[arg(long)]
    pub labels_file: Option<PathBuf>,
    /// MQTT broker URL, overriding the controller's.
    #[arg(long)]
    pub mqtt: Option<String>,
    /// Seconds between desired-state polls.
    #[arg(long)]
    pub poll_interval_secs: Option<u64>,
    /// Seconds between status reports.
    #[arg(long)]
    pub status_interval_secs: Option<u64>,
    /// Seconds to watch a new version before committing to it.
    #[arg(long)]
    pub watch_window_secs: Option<u64>,
    /// Worker threads per model.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Most bytes of model files (uncompressed, all models together) this device takes; a
    /// desired state needing more is refused as `over_budget` [default: unlimited].
    #[arg(long)]
    pub max_models_bytes: Option<u64>,
    /// How often telemetry batches are cut and sent [default: 60].
    #[arg(long)]
    pub telemetry_interval_secs: Option<u64>,
    /// Share of rows sampled in full for telemetry [default: 0.01].
    #[arg(long)]
    pub sample_rate: Option<f64>,
}

pub(crate) fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("expected k=v, got {s:?}"))?;
    if k.is_empty() {
        return Err(format!("expected k=v, got {s:?}"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

impl RunArgs {
    /// The effective configuration: the file (or defaults), then the flags, validated.
    pub fn into_config(self) -> Result<AgentConfig, ConfigError> {
        let mut config = self.common.load()?;
        let f = &mut config.fleet;
        macro_rules! set {
            ($($flag:ident => $field:expr),* $(,)?) => {$(
                if let Some(v) = self.$flag { $field = v; }
            )*};
        }
        set!(poll_interval_secs => f.poll_interval_secs, status_interval_secs => f.status_interval_secs,
            watch_window_secs => f.watch_window_secs, workers => f.workers, data_dir => f.data_dir);
        f.controller = self.controller.or(f.controller.take());
        f.enroll_token = self.enroll_token.or(f.enroll_token.take());
        f.enroll_token_file = self.enroll_token_file.or(f.enroll_token_file.take());
        f.trust_file = self.trust.or(f.trust_file.take());
        f.ca_file = self.ca_file.or(f.ca_file.take());
        f.insecure |= self.insecure;
        f.mqtt = self.mqtt.or(f.mqtt.take());
        f.max_models_bytes = self.max_models_bytes.or(f.max_models_bytes);
        f.labels.extend(self.labels);
        f.labels_file = self.labels_file.or(f.labels_file.take());
        if let Some(secs) = self.telemetry_interval_secs {
            config.telemetry.flush_interval_secs = secs;
        }
        if let Some(rate) = self.sample_rate {
            config.telemetry.sample_rate = rate;
        }
        config.validate()?;
        config.validate_fleet()?;
        Ok(config)
    }
}

fn parse_model(s: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = s.split_once('=').ok_or_else(|| format!("expected NAME=PATH, got {s:?}"))?;
    if name.is_empty() || path.is_empty() {
        return Err(format!("expected NAME=PATH, got {s:?}"));
    }
    Ok((name.to_owned(), PathBuf::from(path)))
}

impl ServeArgs {
    /// The effective configuration: the file (or defaults), then the flags, validated.
    pub fn into_config(self) -> Result<AgentConfig, ConfigError> {
        let mut config = self.common.load()?;
        if let Some(n) = self.max_body_bytes {
            config.server.max_body_bytes = n;
        }
        for (name, path) in self.models {
            let mut model = ModelConfig::new(name, path);
            if let Some(w) = self.workers {
                model.workers = w;
            }
            if let Some(q) = self.queue_capacity {
                model.queue_capacity = q;
            }
            if let Some(us) = self.inline_below_us {
                model.inline_below_us = us;
            }
            model.batching = self
                .max_batch_size
                .map(|max_batch_size| BatchingConfig { max_batch_size, max_queue_delay_us: self.max_queue_delay_us });
            config.models.push(model);
        }
        config.validate()?;
        Ok(config)
    }
}
