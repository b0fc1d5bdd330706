//! What only the kube store has to show: the Node as other writers see it,
//! least privilege, restarts of the agent and of the API server.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::core::v1::{Node as KubeNode, NodeCondition};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::Client;
use podroute::api::ClusterRouting;
use podroute::api::Mode;
use podroute::store::{Applied, ClusterStore, KubeStore, Network, NodeReport};
use serde_json::json;

use crate::driver::{
    create_node, delete_node, ensure_crd, get_node, now, resource_version, routings, test_node,
};
use crate::kube_env::{self, status_code, unique_name, ControlPlane};
use crate::{has_node, wait_for};

const AGENT_NS: &str = "podroute-system";

fn report(generation: u64, message: &str) -> NodeReport {
    NodeReport {
        applied: Some(Applied {
            generation,
            mode: Mode::Vxlan,
        }),
        network: Some(Network::Available {
            message: message.into(),
        }),
    }
}

fn condition<'a>(node: &'a KubeNode, type_: &str) -> &'a NodeCondition {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
        .unwrap_or_else(|| panic!("no {type_} condition on {:?}", node.metadata.name))
}

fn condition_types(node: &KubeNode) -> Vec<String> {
    let mut types: Vec<String> = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| cs.iter().map(|c| c.type_.clone()).collect())
        .unwrap_or_default();
    types.sort();
    types
}

/// The kubelet's conditions survive our strategic merge patch;
/// lastTransitionTime moves only when NetworkUnavailable flips, the
/// heartbeat moves with every write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_report_keeps_kubelet_conditions_and_moves_transition_time_only_on_flips() {
    let Some(cp) = kube_env::shared() else { return };
    let admin = cp.client().await;
    ensure_crd(&admin).await;
    let node = test_node("kubelet-conds");
    create_node(&admin, &node, false).await;
    let kubelet: Api<KubeNode> = Api::all(cp.node_identity(&node.name).client().await);
    let t = now();
    let cond = |type_: &str, status: &str, reason: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": "kubelet",
               "lastHeartbeatTime": t, "lastTransitionTime": t})
    };
    kubelet
        .patch_status(
            &node.name,
            &PatchParams::default(),
            &Patch::Strategic(json!({"status": {"conditions": [
                cond("Ready", "True", "KubeletReady"),
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            ]}})),
        )
        .await
        .expect("the kubelet reports its conditions");

    let store = KubeStore::new(cp.client().await).unwrap();
    let mut rx = store.subscribe();
    wait_for(&mut rx, "the node", |s| has_node(s, &node)).await;

    store.report(&node.name, &report(1, "first")).await.unwrap();
    let first = get_node(&admin, &node.name).await;
    assert_eq!(
        condition_types(&first),
        [
            "DiskPressure",
            "MemoryPressure",
            "NetworkUnavailable",
            "Ready"
        ]
    );
    let nu = condition(&first, "NetworkUnavailable");
    assert_eq!(
        (
            nu.status.as_str(),
            nu.reason.as_deref(),
            nu.message.as_deref()
        ),
        ("False", Some("RouteCreated"), Some("first"))
    );
    assert_eq!(
        first
            .metadata
            .annotations
            .as_ref()
            .unwrap()
            .get("podroute.io/applied")
            .map(String::as_str),
        Some("1/vxlan")
    );
    let ready_before = condition(&first, "Ready").clone();

    // Timestamps have one-second resolution.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    store
        .report(&node.name, &report(2, "second"))
        .await
        .unwrap();
    let second = get_node(&admin, &node.name).await;
    let nu2 = condition(&second, "NetworkUnavailable");
    assert_eq!(nu2.message.as_deref(), Some("second"));
    assert_eq!(
        nu2.last_transition_time, nu.last_transition_time,
        "no flip, no transition"
    );
    assert_ne!(nu2.last_heartbeat_time, nu.last_heartbeat_time);
    assert_eq!(
        condition(&second, "Ready"),
        &ready_before,
        "the kubelet's Ready is untouched"
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let down = NodeReport {
        applied: report(2, "").applied,
        network: Some(Network::Unavailable {
            reason: "PodrouteDataplaneFailed".into(),
            message: "boom".into(),
        }),
    };
    store.report(&node.name, &down).await.unwrap();
    let third = get_node(&admin, &node.name).await;
    let nu3 = condition(&third, "NetworkUnavailable");
    assert_eq!(
        (nu3.status.as_str(), nu3.reason.as_deref()),
        ("True", Some("PodrouteDataplaneFailed"))
    );
    assert_ne!(
        nu3.last_transition_time, nu2.last_transition_time,
        "a flip moves the transition time"
    );
    assert_eq!(condition_types(&third).len(), 4);
    wait_for(&mut rx, "the failure", |s| {
        s.node(&node.name).is_some_and(|n| n.report == down)
    })
    .await;
    delete_node(&admin, &node.name).await;
}

/// An agent restarts: the new store reads the report back from the Node, and
/// the same report is no write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_same_report_after_a_restart_is_no_write() {
    let Some(cp) = kube_env::shared() else { return };
    let admin = cp.client().await;
    ensure_crd(&admin).await;
    let node = test_node("restart");
    create_node(&admin, &node, true).await;
    let r = report(5, "podroute: vxlan routes in place, generation 5");

    let first = KubeStore::new(cp.client().await).unwrap();
    let mut rx = first.subscribe();
    wait_for(&mut rx, "the node", |s| has_node(s, &node)).await;
    first.report(&node.name, &r).await.unwrap();
    drop(first);
    let written = resource_version(&admin, &node.name).await;

    let second = KubeStore::new(cp.client().await).unwrap();
    let mut rx = second.subscribe();
    let s = wait_for(&mut rx, "the node", |s| has_node(s, &node)).await;
    assert_eq!(
        s.node(&node.name).unwrap().report,
        r,
        "the report is read back from the Node"
    );
    second.report(&node.name, &r).await.unwrap();
    assert_eq!(
        resource_version(&admin, &node.name).await,
        written,
        "no write"
    );
    delete_node(&admin, &node.name).await;
}

/// A Node without a pod CIDR (normal for a few seconds after it joins) or
/// without an InternalIP is left out until it has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_nodes_join_the_snapshot_once_they_have_a_pod_cidr() {
    let Some(cp) = kube_env::shared() else { return };
    let admin = cp.client().await;
    ensure_crd(&admin).await;
    let node = test_node("late-cidr");
    let nodes: Api<KubeNode> = Api::all(admin.clone());
    let object: KubeNode = serde_json::from_value(json!({
        "metadata": {"name": node.name},
        "status": {"addresses": [{"type": "InternalIP", "address": node.ip}]},
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &object).await.unwrap();
    let marker = test_node("late-cidr-marker");
    let store = KubeStore::new(cp.client().await).unwrap();
    let mut rx = store.subscribe();
    wait_for(&mut rx, "a first snapshot", |_| true).await;
    create_node(&admin, &marker, true).await;
    let s = wait_for(&mut rx, "a node created after ours", |s| {
        has_node(s, &marker)
    })
    .await;
    assert!(
        s.node(&node.name).is_none(),
        "a node without pod CIDR is left out"
    );

    nodes
        .patch(
            &node.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"podCIDR": node.cidr, "podCIDRs": [node.cidr]}})),
        )
        .await
        .unwrap();
    let s = wait_for(&mut rx, "the node with its pod CIDR", |s| {
        s.node(&node.name).is_some()
    })
    .await;
    let state = s.node(&node.name).unwrap();
    assert_eq!(state.node, node.model());
    assert!(!state.ready, "no Ready condition yet");
    for n in [&node.name, &marker.name] {
        delete_node(&admin, n).await;
    }
}

/// The agent's ClusterRole from docs/design.md "Kubernetes contract", exactly.
async fn agent_role(admin: &Client, sa: &str) {
    let name = unique_name("podroute-agent");
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": name},
        "rules": [
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch", "patch"]},
            {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]},
            {"apiGroups": ["podroute.io"], "resources": ["clusterroutings"], "verbs": ["get", "list", "watch"]},
        ],
    }))
    .unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": AGENT_NS}],
    }))
    .unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &role)
        .await
        .expect("create ClusterRole");
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await
        .expect("create ClusterRoleBinding");
}

/// With the agent's least-privilege role the store follows the cluster; with
/// a token bound to its Node, a report about another Node is refused and
/// changes nothing there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_agent_bound_to_its_node_cannot_report_for_another() {
    let Some(cp) = kube_env::shared() else { return };
    let admin = cp.client().await;
    ensure_crd(&admin).await;
    let own = test_node("bound-own");
    let other = test_node("bound-other");
    create_node(&admin, &own, true).await;
    create_node(&admin, &other, true).await;

    let sa = unique_name("agent-store");
    let identity = cp.service_account(AGENT_NS, &sa, Some(&own.name)).await;
    agent_role(&admin, &sa).await;
    let policy = kube_env::create_own_node_policy(&admin, &identity.username).await;
    let agent = identity.client().await;

    // Policies and bindings reach the API server through informers: probe
    // with a harmless annotation until the policy refuses the other Node.
    let probe = Api::<KubeNode>::all(agent.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = probe
            .patch(
                &other.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"podroute.test/probe": "x"}}})),
            )
            .await;
        match status_code(&r) {
            Some(403)
                if r.as_ref()
                    .is_err_and(|e| e.to_string().contains("its own Node")) =>
            {
                break
            }
            _ if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            _ => panic!("the policy never refused the other Node: {r:?}"),
        }
    }

    let store = KubeStore::new(agent).unwrap();
    let mut rx = store.subscribe();
    wait_for(&mut rx, "both nodes, read with the agent's role", |s| {
        has_node(s, &own) && has_node(s, &other)
    })
    .await;

    let r = report(3, "podroute: vxlan routes in place, generation 3");
    store
        .report(&own.name, &r)
        .await
        .expect("the agent reports on its own Node");
    wait_for(&mut rx, "the own report", |s| {
        s.node(&own.name).is_some_and(|n| n.report == r)
    })
    .await;

    let before = resource_version(&admin, &other.name).await;
    let err = store
        .report(&other.name, &r)
        .await
        .expect_err("a report on another Node must be refused");
    assert!(err.to_string().contains("its own Node"), "{err}");
    assert_eq!(
        resource_version(&admin, &other.name).await,
        before,
        "the other Node is unchanged"
    );
    let s = rx.borrow().clone().unwrap();
    assert_eq!(
        s.node(&other.name).unwrap().report,
        NodeReport {
            applied: None,
            network: None
        }
    );

    Api::<ValidatingAdmissionPolicyBinding>::all(admin.clone())
        .delete(&policy, &DeleteParams::default())
        .await
        .unwrap();
    Api::<ValidatingAdmissionPolicy>::all(admin.clone())
        .delete(&policy, &DeleteParams::default())
        .await
        .unwrap();
    for n in [&own.name, &other.name] {
        delete_node(&admin, n).await;
    }
}

/// The API server goes away: the snapshot stays, reports fail (and are
/// retried by the agent); it comes back: the store follows changes again.
/// Owns its control plane (it restarts kube-apiserver).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_store_keeps_the_last_snapshot_while_the_apiserver_is_away() {
    let Some(cp) = ControlPlane::start_or_skip() else {
        return;
    };
    let cp = std::sync::Arc::new(cp);
    let admin = cp.client().await;
    ensure_crd(&admin).await;
    let node = test_node("away");
    create_node(&admin, &node, true).await;
    routings(&admin)
        .create(
            &PostParams::default(),
            &ClusterRouting::new(
                "default",
                serde_json::from_value(json!({"mode": "ipip"})).unwrap(),
            ),
        )
        .await
        .unwrap();

    let store = KubeStore::new(cp.client().await).unwrap();
    let mut rx = store.subscribe();
    let before = wait_for(&mut rx, "the node", |s| has_node(s, &node)).await;
    assert_eq!(before.plan, None, "no status.plan yet");

    cp.kill_apiserver();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = rx.borrow().clone().expect("still a snapshot");
    assert_eq!(
        *during, *before,
        "the last snapshot stays while the API server is away"
    );
    store
        .report(&node.name, &report(1, "x"))
        .await
        .expect_err("no API server, no report");

    let restart = cp.clone();
    tokio::task::spawn_blocking(move || restart.start_apiserver())
        .await
        .unwrap()
        .expect("kube-apiserver restarts");
    let admin = cp.client().await;
    let late = test_node("away-late");
    create_node(&admin, &late, true).await;
    let s = wait_for(&mut rx, "a node created after the restart", |s| {
        has_node(s, &late)
    })
    .await;
    assert!(has_node(&s, &node));
    store
        .report(&node.name, &report(1, "back"))
        .await
        .expect("reports work again");
    wait_for(&mut rx, "the report after the restart", |s| {
        s.node(&node.name)
            .is_some_and(|n| n.report == report(1, "back"))
    })
    .await;
}

/// The CRD's schema accepts what the docs say and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_crd_accepts_auto_or_bytes_and_seconds_or_durations() {
    let Some(cp) = kube_env::shared() else { return };
    let admin = cp.client().await;
    ensure_crd(&admin).await;
    let dynamic: Api<kube::core::DynamicObject> = Api::all_with(
        admin.clone(),
        &kube::core::ApiResource::erase::<ClusterRouting>(&()),
    );
    let try_spec = |spec: serde_json::Value| {
        let dynamic = dynamic.clone();
        async move {
            let mut object = kube::core::DynamicObject::new(
                &unique_name("crd-check"),
                &kube::core::ApiResource::erase::<ClusterRouting>(&()),
            );
            object.data = json!({"spec": spec});
            let pp = PostParams {
                dry_run: true,
                ..Default::default()
            };
            dynamic.create(&pp, &object).await.map(|_| ())
        }
    };
    for good in [
        json!({"mode": "vxlan"}),
        json!({"mode": "native", "native": {"offSubnet": "underlay"}, "mtu": "auto"}),
        json!({"mode": "ipip", "mtu": 1400, "vxlan": {"vni": 4096, "port": 4789}}),
        json!({"mode": "vxlan", "rollout": {"nodeTimeout": 300, "notReadyPolicy": "Skip"}}),
        json!({"mode": "vxlan", "rollout": {"nodeTimeout": "5m30s", "notReadyPolicy": "Wait"}}),
    ] {
        try_spec(good.clone())
            .await
            .unwrap_or_else(|e| panic!("{good} refused: {e}"));
    }
    for bad in [
        json!({}),
        json!({"mode": "wireguard"}),
        json!({"mode": "vxlan", "mtu": "big"}),
        json!({"mode": "vxlan", "mtu": 100}),
        json!({"mode": "vxlan", "native": {"offSubnet": "sideways"}}),
        json!({"mode": "vxlan", "vxlan": {"vni": 0}}),
        json!({"mode": "vxlan", "rollout": {"nodeTimeout": "soon"}}),
        json!({"mode": "vxlan", "rollout": {"nodeTimeout": -1}}),
        json!({"mode": "vxlan", "rollout": {"notReadyPolicy": "Panic"}}),
    ] {
        let r = try_spec(bad.clone()).await;
        assert!(
            matches!(&r, Err(kube::Error::Api(s)) if s.code == 422),
            "{bad} should be refused with 422: {r:?}"
        );
    }
}
