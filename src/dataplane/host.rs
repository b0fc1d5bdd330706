//! sysctls under a /proc/sys tree (its `net/` shows the network namespace
//! of the calling thread) and the pod MTU file.

use std::path::Path;

use crate::{Error, Result};

/// Sysctl values and the MTU file are a line of text; anything longer is
/// not what we are looking for.
const SMALL_FILE: u64 = 4096;

/// The text of a small regular file; `None` when it does not exist. A
/// FIFO or device in its place is refused instead of read (`--proc-sys`
/// and `--mtu-file` are the operator's paths).
fn read_small(path: &Path, what: &str) -> Result<Option<String>> {
    match crate::input::read_text(path, what, SMALL_FILE) {
        Ok(text) => Ok(Some(text)),
        Err(Error::ReadFile { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(Error::ReadFile { path, source }) => {
            Err(Error::io(format!("reading {}", path.display()), source))
        }
        Err(e) => Err(e),
    }
}

/// `None` when the key does not exist (a device not created yet).
pub fn read_sysctl(proc_sys: &Path, key: &str) -> Result<Option<String>> {
    Ok(read_small(&proc_sys.join(key), "sysctl")?.map(|text| text.trim().to_string()))
}

pub fn write_sysctl(proc_sys: &Path, key: &str, value: &str) -> Result<()> {
    let path = proc_sys.join(key);
    std::fs::write(&path, value).map_err(|e| {
        let hint = if e.raw_os_error() == Some(nix::libc::EROFS) {
            " (read-only, as /proc/sys is in an unprivileged container: mount the node's \
             /proc/sys/net elsewhere and point --proc-sys at it)"
        } else {
            ""
        };
        Error::io(format!("writing {value} to {}{hint}", path.display()), e)
    })
}

/// A tree without `net/ipv4/ip_forward` is not a sysctl tree (a wrong
/// `--proc-sys`, or a container without the node's /proc/sys/net mounted).
pub fn check_proc_sys(proc_sys: &Path) -> Result<()> {
    if !proc_sys.is_dir() {
        return Err(Error::invalid(
            "proc-sys",
            format!("{} is not a directory", proc_sys.display()),
        ));
    }
    let probe = proc_sys.join("net/ipv4/ip_forward");
    match probe.try_exists() {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::invalid(
            "proc-sys",
            format!(
                "{} has no net/ipv4/ip_forward: not a sysctl tree (mount the node's /proc/sys/net at {}/net)",
                proc_sys.display(),
                proc_sys.display()
            ),
        )),
        Err(e) => Err(Error::io(format!("reading {}", probe.display()), e)),
    }
}

pub fn read_pod_mtu(path: &Path) -> Result<Option<u32>> {
    Ok(read_small(path, "pod MTU file")?.and_then(|text| text.trim().parse().ok()))
}

/// Whether the pod MTU file can be written where `--mtu-file` says, checked
/// before the first write: the file, if it exists, is a regular file, and
/// its nearest existing directory is a writable one on a real file system
/// (not /proc or /sys, where a write would fail half-way through an apply).
pub fn check_mtu_file(path: &Path) -> Result<()> {
    let bad = |reason: String| Error::invalid("mtu-file", format!("{}: {reason}", path.display()));
    if path.file_name().is_none() {
        return Err(bad("names no file".into()));
    }
    if let Ok(meta) = std::fs::metadata(path) {
        if !meta.is_file() {
            return Err(bad("exists and is not a regular file".into()));
        }
    }
    let mut dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    while !dir.exists() {
        dir = dir.parent().unwrap_or(Path::new("/"));
    }
    if !dir.is_dir() {
        return Err(bad(format!("{} is not a directory", dir.display())));
    }
    let pseudo = nix::sys::statfs::statfs(dir).is_ok_and(|fs| {
        matches!(
            fs.filesystem_type(),
            nix::sys::statfs::PROC_SUPER_MAGIC | nix::sys::statfs::SYSFS_MAGIC
        )
    });
    if pseudo {
        return Err(bad(format!("{} is in /proc or /sys", dir.display())));
    }
    nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK)
        .map_err(|e| bad(format!("{} is not writable: {e}", dir.display())))
}

/// Written to a temporary file and renamed, so a CNI plugin never reads half a number.
pub fn write_pod_mtu(path: &Path, mtu: u32) -> Result<()> {
    let context = |what: &str| format!("{what} {}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(context("creating the directory of"), e))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{mtu}\n")).map_err(|e| Error::io(context("writing"), e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(context("renaming into"), e))
}

pub fn remove_pod_mtu(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
    }
}
