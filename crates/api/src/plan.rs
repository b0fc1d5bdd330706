use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use super::crd::{decap_schema, mode_schema};
use super::Mode;

/// Plan generations live in Kubernetes objects, whose integers are int64.
pub const MAX_GENERATION: u64 = i64::MAX as u64;

/// What an agent is told to do: which routes to install (`route_mode`) and
/// which encapsulations it must be able to receive (`decap`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Counts up with every plan; agents report it back once applied.
    #[serde(deserialize_with = "bounded_generation")]
    #[schemars(extend("format" = "int64"))]
    pub generation: u64,
    /// Which routes agents install.
    #[schemars(schema_with = "mode_schema")]
    pub route_mode: Mode,
    /// Encapsulations every node must be able to receive.
    #[serde(default)]
    #[schemars(schema_with = "decap_schema")]
    pub decap: BTreeSet<Mode>,
}

/// A generation read back from the API server: at most 2^63-1, like every
/// Kubernetes integer, so counting up from it never overflows.
fn bounded_generation<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let generation = u64::deserialize(d)?;
    if generation > MAX_GENERATION {
        return Err(serde::de::Error::custom(format!(
            "generation {generation} is over {MAX_GENERATION}"
        )));
    }
    Ok(generation)
}

impl Plan {
    /// The steady state of one mode: route and decap the same.
    pub fn steady(route_mode: Mode, generation: u64) -> Self {
        Plan {
            generation,
            route_mode,
            decap: BTreeSet::from([route_mode]),
        }
    }

    /// Tunnel modes whose devices must exist: everything we decap plus the
    /// tunnel we route through.
    pub fn tunnels(&self) -> BTreeSet<Mode> {
        self.decap
            .iter()
            .copied()
            .chain([self.route_mode])
            .filter(|m| m.is_tunnel())
            .collect()
    }
}
