//! The command line: every command, argument and flag of `edgefleet`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use edgefleet_shared::api::rollouts::{OnFail, OnInsufficient, OnTimeout, RolloutRequest, Strategy};
use edgefleet_shared::api::tokens::Role;
use serde::de::DeserializeOwned;

mod fleet;
pub use fleet::FleetCommand;

/// The edgefleet operator CLI.
#[derive(Debug, Parser)]
#[command(name = "edgefleet", version, about)]
pub struct Cli {
    /// Controller URL.
    #[arg(long, env = "EDGEFLEET_CONTROLLER", default_value = "http://127.0.0.1:7700", global = true)]
    pub controller: String,
    /// CA certificates (PEM) to trust for an https:// controller (else the system's roots).
    #[arg(long, env = "EDGEFLEET_CA_FILE", global = true)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Allow a plain http:// controller URL to a non-loopback host (the token travels in clear).
    #[arg(long, env = "EDGEFLEET_INSECURE", global = true)]
    pub insecure: bool,
    /// Bearer token.
    #[arg(long, env = "EDGEFLEET_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable.
    Table,
    /// The API's JSON, stable for scripts.
    Json,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Models and versions.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Operator tokens (admin).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Devices and their enrollment tokens.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Sign and issue deployment documents: `deploy N:V (--device ID | --selector k=v)`; the
    /// version joins each device's set of models (replacing an earlier version of that model).
    Deploy {
        /// `NAME:VERSION` (VERSION a number or an alias).
        reference: String,
        /// One device.
        #[arg(long, conflicts_with = "selector")]
        device: Option<String>,
        /// Every device with these labels (`k=v`, repeatable).
        #[arg(long, value_parser = parse_kv, required_unless_present = "device")]
        selector: Vec<(String, String)>,
    },
    /// Declarative fleets: a selector and the models every matching device serves.
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Take a model off devices (their other models stay): `undeploy NAME (--device ID | --selector k=v)`.
    Undeploy {
        /// Model name.
        model: String,
        /// One device.
        #[arg(long, conflicts_with = "selector")]
        device: Option<String>,
        /// Every device with these labels (`k=v`, repeatable).
        #[arg(long, value_parser = parse_kv, required_unless_present = "device")]
        selector: Vec<(String, String)>,
    },
    /// Staged rollouts with quality gates.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Drift of a model version's traffic against its training baseline.
    #[command(subcommand)]
    Drift(DriftCommand),
    /// Retraining requests, their dataset snapshots, and per-model policies.
    #[command(subcommand)]
    Retrain(RetrainCommand),
    /// The whole loop on embedded defaults: controller, agents, rollout, traffic, drift,
    /// retrain request, retraining, canary (needs edgefleet-controller and edgefleet-agent
    /// beside this binary).
    Demo(DemoArgs),
    /// Simulated devices (real enrollment, MQTT, status and telemetry; no models) for load tests.
    Sim(SimArgs),
    /// The audit log, newest first.
    Audit {
        /// How many records.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Shell completions on stdout: `edgefleet completions bash > /etc/bash_completion.d/edgefleet`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Man pages (`edgefleet.1` and one per subcommand) into a directory.
    Man {
        /// Where to write them (created if missing).
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

/// `edgefleet drift ...`
#[derive(Debug, Subcommand)]
pub enum DriftCommand {
    /// Per-feature and output drift (PSI, Jensen–Shannon, Wasserstein, KS, chi-squared), drift
    /// flags, sample counts and accuracy over the last `--window`.
    Report {
        /// `NAME[:VERSION]` (default: the latest version with telemetry).
        reference: String,
        /// Time range back from now (e.g. 1h, 30m) [default: the controller's window].
        #[arg(long)]
        window: Option<String>,
        /// Only devices of this group.
        #[arg(long)]
        group: Option<String>,
    },
}

/// `edgefleet retrain ...`
#[derive(Debug, Subcommand)]
pub enum RetrainCommand {
    /// Retrain requests, newest first.
    List {
        /// Only this model's.
        #[arg(long)]
        model: Option<String>,
    },
    /// One request: reason, snapshot, manifest, delivery, versions trained on it.
    Show {
        /// Request id.
        id: u64,
    },
    /// Show a model's policy, or change it with the flags given.
    Policy(PolicyArgs),
}

/// `edgefleet retrain policy`.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Model name.
    pub model: String,
    /// Judge this model (true) or never trigger (false).
    #[arg(long)]
    pub enabled: Option<bool>,
    /// A feature drifts at PSI at or above this.
    #[arg(long)]
    pub psi: Option<f64>,
    /// Share of features that must drift in a window.
    #[arg(long)]
    pub feature_share: Option<f64>,
    /// Consecutive drifting windows needed.
    #[arg(long)]
    pub windows: Option<u32>,
    /// Rows a window needs to be judged.
    #[arg(long)]
    pub min_rows: Option<u64>,
    /// Accuracy drop (0.05 = 5 points) that triggers.
    #[arg(long)]
    pub accuracy_drop: Option<f64>,
    /// Labels needed to judge accuracy.
    #[arg(long)]
    pub min_labels: Option<u64>,
}

/// `edgefleet rollout ...`
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Start a rollout of `N:V` to the devices matching `--selector`.
    Create(Box<RolloutArgs>),
    /// List rollouts, newest first.
    List,
    /// Waves, devices, measurements and gate values of one rollout: what it waits for, the
    /// bake countdown, and which devices are offline, unsettled or failed.
    Status {
        /// Rollout id.
        id: i64,
        /// Redraw until the rollout completes, aborts or pauses (on a terminal the screen is
        /// redrawn; otherwise each status follows the last under a time stamp).
        #[arg(long)]
        watch: bool,
        /// How often `--watch` asks (e.g. 2s, 1m).
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, requires = "watch")]
        interval: std::time::Duration,
    },
    /// Stop issuing waves (devices keep what they have).
    Pause {
        /// Rollout id.
        id: i64,
    },
    /// Continue a paused rollout (its current wave bakes again).
    Resume {
        /// Rollout id.
        id: i64,
    },
    /// Stop and send every device the rollout changed back to its previous version.
    Abort {
        /// Rollout id.
        id: i64,
    },
}

/// `edgefleet rollout create`.
#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// `NAME:VERSION` (VERSION a number or an alias).
    pub reference: String,
    /// Devices with these labels (`k=v`, repeatable).
    #[arg(long, value_parser = parse_kv, required_unless_present = "fleet", conflicts_with = "fleet")]
    pub selector: Vec<(String, String)>,
    /// Roll a new version of a fleet's model over the fleet's devices; the fleet serves it once
    /// the rollout completes.
    #[arg(long)]
    pub fleet: Option<String>,
    /// Waves, gates and what to do when they fail.
    #[command(flatten)]
    pub plan: RolloutPlan,
}

/// How a rollout proceeds (`rollout create`, and the rollouts `model import` starts).
#[derive(Debug, Clone, Args)]
pub struct RolloutPlan {
    /// Cumulative wave sizes in percent, ending at 100 [default: 1,10,50,100].
    #[arg(long, value_delimiter = ',')]
    pub waves: Option<Vec<u8>>,
    /// How long each wave bakes before its gates are judged (e.g. 30s, 10m).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub bake: std::time::Duration,
    /// Gate, e.g. `error_rate<0.01`, `p99_ms<50`, `p99_ratio<1.5`, `psi<0.2` (canary, direct),
    /// `agreement>0.97` (shadow) (repeatable); activation_failure_rate<0.1 is always added unless
    /// given otherwise or --no-default-gate.
    #[arg(long = "gate")]
    pub gates: Vec<String>,
    /// Samples each side of a gate needs before it counts: requests the candidate answered, and
    /// for psi predictions on both the candidate and the devices' previous version.
    #[arg(long, default_value_t = 100)]
    pub min_requests: u64,
    /// On a failed gate: pause or abort.
    #[arg(long, default_value = "abort", value_parser = wire::<OnFail>)]
    pub on_fail: OnFail,
    /// direct (one wave of 100%), canary (wave by wave), or shadow (wave by wave beside the
    /// active version on mirrored requests, gated by `agreement`, then promoted).
    #[arg(long, default_value = "canary", value_parser = wire::<Strategy>)]
    pub strategy: Strategy,
    /// Shadow: share of requests mirrored to the candidate, in (0, 1].
    #[arg(long, default_value_t = 0.25)]
    pub shadow_share: f64,
    /// How long after a wave starts its devices have to activate or fail (at least --bake).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub wave_timeout: std::time::Duration,
    /// Devices silent at the wave deadline: count as failed activations (fail), or pause.
    #[arg(long, default_value = "fail", value_parser = wire::<OnTimeout>)]
    pub on_timeout: OnTimeout,
    /// Gates still short of data (requests, predictions on either side) at the wave deadline:
    /// pause, fail, or skip them.
    #[arg(long, default_value = "pause", value_parser = wire::<OnInsufficient>)]
    pub on_insufficient: OnInsufficient,
    /// Start even if no enrolled device matches the selector (devices join as they enroll).
    #[arg(long)]
    pub allow_empty: bool,
    /// Leave out the default gate activation_failure_rate<0.1.
    #[arg(long)]
    pub no_default_gate: bool,
    /// Disruption budget: labels that group devices, e.g. `site` or `site,function`...
    #[arg(long, value_delimiter = ',', requires = "max_unavailable")]
    pub group_by: Vec<String>,
    /// ...and how many of a group may be activating or failed at once: `N` or `P%`.
    #[arg(long, requires = "group_by")]
    pub max_unavailable: Option<String>,
}

impl RolloutPlan {
    /// A rollout of `name:version` to the devices matching `selector` under this plan.
    pub fn request(self, name: &str, version: &str, selector: Vec<(String, String)>) -> RolloutRequest {
        RolloutRequest {
            model: name.to_owned(),
            version: version.to_owned(),
            selector: selector.into_iter().collect(),
            waves: self.waves,
            bake_secs: self.bake.as_secs(),
            gates: self.gates,
            no_default_gate: self.no_default_gate,
            wave_timeout_secs: self.wave_timeout.as_secs(),
            on_timeout: self.on_timeout,
            on_insufficient: self.on_insufficient,
            allow_empty: self.allow_empty,
            min_requests: self.min_requests,
            on_fail: self.on_fail,
            strategy: self.strategy,
            shadow_share: self.shadow_share,
            fleet: None,
            group_by: self.group_by,
            max_unavailable: self.max_unavailable,
        }
    }
}

/// `edgefleet model ...`
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Register a new version of a model.
    Push(PushArgs),
    /// List models.
    List,
    /// Import a version from an MLflow registry (or a run's artifacts) with its lineage, once or
    /// each time an alias moves (`--follow-alias`), and roll it out with `--selector`.
    Import(Box<ImportArgs>),
    /// Show a model (`N`) or a version (`N:V`, V a number or an alias) with its lineage.
    Show {
        /// `NAME` or `NAME:VERSION`.
        reference: String,
    },
    /// Point an alias at a version: `model alias N:V ALIAS`.
    Alias {
        /// `NAME:VERSION`.
        reference: String,
        /// Alias (e.g. production, staging).
        alias: String,
    },
}

/// `edgefleet model import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// `models:/NAME/VERSION`, `models:/NAME@ALIAS`, `runs:/RUN_ID/PATH` (a model directory or an
    /// .onnx file among the run's artifacts), or `models:/NAME` with --follow-alias.
    pub reference: String,
    /// The MLflow tracking server; credentials from its user info, MLFLOW_TRACKING_TOKEN, or
    /// MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (never recorded).
    #[arg(long, env = "MLFLOW_TRACKING_URI")]
    pub mlflow_uri: String,
    /// Model name here [default: the registered model's name in MLflow].
    #[arg(long)]
    pub name: Option<String>,
    /// The run's artifact with reference data for the baseline (CSV with a header, or .npy)
    /// [default: baseline.csv or baseline.npy at the run's artifact root, when there].
    #[arg(long)]
    pub baseline_artifact: Option<String>,
    /// SHA-256 of the training dataset [default: the run's tag edgefleet.dataset_sha256].
    #[arg(long)]
    pub dataset_hash: Option<String>,
    /// Follow this alias of `models:/NAME`: import the version it points at, then each version
    /// it moves to (and roll each out with --selector). Runs until interrupted.
    #[arg(long)]
    pub follow_alias: Option<String>,
    /// How often --follow-alias asks MLflow where the alias points (e.g. 10s, 1m).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, requires = "follow_alias")]
    pub poll: std::time::Duration,
    /// Accept inputs or outputs that break callers of the latest version (refused otherwise).
    #[arg(long)]
    pub allow_schema_change: bool,
    /// Roll each imported version out to the devices with these labels (`k=v`, repeatable),
    /// unless a rollout of it exists already.
    #[arg(long, value_parser = parse_kv, help_heading = "Rollout")]
    pub selector: Vec<(String, String)>,
    /// The rollout's plan (with --selector).
    #[command(flatten, next_help_heading = "Rollout")]
    pub plan: RolloutPlan,
}

/// `edgefleet model push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The ONNX file.
    pub path: PathBuf,
    /// Model name.
    #[arg(long)]
    pub name: String,
    /// Reference data (CSV with a header row, or .npy) for the baseline profile.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Evaluation metric, `key=value` (number); repeatable.
    #[arg(long = "metric", value_parser = parse_kv)]
    pub metrics: Vec<(String, String)>,
    /// Training parameter, `key=value`; repeatable.
    #[arg(long = "param", value_parser = parse_kv)]
    pub params: Vec<(String, String)>,
    /// SHA-256 of the training dataset (links the version to a retraining snapshot).
    #[arg(long)]
    pub dataset_hash: Option<String>,
    /// Commit of the training code.
    #[arg(long)]
    pub code_commit: Option<String>,
    /// Version this one derives from.
    #[arg(long)]
    pub parent: Option<u64>,
    /// Explicit version number (must be above the latest).
    #[arg(long)]
    pub version: Option<u64>,
    /// Accept inputs or outputs that break callers of the latest version (refused otherwise).
    #[arg(long)]
    pub allow_schema_change: bool,
    /// Accept a model whose outputs differ between two runs here (refused otherwise); devices
    /// still run its self-test, so one that varies there too fails on every device.
    #[arg(long)]
    pub allow_nondeterministic: bool,
}

/// `edgefleet device ...`
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Enrollment tokens.
    #[command(subcommand)]
    Token(DeviceTokenCommand),
    /// List devices (decommissioned ones only with `--state decommissioned`).
    List(DeviceFilter),
    /// Show one device with its last status.
    Show {
        /// Device id.
        id: String,
    },
    /// Set or remove labels (selectors see them from their next evaluation on).
    Label {
        /// Device id.
        id: String,
        /// Label to set, `k=v`; repeatable.
        #[arg(value_parser = parse_kv)]
        set: Vec<(String, String)>,
        /// Label key to remove; repeatable.
        #[arg(long)]
        remove: Vec<String>,
    },
    /// Take a device out of service for good (a stolen or retired device): its key, broker
    /// login and documents stop working at once, and its key can never enroll again.
    Decommission {
        /// Device id.
        id: String,
        /// Why, kept with the device and in the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
}

/// `device list` filters; every one given must hold.
#[derive(Debug, Args)]
pub struct DeviceFilter {
    /// Carries this label, `k=v`; repeatable.
    #[arg(long = "label", value_parser = parse_kv)]
    pub labels: Vec<(String, String)>,
    /// online, offline or decommissioned.
    #[arg(long, value_parser = wire::<edgefleet_shared::api::fleet::DeviceState>)]
    pub state: Option<edgefleet_shared::api::fleet::DeviceState>,
    /// Reports serving this model, `NAME` or `NAME:VERSION`.
    #[arg(long)]
    pub active: Option<String>,
    /// Not seen for at least this long (e.g. 10m, 2d).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub offline_for: Option<Duration>,
}

/// `edgefleet device token ...`
#[derive(Debug, Subcommand)]
pub enum DeviceTokenCommand {
    /// Create an enrollment token (with `--output json` the secret is in the field `token`).
    Create {
        /// How many devices may enroll with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// Lifetime, e.g. `1h`, `30m`, `7d`.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// Label for the devices, `k=v`; repeatable.
        #[arg(long = "label", value_parser = parse_kv)]
        labels: Vec<(String, String)>,
    },
    /// List enrollment tokens (never the secrets), with the devices enrolled by each.
    List,
    /// Revoke an enrollment token: no device enrolls with it from now on.
    Revoke {
        /// Token id.
        id: i64,
    },
}

/// `edgefleet token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is shown once.
    Create {
        /// admin, operator or viewer.
        #[arg(long)]
        role: Role,
        /// Who or what will use it.
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// List tokens.
    List,
    /// Revoke a token by id.
    Revoke {
        /// Token id.
        id: i64,
    },
}

/// `key=value`.
pub(crate) fn parse_kv(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("expected key=value, got {s:?}"))?;
    if k.is_empty() {
        return Err(format!("expected key=value, got {s:?}"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// Splits `NAME:VERSION`.
pub(crate) fn split_ref(reference: &str) -> (&str, Option<&str>) {
    match reference.split_once(':') {
        Some((n, v)) => (n, Some(v)),
        None => (reference, None),
    }
}

/// A value of one of the API's lowercase enums (`pause`, `canary`, ...), read as the server
/// reads it.
fn wire<T: DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|e| e.to_string())
}

/// `edgefleet demo` arguments.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How many agents to run.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=50))]
    pub agents: u16,
    /// Work in this directory (kept) instead of a temporary one.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Leave everything running at the end, until Ctrl-C.
    #[arg(long)]
    pub keep: bool,
}

/// `edgefleet sim` arguments.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Simulated devices.
    #[arg(long, default_value_t = 100)]
    pub devices: u32,
    /// Labels of the simulated devices (`k=v`, repeatable) [default: sim=true].
    #[arg(long = "label", value_parser = parse_kv)]
    pub labels: Vec<(String, String)>,
    /// Status report interval per device.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub status_interval: Duration,
    /// Telemetry batch interval per device.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub telemetry_interval: Duration,
    /// Sampled rows per telemetry batch.
    #[arg(long, default_value_t = 10)]
    pub samples: usize,
    /// How long to run once every device is connected (0: until Ctrl-C).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Enrollments and connections in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Broker URL overriding the one the controller hands out.
    #[arg(long)]
    pub mqtt: Option<String>,
}
