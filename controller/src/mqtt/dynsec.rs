//! Access control on an external Mosquitto through its dynamic-security plugin, kept by the
//! controller over the plugin's `$CONTROL` topic API.
//!
//! Every default is deny. Each device has its own role naming its topics literally (the plugin of
//! Mosquitto 2.0 does not expand `%u` in ACLs) and a client named by its id (the CN of its broker
//! certificate, which Mosquitto takes as the username); both are made before the device is given
//! its certificate. Decommissioning deletes the device's client and role: the plugin closes its
//! live connections, and although its certificate still passes TLS until it expires, it
//! authorizes nothing from then on (no publish, no subscription, no delivery). The controller
//! reconciles the plugin with the fleet at every connect, so a decommission made while the broker
//! was unreachable takes effect when it is back.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, QoS};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::device_ca::CONTROLLER_IDENTITY;

/// The plugin's command topic.
pub const CONTROL_TOPIC: &str = "$CONTROL/dynamic-security/v1";
/// Where the plugin answers.
pub const RESPONSE_TOPIC: &str = "$CONTROL/dynamic-security/v1/response";
/// Devices per command message when reconciling (the plugin saves its file once per command).
const BATCH: usize = 50;
/// How long to wait for the plugin's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Clients per `listClients` page (an answer of about 25 bytes each, far below 1 MiB).
const PAGE: usize = 5_000;

/// Removes a request's entry from the waiting map when the request ends, however it ends.
struct Waiting<'a> {
    dynsec: &'a Dynsec,
    id: &'a str,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.dynsec.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(self.id);
    }
}

/// Why a change of broker access did not happen.
#[derive(Debug, thiserror::Error)]
pub enum DynsecError {
    /// The command could not be queued (the client is gone).
    #[error("cannot send to the broker: {0}")]
    Send(String),
    /// No answer in time (the broker is unreachable, or has no dynamic-security plugin).
    #[error("the broker's dynamic-security plugin did not answer within {0:?}")]
    Timeout(Duration),
    /// The plugin refused a command.
    #[error("the broker refused {command}: {error}")]
    Refused {
        /// The command.
        command: String,
        /// The plugin's words.
        error: String,
    },
    /// An answer that is not what the plugin sends.
    #[error("unexpected answer from the broker: {0}")]
    Malformed(String),
}

/// The role of one device.
pub fn device_role(device: &str) -> String {
    format!("edgefleet-device-{device}")
}

fn allow(acltype: &str, topic: &str) -> Value {
    json!({"acltype": acltype, "topic": topic, "priority": 0, "allow": true})
}

/// What a device may do: publish its own status and telemetry, subscribe to and receive its own
/// desired state and the fleet's trust rotations.
pub fn device_acls(prefix: &str, device: &str) -> Vec<Value> {
    use edgefleet_shared::fleet::topics;
    let mut acls = vec![
        allow("publishClientSend", &topics::status(prefix, device)),
        allow("publishClientSend", &topics::telemetry(prefix, device)),
    ];
    for topic in [topics::desired(prefix, device), topics::trust(prefix)] {
        acls.push(allow("subscribeLiteral", &topic));
        acls.push(allow("publishClientReceive", &topic));
    }
    acls
}

/// What the controller may do: publish every desired state and the trust chain, read every
/// status and telemetry topic (directly, or through any shared-subscription group, as replicas
/// do), and administer the plugin.
pub fn controller_acls(prefix: &str) -> Vec<Value> {
    use edgefleet_shared::fleet::topics;
    let mut acls = vec![
        allow("publishClientSend", &topics::desired(prefix, "+")),
        allow("publishClientSend", &topics::trust(prefix)),
        allow("publishClientSend", CONTROL_TOPIC),
    ];
    for topic in [topics::status(prefix, "+"), topics::telemetry(prefix, "+"), RESPONSE_TOPIC.to_owned()] {
        acls.push(allow("subscribePattern", &topic));
        acls.push(allow("publishClientReceive", &topic));
    }
    for topic in [topics::status(prefix, "+"), topics::telemetry(prefix, "+")] {
        acls.push(allow("subscribePattern", &format!("$share/+/{topic}")));
    }
    acls
}

/// The plugin's initial configuration file: deny by default, and the controller's client.
pub fn initial_config(prefix: &str) -> Value {
    json!({
        "defaultACLAccess": {
            "publishClientSend": false,
            "publishClientReceive": false,
            "subscribe": false,
            "unsubscribe": true
        },
        "clients": [{
            "username": CONTROLLER_IDENTITY,
            "textname": "the edgefleet controller (certificate from its device CA)",
            "roles": [{"rolename": CONTROLLER_IDENTITY}]
        }],
        "groups": [],
        "roles": [{"rolename": CONTROLLER_IDENTITY, "acls": controller_acls(prefix)}]
    })
}

/// Commands that let `device` in (idempotent: what exists already is left as it is).
pub fn grant_commands(prefix: &str, device: &str) -> Vec<Value> {
    let role = device_role(device);
    vec![
        json!({"command": "createRole", "rolename": role, "acls": device_acls(prefix, device)}),
        json!({"command": "createClient", "username": device, "textname": "edgefleet device",
               "roles": [{"rolename": role}]}),
    ]
}

/// Commands that shut `device` out (its live connections are closed).
pub fn revoke_commands(device: &str) -> Vec<Value> {
    vec![
        json!({"command": "deleteClient", "username": device}),
        json!({"command": "deleteRole", "rolename": device_role(device)}),
    ]
}

/// What reconciling changes: the live devices the plugin lacks, and the decommissioned devices
/// it still knows. Clients the controller did not make (an operator's) are left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Devices to let in.
    pub grant: Vec<String>,
    /// Devices to shut out.
    pub revoke: Vec<String>,
}

/// The plan that makes the plugin's `clients` agree with the fleet.
pub fn plan(clients: &BTreeSet<String>, live: &[String], decommissioned: &[String]) -> Plan {
    Plan {
        grant: live.iter().filter(|d| !clients.contains(*d) && *d != CONTROLLER_IDENTITY).cloned().collect(),
        revoke: decommissioned.iter().filter(|d| clients.contains(*d)).cloned().collect(),
    }
}

/// Errors an idempotent command may answer without anything being wrong.
fn harmless(command: &str, error: &str) -> bool {
    matches!(
        (command, error),
        ("createRole", "Role already exists")
            | ("createClient", "Client already exists")
            | ("deleteClient", "Client not found")
            | ("deleteRole", "Role not found")
    )
}

/// The first real failure among the plugin's `responses`, if any.
pub fn failure(responses: &[Value]) -> Option<DynsecError> {
    responses.iter().find_map(|r| {
        let command = r["command"].as_str().unwrap_or("?");
        let error = r["error"].as_str()?;
        (!harmless(command, error))
            .then(|| DynsecError::Refused { command: command.to_owned(), error: error.to_owned() })
    })
}

/// The controller's side of the plugin's API: commands out, answers matched back by their
/// correlation data.
#[derive(Debug)]
pub struct Dynsec {
    next: AtomicU64,
    waiting: std::sync::Mutex<HashMap<String, oneshot::Sender<Vec<Value>>>>,
    /// Connected and subscribed to the answers: a command sent before would be answered to
    /// nobody.
    ready: tokio::sync::watch::Sender<bool>,
}

impl Default for Dynsec {
    fn default() -> Self {
        Dynsec { next: AtomicU64::new(0), waiting: Default::default(), ready: tokio::sync::watch::Sender::new(false) }
    }
}

impl Dynsec {
    /// Whether the client is connected and subscribed to [`RESPONSE_TOPIC`]; commands wait for it.
    pub fn set_ready(&self, ready: bool) {
        self.ready.send_replace(ready);
    }

    /// Whether commands can be sent now.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Hands an answer (a message on [`RESPONSE_TOPIC`]) to the request waiting for it.
    pub fn answer(&self, payload: &[u8]) {
        let Ok(message) = serde_json::from_slice::<Value>(payload) else {
            tracing::warn!("Unreadable answer from the broker's dynamic-security plugin.");
            return;
        };
        let responses = message["responses"].as_array().cloned().unwrap_or_default();
        let Some(id) = responses.first().and_then(|r| r["correlationData"].as_str()) else { return };
        let waiting = self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(id);
        if let Some(tx) = waiting {
            let _ = tx.send(responses);
        }
    }

    /// Sends `commands` in one message and waits for the plugin's answers.
    pub async fn run(&self, client: &AsyncClient, mut commands: Vec<Value>) -> Result<Vec<Value>, DynsecError> {
        let mut ready = self.ready.subscribe();
        if tokio::time::timeout(ANSWER_TIMEOUT, ready.wait_for(|r| *r)).await.is_err() {
            return Err(DynsecError::Timeout(ANSWER_TIMEOUT));
        }
        let id = format!("edgefleet-{}", self.next.fetch_add(1, Ordering::Relaxed));
        for c in &mut commands {
            c["correlationData"] = Value::String(id.clone());
        }
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id.clone(), tx);
        // However this ends (answered, timed out, or the caller gone), the entry goes.
        let _waiting = Waiting { dynsec: self, id: &id };
        let payload = serde_json::to_vec(&json!({"commands": commands})).unwrap_or_default();
        client
            .publish(CONTROL_TOPIC, QoS::AtLeastOnce, false, payload)
            .await
            .map_err(|e| DynsecError::Send(e.to_string()))?;
        match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
            Ok(Ok(responses)) if responses.len() == commands.len() => Ok(responses),
            Ok(Ok(responses)) => {
                Err(DynsecError::Malformed(format!("{} answers to {} commands", responses.len(), commands.len())))
            }
            Ok(Err(_)) | Err(_) => Err(DynsecError::Timeout(ANSWER_TIMEOUT)),
        }
    }

    /// Runs `commands` and turns a real refusal into an error.
    pub async fn apply(&self, client: &AsyncClient, commands: Vec<Value>) -> Result<(), DynsecError> {
        let responses = self.run(client, commands).await?;
        failure(&responses).map_or(Ok(()), Err)
    }

    /// The plugin's client usernames, a page at a time (one answer must stay far below the
    /// client's packet limit, whatever the fleet's size).
    pub async fn clients(&self, client: &AsyncClient) -> Result<BTreeSet<String>, DynsecError> {
        let mut all = BTreeSet::new();
        loop {
            let offset = all.len();
            let page = json!({"command": "listClients", "verbose": false, "count": PAGE, "offset": offset});
            let responses = self.run(client, vec![page]).await?;
            if let Some(e) = failure(&responses) {
                return Err(e);
            }
            let data = &responses[0]["data"];
            let names = data["clients"]
                .as_array()
                .ok_or_else(|| DynsecError::Malformed("listClients without data.clients".into()))?;
            all.extend(names.iter().filter_map(|n| n.as_str().map(str::to_owned)));
            let total = data["totalCount"].as_u64().unwrap_or(0) as usize;
            if names.is_empty() || all.len() >= total {
                return Ok(all);
            }
        }
    }

    /// Makes the plugin agree with the fleet (`live` and `decommissioned` device ids), in
    /// batches; returns the plan carried out.
    pub async fn reconcile(
        self: &Arc<Self>,
        client: &AsyncClient,
        prefix: &str,
        live: &[String],
        decommissioned: &[String],
    ) -> Result<Plan, DynsecError> {
        let plan = plan(&self.clients(client).await?, live, decommissioned);
        for chunk in plan.grant.chunks(BATCH) {
            self.apply(client, chunk.iter().flat_map(|d| grant_commands(prefix, d)).collect()).await?;
        }
        for chunk in plan.revoke.chunks(BATCH) {
            self.apply(client, chunk.iter().flat_map(|d| revoke_commands(d)).collect()).await?;
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics_of(acls: &[Value], kind: &str) -> Vec<String> {
        acls.iter().filter(|a| a["acltype"] == kind).map(|a| a["topic"].as_str().unwrap_or("").to_owned()).collect()
    }

    #[test]
    fn a_device_role_names_only_its_own_topics() {
        let acls = device_acls("ef", "dev-1");
        assert_eq!(topics_of(&acls, "publishClientSend"), ["ef/devices/dev-1/status", "ef/devices/dev-1/telemetry"]);
        assert_eq!(topics_of(&acls, "subscribeLiteral"), ["ef/devices/dev-1/desired", "ef/trust"]);
        assert_eq!(topics_of(&acls, "publishClientReceive"), ["ef/devices/dev-1/desired", "ef/trust"]);
        assert!(acls.iter().all(|a| a["allow"] == true && !a["topic"].as_str().unwrap_or("+").contains('+')));
    }

    #[test]
    fn the_initial_configuration_denies_by_default_and_knows_only_the_controller() {
        let config = initial_config("ef");
        let defaults = &config["defaultACLAccess"];
        for kind in ["publishClientSend", "publishClientReceive", "subscribe"] {
            assert_eq!(defaults[kind], false, "{kind}");
        }
        assert_eq!(config["clients"].as_array().map(Vec::len), Some(1));
        assert_eq!(config["clients"][0]["username"], CONTROLLER_IDENTITY);
        let acls = config["roles"][0]["acls"].as_array().cloned().unwrap_or_default();
        assert!(topics_of(&acls, "publishClientSend").contains(&CONTROL_TOPIC.to_owned()));
        assert!(topics_of(&acls, "subscribePattern").contains(&"ef/devices/+/telemetry".to_owned()));
    }

    #[test]
    fn grants_make_the_role_before_the_client_and_revokes_delete_both() {
        let grant = grant_commands("ef", "dev-1");
        assert_eq!(grant[0]["command"], "createRole");
        assert_eq!(grant[1]["command"], "createClient");
        assert_eq!(grant[1]["roles"][0]["rolename"], grant[0]["rolename"]);
        let revoke = revoke_commands("dev-1");
        assert_eq!(
            (revoke[0]["command"].clone(), revoke[0]["username"].clone()),
            (json!("deleteClient"), json!("dev-1"))
        );
        assert_eq!(revoke[1]["rolename"], "edgefleet-device-dev-1");
    }

    #[test]
    fn reconciling_grants_missing_devices_revokes_decommissioned_ones_and_spares_the_rest() {
        let clients: BTreeSet<String> =
            ["edgefleet-controller", "ops-admin", "a", "gone"].into_iter().map(str::to_owned).collect();
        let live = ["a".to_owned(), "b".to_owned()];
        let decommissioned = ["gone".to_owned(), "long-gone".to_owned()];
        assert_eq!(
            plan(&clients, &live, &decommissioned),
            Plan { grant: vec!["b".into()], revoke: vec!["gone".into()] }
        );
        assert_eq!(plan(&clients, &[], &[]), Plan::default());
    }

    #[test]
    fn only_real_refusals_are_failures() {
        let fine = [
            json!({"command": "createRole", "error": "Role already exists"}),
            json!({"command": "createClient"}),
            json!({"command": "deleteClient", "error": "Client not found"}),
        ];
        assert!(failure(&fine).is_none());
        let bad = [json!({"command": "createClient", "error": "Role not found"})];
        assert!(matches!(failure(&bad), Some(DynsecError::Refused { command, .. }) if command == "createClient"));
    }

    #[tokio::test]
    async fn answers_reach_the_request_that_waits_for_them() {
        let dynsec = Dynsec::default();
        let (tx, rx) = oneshot::channel();
        dynsec.waiting.lock().expect("lock").insert("edgefleet-7".into(), tx);
        dynsec.answer(b"not json");
        dynsec.answer(br#"{"responses": [{"command": "listClients", "correlationData": "edgefleet-8"}]}"#);
        dynsec.answer(br#"{"responses": [{"command": "listClients", "correlationData": "edgefleet-7"}]}"#);
        let got = rx.await.expect("answered");
        assert_eq!(got[0]["command"], "listClients");
        assert!(dynsec.waiting.lock().expect("lock").is_empty());
    }
}
