use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::Mode;

/// What an agent is told to do: which routes to install (`route_mode`) and
/// which encapsulations it must be able to receive (`decap`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub generation: u64,
    pub route_mode: Mode,
    pub decap: BTreeSet<Mode>,
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
