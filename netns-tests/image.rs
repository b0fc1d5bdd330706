//! The shipped image, run as each DaemonSet variant runs it (see
//! `image_support`): one container per lab node, joined to the node's
//! network namespace as `hostNetwork: true` puts a pod in the node's, with
//! the variant's securityContext, env and hostPath volumes. The cluster
//! source is a static cluster file instead of the in-cluster API (the
//! coordinator's test, `image_coordinator`, covers the API server). Proven:
//! routes in the kernel and pod-to-pod packets, the net sysctls written
//! (through /host/proc/sys in the restricted variant), the probes, drift repair,
//! the capabilities the process holds, and a clean exit on SIGTERM that
//! leaves the dataplane in place.

use std::time::Duration;

use crate::image_support::{find, image_or_skip, render, run_args, Container, PodPlace};
use crate::support::{have_root, http_get_in, our_routes, poll_until, write_cluster, Lab};

const CAP_NET_ADMIN: u64 = 1 << 12;
const NODES: [&str; 2] = ["node-1", "node-2"];
const POD_MTU: u32 = 1450;

#[test]
fn restricted_image_converges_repairs_and_holds_only_net_admin() {
    if let Some(run) = AgentImageRun::start("restricted") {
        run.check();
    }
}

/// Privileged, the container holds every capability; the agent drops all
/// but NET_ADMIN at start-up, from every set (it has CAP_SETPCAP for the
/// bounding set).
#[test]
fn privileged_image_converges_and_drops_to_net_admin() {
    if let Some(run) = AgentImageRun::start("privileged") {
        run.check();
    }
}

struct AgentImageRun {
    variant: &'static str,
    probe_port: u16,
    // Fields drop in order: containers before the lab's namespaces.
    agents: Vec<(&'static str, Container)>,
    lab: Lab,
    work: tempfile::TempDir,
}

impl AgentImageRun {
    fn start(variant: &'static str) -> Option<AgentImageRun> {
        if !have_root() {
            return None;
        }
        let image = image_or_skip()?;
        let objects = render(variant);
        let daemonset = find(&objects, "DaemonSet", "podroute-agent");
        let pod = &daemonset["spec"]["template"]["spec"];
        assert_eq!(
            pod["hostNetwork"], true,
            "{variant}: the agent is on the host network"
        );
        let container = &pod["containers"][0];
        let probe_port = container["livenessProbe"]["httpGet"]["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .expect("livenessProbe port");

        let lab = Lab::flat(NODES.len());
        let work = tempfile::tempdir().expect("temp dir");
        let cluster = work.path().join("cluster.yaml");
        write_cluster(&lab, &cluster, "vxlan", &NODES);
        let mut agents = Vec::new();
        for node in NODES {
            // No forwarding, strict rp_filter: the agent must write both,
            // through /host/proc/sys in the restricted variant.
            let ns = lab.topo.node_netns(node).expect("netns");
            ns.sysctl("net.ipv4.ip_forward", "0").expect("sysctl");
            ns.sysctl("net.ipv4.conf.eth0.rp_filter", "1")
                .expect("sysctl");
            let node_root = work.path().join(node);
            let place = PodPlace {
                network: format!("ns:/run/netns/{}", lab.node(node).netns),
                node_name: node,
                pod_name: &format!("podroute-agent-{node}"),
                node_root: &node_root,
            };
            // In place of the service account: the cluster file.
            let source = [
                "--volume".to_string(),
                format!("{}:/etc/podroute/cluster.yaml:ro", cluster.display()),
                "--env=PODROUTE_CLUSTER=/etc/podroute/cluster.yaml".to_string(),
            ];
            let name = format!("podroute-test-{}-{variant}-{node}", std::process::id());
            let args = run_args(pod, &image, &place);
            agents.push((node, Container::run(name, &source, &args)));
        }
        Some(AgentImageRun {
            variant,
            probe_port,
            agents,
            lab,
            work,
        })
    }

    fn mtu_file(&self, node: &str) -> std::path::PathBuf {
        self.work.path().join(node).join("run/podroute/mtu")
    }

    fn wait_converged(&self, node: &str, container: &Container) {
        let converged = || {
            our_routes(&self.lab, node)
                .iter()
                .any(|r| r.contains("dev vxlan.calico"))
                && std::fs::read_to_string(self.mtu_file(node)).is_ok()
        };
        assert!(
            poll_until(Duration::from_secs(20), converged),
            "{} {node}: no routes in 20 s; container log:\n{}",
            self.variant,
            container.logs()
        );
    }

    fn check(self) {
        let variant = self.variant;
        for (node, container) in &self.agents {
            self.wait_converged(node, container);
            // Uid 0 in both variants (see manifests/restricted), and only
            // NET_ADMIN in every set of every thread.
            let (uid, eff, prm, bnd) = container.identity();
            assert_eq!(uid, 0, "{variant} {node}: uid");
            for (set, mask) in [("CapEff", eff), ("CapPrm", prm), ("CapBnd", bnd)] {
                assert_eq!(mask, CAP_NET_ADMIN, "{variant} {node}: {set} {mask:#x}");
            }
            let ns = self.lab.topo.node_netns(node).expect("netns");
            for (key, want) in [("ipv4/ip_forward", "1"), ("ipv4/conf/eth0/rp_filter", "2")] {
                let path = format!("/proc/sys/net/{key}");
                let value = ns
                    .run(move || std::fs::read_to_string(path))
                    .expect("netns");
                assert_eq!(
                    value.expect("sysctl").trim(),
                    want,
                    "{variant} {node}: {key}"
                );
            }
            let mtu = std::fs::read_to_string(self.mtu_file(node)).expect("mtu file");
            assert_eq!(
                mtu.trim(),
                POD_MTU.to_string(),
                "{variant} {node}: MTU file"
            );
            for path in ["/healthz", "/readyz"] {
                let netns = &self.lab.node(node).netns;
                let answered = poll_until(Duration::from_secs(10), || {
                    http_get_in(netns, self.probe_port, path).is_some_and(|(code, _)| code == 200)
                });
                assert!(
                    answered,
                    "{variant} {node}: probe {path} on {}",
                    self.probe_port
                );
            }
        }
        for node in NODES {
            self.lab.topo.set_pod_mtu(node, POD_MTU).expect("pod mtu");
        }
        self.lab.assert_all_pods_talk(POD_MTU);

        // Drift: someone deletes node-1's route to node-2's pods.
        let peer_cidr = self.lab.node("node-2").pod_cidr.to_string();
        self.lab.ip("node-1", &["route", "del", &peer_cidr]);
        let repaired = poll_until(Duration::from_secs(10), || {
            our_routes(&self.lab, "node-1")
                .iter()
                .any(|r| r.starts_with(&peer_cidr))
        });
        assert!(repaired, "{variant}: route to {peer_cidr} not repaired");
        self.lab.assert_all_pods_talk(POD_MTU);

        // SIGTERM: a clean exit well inside the grace period, dataplane kept.
        for (node, container) in &self.agents {
            let code = container.stop(10);
            assert_eq!(
                code,
                0,
                "{variant} {node}: exit code after SIGTERM; log:\n{}",
                container.logs()
            );
        }
        self.lab.assert_all_pods_talk(POD_MTU);
    }
}
