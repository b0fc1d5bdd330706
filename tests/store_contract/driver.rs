//! One driver per store: how a test changes "the cluster" behind the store.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node as KubeNode;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt};
use podroute::api::Plan;
use podroute::api::{ClusterRouting, ClusterRoutingSpec};
use podroute::model::Settings;
use podroute::model::{Node, NodeIps};
use podroute::store::{
    ClusterStore, FileStore, KubeStore, MemoryStore, NodeReport, ReportedNode, Snapshot,
};
use serde_json::json;

use crate::kube_env::{self, ControlPlane};

/// A node as the tests create it: unique name, IP and pod CIDR within the
/// process (kube tests share one API server, and the store leaves out nodes
/// whose addresses clash).
#[derive(Debug, Clone)]
pub struct TestNode {
    pub name: String,
    pub ip: Ipv4Addr,
    pub cidr: String,
}

pub fn test_node(prefix: &str) -> TestNode {
    static N: AtomicU32 = AtomicU32::new(1);
    let n = N.fetch_add(1, Ordering::Relaxed);
    TestNode {
        name: kube_env::unique_name(prefix),
        ip: Ipv4Addr::new(192, 168, (n / 250) as u8, (n % 250 + 1) as u8),
        cidr: format!("10.{}.{}.0/24", 100 + n / 256, n % 256),
    }
}

impl TestNode {
    pub fn model(&self) -> Node {
        Node::parse(
            "test",
            &self.name,
            NodeIps::One(Some(&self.ip.to_string())),
            std::slice::from_ref(&self.cidr),
        )
        .unwrap()
    }
}

pub struct Setup {
    pub nodes: Vec<TestNode>,
    pub plan: Plan,
    pub settings: Settings,
}

pub trait Driver {
    fn store(&self) -> &dyn ClusterStore;
    /// True when nothing but the test changes the store's cluster (the
    /// snapshot then stays put when the test changes nothing).
    fn isolated(&self) -> bool;
    async fn add_node(&self, node: &TestNode);
    async fn remove_node(&self, name: &str);
    async fn set_plan(&self, plan: &Plan);
    async fn set_settings(&self, settings: &Settings);
    /// Something that changes with every write a report makes on `node`;
    /// `None` when the store cannot tell (then only the snapshot shows it).
    async fn write_marker(&self, node: &str) -> Option<String>;
}

// --- memory -------------------------------------------------------------------

pub struct MemoryDriver(Arc<MemoryStore>);

impl MemoryDriver {
    pub fn start(setup: &Setup) -> MemoryDriver {
        MemoryDriver(Arc::new(MemoryStore::new(Snapshot {
            nodes: setup
                .nodes
                .iter()
                .map(|n| ReportedNode {
                    node: n.model(),
                    ready: true,
                    report: NodeReport {
                        applied: None,
                        network: None,
                    },
                })
                .collect(),
            plan: Some(setup.plan.clone()),
            settings: setup.settings.clone(),
        })))
    }
}

impl Driver for MemoryDriver {
    fn store(&self) -> &dyn ClusterStore {
        &*self.0
    }
    fn isolated(&self) -> bool {
        true
    }
    async fn add_node(&self, node: &TestNode) {
        self.0.upsert_node(node.model());
    }
    async fn remove_node(&self, name: &str) {
        self.0.remove_node(name);
    }
    async fn set_plan(&self, plan: &Plan) {
        self.0.set_plan(plan.clone());
    }
    async fn set_settings(&self, settings: &Settings) {
        self.0.set_settings(settings.clone());
    }
    async fn write_marker(&self, _node: &str) -> Option<String> {
        Some(self.0.report_writes().to_string())
    }
}

// --- file ---------------------------------------------------------------------

pub struct FileDriver {
    _dir: tempfile::TempDir,
    path: PathBuf,
    content: Mutex<(Vec<TestNode>, Plan, Settings)>,
    store: FileStore,
}

impl FileDriver {
    pub fn start(setup: &Setup) -> FileDriver {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.yaml");
        let content = (
            setup.nodes.clone(),
            setup.plan.clone(),
            setup.settings.clone(),
        );
        write_cluster_file(&path, &content);
        let store = FileStore::open(&path).expect("open the cluster file");
        FileDriver {
            _dir: dir,
            path,
            content: Mutex::new(content),
            store,
        }
    }

    fn change(&self, f: impl FnOnce(&mut (Vec<TestNode>, Plan, Settings))) {
        let mut content = self.content.lock().unwrap();
        f(&mut content);
        write_cluster_file(&self.path, &content);
    }
}

/// Written next to the file and renamed over it, as editors and ConfigMap
/// mounts do: the store never reads half a file.
fn write_cluster_file(
    path: &std::path::Path,
    (nodes, plan, settings): &(Vec<TestNode>, Plan, Settings),
) {
    let mut doc = json!({
        "mode": plan.route_mode,
        "generation": plan.generation,
        "decap": plan.decap,
        "nodes": nodes.iter().map(|n| json!({"name": n.name, "ip": n.ip, "podCIDR": n.cidr})).collect::<Vec<_>>(),
    });
    if let Some(v) = settings.off_subnet {
        doc["offSubnet"] = json!(v);
    }
    if let Some(v) = settings.mtu {
        doc["mtu"] = json!(v);
    }
    if settings.vxlan_vni.is_some() || settings.vxlan_port.is_some() {
        doc["vxlan"] = json!({"vni": settings.vxlan_vni, "port": settings.vxlan_port});
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_yaml::to_string(&doc).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

impl Driver for FileDriver {
    fn store(&self) -> &dyn ClusterStore {
        &self.store
    }
    fn isolated(&self) -> bool {
        true
    }
    async fn add_node(&self, node: &TestNode) {
        self.change(|c| c.0.push(node.clone()));
    }
    async fn remove_node(&self, name: &str) {
        self.change(|c| c.0.retain(|n| n.name != name));
    }
    async fn set_plan(&self, plan: &Plan) {
        self.change(|c| c.1 = plan.clone());
    }
    async fn set_settings(&self, settings: &Settings) {
        self.change(|c| c.2 = settings.clone());
    }
    async fn write_marker(&self, _node: &str) -> Option<String> {
        None
    }
}

// --- kube ---------------------------------------------------------------------

pub struct KubeDriver {
    admin: Client,
    store: KubeStore,
    /// The control plane is this test's alone: nothing else writes to it.
    isolated: bool,
}

impl KubeDriver {
    /// Creates the nodes, the ClusterRouting object with `setup`'s plan and
    /// settings, then the store (admin identity).
    pub async fn start(cp: &ControlPlane, setup: &Setup, isolated: bool) -> KubeDriver {
        let admin = cp.client().await;
        ensure_crd(&admin).await;
        for node in &setup.nodes {
            create_node(&admin, node, true).await;
        }
        set_settings(&admin, &setup.settings, setup.plan.route_mode).await;
        set_plan(&admin, &setup.plan).await;
        let store = KubeStore::new(cp.client().await).expect("KubeStore");
        KubeDriver {
            admin,
            store,
            isolated,
        }
    }
}

impl Driver for KubeDriver {
    fn store(&self) -> &dyn ClusterStore {
        &self.store
    }
    fn isolated(&self) -> bool {
        self.isolated
    }
    async fn add_node(&self, node: &TestNode) {
        create_node(&self.admin, node, true).await;
    }
    async fn remove_node(&self, name: &str) {
        delete_node(&self.admin, name).await;
    }
    async fn set_plan(&self, plan: &Plan) {
        set_plan(&self.admin, plan).await;
    }
    async fn set_settings(&self, settings: &Settings) {
        let mode = routings(&self.admin)
            .get(ROUTING)
            .await
            .expect("get ClusterRouting")
            .spec
            .mode;
        set_settings(&self.admin, settings, mode).await;
    }
    /// The Node's resourceVersion: any write that changes the Node moves it.
    /// On a control plane of its own, also the number of PATCH requests on
    /// nodes the API server has served: that counts writes that change
    /// nothing (an annotation set to the value it has) too.
    async fn write_marker(&self, node: &str) -> Option<String> {
        let rv = resource_version(&self.admin, node).await;
        if !self.isolated {
            return Some(rv);
        }
        Some(format!(
            "rv {rv}, {} node patches",
            node_patches(&self.admin).await
        ))
    }
}

/// PATCH requests on nodes and nodes/status served so far, from the API
/// server's `apiserver_request_total`.
pub async fn node_patches(admin: &Client) -> u64 {
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = admin.request_text(req).await.expect("GET /metrics");
    text.lines()
        .filter(|l| {
            l.starts_with("apiserver_request_total{")
                && l.contains(r#"resource="nodes""#)
                && l.contains(r#"verb="PATCH""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

const ROUTING: &str = "default";

pub fn routings(client: &Client) -> Api<ClusterRouting> {
    Api::all(client.clone())
}

/// Installs the CRD `podroute crd` prints and waits until it is established.
pub async fn ensure_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    match crds
        .create(&PostParams::default(), &ClusterRouting::crd())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("the API server refuses the ClusterRouting CRD: {e}"),
    }
    let established = kube::runtime::conditions::is_crd_established();
    tokio::time::timeout(
        Duration::from_secs(30),
        kube::runtime::wait::await_condition(crds, "clusterroutings.podroute.io", established),
    )
    .await
    .expect("CRD established in time")
    .expect("await CRD");
}

/// spec.mode and the settings, on the object `default` (created when missing).
pub async fn set_settings(client: &Client, settings: &Settings, mode: podroute::api::Mode) {
    let api = routings(client);
    let spec: ClusterRoutingSpec = serde_json::from_value(json!({
        "mode": mode,
        "native": settings.off_subnet.map(|o| json!({"offSubnet": o})),
        "mtu": settings.mtu,
        "vxlan": (settings.vxlan_vni.is_some() || settings.vxlan_port.is_some())
            .then(|| json!({"vni": settings.vxlan_vni, "port": settings.vxlan_port})),
    }))
    .unwrap();
    match api
        .create(
            &PostParams::default(),
            &ClusterRouting::new(ROUTING, spec.clone()),
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {
            // a JSON merge patch of the whole spec: null removes what is unset
            let body = json!({"spec": {
                "mode": spec.mode,
                "native": spec.native,
                "mtu": spec.mtu,
                "vxlan": spec.vxlan,
            }});
            api.patch(ROUTING, &PatchParams::default(), &Patch::Merge(body))
                .await
                .expect("patch ClusterRouting spec");
        }
        Err(e) => panic!("create ClusterRouting: {e}"),
    }
}

/// status.plan, as the coordinator writes it.
pub async fn set_plan(client: &Client, plan: &Plan) {
    let body = json!({"status": {"phase": "Steady", "plan": plan}});
    routings(client)
        .patch_status(ROUTING, &PatchParams::default(), &Patch::Merge(body))
        .await
        .expect("patch ClusterRouting status.plan");
}

/// A Node with InternalIP and pod CIDR, then (as the kubelet would) Ready
/// through nodes/status when `ready`.
pub async fn create_node(client: &Client, node: &TestNode, ready: bool) {
    let object: KubeNode = serde_json::from_value(json!({
        "metadata": {"name": node.name},
        "spec": {"podCIDR": node.cidr, "podCIDRs": [node.cidr]},
        "status": {"addresses": [
            {"type": "InternalIP", "address": node.ip},
            {"type": "Hostname", "address": node.name},
        ]},
    }))
    .unwrap();
    let nodes: Api<KubeNode> = Api::all(client.clone());
    nodes
        .create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("create node {}: {e}", node.name));
    if ready {
        let now = now();
        let body = json!({"status": {"conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "kubelet is posting ready status",
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        }]}});
        nodes
            .patch_status(&node.name, &PatchParams::default(), &Patch::Strategic(body))
            .await
            .expect("set Ready");
    }
}

pub async fn delete_node(client: &Client, name: &str) {
    Api::<KubeNode>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("delete node {name}: {e}"));
}

pub async fn get_node(client: &Client, name: &str) -> KubeNode {
    Api::<KubeNode>::all(client.clone())
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("get node {name}: {e}"))
}

pub async fn resource_version(client: &Client, name: &str) -> String {
    get_node(client, name)
        .await
        .metadata
        .resource_version
        .unwrap()
}

pub fn now() -> String {
    serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ))
    .unwrap()
    .as_str()
    .unwrap()
    .to_string()
}

pub fn decap(modes: &[podroute::api::Mode]) -> BTreeSet<podroute::api::Mode> {
    modes.iter().copied().collect()
}
