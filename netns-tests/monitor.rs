//! The netlink monitor: changes to what we own are reported, everything
//! else stays quiet, and a full socket (ENOBUFS) comes out as an overrun.
//! Each test subscribes inside a fresh namespace and changes the kernel with
//! `ip -n` / `bridge -n` from outside the monitor.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use podroute::dataplane::monitor::{KernelEvent, Monitor};
use podroute::lab::netns::{unique_name, Netns};
use podroute::model::Config;
use tokio::time::{timeout, Instant};

use crate::support::{have_root, host_only};

/// How long an expected event may take (generous: CI machines are slow).
const WAIT: Duration = Duration::from_secs(3);
/// How long "nothing of ours happened" is watched for.
const QUIET: Duration = Duration::from_millis(300);

fn run(program: &str, ns: &str, args: &[&str], stdin: Option<&str>) {
    let mut command = Command::new(program);
    command
        .arg("-n")
        .arg(ns)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if stdin.is_some() {
        command.stdin(Stdio::piped());
    }
    let mut child = command.spawn().expect("spawn");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{program} -n {ns} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip(ns: &str, args: &[&str]) {
    run("ip", ns, args, None);
}

fn bridge(ns: &str, args: &[&str]) {
    run("bridge", ns, args, None);
}

/// Events until one mentions all of `needles`; fails after `WAIT`.
async fn expect(monitor: &mut Monitor, needles: &[&str]) -> String {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, monitor.next()).await {
            Ok(Some(KernelEvent::Changed(what) | KernelEvent::Object { what, .. }))
                if needles.iter().all(|n| what.contains(n)) =>
            {
                return what
            }
            Ok(Some(other)) => seen.push(other),
            Ok(None) => panic!("monitor ended while waiting for {needles:?}; saw {seen:?}"),
            Err(_) => panic!("no event with {needles:?} within {WAIT:?}; saw {seen:?}"),
        }
    }
}

/// Nothing at all for `QUIET`.
async fn expect_quiet(monitor: &mut Monitor, after: &str) {
    if let Ok(event) = timeout(QUIET, monitor.next()).await {
        panic!("after {after}: expected no event, got {event:?}");
    }
}

/// Swallow whatever is pending (our own follow-up events), until quiet.
async fn drain(monitor: &mut Monitor) -> Vec<KernelEvent> {
    let mut out = Vec::new();
    while let Ok(Some(event)) = timeout(QUIET, monitor.next()).await {
        println!("drained: {event:?}");
        out.push(event);
    }
    out
}

#[test]
fn routes_of_ours_are_reported_others_are_not() {
    if !have_root() {
        return;
    }
    let netns = Netns::create(&unique_name("prmon")).expect("netns");
    let ns = netns.name().to_string();
    netns
        .run_async(|| async {
            let mut monitor = Monitor::start(&Config::default()).expect("monitor");
            expect_quiet(&mut monitor, "start").await;

            ip(
                &ns,
                &["route", "add", "blackhole", "10.244.2.0/24", "proto", "91"],
            );
            expect(&mut monitor, &["route 10.244.2.0/24", "added"]).await;
            ip(
                &ns,
                &[
                    "route",
                    "replace",
                    "blackhole",
                    "10.244.2.0/24",
                    "proto",
                    "91",
                    "metric",
                    "0",
                    "mtu",
                    "1400",
                ],
            );
            expect(&mut monitor, &["route 10.244.2.0/24", "changed"]).await;
            ip(&ns, &["route", "del", "10.244.2.0/24", "proto", "91"]);
            expect(&mut monitor, &["route 10.244.2.0/24", "deleted"]).await;

            // The admin's, the kernel's, and ours by protocol in another table.
            ip(
                &ns,
                &[
                    "route",
                    "add",
                    "blackhole",
                    "10.244.3.0/24",
                    "proto",
                    "static",
                ],
            );
            ip(&ns, &["route", "del", "10.244.3.0/24", "proto", "static"]);
            ip(&ns, &["link", "set", "lo", "up"]);
            ip(
                &ns,
                &[
                    "route",
                    "add",
                    "blackhole",
                    "10.244.4.0/24",
                    "proto",
                    "91",
                    "table",
                    "100",
                ],
            );
            ip(
                &ns,
                &[
                    "route",
                    "del",
                    "10.244.4.0/24",
                    "proto",
                    "91",
                    "table",
                    "100",
                ],
            );
            expect_quiet(&mut monitor, "foreign routes").await;

            // An adopted protocol counts as ours.
            let adopt = Config {
                adopt_route_protocols: vec![12],
                ..Config::default()
            };
            let mut adopting = Monitor::start(&adopt).expect("monitor");
            ip(
                &ns,
                &[
                    "route",
                    "add",
                    "blackhole",
                    "10.244.5.0/24",
                    "proto",
                    "bird",
                ],
            );
            expect(&mut adopting, &["route 10.244.5.0/24", "proto 12"]).await;
            expect_quiet(&mut monitor, "a bird route without adoption").await;
        })
        .expect("run in netns");
}

#[test]
fn vxlan_device_neighbours_and_fdb_are_reported() {
    if !have_root() {
        return;
    }
    let netns = Netns::create(&unique_name("prmon")).expect("netns");
    let ns = netns.name().to_string();
    netns
        .run_async(|| async {
            let mut monitor = Monitor::start(&Config::default()).expect("monitor");
            let dev = "vxlan.calico";

            ip(
                &ns,
                &[
                    "link",
                    "add",
                    dev,
                    "type",
                    "vxlan",
                    "id",
                    "4096",
                    "dstport",
                    "4789",
                    "nolearning",
                ],
            );
            expect(&mut monitor, &["link vxlan.calico appeared"]).await;
            ip(&ns, &["link", "set", dev, "up"]);
            expect(&mut monitor, &["link vxlan.calico", "set up"]).await;
            drain(&mut monitor).await;
            ip(&ns, &["link", "set", dev, "mtu", "1400"]);
            expect(&mut monitor, &["link vxlan.calico", "-> 1400"]).await;
            ip(&ns, &["addr", "add", "10.244.1.0/32", "dev", dev]);
            expect(
                &mut monitor,
                &["address 10.244.1.0/32 on vxlan.calico added"],
            )
            .await;
            drain(&mut monitor).await;

            // Flag changes that are not ours to care about.
            ip(&ns, &["link", "set", dev, "promisc", "on"]);
            expect_quiet(&mut monitor, "promisc on").await;

            // Permanent ARP entry: added and deleted.
            let mac = "66:a1:0f:00:00:02";
            ip(
                &ns,
                &[
                    "neigh",
                    "add",
                    "10.244.2.0",
                    "lladdr",
                    mac,
                    "dev",
                    dev,
                    "nud",
                    "permanent",
                ],
            );
            let what = expect(&mut monitor, &["neigh 10.244.2.0", "added"]).await;
            assert!(what.contains(mac), "{what}");
            ip(&ns, &["neigh", "del", "10.244.2.0", "dev", dev]);
            expect(&mut monitor, &["neigh 10.244.2.0", "deleted"]).await;
            drain(&mut monitor).await;

            // ARP churn is noise.
            ip(
                &ns,
                &[
                    "neigh",
                    "add",
                    "10.244.8.0",
                    "lladdr",
                    mac,
                    "dev",
                    dev,
                    "nud",
                    "stale",
                ],
            );
            ip(
                &ns,
                &[
                    "neigh",
                    "change",
                    "10.244.8.0",
                    "lladdr",
                    mac,
                    "dev",
                    dev,
                    "nud",
                    "reachable",
                ],
            );
            expect_quiet(&mut monitor, "non-permanent neighbours").await;

            // FDB entry of the device itself.
            let vtep_mac = "66:a1:0f:00:00:03";
            bridge(
                &ns,
                &[
                    "fdb",
                    "add",
                    vtep_mac,
                    "dev",
                    dev,
                    "dst",
                    "10.250.0.3",
                    "self",
                    "permanent",
                ],
            );
            expect(&mut monitor, &["fdb", vtep_mac, "dst 10.250.0.3", "added"]).await;
            bridge(
                &ns,
                &[
                    "fdb",
                    "del",
                    vtep_mac,
                    "dev",
                    dev,
                    "dst",
                    "10.250.0.3",
                    "self",
                ],
            );
            expect(&mut monitor, &["fdb", vtep_mac, "deleted"]).await;
            // Some kernels (6.1) announce the deletion twice: once for the
            // remote, once for the entry.
            drain(&mut monitor).await;

            // Another device's neighbours and addresses are not ours.
            ip(
                &ns,
                &[
                    "link", "add", "veth-a", "type", "veth", "peer", "name", "veth-b",
                ],
            );
            ip(&ns, &["link", "set", "veth-a", "up"]);
            ip(&ns, &["addr", "add", "10.9.0.1/24", "dev", "veth-a"]);
            ip(
                &ns,
                &[
                    "neigh",
                    "add",
                    "10.9.0.2",
                    "lladdr",
                    mac,
                    "dev",
                    "veth-a",
                    "nud",
                    "permanent",
                ],
            );
            ip(&ns, &["neigh", "del", "10.9.0.2", "dev", "veth-a"]);
            expect_quiet(&mut monitor, "another device").await;

            ip(&ns, &["link", "del", dev]);
            expect(&mut monitor, &["link vxlan.calico deleted"]).await;

            // The uplink is watched only when asked.
            monitor.watch_uplink(Some("veth-a"));
            ip(&ns, &["link", "set", "veth-a", "down"]);
            expect(&mut monitor, &["link veth-a set down"]).await;
            ip(&ns, &["addr", "del", "10.9.0.1/24", "dev", "veth-a"]);
            expect(&mut monitor, &["address 10.9.0.1/24 on veth-a deleted"]).await;
        })
        .expect("run in netns");
}

/// A tiny receive buffer and a burst of route adds while the monitor is not
/// read (the current-thread runtime is blocked in `ip -batch`): the kernel
/// drops notifications and the monitor says so. It keeps working afterwards.
#[test]
fn overrun_is_reported_and_the_monitor_keeps_going() {
    if !have_root() {
        return;
    }
    let netns = Netns::create(&unique_name("prmon")).expect("netns");
    let ns = netns.name().to_string();
    netns
        .run_async(|| async {
            let mut monitor =
                Monitor::start_with_receive_buffer(&Config::default(), 1).expect("monitor");
            let batch: String = (0..2000)
                .map(|i| {
                    format!(
                        "route add blackhole 10.{}.{}.0/24 proto 91\n",
                        100 + i / 256,
                        i % 256
                    )
                })
                .collect();
            run("ip", &ns, &["-batch", "-"], Some(&batch));

            let deadline = Instant::now() + WAIT;
            let mut changed = 0;
            loop {
                match tokio::time::timeout_at(deadline, monitor.next()).await {
                    Ok(Some(KernelEvent::Overrun)) => break,
                    Ok(Some(KernelEvent::Changed(_) | KernelEvent::Object { .. })) => changed += 1,
                    Ok(None) => panic!("monitor ended"),
                    Err(_) => panic!("no overrun within {WAIT:?} ({changed} events)"),
                }
            }
            assert!(
                changed < 2000,
                "all {changed} events arrived, yet an overrun?"
            );
            let after = drain(&mut monitor).await;
            println!(
                "overrun after {changed} route events, {} more after it",
                after.len()
            );

            ip(&ns, &["route", "del", "10.100.7.0/24", "proto", "91"]);
            expect(&mut monitor, &["route 10.100.7.0/24", "deleted"]).await;
        })
        .expect("run in netns");
}

/// After an overrun the monitor dumps every link again on a blocking socket
/// (with a 5 s timeout); that dump runs off the runtime, so a 5 ms ticker on
/// the same current-thread runtime keeps ticking while thousands of links
/// are dumped. Host only, like the other timing tests: the VM emulates its
/// CPU.
#[test]
fn the_link_dump_after_an_overrun_leaves_the_runtime_ticking() {
    if !have_root() || !host_only() {
        return;
    }
    const LINKS: usize = 6000;
    const TICK: Duration = Duration::from_millis(5);
    let netns = Netns::create(&unique_name("prmon")).expect("netns");
    let ns = netns.name().to_string();
    netns
        .run_async(|| async {
            let mut monitor =
                Monitor::start_with_receive_buffer(&Config::default(), 1).expect("monitor");
            // Adding them (the runtime blocked in `ip -batch`) overruns the
            // tiny buffer, and dumping them takes a while.
            let batch: String = (0..LINKS / 2)
                .map(|i| format!("link add prv{i}a type veth peer name prv{i}b\n"))
                .collect();
            run("ip", &ns, &["-batch", "-"], Some(&batch));

            let longest_gap_us = Arc::new(AtomicU64::new(0));
            let ticker = tokio::spawn({
                let longest = longest_gap_us.clone();
                async move {
                    let mut interval = tokio::time::interval(TICK);
                    let mut last = Instant::now();
                    loop {
                        interval.tick().await;
                        let gap = last.elapsed().as_micros() as u64;
                        longest.fetch_max(gap, Ordering::Relaxed);
                        last = Instant::now();
                    }
                }
            });
            tokio::task::yield_now().await;

            let started = Instant::now();
            // The links are not ours: the overrun is the first event.
            let event = timeout(WAIT * 3, monitor.next()).await;
            assert!(matches!(event, Ok(Some(KernelEvent::Overrun))), "{event:?}");
            let took = started.elapsed();
            // A ticker stalled until now sees its gap on its next tick.
            tokio::time::sleep(2 * TICK).await;
            ticker.abort();
            let longest = Duration::from_micros(longest_gap_us.load(Ordering::Relaxed));
            println!(
                "overrun and a dump of {LINKS} links in {took:?}; longest tick gap {longest:?}"
            );
            assert!(
                took >= 10 * TICK,
                "the dump took {took:?}: too quick to show a stall"
            );
            assert!(
                longest < took / 2,
                "the runtime stalled {longest:?} during a {took:?} dump"
            );
        })
        .expect("run in netns");
}
