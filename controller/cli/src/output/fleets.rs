//! `edgefleet fleet ...`, `deploy` and `undeploy` renderings.

use edgefleet_shared::api::fleet::Issued;
use edgefleet_shared::api::fleets::FleetInfo;
use edgefleet_shared::api::rollouts::RolloutInfo;

use super::{json, list, time};
use crate::args::Output;

fn models(f: &FleetInfo) -> String {
    f.models.iter().map(|m| format!("{}:{}", m.name, m.version)).collect::<Vec<_>>().join(",")
}

fn selector(f: &FleetInfo) -> String {
    f.selector.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// `fleet list`.
pub(crate) fn fleets(out: Output, fleets: &[FleetInfo]) {
    list(out, fleets, &["name", "selector", "models", "devices", "serving", "conflicts"], |f| {
        vec![
            f.name.clone(),
            selector(f),
            models(f),
            f.devices.len().to_string(),
            f.serving.len().to_string(),
            f.conflicts.len().to_string(),
        ]
    });
}

/// `fleet update`: the fleet, and the rollout it started for a new version.
pub(crate) fn fleet_update(out: Output, f: &FleetInfo, rollout: Option<&RolloutInfo>) {
    if out == Output::Json {
        return json(&serde_json::json!({ "fleet": f, "rollout": rollout }));
    }
    fleet(out, f);
    if let Some(r) = rollout {
        say!(
            "rollout {} of {}:{} started over the fleet; the fleet serves it once the rollout completes \
             (edgefleet rollout status {} --watch)",
            r.id,
            r.model.name,
            r.model.version,
            r.id
        );
    }
}

/// `fleet create|show`.
pub(crate) fn fleet(out: Output, f: &FleetInfo) {
    if out == Output::Json {
        return json(f);
    }
    say!("fleet {}: selector {}, models {}", f.name, selector(f), models(f));
    say!("created {} by {}, changed {}", time(f.created_at), f.created_by, time(f.updated_at));
    say!("devices ({}, {} serving every model): {}", f.devices.len(), f.serving.len(), f.devices.join(" "));
    for c in &f.conflicts {
        say!("conflict: {} matches fleets {} (none of them changes it)", c.device, c.fleets.join(", "));
    }
}

/// `deploy` and `undeploy`: the documents issued.
pub(crate) fn issued(out: Output, issued: &[Issued]) {
    list(out, issued, &["device", "version", "sequence", "expires"], |i| {
        vec![i.device_id.clone(), i.version.to_string(), i.sequence.to_string(), time(i.expires_at)]
    });
}
