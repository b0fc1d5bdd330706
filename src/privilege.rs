//! Capability checks, and the agent's drop to CAP_NET_ADMIN, on the `caps` crate.

use caps::{CapSet, Capability, CapsHashSet};

use crate::{Error, Result};

/// Programming links, routes, neighbours and net sysctls.
pub const NET_ADMIN: &[Capability] = &[Capability::CAP_NET_ADMIN];
/// Creating a named network namespace (a bind mount under /run/netns) and programming it.
pub const NETNS: &[Capability] = &[Capability::CAP_NET_ADMIN, Capability::CAP_SYS_ADMIN];

/// `Error::invalid(field, why)` unless this thread has every one of `needed` effective.
pub fn require(needed: &[Capability], field: &str, why: &str) -> Result<()> {
    if needed.iter().all(|&cap| effective(cap)) {
        Ok(())
    } else {
        Err(Error::invalid(field, why))
    }
}

fn effective(cap: Capability) -> bool {
    caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false)
}

/// Keep CAP_NET_ADMIN, drop the rest, in this thread (new threads copy it).
pub fn drop_all_but_net_admin() -> Result<()> {
    let keep = CapsHashSet::from([Capability::CAP_NET_ADMIN]);
    let fail = |what: &str, e: caps::errors::CapsError| {
        Error::io(
            format!("dropping capabilities ({what})"),
            std::io::Error::other(e.to_string()),
        )
    };
    // The bounding set needs CAP_SETPCAP, so it goes first.
    if effective(Capability::CAP_SETPCAP) {
        for cap in caps::all().difference(&keep) {
            caps::drop(None, CapSet::Bounding, *cap).map_err(|e| fail("bounding", e))?;
        }
    }
    for set in [CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        let now = caps::read(None, set).map_err(|e| fail("read", e))?;
        caps::set(None, set, &now.intersection(&keep).copied().collect())
            .map_err(|e| fail("set", e))?;
    }
    tracing::debug!("capabilities dropped to CAP_NET_ADMIN");
    Ok(())
}
