//! Named network namespaces (`ip netns`) owned by a value: created by
//! [`Netns::create`], deleted on drop, so a panicking test leaves nothing behind.
//!
//! Code runs "inside" a namespace on a dedicated thread ([`Netns::run`]): a
//! thread that called `setns(CLONE_NEWNET)` opens its netlink and UDP sockets in
//! that namespace and sees that namespace's `/proc/sys/net`.

use std::fs::File;
use std::future::Future;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{setns, CloneFlags};

use crate::{Error, Result};

/// Where `ip netns add` bind-mounts the namespaces it creates.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// A named network namespace, deleted (`ip netns del`) when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// `ip netns add NAME`.
    pub fn create(name: &str) -> Result<Netns> {
        run_command("ip", &["netns", "add", name])?;
        Ok(Netns {
            name: name.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Give up ownership: the namespace outlives this handle.
    pub fn keep(self) {
        std::mem::forget(self);
    }

    /// `ip -n NAME ARGS...`; returns stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_command("ip", &full)
    }

    /// `ip netns exec NAME ARGS...`; returns stdout.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        run_command("ip", &full)
    }

    /// Runs `f` on a new thread that entered this namespace, and waits for it.
    /// Blocking: do not call it from an async task without `spawn_blocking`.
    pub fn run<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        run_in_netns(&self.name, f)
    }

    /// Like [`Netns::run`] with a current-thread tokio runtime inside the
    /// namespace, for netlink (rtnetlink) code.
    pub fn run_async<F, Fut, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = R>,
        R: Send,
    {
        run_async_in_netns(&self.name, f)
    }

    /// Writes a sysctl inside the namespace: `net.ipv4.ip_forward`, or with
    /// slashes when a device name has dots: `net/ipv4/conf/vxlan.calico/rp_filter`.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = sysctl_path(key);
        self.run(|| std::fs::write(&path, value))?
            .map_err(|e| Error::io(format!("netns {}: writing {path}", self.name), e))
    }

    /// Reads a sysctl inside the namespace (trimmed).
    pub fn read_sysctl(&self, key: &str) -> Result<String> {
        let path = sysctl_path(key);
        let value = self
            .run(|| std::fs::read_to_string(&path))?
            .map_err(|e| Error::io(format!("netns {}: reading {path}", self.name), e))?;
        Ok(value.trim().to_string())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run_command("ip", &["netns", "del", &self.name]) {
            tracing::warn!(netns = %self.name, error = %e, "deleting network namespace");
        }
    }
}

/// Moves the calling thread into namespace `name` (for callers that manage
/// their own thread). The thread stays there; the rest of the process does not.
pub fn enter_current_thread(name: &str) -> Result<()> {
    let path = Path::new(NETNS_RUN_DIR).join(name);
    let file = File::open(&path).map_err(|e| Error::Netns {
        name: name.to_string(),
        reason: format!("opening {}: {e}", path.display()),
    })?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| Error::Netns {
        name: name.to_string(),
        reason: format!("setns(CLONE_NEWNET): {e}"),
    })
}

/// [`run_in_netns`] with a current-thread tokio runtime inside the
/// namespace, for netlink (rtnetlink) code.
pub fn run_async_in_netns<F, Fut, R>(name: &str, f: F) -> Result<R>
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = R>,
    R: Send,
{
    run_in_netns(name, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io(format!("tokio runtime in netns {name}"), e))?;
        Ok(rt.block_on(f()))
    })?
}

/// From async code: `f` inside namespace `name` when one is given (on a
/// blocking thread, with [`run_async_in_netns`]), else right here.
pub async fn in_netns_or_here<F, Fut, R>(name: Option<String>, f: F) -> Result<R>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<R>>,
    R: Send + 'static,
{
    let Some(name) = name else {
        return f().await;
    };
    let netns = name.clone();
    tokio::task::spawn_blocking(move || run_async_in_netns(&netns, f))
        .await
        .map_err(|e| Error::Netns {
            name,
            reason: e.to_string(),
        })??
}

/// Runs `f` on a scoped thread inside namespace `name`. A panic in `f` comes
/// back as `Error::Netns` carrying the panic message.
pub fn run_in_netns<F, R>(name: &str, f: F) -> Result<R>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name(format!("netns-{name}"))
            .spawn_scoped(scope, || {
                enter_current_thread(name)?;
                Ok(f())
            })
            .map_err(|e| Error::io(format!("spawning a thread for netns {name}"), e))?;
        handle.join().map_err(|panic| Error::Netns {
            name: name.to_string(),
            reason: format!(
                "code run in the namespace panicked: {}",
                panic_message(&*panic)
            ),
        })?
    })
}

/// A short name that no other test, thread or process uses:
/// `<prefix><pid base36>-<counter base36>`, e.g. `pr1k3x-0`, at most 15
/// characters (the prefix is cut to fit). The pid separates processes, the
/// counter separates callers in one process; a name that is already taken
/// under /run/netns (or is a `name-...` prefix of a namespace there, left by a
/// crashed process with a recycled pid) is skipped.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let pid = base36(u64::from(std::process::id()));
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let suffix = format!("{pid}-{}", base36(u64::from(n)));
        let keep = 15usize.saturating_sub(suffix.len());
        let prefix: String = prefix.chars().take(keep).collect();
        let name = format!("{prefix}{suffix}");
        if !name_in_use(&name) {
            return name;
        }
    }
}

fn name_in_use(name: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(NETNS_RUN_DIR) else {
        return false;
    };
    let dashed = format!("{name}-");
    entries.flatten().any(|entry| {
        let entry = entry.file_name();
        let entry = entry.to_string_lossy();
        entry == name || entry.starts_with(&dashed)
    })
}

/// Runs a command, returns its stdout; a non-zero exit is `Error::Command`.
pub(crate) fn run_command(program: &str, args: &[&str]) -> Result<String> {
    let line = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::io(format!("running `{line}`"), e))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(Error::Command {
            command: line,
            stderr: if stderr.is_empty() {
                out.status.to_string()
            } else {
                stderr
            },
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn sysctl_path(key: &str) -> String {
    if key.contains('/') {
        format!("/proc/sys/{}", key.trim_start_matches('/'))
    } else {
        format!("/proc/sys/{}", key.replace('.', "/"))
    }
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_short_and_distinct() {
        let a = unique_name("podroute-lab");
        let b = unique_name("podroute-lab");
        assert_ne!(a, b);
        assert!(a.len() <= 15 && b.len() <= 15, "{a} {b}");
    }

    #[test]
    fn base36_digits() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
    }
}
