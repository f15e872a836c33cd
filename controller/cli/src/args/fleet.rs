//! `edgefleet fleet ...` arguments.

use clap::Subcommand;

use super::{RolloutPlan, parse_kv};

/// `edgefleet fleet ...`
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Create a fleet: every device matching the selector (now or later) serves its models.
    Create {
        /// Fleet name (`[a-z0-9-]`, starting with a letter).
        name: String,
        /// Member devices' labels (`k=v`, repeatable).
        #[arg(long, value_parser = parse_kv, required = true)]
        selector: Vec<(String, String)>,
        /// A model the members serve, `NAME:VERSION` (repeatable).
        #[arg(long = "model", required = true)]
        models: Vec<String>,
    },
    /// List fleets with their members and conflicts.
    List,
    /// Show one fleet.
    Show {
        /// Fleet name.
        name: String,
    },
    /// Change a fleet's selector or set of models. A new version of a model the fleet serves
    /// goes out as a rollout over the fleet (the flags below: waves, bake, gates, strategy,
    /// disruption budget); the fleet serves it once the rollout completes.
    Update {
        /// Fleet name.
        name: String,
        /// A new selector (`k=v`, repeatable; replaces the old one).
        #[arg(long, value_parser = parse_kv)]
        selector: Vec<(String, String)>,
        /// The new set of models, `NAME:VERSION` (repeatable; replaces the old set).
        #[arg(long = "model")]
        models: Vec<String>,
        /// How the rollout of a new version proceeds.
        #[command(flatten)]
        plan: Box<RolloutPlan>,
    },
    /// Delete a fleet: its devices stop serving its models.
    Delete {
        /// Fleet name.
        name: String,
    },
}
