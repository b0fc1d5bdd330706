//! Root tests in network namespaces: every test builds its own nodes,
//! runs the engine inside them, and proves each result twice: by reading
//! the kernel back and by moving packets pod to pod. Without root they
//! skip with a message (CI sets PODROUTE_REQUIRE_ROOT_TESTS=1 to forbid that).

mod support;

#[path = "../tests/kube_env/mod.rs"]
mod kube_env;
mod kube_support;

mod agent;
mod agent_kcm;
mod agent_kube;
mod agent_memory;
mod agent_promises;
mod check;
mod cli;
mod coexist_kube;
mod coordinator_kube;
mod dumps;
mod faults;
mod faults_kube;
mod hostile;
mod image;
mod image_coordinator;
mod image_support;
mod ipv6;
mod ipv6_only;
mod lab_cli;
mod lab_plumbing;
mod lab_report;
mod lab_runs;
mod modes;
mod monitor;
mod ownership;
mod repair;
mod restricted_agent;
mod status_kube;
mod subnets;
mod switching;
mod vxlan6;
