//! `edgefleet`, the operator CLI: a thin client of the REST API.
//!
//! Exit codes: 0 success, 1 the controller refused (its `{"error"}` is printed), 2 bad
//! arguments, 69 the controller cannot be reached.

mod client;
pub mod demo;
mod output;
pub mod sim;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use client::{CliError, Client};

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
    /// Sign and issue deployment documents: `deploy N:V (--device ID | --selector k=v)`.
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
    Demo(demo::DemoArgs),
    /// Simulated devices (real enrollment, MQTT, status and telemetry; no models) for load tests.
    Sim(sim::SimArgs),
    /// The audit log, newest first.
    Audit {
        /// How many records.
        #[arg(long, default_value_t = 50)]
        limit: u32,
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
    /// Waves, devices, measurements and gate values of one rollout.
    Status {
        /// Rollout id.
        id: i64,
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
    #[arg(long, value_parser = parse_kv, required = true)]
    pub selector: Vec<(String, String)>,
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
    /// Requests the candidate must answer before request-based gates count.
    #[arg(long, default_value_t = 100)]
    pub min_requests: u64,
    /// On a failed gate: pause or abort.
    #[arg(long, default_value = "abort", value_parser = ["pause", "abort"])]
    pub on_fail: String,
    /// direct (one wave of 100%), canary (wave by wave), or shadow (wave by wave beside the
    /// active version on mirrored requests, gated by `agreement`, then promoted).
    #[arg(long, default_value = "canary", value_parser = ["direct", "canary", "shadow"])]
    pub strategy: String,
    /// Shadow: share of requests mirrored to the candidate, in (0, 1].
    #[arg(long, default_value_t = 0.25)]
    pub shadow_share: f64,
    /// How long after a wave starts its devices have to activate or fail (at least --bake).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub wave_timeout: std::time::Duration,
    /// Devices silent at the wave deadline: count as failed activations (fail), or pause.
    #[arg(long, default_value = "fail", value_parser = ["fail", "pause"])]
    pub on_timeout: String,
    /// Start even if no enrolled device matches the selector (devices join as they enroll).
    #[arg(long)]
    pub allow_empty: bool,
    /// Leave out the default gate activation_failure_rate<0.1.
    #[arg(long)]
    pub no_default_gate: bool,
}

/// `edgefleet model ...`
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Register a new version of a model.
    Push(PushArgs),
    /// List models.
    List,
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
}

/// `edgefleet device ...`
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Enrollment tokens.
    #[command(subcommand)]
    Token(DeviceTokenCommand),
    /// List devices.
    List,
    /// Show one device with its last status.
    Show {
        /// Device id.
        id: String,
    },
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
}

/// `edgefleet token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is shown once.
    Create {
        /// admin, operator or viewer.
        #[arg(long)]
        role: String,
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

fn parse_kv(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("expected key=value, got {s:?}"))?;
    if k.is_empty() {
        return Err(format!("expected key=value, got {s:?}"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// Splits `NAME:VERSION`.
fn split_ref(reference: &str) -> (&str, Option<&str>) {
    match reference.split_once(':') {
        Some((n, v)) => (n, Some(v)),
        None => (reference, None),
    }
}

async fn rollout_action(client: &Client, out: Output, id: i64, action: &str) -> Result<(), CliError> {
    let path = format!("/api/v1/rollouts/{id}/{action}");
    output::rollout(out, &client.post_json(&path, &serde_json::Value::Null).await?);
    Ok(())
}

/// Runs a parsed command, writing results to stdout.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    if let Command::Demo(args) = cli.command {
        return demo::run(args).await;
    }
    let (host, tls) = edgefleet_service::tls::http_url_host(&cli.controller).map_err(CliError::Usage)?;
    if !tls {
        let what = format!("the controller URL {}", cli.controller);
        edgefleet_service::tls::check_plain(&what, host, cli.insecure).map_err(CliError::Usage)?;
    }
    let client = Client::new(&cli.controller, cli.token.clone(), cli.ca_file.as_deref())?;
    let out = cli.output;
    match cli.command {
        Command::Model(ModelCommand::Push(args)) => {
            let version = client.push(&args).await?;
            output::version(out, &version);
        }
        Command::Model(ModelCommand::List) => output::models(out, &client.get_json("/api/v1/models").await?),
        Command::Model(ModelCommand::Show { reference }) => match split_ref(&reference) {
            (name, None) => output::model(out, &client.get_json(&format!("/api/v1/models/{name}")).await?),
            (name, Some(v)) => {
                output::version(out, &client.get_json(&format!("/api/v1/models/{name}/versions/{v}")).await?)
            }
        },
        Command::Model(ModelCommand::Alias { reference, alias }) => {
            let (name, Some(v)) = split_ref(&reference) else {
                return Err(CliError::Usage(format!("expected NAME:VERSION, got {reference:?}")));
            };
            let version: u64 = v.parse().map_err(|_| CliError::Usage(format!("version {v:?} is not a number")))?;
            let body = serde_json::json!({ "version": version });
            output::model(out, &client.put_json(&format!("/api/v1/models/{name}/aliases/{alias}"), &body).await?);
        }
        Command::Token(TokenCommand::Create { role, name }) => {
            let body = serde_json::json!({ "name": name, "role": role });
            output::created_token(out, &client.post_json("/api/v1/tokens", &body).await?);
        }
        Command::Token(TokenCommand::List) => output::tokens(out, &client.get_json("/api/v1/tokens").await?),
        Command::Token(TokenCommand::Revoke { id }) => {
            client.delete(&format!("/api/v1/tokens/{id}")).await?;
            output::done(out, &format!("token {id} revoked"));
        }
        Command::Device(DeviceCommand::Token(DeviceTokenCommand::Create { uses, ttl, labels })) => {
            let labels: std::collections::BTreeMap<_, _> = labels.into_iter().collect();
            let body = serde_json::json!({ "uses": uses, "ttl_secs": ttl.as_secs(), "labels": labels });
            output::enrollment_token(out, &client.post_json("/api/v1/enrollment-tokens", &body).await?);
        }
        Command::Device(DeviceCommand::List) => output::devices(out, &client.get_json("/api/v1/devices").await?),
        Command::Device(DeviceCommand::Show { id }) => {
            output::device(out, &client.get_json(&format!("/api/v1/devices/{id}")).await?)
        }
        Command::Deploy { reference, device, selector } => {
            let (name, Some(v)) = split_ref(&reference) else {
                return Err(CliError::Usage(format!("expected NAME:VERSION, got {reference:?}")));
            };
            let selector: Option<std::collections::BTreeMap<_, _>> =
                (!selector.is_empty()).then(|| selector.into_iter().collect());
            let body = serde_json::json!({ "model": name, "version": v, "device": device, "selector": selector });
            output::issued(out, &client.post_json("/api/v1/deployments", &body).await?);
        }
        Command::Rollout(RolloutCommand::Create(args)) => {
            let (name, Some(v)) = split_ref(&args.reference) else {
                return Err(CliError::Usage(format!("expected NAME:VERSION, got {:?}", args.reference)));
            };
            let selector: std::collections::BTreeMap<_, _> = args.selector.into_iter().collect();
            let body = serde_json::json!({
                "model": name, "version": v, "selector": selector, "waves": args.waves,
                "bake_secs": args.bake.as_secs(), "gates": args.gates, "min_requests": args.min_requests,
                "on_fail": args.on_fail, "strategy": args.strategy, "shadow_share": args.shadow_share,
                "wave_timeout_secs": args.wave_timeout.as_secs(), "on_timeout": args.on_timeout,
                "allow_empty": args.allow_empty, "no_default_gate": args.no_default_gate,
            });
            output::rollout(out, &client.post_json("/api/v1/rollouts", &body).await?);
        }
        Command::Rollout(RolloutCommand::List) => output::rollouts(out, &client.get_json("/api/v1/rollouts").await?),
        Command::Rollout(RolloutCommand::Status { id }) => {
            output::rollout(out, &client.get_json(&format!("/api/v1/rollouts/{id}")).await?)
        }
        Command::Rollout(RolloutCommand::Pause { id }) => rollout_action(&client, out, id, "pause").await?,
        Command::Rollout(RolloutCommand::Resume { id }) => rollout_action(&client, out, id, "resume").await?,
        Command::Rollout(RolloutCommand::Abort { id }) => rollout_action(&client, out, id, "abort").await?,
        Command::Drift(DriftCommand::Report { reference, window, group }) => {
            let (name, version) = split_ref(&reference);
            let mut path = match version {
                Some(v) => format!("/api/v1/models/{name}/versions/{v}/drift"),
                None => format!("/api/v1/models/{name}/drift"),
            };
            let query: Vec<String> = [("window", window), ("group", group)]
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
                .collect();
            if !query.is_empty() {
                path = format!("{path}?{}", query.join("&"));
            }
            output::drift(out, &client.get_json(&path).await?);
        }
        Command::Retrain(RetrainCommand::List { model }) => {
            let path = model.map_or("/api/v1/retrain".to_owned(), |m| format!("/api/v1/retrain?model={m}"));
            output::retrain_requests(out, &client.get_json(&path).await?);
        }
        Command::Retrain(RetrainCommand::Show { id }) => {
            output::retrain_request(out, &client.get_json(&format!("/api/v1/retrain/{id}")).await?)
        }
        Command::Retrain(RetrainCommand::Policy(args)) => {
            let path = format!("/api/v1/models/{}/retrain-policy", args.model);
            let mut policy = client.get_json(&path).await?;
            let changes = [
                ("enabled", args.enabled.map(serde_json::Value::from)),
                ("psi", args.psi.map(serde_json::Value::from)),
                ("feature_share", args.feature_share.map(serde_json::Value::from)),
                ("windows", args.windows.map(serde_json::Value::from)),
                ("min_rows", args.min_rows.map(serde_json::Value::from)),
                ("accuracy_drop", args.accuracy_drop.map(serde_json::Value::from)),
                ("min_labels", args.min_labels.map(serde_json::Value::from)),
            ];
            let mut changed = false;
            for (key, value) in changes {
                if let Some(v) = value {
                    policy[key] = v;
                    changed = true;
                }
            }
            if changed {
                policy = client.put_json(&path, &policy).await?;
            }
            output::object(out, &policy);
        }
        Command::Demo(_) => unreachable!("handled before connecting"),
        Command::Sim(args) => sim::run(&client, &cli.controller, args).await?,
        Command::Audit { limit } => {
            output::audit(out, &client.get_json(&format!("/api/v1/audit?limit={limit}")).await?)
        }
    }
    Ok(())
}
