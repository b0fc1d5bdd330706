//! A static cluster file, followed with inotify. Reports stay in memory:
//! there is nobody to read them but this process (and its logs).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use notify::{RecursiveMode, Watcher};
use tokio::sync::watch;

use super::{ClusterStore, MemoryStore, NodeReport, Snapshot};
use crate::model::Cluster;
use crate::{Error, Result};

pub struct FileStore {
    state: Arc<MemoryStore>,
    _watcher: notify::RecommendedWatcher,
}

impl FileStore {
    /// Reads `path` (bad input is an error here) and follows it. Editors and
    /// ConfigMap mounts replace the file rather than write it, so the
    /// directory is watched and the file read again on any event there; a
    /// version that does not parse is logged and ignored.
    pub fn open(path: &Path) -> Result<FileStore> {
        let cluster = Cluster::load(path)?;
        let state = Arc::new(MemoryStore::new(Snapshot::from_cluster(&cluster)));
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let file: PathBuf = path.to_path_buf();
        let follower = state.clone();
        let name = path.file_name().map(|n| n.to_os_string());
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // Only writes, creations, renames and removals of our file;
                // reading it (as we do here) must not wake us again.
                let Ok(event) = event else { return };
                if matches!(event.kind, notify::EventKind::Access(_)) {
                    return;
                }
                if !event.paths.is_empty()
                    && !event.paths.iter().any(|p| p.file_name() == name.as_deref())
                {
                    return;
                }
                match Cluster::load(&file) {
                    Ok(cluster) => follower.replace_cluster(&cluster),
                    Err(Error::ReadFile { .. }) => {} // mid-replace; the next event brings it
                    Err(e) => tracing::error!(
                        "{} changed but is not valid, keeping the last good version: {e}",
                        file.display()
                    ),
                }
            })
            .map_err(|e| {
                Error::io(
                    format!("watching {}", path.display()),
                    std::io::Error::other(e),
                )
            })?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|e| {
                Error::io(
                    format!("watching {}", dir.display()),
                    std::io::Error::other(e),
                )
            })?;
        Ok(FileStore {
            state,
            _watcher: watcher,
        })
    }
}

impl ClusterStore for FileStore {
    fn subscribe(&self) -> watch::Receiver<Option<Arc<Snapshot>>> {
        self.state.subscribe()
    }

    fn report<'a>(&'a self, node: &'a str, report: &'a NodeReport) -> BoxFuture<'a, Result<()>> {
        self.state.report(node, report)
    }
}
