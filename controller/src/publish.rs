//! Delivery over MQTT of what changed: after a deploy, a rollout step or abort, or a refresh,
//! each changed device's *current* document is published, retained, on its desired-state topic;
//! after a key rotation, the trust chain. Without a broker, devices poll and nothing is sent.
//!
//! The current document is read back rather than handed over by whoever issued it, so two
//! issuances racing to publish for one device can never leave the older one retained.

use edgefleet_shared::trust::TrustChain;

use crate::fleet::Fleet;
use crate::mqtt::Mqtt;

/// Publishes documents and trust to the fleet, when there is a broker.
#[derive(Debug, Clone)]
pub struct Publisher {
    fleet: Fleet,
    mqtt: Option<Mqtt>,
}

impl Publisher {
    /// A publisher over `mqtt` (none: devices poll over HTTP).
    pub fn new(fleet: Fleet, mqtt: Option<Mqtt>) -> Self {
        Publisher { fleet, mqtt }
    }

    /// Publishes the current documents of `devices` (retained).
    pub async fn documents(&self, devices: &[String]) {
        let Some(mqtt) = &self.mqtt else { return };
        for device in devices {
            match self.fleet.desired(device.clone()).await {
                Ok(Some(env)) => mqtt.publish_desired(device, &env).await,
                Ok(None) => {}
                Err(e) => tracing::error!(%device, error = %e, "Cannot read a document to publish."),
            }
        }
    }

    /// Gives `device` its topics on a broker whose access control the controller keeps
    /// (before it is handed its broker certificate).
    pub async fn grant_access(&self, device: &str) -> Result<(), crate::mqtt::dynsec::DynsecError> {
        match &self.mqtt {
            Some(mqtt) => mqtt.grant_access(device).await,
            None => Ok(()),
        }
    }

    /// Takes `device`'s topics away now (a device decommissioned while it was being granted).
    pub async fn revoke_access_now(&self, device: &str) {
        if let Some(mqtt) = &self.mqtt {
            mqtt.revoke_access_now(device).await;
        }
    }

    /// Removes the retained documents of `device` (decommissioned) and its broker access.
    pub async fn forget(&self, device: &str) {
        if let Some(mqtt) = &self.mqtt {
            mqtt.revoke_access(device);
            mqtt.clear_desired(device).await;
        }
    }

    /// Publishes the trust chain (retained) after a rotation.
    pub async fn trust(&self, chain: &TrustChain) {
        if let Some(mqtt) = &self.mqtt {
            mqtt.publish_trust(chain).await;
        }
    }
}
