//! Peak RSS of this process: VmHWM, and its reset through /proc/self/clear_refs.

use crate::{Error, Result};

/// Reset VmHWM of this process to its current RSS.
pub(super) fn reset_peak_rss() -> Result<()> {
    std::fs::write("/proc/self/clear_refs", "5")
        .map_err(|e| Error::io("writing 5 to /proc/self/clear_refs", e))
}

pub(super) fn peak_rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| Error::io("reading /proc/self/status", e))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| {
            Error::io(
                "reading VmHWM",
                std::io::Error::other("no VmHWM in /proc/self/status"),
            )
        })
}

pub fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
