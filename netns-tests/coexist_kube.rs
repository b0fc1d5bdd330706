//! How podroute shares a Node with other writers, against a real API
//! server (docs/decisions.md, "NetworkUnavailable has other writers"):
//!
//! - a cloud route controller that says False/RouteCreated once (the
//!   Gardener native/underlay setup) costs one write and no fight;
//! - one that keeps saying True (its cloud route failed) is restored a few
//!   times, then left alone: the agent backs off, says so in a Warning
//!   Event on the Node and in a metric, and keeps its annotation;
//! - a Node with a value podroute refuses is left out, routed by nobody,
//!   and the coordinator names the field in a Warning Event on that Node.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Node};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use podroute::api::{Mode, Plan};
use serde_json::json;

use crate::kube_support::{
    create_lab_nodes, install_routing, kube_node, kube_test, network_unavailable, publish_plan,
    start_coordinator, wait_for, WatchedAgent,
};
use crate::support::{our_routes, Lab};

/// NetworkUnavailable of a Node: (status, reason, message).
async fn condition(client: &Client, name: &str) -> Option<(String, String, String)> {
    network_unavailable(client, name).await.map(|c| {
        (
            c.status,
            c.reason.unwrap_or_default(),
            c.message.unwrap_or_default(),
        )
    })
}

/// Writes NetworkUnavailable as a cloud route controller does.
async fn cloud_writes(client: &Client, name: &str, status: &str, reason: &str, message: &str) {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let patch = json!({"status": {"conditions": [{
        "type": "NetworkUnavailable",
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now,
        "lastHeartbeatTime": now,
    }]}});
    Api::<Node>::all(client.clone())
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .expect("patch condition");
}

/// Warning Events on Node `name` with `reason`, newest last.
async fn node_events(client: &Client, name: &str, reason: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let selector = format!("involvedObject.kind=Node,involvedObject.name={name},reason={reason}");
    events
        .list(&ListParams::default().fields(&selector))
        .await
        .expect("list events")
        .items
        .into_iter()
        .map(|e| e.message.unwrap_or_default())
        .collect()
}

fn metric(agent: &WatchedAgent, name: &str) -> Option<String> {
    let body = agent.get("/metrics")?;
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .map(str::to_string)
}

#[test]
fn the_agent_shares_network_unavailable_with_a_cloud_route_controller() {
    let Some((cp, rt, client)) = kube_test() else {
        return;
    };
    let lab = Lab::flat(2);
    rt.block_on(async {
        install_routing(&client, Mode::Native).await;
        create_lab_nodes(&client, &lab).await;
        publish_plan(&client, &Plan::steady(Mode::Native, 1)).await;
    });
    let kubeconfig = cp.admin_kubeconfig().to_path_buf();
    let agent = WatchedAgent::start(&lab, "node-1", &kubeconfig);
    let _peer = WatchedAgent::start(&lab, "node-2", &kubeconfig);
    let ours = |c: &Option<(String, String, String)>| {
        c.as_ref().is_some_and(|(s, r, m)| {
            s == "False" && r == "RouteCreated" && m.starts_with("podroute:")
        })
    };
    wait_for("node-1 reports", Duration::from_secs(20), || {
        ours(&rt.block_on(condition(&client, "node-1")))
    });

    // The Gardener setup: the cloud route controller says False/RouteCreated
    // (only on a status flip, so once). The agent puts its own message back
    // and that is the end of it: no contest.
    rt.block_on(cloud_writes(
        &client,
        "node-1",
        "False",
        "RouteCreated",
        "RouteController created a route",
    ));
    wait_for("podroute's message back", Duration::from_secs(10), || {
        ours(&rt.block_on(condition(&client, "node-1")))
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        metric(&agent, "podroute_condition_contested").as_deref(),
        Some("0")
    );

    // A controller that keeps saying True (its cloud route failed): each
    // time the agent restores False, it writes True again.
    let started = Instant::now();
    let mut overwrites = 0;
    let mut restored = Vec::new();
    while started.elapsed() < Duration::from_secs(15) {
        if ours(&rt.block_on(condition(&client, "node-1"))) {
            rt.block_on(cloud_writes(
                &client,
                "node-1",
                "True",
                "NoRouteCreated",
                "RouteController failed to create a route",
            ));
            overwrites += 1;
            let at = Instant::now();
            let back = crate::support::wait_until(
                "restore or back off",
                Duration::from_secs(5),
                Duration::from_millis(20),
                || {
                    ours(&rt.block_on(condition(&client, "node-1")))
                        || metric(&agent, "podroute_condition_contested").as_deref() == Some("1")
                },
            );
            if metric(&agent, "podroute_condition_contested").as_deref() == Some("1") {
                break;
            }
            restored.push(back.max(at.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "restored {} overwrites ({restored:?}), then backed off",
        restored.len()
    );
    assert_eq!(
        overwrites, 3,
        "the third overwrite in ten minutes makes a contest"
    );
    assert_eq!(
        restored.len(),
        2,
        "each overwrite before the contest was restored"
    );

    // Backing off: the controller's True stays, the agent says why, once.
    std::thread::sleep(Duration::from_secs(2));
    let now = rt.block_on(condition(&client, "node-1"));
    assert_eq!(
        now.as_ref().map(|(s, r, _)| (s.as_str(), r.as_str())),
        Some(("True", "NoRouteCreated")),
        "the agent kept fighting"
    );
    let events = rt.block_on(node_events(&client, "node-1", "PodrouteConditionContested"));
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].contains("keeps being overwritten"), "{events:?}");
    assert!(
        agent.log().contains("keeps being overwritten"),
        "{}",
        agent.log()
    );
    assert_eq!(
        metric(&agent, "podroute_condition_overwrites_total").as_deref(),
        Some("3")
    );
    // The annotation is podroute's alone: still restored while backing off.
    let nodes: Api<Node> = Api::all(client.clone());
    let clear = json!({"metadata": {"annotations": {"podroute.io/applied": null}}});
    rt.block_on(nodes.patch("node-1", &PatchParams::default(), &Patch::Merge(clear)))
        .expect("clear annotation");
    wait_for("annotation restored", Duration::from_secs(10), || {
        rt.block_on(nodes.get("node-1"))
            .ok()
            .and_then(|n| n.metadata.annotations)
            .and_then(|a| a.get("podroute.io/applied").cloned())
            .as_deref()
            == Some("1/native")
    });
    // Routes are untouched by all of this.
    assert_eq!(our_routes(&lab, "node-1").len(), 1);
}

#[test]
fn a_node_podroute_refuses_is_left_out_and_named_in_an_event() {
    let Some((cp, rt, client)) = kube_test() else {
        return;
    };
    let lab = Lab::flat(2);
    rt.block_on(async {
        crate::kube_env::ensure_namespace(&client, "podroute-system").await;
        install_routing(&client, Mode::Native).await;
        create_lab_nodes(&client, &lab).await;
        // A Node whose pod CIDR is loopback: the API server takes it.
        Api::<Node>::all(client.clone())
            .create(
                &PostParams::default(),
                &kube_node("bad-node", "10.250.0.77", "127.0.0.0/8"),
            )
            .await
            .expect("create bad node");
    });
    let kubeconfig = cp.admin_kubeconfig().to_path_buf();
    let logs = tempfile::tempdir().expect("log dir");
    let log = logs.path().join("coordinator.log");
    let _coordinator = start_coordinator("coordinator-x", &kubeconfig, &log, "127.0.0.1:0");
    let _agents: Vec<WatchedAgent> = lab
        .names()
        .iter()
        .map(|n| WatchedAgent::start(&lab, n, &kubeconfig))
        .collect();
    let routed = crate::support::poll_until(Duration::from_secs(30), || {
        lab.names().iter().all(|n| our_routes(&lab, n).len() == 1)
    });
    assert!(
        routed,
        "no native routes; coordinator log:\n{}\nagents:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default(),
        _agents
            .iter()
            .map(WatchedAgent::log)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let events = || rt.block_on(node_events(&client, "bad-node", "PodrouteInvalidNode"));
    wait_for("the coordinator's Event", Duration::from_secs(20), || {
        !events().is_empty()
    });
    let message = &events()[0];
    assert!(
        message.contains("spec.podCIDRs[0]") && message.contains("127.0.0.0/8"),
        "{message}"
    );
    // Nobody routes it, and nobody's loopback is hijacked.
    for node in lab.names() {
        let main = lab.ip(&node, &["route", "show", "proto", "91"]);
        assert!(!main.contains("127.0.0.0"), "{node}: {main}");
    }
    // Said once, not once per pass.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(events().len(), 1, "{:?}", events());
}
