//! What the kube netns tests share: agent processes that program a node
//! namespace while talking to the API server from the host, and the objects
//! a cluster starts with.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt};
use podroute::model::{Mode, Plan};
use podroute::store::crd::{ClusterRouting, ClusterRoutingSpec, PlanStatus};
use serde_json::json;

pub use crate::kube_env::kube_node;
use crate::support::Lab;

/// A child process, killed when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An agent whose dataplane is `node`'s namespace and whose API
/// connection stays in the host's (`--netns`).
pub fn start_agent(lab: &Lab, node: &str, kubeconfig: &Path) -> Process {
    let child = Command::new(env!("CARGO_BIN_EXE_podroute"))
        .args([
            "agent",
            "--node-name",
            node,
            "--netns",
            &lab.node(node).netns,
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--mtu-file")
        .arg(lab.config(node).mtu_file)
        .args(["--log", "warn"])
        .stdout(Stdio::null())
        .spawn()
        .expect("start agent");
    Process(child)
}

/// Polled every 20 ms: checks here are often API calls.
pub fn wait_for(what: &str, timeout: Duration, check: impl FnMut() -> bool) {
    crate::support::wait_until(what, timeout, Duration::from_millis(20), check);
}

/// Publish `plan` as the coordinator would (status.plan).
pub async fn publish_plan(client: &Client, plan: &Plan) {
    let api: Api<ClusterRouting> = Api::all(client.clone());
    let status = json!({ "status": { "plan": PlanStatus::from(plan) } });
    api.patch_status("default", &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("publish plan");
}

/// The CRD and the `default` ClusterRouting object asking for `mode`.
pub async fn install_routing(client: &Client, mode: Mode) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &ClusterRouting::crd())
        .await
        .expect("create CRD");
    let routings: Api<ClusterRouting> = Api::all(client.clone());
    let spec = ClusterRoutingSpec {
        mode,
        native: None,
        mtu: None,
        vxlan: None,
        rollout: None,
    };
    let object = ClusterRouting::new("default", spec);
    // The CRD takes a moment to be served.
    let start = Instant::now();
    while let Err(e) = routings.create(&PostParams::default(), &object).await {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "ClusterRouting never served: {e}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The lab's nodes as Nodes in the API server.
pub async fn create_lab_nodes(client: &Client, lab: &Lab) {
    let nodes: Api<Node> = Api::all(client.clone());
    for n in lab.topo.nodes() {
        let node = kube_node(&n.name, &n.ip.to_string(), &n.pod_cidr.to_string());
        nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("create node");
    }
}
