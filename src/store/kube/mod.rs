//! The Kubernetes store: Nodes (every one, or an agent's own), PodrouteNode
//! records and the ClusterRouting object `default`, followed with
//! kube-runtime watchers; reports written to the Node; records kept in step
//! with their Nodes ([`records`]). An agent's peers come from the records,
//! so a kubelet's status write reaches no agent but the node's own.
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
mod records;
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

pub use self::state::Peers;
use self::state::{Source, State, Watched};
use self::view::{KubeNode, RecordView, RoutingView};
use super::{ClusterStore, NodeReport, Snapshot};
use crate::api::{rfc3339, ClusterRouting, CLUSTER_ROUTING_NAME};
use crate::{Error, Result};

/// Nodes per list request when (re)listing. Each page is one buffered JSON
/// body: measured with 5000 Nodes of 11.5 kB JSON each, the store grows the
/// process by ~6 MB with 100 per page and by ~24 MB with kube's default 500.
pub const NODE_PAGE_SIZE: u32 = 100;

/// Who the store is for: what it watches, and which records it keeps.
enum Role {
    /// Every Node, no records (`--peers-from nodes`, tests).
    Watcher,
    /// The records, this Node, and its own record kept.
    Agent(String),
    /// Every Node, and every record kept.
    Coordinator,
    /// What an agent of this node watches, and nothing written: `status`
    /// and `plan` computing the agent's desired state from the API.
    Observer(String),
}

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
    /// Nodes or records changed: the record keeper looks again.
    records_dirty: tokio::sync::Notify,
    /// Something changed: the publisher builds a snapshot.
    changed: tokio::sync::Notify,
    publish_every: std::time::Duration,
}

/// The coordinator's shortest time between two snapshots. Events are
/// applied as they come (a watcher that falls behind is cut off by the API
/// server), but a snapshot of 5000 nodes is rebuilt at most 20 times a
/// second, not once per event while 5000 nodes report. The first change
/// after a quiet moment is published at once. Agents publish every change:
/// their snapshots change only with routing, and their report logic reads
/// their own Node's condition from the latest snapshot.
const COORDINATOR_PUBLISHES_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Runs until the store is dropped: publishes the snapshot after changes
/// the watches brought.
async fn publisher(shared: Arc<Shared>) {
    loop {
        shared.changed.notified().await;
        shared.publish(&mut shared.lock());
        if !shared.publish_every.is_zero() {
            tokio::time::sleep(shared.publish_every).await;
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `f`; when it says something changed, have the snapshot
    /// published (by [`publisher`]) and the records looked at.
    fn update(&self, f: impl FnOnce(&mut State) -> bool) {
        if f(&mut self.lock()) {
            self.records_dirty.notify_one();
            self.changed.notify_one();
        }
    }

    /// Like [`Shared::update`], with the snapshot published before it
    /// returns: for the answer to our own write, so that the snapshot a
    /// writer reads next never shows what it just overwrote.
    fn update_now(&self, f: impl FnOnce(&mut State) -> bool) {
        let mut state = self.lock();
        if f(&mut state) {
            self.records_dirty.notify_one();
        }
        // Even when the answer changed nothing: the watch may have brought
        // the same version first and left its snapshot to the publisher,
        // which may not have run yet. (Only reports call this: a few writes
        // per plan, never the coordinator's record writes.)
        self.publish(&mut state);
    }

    /// Publishes the snapshot when its content differs from the last one.
    /// The caller holds the state's lock, so snapshots go out in order.
    fn publish(&self, state: &mut State) {
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
    /// Every Node is watched: for the CLI, and agents run with
    /// `--peers-from nodes`.
    pub fn new(client: Client) -> Result<KubeStore> {
        KubeStore::start(client, Role::Watcher)
    }

    /// The agent's store: PodrouteNode records for the peers, its own Node
    /// alone (by field selector) for its report, and the ClusterRouting
    /// object. It keeps its own node's record in step with its Node.
    pub fn for_agent(client: Client, node: &str) -> Result<KubeStore> {
        KubeStore::start(client, Role::Agent(node.to_string()))
    }

    /// The agent's view of `node` (records, its own Node, ClusterRouting),
    /// read-only: no record is written, whatever is missing.
    pub fn observing(client: Client, node: &str) -> Result<KubeStore> {
        KubeStore::start(client, Role::Observer(node.to_string()))
    }

    /// The coordinator's store: every Node, and the records of all of them
    /// kept in step (created, updated, deleted with their Node).
    pub fn for_coordinator(client: Client) -> Result<KubeStore> {
        KubeStore::start(client, Role::Coordinator)
    }

    fn start(client: Client, role: Role) -> Result<KubeStore> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| Error::io("starting the Kubernetes watchers", std::io::Error::other(e)))?;
        let (peers, only) = match &role {
            Role::Agent(own) | Role::Observer(own) => {
                let only = format!("metadata.name={own}");
                (Peers::Records { own: own.clone() }, Some(only))
            }
            Role::Watcher | Role::Coordinator => (Peers::Nodes, None),
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(peers)),
            tx: watch::Sender::new(None),
            routing: watch::Sender::new(None),
            records_dirty: tokio::sync::Notify::new(),
            changed: tokio::sync::Notify::new(),
            publish_every: match role {
                Role::Coordinator => COORDINATOR_PUBLISHES_EVERY,
                Role::Watcher | Role::Agent(_) | Role::Observer(_) => std::time::Duration::ZERO,
            },
        });
        let nodes: Api<KubeNode> = Api::all(client.clone());
        let events = Api::namespaced(client.clone(), events::EVENTS_NAMESPACE);
        let routings: Api<RoutingView> = Api::all(client.clone());
        let mut tasks = vec![
            runtime.spawn(publisher(shared.clone())),
            runtime.spawn(follow_nodes(nodes.clone(), only, shared.clone())),
            runtime.spawn(follow_routing(routings, shared.clone())),
        ];
        if matches!(role, Role::Agent(_) | Role::Coordinator | Role::Observer(_)) {
            let records: Api<RecordView> = Api::all(client.clone());
            tasks.push(runtime.spawn(follow_records(records, shared.clone())));
        }
        if matches!(role, Role::Agent(_) | Role::Coordinator) {
            let writer = records::keep(shared.clone(), Api::all(client), nodes.clone());
            tasks.push(runtime.spawn(writer));
        }
        Ok(KubeStore {
            shared,
            nodes,
            events,
            tasks,
        })
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
                self.shared
                    .update_now(|s| s.apply(Watched::Nodes, view, Source::Response));
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
                if s.code == 404
                    && (what == "ClusterRouting" || what == "PodrouteNode records") =>
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

/// Events that are already there are applied together, under one lock.
const NODE_EVENT_BATCH: usize = 512;

/// Records are small (under 1 kB as an event): a list page holds more.
const RECORD_PAGE_SIZE: u32 = 500;

/// Every Node, or the one `only` selects.
async fn follow_nodes(api: Api<KubeNode>, only: Option<String>, shared: Arc<Shared>) {
    let mut config = watcher::Config::default().page_size(NODE_PAGE_SIZE);
    if let Some(selector) = &only {
        config = config.fields(selector);
    }
    follow(api, config, Watched::Nodes, shared).await
}

async fn follow_records(api: Api<RecordView>, shared: Arc<Shared>) {
    let config = watcher::Config::default().page_size(RECORD_PAGE_SIZE);
    follow(api, config, Watched::Records, shared).await
}

async fn follow<K>(api: Api<K>, config: watcher::Config, watched: Watched, shared: Arc<Shared>)
where
    K: kube::Resource + Into<KubeNode> + Clone + std::fmt::Debug + Send + 'static,
    K: serde::de::DeserializeOwned,
{
    let what = match watched {
        Watched::Nodes => "Nodes",
        Watched::Records => "PodrouteNode records",
    };
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
                        warn_once.ok(what);
                        changed |= match event {
                            Event::Init => {
                                listing.clear();
                                false
                            }
                            Event::InitApply(view) => {
                                listing.push(view.into());
                                false
                            }
                            Event::InitDone => state.replace(watched, std::mem::take(&mut listing)),
                            Event::Apply(view) => state.apply(watched, view.into(), Source::Watch),
                            Event::Delete(view) => state.delete(watched, view.into().name()),
                        };
                    }
                    Err(e) => warn_once.failed(what, &e),
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
