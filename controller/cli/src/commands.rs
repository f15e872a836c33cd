//! What each command does: parsed arguments → typed API calls → output.

use edgefleet_shared::api::fleet::{
    CreateEnrollmentToken, Decommission, DeployRequest, DeviceQuery, Relabel, UndeployRequest,
};
use edgefleet_shared::api::fleets::{CreateFleet, UpdateFleet};
use edgefleet_shared::api::models::AliasTarget;
use std::time::Duration;

use edgefleet_shared::api::rollouts::{RolloutRequest, RolloutState};
use edgefleet_shared::api::telemetry::{DriftQuery, ListQuery};
use edgefleet_shared::api::tokens::{AuditQuery, CreateToken};

use crate::args::{
    Cli, Command, DeviceCommand, DeviceTokenCommand, DriftCommand, FleetCommand, ModelCommand, Output, PolicyArgs,
    RetrainCommand, RolloutArgs, RolloutCommand, TokenCommand, split_ref,
};
use crate::client::{CliError, Client, RolloutAction};
use crate::push::push_request;
use crate::{demo, import, output, sim};

/// Runs a parsed command, writing results to stdout.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Demo(args) => return demo::run(args).await,
        Command::Completions { shell } => {
            let mut script = Vec::new();
            completions(shell, &mut script)?;
            crate::stdout_text(&String::from_utf8_lossy(&script));
            return Ok(());
        }
        Command::Man { out } => return man_pages(&out),
        _ => {}
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
            let (upload, metadata) = push_request(&args).await?;
            let pushed = client.push(&args.name, upload, &metadata).await?;
            for warning in &pushed.warnings {
                eprintln!("edgefleet: warning: {warning}");
            }
            output::version(out, &pushed);
        }
        Command::Model(ModelCommand::Import(args)) => import::run(&client, out, *args).await?,
        Command::Model(ModelCommand::List) => output::models(out, &client.models().await?),
        Command::Model(ModelCommand::Show { reference }) => match split_ref(&reference) {
            (name, None) => output::model(out, &client.model(name).await?),
            (name, Some(v)) => output::version(out, &client.version(name, v).await?),
        },
        Command::Model(ModelCommand::Alias { reference, alias }) => {
            let (name, v) = name_version(&reference)?;
            let version: u64 = v.parse().map_err(|_| CliError::Usage(format!("version {v:?} is not a number")))?;
            output::model(out, &client.set_alias(name, &alias, &AliasTarget { version }).await?);
        }
        Command::Token(TokenCommand::Create { role, name }) => {
            output::created_token(out, &client.create_token(&CreateToken { name, role }).await?);
        }
        Command::Token(TokenCommand::List) => output::tokens(out, &client.tokens().await?),
        Command::Token(TokenCommand::Revoke { id }) => {
            client.revoke_token(id).await?;
            output::done(out, &format!("token {id} revoked"));
        }
        Command::Device(DeviceCommand::Token(DeviceTokenCommand::Create { uses, ttl, labels })) => {
            let req = CreateEnrollmentToken { uses, ttl_secs: ttl.as_secs(), labels: labels.into_iter().collect() };
            output::enrollment_token(out, &client.create_enrollment_token(&req).await?);
        }
        Command::Device(DeviceCommand::Token(DeviceTokenCommand::List)) => {
            output::enrollment_tokens(out, &client.enrollment_tokens().await?);
        }
        Command::Device(DeviceCommand::Token(DeviceTokenCommand::Revoke { id })) => {
            client.revoke_enrollment_token(id).await?;
            output::done(out, &format!("enrollment token {id} revoked"));
        }
        Command::Device(DeviceCommand::List(f)) => {
            let query = DeviceQuery {
                label: (!f.labels.is_empty())
                    .then(|| f.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")),
                state: f.state,
                active: f.active,
                offline_for_secs: f.offline_for.map(|d| d.as_secs()),
                ..DeviceQuery::default()
            };
            output::devices(out, &client.devices(&query).await?);
        }
        Command::Device(DeviceCommand::Label { id, set, remove }) => {
            if set.is_empty() && remove.is_empty() {
                return Err(CliError::Usage("give labels to set (k=v) or --remove KEY".into()));
            }
            output::device(out, &client.relabel(&id, &Relabel { set: set.into_iter().collect(), remove }).await?);
        }
        Command::Device(DeviceCommand::Decommission { id, reason }) => {
            output::device(out, &client.decommission(&id, &Decommission { reason }).await?);
        }
        Command::Device(DeviceCommand::Show { id }) => output::device(out, &client.device(&id).await?),
        Command::Deploy { reference, device, selector } => {
            let (name, v) = name_version(&reference)?;
            let req = DeployRequest {
                model: name.to_owned(),
                version: v.to_owned(),
                device,
                selector: (!selector.is_empty()).then(|| selector.into_iter().collect()),
            };
            output::issued(out, &client.deploy(&req).await?);
        }
        Command::Fleet(command) => fleet(&client, out, command).await?,
        Command::Undeploy { model, device, selector } => {
            let req = UndeployRequest {
                model,
                device,
                selector: (!selector.is_empty()).then(|| selector.into_iter().collect()),
            };
            output::issued(out, &client.undeploy(&req).await?);
        }
        Command::Rollout(RolloutCommand::Create(args)) => {
            output::rollout(out, &client.create_rollout(&rollout_request(*args)?).await?);
        }
        Command::Rollout(RolloutCommand::List) => output::rollouts(out, &client.rollouts().await?),
        Command::Rollout(RolloutCommand::Status { id, watch: false, .. }) => {
            output::rollout(out, &client.rollout(id).await?);
        }
        Command::Rollout(RolloutCommand::Status { id, watch: true, interval }) => {
            watch_rollout(&client, out, id, interval).await?;
        }
        Command::Rollout(RolloutCommand::Pause { id }) => {
            output::rollout(out, &client.rollout_action(id, RolloutAction::Pause).await?);
        }
        Command::Rollout(RolloutCommand::Resume { id }) => {
            output::rollout(out, &client.rollout_action(id, RolloutAction::Resume).await?);
        }
        Command::Rollout(RolloutCommand::Abort { id }) => {
            output::rollout(out, &client.rollout_action(id, RolloutAction::Abort).await?);
        }
        Command::Drift(DriftCommand::Report { reference, window, group }) => {
            let (name, version) = split_ref(&reference);
            output::drift(out, &client.drift(name, version, &DriftQuery { window, group }).await?);
        }
        Command::Retrain(RetrainCommand::List { model }) => {
            output::retrain_requests(out, &client.retrain_requests(&ListQuery { model }).await?);
        }
        Command::Retrain(RetrainCommand::Show { id }) => {
            output::retrain_request(out, &client.retrain_request(id).await?)
        }
        Command::Retrain(RetrainCommand::Policy(args)) => policy(&client, out, args).await?,
        Command::Demo(_) | Command::Completions { .. } | Command::Man { .. } => {
            unreachable!("handled before connecting")
        }
        Command::Sim(args) => sim::run(&client, args).await?,
        Command::Audit { limit } => output::audit(out, &client.audit(&AuditQuery { limit: Some(limit) }).await?),
    }
    Ok(())
}

/// `rollout status --watch`: asks every `interval` until the rollout stops changing by itself
/// (completed, aborted or paused). JSON output writes one document per line.
async fn watch_rollout(client: &Client, out: Output, id: i64, interval: Duration) -> Result<(), CliError> {
    use std::io::{IsTerminal as _, Write as _};
    let terminal = std::io::stdout().is_terminal();
    let interval = interval.max(Duration::from_millis(200));
    loop {
        let r = client.rollout(id).await?;
        let settled = matches!(r.state, RolloutState::Completed | RolloutState::Aborted | RolloutState::Paused);
        let text = match out {
            Output::Json => serde_json::to_string(&r).unwrap_or_default() + "\n",
            Output::Table if terminal => format!("\x1b[H\x1b[2J{}", output::rollout_text(&r, output::now())),
            Output::Table => format!(
                "--- {}\n{}",
                humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
                output::rollout_text(&r, output::now())
            ),
        };
        let mut stdout = std::io::stdout().lock();
        if stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).is_err() {
            // The reader went away (`| head`): nothing more to show.
            return Ok(());
        }
        drop(stdout);
        if settled {
            if out == Output::Table && r.state == RolloutState::Paused {
                say!(
                    "(paused: `edgefleet rollout resume {id}` bakes the wave again, `edgefleet rollout abort {id}` rolls back)"
                );
            }
            return Ok(());
        }
        tokio::time::sleep(interval).await;
    }
}

/// `NAME:VERSION`, both parts required.
fn name_version(reference: &str) -> Result<(&str, &str), CliError> {
    match split_ref(reference) {
        (name, Some(v)) if !name.is_empty() && !v.is_empty() => Ok((name, v)),
        _ => Err(CliError::Usage(format!("expected NAME:VERSION, got {reference:?}"))),
    }
}

/// `fleet ...`.
async fn fleet(client: &Client, out: Output, command: FleetCommand) -> Result<(), CliError> {
    match command {
        FleetCommand::Create { name, selector, models } => {
            let req = CreateFleet { name, selector: selector.into_iter().collect(), models };
            output::fleet(out, &client.create_fleet(&req).await?);
        }
        FleetCommand::List => output::fleets(out, &client.fleets().await?),
        FleetCommand::Show { name } => output::fleet(out, &client.fleet(&name).await?),
        FleetCommand::Update { name, selector, models, plan } => {
            if selector.is_empty() && models.is_empty() {
                return Err(CliError::Usage("give --selector or --model to change".into()));
            }
            let current = client.fleet(&name).await?;
            // A new version of a model the fleet serves is a rollout; the rest is changed now.
            let (mut kept, mut rollout) = (Vec::new(), None);
            for reference in &models {
                let (model, v) = name_version(reference)?;
                let Some(old) = current.models.iter().find(|m| m.name == model) else {
                    kept.push(reference.clone());
                    continue;
                };
                let version = client.version(model, v).await?.version;
                if version == old.version {
                    kept.push(reference.clone());
                    continue;
                }
                if rollout.is_some() {
                    return Err(CliError::Usage(
                        "one model's version at a time: each goes out as its own rollout".into(),
                    ));
                }
                kept.push(format!("{}:{}", old.name, old.version));
                rollout = Some((model.to_owned(), version.to_string()));
            }
            let names = |refs: &[String]| -> Vec<String> {
                let mut n: Vec<String> =
                    refs.iter().filter_map(|r| r.split_once(':')).map(|(m, _)| m.to_owned()).collect();
                n.sort();
                n
            };
            let same_set =
                models.is_empty() || names(&kept) == current.models.iter().map(|m| m.name.clone()).collect::<Vec<_>>();
            let mut fleet = current.clone();
            if !selector.is_empty() || !same_set || (rollout.is_none() && !models.is_empty()) {
                let req = UpdateFleet {
                    selector: (!selector.is_empty()).then(|| selector.into_iter().collect()),
                    models: (!models.is_empty()).then_some(kept),
                };
                fleet = client.update_fleet(&name, &req).await?;
            }
            let started = match rollout {
                Some((model, version)) => {
                    let mut req = plan.request(&model, &version, Vec::new());
                    req.fleet = Some(name.clone());
                    Some(client.create_rollout(&req).await?)
                }
                None => None,
            };
            output::fleet_update(out, &fleet, started.as_ref());
        }
        FleetCommand::Delete { name } => {
            client.delete_fleet(&name).await?;
            output::done(out, &format!("fleet {name} deleted"));
        }
    }
    Ok(())
}

fn rollout_request(args: RolloutArgs) -> Result<RolloutRequest, CliError> {
    let (name, v) = name_version(&args.reference)?;
    let mut req = args.plan.request(name, v, args.selector);
    req.fleet = args.fleet;
    Ok(req)
}

/// `retrain policy`: shows the policy, or changes the fields given and shows the result.
async fn policy(client: &Client, out: Output, args: PolicyArgs) -> Result<(), CliError> {
    let mut policy = client.policy(&args.model).await?;
    policy.enabled = args.enabled.unwrap_or(policy.enabled);
    policy.psi = args.psi.unwrap_or(policy.psi);
    policy.feature_share = args.feature_share.unwrap_or(policy.feature_share);
    policy.windows = args.windows.unwrap_or(policy.windows);
    policy.min_rows = args.min_rows.unwrap_or(policy.min_rows);
    policy.accuracy_drop = args.accuracy_drop.unwrap_or(policy.accuracy_drop);
    policy.min_labels = args.min_labels.unwrap_or(policy.min_labels);
    let changed = [
        args.enabled.is_some(),
        args.psi.is_some(),
        args.feature_share.is_some(),
        args.windows.is_some(),
        args.min_rows.is_some(),
        args.accuracy_drop.is_some(),
        args.min_labels.is_some(),
    ]
    .contains(&true);
    if changed {
        policy = client.set_policy(&args.model, &policy).await?;
    }
    output::policy(out, &policy);
    Ok(())
}

/// Writes `shell`'s completion script for `edgefleet` (into memory first: clap_complete panics on
/// a write error, and a reader that goes away must end the CLI quietly).
pub fn completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) -> Result<(), CliError> {
    let mut command = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut command, "edgefleet", out);
    Ok(())
}

/// Writes `edgefleet.1` and a page per subcommand (`edgefleet-rollout-create.1`, ...) into `dir`.
pub fn man_pages(dir: &std::path::Path) -> Result<(), CliError> {
    let io = |e: std::io::Error| CliError::Usage(format!("cannot write man pages to {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    clap_mangen::generate_to(<Cli as clap::CommandFactory>::command(), dir).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_name_every_command() {
        for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
            let mut out = Vec::new();
            completions(shell, &mut out).expect("completions");
            let text = String::from_utf8(out).expect("utf8");
            for word in ["rollout", "deploy", "decommission", "completions"] {
                assert!(text.contains(word), "{shell}: {word} missing");
            }
        }
    }

    #[test]
    fn man_pages_cover_the_subcommands() {
        let dir = tempfile::tempdir().expect("tempdir");
        man_pages(dir.path()).expect("man pages");
        for page in
            ["edgefleet.1", "edgefleet-rollout.1", "edgefleet-rollout-create.1", "edgefleet-device-decommission.1"]
        {
            let text = std::fs::read_to_string(dir.path().join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
            assert!(text.starts_with(".ie") || text.contains(".TH"), "{page} is roff");
        }
    }
}
