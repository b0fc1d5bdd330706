//! The Kubernetes store: Nodes and the ClusterRouting object `default`,
//! followed with kube-runtime watchers, reports written to the Node.
//!
//! Memory: a Node is parsed straight into a small record (name, IPv4
//! InternalIP, pod CIDRs, Ready, our annotation and condition; see
//! [`view`]); no full Node object is kept or even built. Node lists are
//! paged ([`NODE_PAGE_SIZE`]) so a re-list never holds thousands of Node
//! JSON documents at once.
//!
//! Change detection: a snapshot is published when what it holds changes,
//! never for a resourceVersion bump alone (kubelet heartbeats, image lists,
//! other annotations). `report` writes only the parts that differ from what
//! the Node shows, and applies the API server's answer to the store at once,
//! so the same report again is no write, even before the watch catches up.

pub mod events;
mod patch;
mod state;
mod view;
pub(crate) use self::view::resource_view;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::future::BoxFuture;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, Config};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::state::{Source, State};
use self::view::{KubeNode, RoutingView};
use super::{ClusterStore, NodeReport, Snapshot};
use crate::api::{rfc3339, ClusterRouting, CLUSTER_ROUTING_NAME};
use crate::{Error, Result};

/// Nodes per list request when (re)listing. Each page is one buffered JSON
/// body: measured with 5000 Nodes of 11.5 kB JSON each, the store grows the
/// process by ~6 MB with 100 per page and by ~24 MB with kube's default 500.
pub const NODE_PAGE_SIZE: u32 = 100;

/// [`ClusterStore`] on the Kubernetes API.
pub struct KubeStore {
    shared: Arc<Shared>,
    nodes: Api<KubeNode>,
    events: Api<CoreEvent>,
    tasks: Vec<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    tx: watch::Sender<Option<Arc<Snapshot>>>,
    routing: watch::Sender<Option<Arc<ClusterRouting>>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `f`; when it says something changed, publish the snapshot if its
    /// content differs from the last one.
    fn update(&self, f: impl FnOnce(&mut State) -> bool) {
        let mut state = self.lock();
        if !f(&mut state) {
            return;
        }
        let Some(next) = state.snapshot() else { return };
        self.tx.send_if_modified(|current| {
            if current.as_deref() == Some(&next) {
                return false;
            }
            *current = Some(Arc::new(next));
            true
        });
    }

    /// The ClusterRouting object (`None`: there is none). One whose spec
    /// does not parse leaves [`KubeStore::routing`] as it was.
    fn set_routing(&self, view: Option<RoutingView>) {
        if view.is_none() {
            tracing::warn!("no ClusterRouting {CLUSTER_ROUTING_NAME}: waiting for one");
        }
        match view.as_ref().map(RoutingView::object) {
            Some(None) => {}
            object => drop(self.routing.send_replace(object.flatten().map(Arc::new))),
        }
        self.update(|s| s.set_routing(view));
    }
}

impl KubeStore {
    /// Starts the Node and ClusterRouting watchers on the current tokio
    /// runtime; they stop when the store is dropped. The first snapshot
    /// arrives once both have listed (no ClusterRouting object: no plan).
    pub fn new(client: Client) -> Result<KubeStore> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| Error::io("starting the Kubernetes watchers", std::io::Error::other(e)))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            tx: watch::Sender::new(None),
            routing: watch::Sender::new(None),
        });
        let nodes: Api<KubeNode> = Api::all(client.clone());
        let events = Api::namespaced(client.clone(), events::EVENTS_NAMESPACE);
        let routings: Api<RoutingView> = Api::all(client);
        let tasks = vec![
            runtime.spawn(follow_nodes(nodes.clone(), shared.clone())),
            runtime.spawn(follow_routing(routings, shared.clone())),
        ];
        Ok(KubeStore {
            shared,
            nodes,
            events,
            tasks,
        })
    }

    /// A store on the cluster of `kubeconfig`, or on the inferred one
    /// (`$KUBECONFIG`, `~/.kube/config`, then the in-cluster service account).
    pub async fn connect(kubeconfig: Option<&Path>) -> Result<KubeStore> {
        KubeStore::new(KubeStore::client(kubeconfig).await?)
    }

    /// A client for the cluster of `kubeconfig`, or for the inferred one
    /// (`$KUBECONFIG`, `~/.kube/config`, then the in-cluster service
    /// account): for the coordinator and the CLI, which need more than Nodes.
    pub async fn client(kubeconfig: Option<&Path>) -> Result<Client> {
        client(kubeconfig).await
    }

    /// The ClusterRouting object (metadata and spec, no status) for the
    /// coordinator, from the same watch as the snapshots.
    pub fn routing(&self) -> watch::Receiver<Option<Arc<ClusterRouting>>> {
        self.shared.routing.subscribe()
    }

    /// Nodes left out for values podroute refuses (not those merely not
    /// routable yet): name -> `field: reason`.
    pub fn invalid_nodes(&self) -> std::collections::BTreeMap<String, String> {
        self.shared.lock().invalid_nodes()
    }

    /// The API for the Events this store's user records (namespace `default`).
    pub fn events_api(&self) -> &Api<CoreEvent> {
        &self.events
    }

    async fn patch_node(
        &self,
        node: &str,
        patch: &Patch<serde_json::Value>,
        status: bool,
    ) -> Result<()> {
        let params = PatchParams::default();
        let result = if status {
            self.nodes.patch_status(node, &params, patch).await
        } else {
            self.nodes.patch(node, &params, patch).await
        };
        match result {
            Ok(view) => {
                self.shared.update(|s| s.apply_node(view, Source::Response));
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Err(Error::invalid(
                "node",
                format!("{node:?} is not in the cluster"),
            )),
            Err(e) => {
                let what = if status { "nodes/status" } else { "nodes" };
                Err(Error::kube(
                    format!("reporting on node {node} ({what} patch)"),
                    e,
                ))
            }
        }
    }
}

impl Drop for KubeStore {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl ClusterStore for KubeStore {
    fn subscribe(&self) -> watch::Receiver<Option<Arc<Snapshot>>> {
        self.shared.tx.subscribe()
    }

    fn report<'a>(&'a self, node: &'a str, report: &'a NodeReport) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let now = rfc3339(Timestamp::now());
            let writes = patch::writes(self.shared.lock().fields(node), report, &now);
            if let Some(body) = writes.annotation {
                self.patch_node(node, &Patch::Merge(body), false).await?;
            }
            if let Some(body) = writes.condition {
                self.patch_node(node, &Patch::Strategic(body), true).await?;
            }
            Ok(())
        })
    }

    fn warn_event<'a>(
        &'a self,
        node: &'a str,
        reason: &'a str,
        message: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        let reporter = events::Reporter {
            component: "podroute-agent".into(),
            instance: node.into(),
        };
        Box::pin(
            async move { events::warn_node(&self.events, &reporter, node, reason, message).await },
        )
    }
}

/// A kubeconfig is read only when it is a regular file of sane size (a FIFO
/// would block, /dev/zero fill memory): checked here, then read by kube,
/// which also resolves the paths inside it.
fn check_kubeconfig(path: &Path) -> Result<()> {
    crate::input::read_text(path, "kubeconfig", crate::input::MAX_INPUT_BYTES).map(drop)
}

async fn client(kubeconfig: Option<&Path>) -> Result<Client> {
    if kubeconfig.is_none() {
        let listed = std::env::var_os("KUBECONFIG").unwrap_or_default();
        for path in std::env::split_paths(&listed).filter(|p| p.exists()) {
            check_kubeconfig(&path)?;
        }
    }
    let config = match kubeconfig {
        Some(path) => {
            check_kubeconfig(path)?;
            let file = Kubeconfig::read_from(path).map_err(|e| {
                Error::invalid(format!("kubeconfig {}", path.display()), e.to_string())
            })?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|e| {
                    Error::invalid(format!("kubeconfig {}", path.display()), e.to_string())
                })?
        }
        None => Config::infer().await.map_err(|e| {
            Error::invalid(
                "kubeconfig",
                format!(
                    "no Kubernetes configuration found: {e}; pass --kubeconfig or set \
                     KUBECONFIG, or run in a pod (the kubelet sets KUBERNETES_SERVICE_HOST \
                     and KUBERNETES_SERVICE_PORT and mounts the service-account token)"
                ),
            )
        })?,
    };
    let client =
        Client::try_from(config).map_err(|e| Error::kube("creating the Kubernetes client", e))?;
    Ok(client)
}

/// Logs the first failure of a run of failures at warn, the rest at debug,
/// and the recovery at info: the watcher retries with backoff meanwhile.
#[derive(Default)]
pub(crate) struct WarnOnce {
    failing: bool,
}

impl WarnOnce {
    pub(crate) fn ok(&mut self, what: &str) {
        if std::mem::take(&mut self.failing) {
            tracing::info!("watching {what} again");
        }
    }

    pub(crate) fn failed(&mut self, what: &str, e: &watcher::Error) {
        let hint = match e {
            watcher::Error::InitialListFailed(kube::Error::Api(s))
            | watcher::Error::WatchStartFailed(kube::Error::Api(s))
                if s.code == 404 && what == "ClusterRouting" =>
            {
                " (is the CRD installed? `podroute crd | kubectl apply -f -`)"
            }
            _ => "",
        };
        if std::mem::replace(&mut self.failing, true) {
            tracing::debug!("watching {what}: {e}{hint}; retrying");
        } else {
            tracing::warn!("watching {what}: {e}{hint}; keeping what was read and retrying");
        }
    }
}

/// Events that are already there are applied together and published once:
/// while 5000 agents report during a switch, a snapshot is not rebuilt (and
/// every subscriber woken) per event.
const NODE_EVENT_BATCH: usize = 512;

async fn follow_nodes(api: Api<KubeNode>, shared: Arc<Shared>) {
    let config = watcher::Config::default().page_size(NODE_PAGE_SIZE);
    let mut batches = watcher(api, config)
        .default_backoff()
        .ready_chunks(NODE_EVENT_BATCH)
        .boxed();
    let mut warn_once = WarnOnce::default();
    let mut listing: Vec<KubeNode> = Vec::new();
    while let Some(batch) = batches.next().await {
        shared.update(|state| {
            let mut changed = false;
            for event in batch {
                match event {
                    Ok(event) => {
                        warn_once.ok("Nodes");
                        changed |= match event {
                            Event::Init => {
                                listing.clear();
                                false
                            }
                            Event::InitApply(view) => {
                                listing.push(view);
                                false
                            }
                            Event::InitDone => state.replace_nodes(std::mem::take(&mut listing)),
                            Event::Apply(view) => state.apply_node(view, Source::Watch),
                            Event::Delete(view) => state.delete_node(view.name()),
                        };
                    }
                    Err(e) => warn_once.failed("Nodes", &e),
                }
            }
            changed
        });
    }
}

async fn follow_routing(api: Api<RoutingView>, shared: Arc<Shared>) {
    let config =
        watcher::Config::default().fields(&format!("metadata.name={CLUSTER_ROUTING_NAME}"));
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut warn_once = WarnOnce::default();
    let mut listed: Option<RoutingView> = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                warn_once.ok("ClusterRouting");
                match event {
                    Event::Init => listed = None,
                    Event::InitApply(view) => listed = Some(view),
                    Event::InitDone => shared.set_routing(listed.take()),
                    Event::Apply(view) => shared.set_routing(Some(view)),
                    Event::Delete(_) => shared.set_routing(None),
                }
            }
            Err(e) => warn_once.failed("ClusterRouting", &e),
        }
    }
}
