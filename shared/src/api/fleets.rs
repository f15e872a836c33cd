//! Declarative fleets (`/api/v1/fleets`): a label selector and the models every matching device
//! must serve. The controller keeps every matching device on its fleet's models, devices that
//! enroll or are relabelled later included; a device matching two fleets is a conflict shown on
//! both, and neither changes it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::deployment::ModelRef;

/// Body of `POST /fleets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateFleet {
    /// Fleet name: 1-63 of `[a-z0-9-]`, starting with a letter.
    pub name: String,
    /// Devices whose labels include all of these (at least one label).
    pub selector: BTreeMap<String, String>,
    /// Models every member serves, as `NAME:VERSION` (VERSION a number or an alias, resolved now).
    pub models: Vec<String>,
}

/// Body of `PATCH /fleets/{name}`: what changes (absent fields stay).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateFleet {
    /// A new selector.
    #[serde(default)]
    pub selector: Option<BTreeMap<String, String>>,
    /// The new set of models, as `NAME:VERSION`.
    #[serde(default)]
    pub models: Option<Vec<String>>,
}

/// A device that matches more than one fleet: none of them changes it until its labels or the
/// selectors no longer overlap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FleetConflict {
    /// The device.
    pub device: String,
    /// Every fleet it matches, by name.
    pub fleets: Vec<String>,
}

/// A fleet with its members now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FleetInfo {
    /// Fleet name.
    pub name: String,
    /// Its selector.
    pub selector: BTreeMap<String, String>,
    /// Its models.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub models: Vec<ModelRef>,
    /// Devices it manages (matching it and no other fleet).
    pub devices: Vec<String>,
    /// Of those, the devices whose reported status serves every model of the fleet.
    pub serving: Vec<String>,
    /// Devices matching it and another fleet.
    pub conflicts: Vec<FleetConflict>,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds of the last change.
    pub updated_at: u64,
    /// Who created it.
    pub created_by: String,
}
