//! One contract, three stores: memory, file, and kube against a real
//! kube-apiserver + etcd (tests/kube_env). A driver per store changes the
//! cluster behind the store; the contract watches what the store publishes.
//!
//! Without built kube binaries the kube cases print "skipping: ..." and pass,
//! unless PODROUTE_REQUIRE_KUBE_TESTS=1, where they fail (as tests/kube_api.rs).

#[path = "store_contract/driver.rs"]
mod driver;
#[path = "store_contract/kube_cases.rs"]
mod kube_cases;
mod kube_env;

use std::sync::Arc;
use std::time::Duration;

use podroute::api::{Mode, OffSubnet, Plan};
use podroute::model::Settings;
use podroute::store::{Applied, Network, NodeReport, Snapshot};
use tokio::sync::watch;

use driver::{decap, test_node, Driver, FileDriver, KubeDriver, MemoryDriver, Setup, TestNode};

/// How long a change may take to show up in a subscriber's snapshot.
pub const SEEN_WITHIN: Duration = Duration::from_secs(30);

pub type Snapshots = watch::Receiver<Option<Arc<Snapshot>>>;

/// Waits until the snapshot satisfies `want`; panics with the last one after
/// [`SEEN_WITHIN`].
pub async fn wait_for(
    rx: &mut Snapshots,
    what: &str,
    want: impl Fn(&Snapshot) -> bool,
) -> Arc<Snapshot> {
    let deadline = tokio::time::Instant::now() + SEEN_WITHIN;
    loop {
        if let Some(s) = rx.borrow_and_update().clone() {
            if want(&s) {
                return s;
            }
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("the store closed its channel while waiting for {what}"),
            Err(_) => panic!(
                "not seen within {SEEN_WITHIN:?}: {what}; last snapshot: {:#?}",
                rx.borrow()
            ),
        }
    }
}

pub fn has_node(s: &Snapshot, node: &TestNode) -> bool {
    s.node(&node.name)
        .is_some_and(|n| n.node == node.model() && n.ready)
}

fn setup() -> Setup {
    Setup {
        nodes: vec![test_node("contract-a"), test_node("contract-b")],
        plan: Plan::steady(Mode::Vxlan, 1),
        settings: Settings {
            off_subnet: None,
            mtu: Some(1450),
            vxlan_vni: None,
            vxlan_port: None,
        },
    }
}

fn available(message: &str) -> Option<Network> {
    Some(Network::Available {
        message: message.into(),
    })
}

/// The contract every store keeps.
async fn contract(d: &impl Driver, setup: &Setup) {
    let store = d.store();
    let [a, b] = [&setup.nodes[0], &setup.nodes[1]];
    let mut rx = store.subscribe();

    // The first snapshot already holds the cluster: nodes, plan, settings.
    let first = wait_for(&mut rx, "a first snapshot", |_| true).await;
    for node in &setup.nodes {
        assert!(
            has_node(&first, node),
            "{} missing or wrong in {first:#?}",
            node.name
        );
        assert_eq!(
            first.node(&node.name).unwrap().report,
            NodeReport {
                applied: None,
                network: None
            }
        );
    }
    if d.isolated() {
        assert_eq!(first.nodes.len(), setup.nodes.len());
    }
    assert_eq!(first.plan.as_ref(), Some(&setup.plan));
    assert_eq!(first.settings, setup.settings);
    assert!(first.cluster().is_some());

    // Nodes come and go.
    let c = test_node("contract-c");
    d.add_node(&c).await;
    wait_for(&mut rx, "the added node", |s| has_node(s, &c)).await;
    d.remove_node(&b.name).await;
    let s = wait_for(&mut rx, "the removed node gone", |s| {
        s.node(&b.name).is_none()
    })
    .await;
    assert!(has_node(&s, a) && has_node(&s, &c));

    // The plan and the settings change.
    let switch = Plan {
        generation: 2,
        route_mode: Mode::Ipip,
        decap: decap(&[Mode::Ipip, Mode::Vxlan]),
    };
    d.set_plan(&switch).await;
    wait_for(&mut rx, "the new plan", |s| {
        s.plan.as_ref() == Some(&switch)
    })
    .await;
    let settings = Settings {
        off_subnet: Some(OffSubnet::Underlay),
        mtu: None,
        vxlan_vni: Some(7),
        vxlan_port: Some(8472),
    };
    d.set_settings(&settings).await;
    wait_for(&mut rx, "the new settings", |s| s.settings == settings).await;

    // A report shows up in a snapshot.
    let applied = NodeReport {
        applied: Some(Applied {
            generation: 2,
            mode: Mode::Ipip,
        }),
        network: available("podroute: ipip routes in place, generation 2"),
    };
    let before = d.write_marker(&a.name).await;
    store.report(&a.name, &applied).await.expect("report");
    // Once report() returns, the store's own snapshot shows it (the agent
    // reads its report back from there).
    assert_eq!(
        rx.borrow()
            .as_ref()
            .and_then(|s| s.node(&a.name))
            .map(|n| &n.report),
        Some(&applied),
        "report() returned before the store showed the report"
    );
    let after_first = d.write_marker(&a.name).await;
    assert!(
        before.is_none() || before != after_first,
        "the first report writes"
    );
    // The same report again, at once (before any watch could catch up): no write.
    store
        .report(&a.name, &applied)
        .await
        .expect("same report again");
    assert_eq!(
        d.write_marker(&a.name).await,
        after_first,
        "the same report again wrote"
    );
    wait_for(&mut rx, "the report", |s| {
        s.node(&a.name).is_some_and(|n| n.report == applied)
    })
    .await;
    store
        .report(&a.name, &applied)
        .await
        .expect("same report, third time");
    assert_eq!(
        d.write_marker(&a.name).await,
        after_first,
        "the same report again wrote"
    );
    if d.isolated() {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !rx.has_changed().unwrap(),
            "a report that changes nothing published a snapshot"
        );
    }

    // Unavailable and back.
    let failed = NodeReport {
        applied: applied.applied,
        network: Some(Network::Unavailable {
            reason: "PodrouteDataplaneFailed".into(),
            message: "podroute cannot program the dataplane: boom".into(),
        }),
    };
    store
        .report(&a.name, &failed)
        .await
        .expect("report unavailable");
    wait_for(&mut rx, "the failure report", |s| {
        s.node(&a.name).is_some_and(|n| n.report == failed)
    })
    .await;
    store
        .report(&a.name, &applied)
        .await
        .expect("report available again");
    wait_for(&mut rx, "available again", |s| {
        s.node(&a.name).is_some_and(|n| n.report == applied)
    })
    .await;
    let marker = d.write_marker(&a.name).await;
    assert!(marker.is_none() || marker != after_first);

    // A report about another node does not touch this one's.
    let c_report = NodeReport {
        applied: Some(Applied {
            generation: 1,
            mode: Mode::Vxlan,
        }),
        network: None,
    };
    store
        .report(&c.name, &c_report)
        .await
        .expect("report for c");
    let s = wait_for(&mut rx, "c's report", |s| {
        s.node(&c.name)
            .is_some_and(|n| n.report.applied == c_report.applied)
    })
    .await;
    assert_eq!(s.node(&a.name).unwrap().report, applied);

    // A node that is not in the cluster cannot report.
    let err = store
        .report("no-such-node", &applied)
        .await
        .expect_err("a report for a node that does not exist");
    assert!(err.to_string().contains("no-such-node"), "{err}");
}

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    let setup = setup();
    contract(&MemoryDriver::start(&setup), &setup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_keeps_the_contract() {
    let setup = setup();
    contract(&FileDriver::start(&setup), &setup).await;
}

/// On a control plane of its own, so that the driver can count every PATCH
/// request the store sends, and knows every node there is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_store_keeps_the_contract() {
    let Some(cp) = kube_env::ControlPlane::start_or_skip() else {
        return;
    };
    let setup = setup();
    let driver = KubeDriver::start(&cp, &setup, true).await;
    contract(&driver, &setup).await;
}

/// The same contract on the control plane the other kube tests share: the
/// store copes with nodes it did not expect (the writes are then told by
/// the Node's resourceVersion alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_store_keeps_the_contract_among_other_nodes() {
    let Some(cp) = kube_env::shared() else { return };
    let setup = setup();
    let driver = KubeDriver::start(cp, &setup, false).await;
    contract(&driver, &setup).await;
}

/// `podroute crd` prints the same CRD as YAML (default) and JSON, the same
/// bytes every time.
#[test]
fn podroute_crd_prints_yaml_or_json() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_podroute"))
            .arg("crd")
            .args(args)
            .output()
            .expect("run podroute crd");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let yaml = run(&[]);
    let json = run(&["-o", "json"]);
    let from_yaml: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&yaml)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .collect();
    let from_json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(serde_json::Value::from(from_yaml), from_json["items"]);
    let names: Vec<&str> = (from_json["items"].as_array().unwrap().iter())
        .map(|crd| crd["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["clusterroutings.podroute.io", "podroutenodes.podroute.io"]
    );
    assert_eq!(run(&["-o", "yaml"]), yaml);
    assert_eq!(run(&[]), yaml, "deterministic");
}
