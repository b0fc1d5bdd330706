//! Dumps of the large tables run on a socket of their own, and the kernel
//! runs one dump per socket at a time (a second is refused with EBUSY). A
//! pass cancelled in the middle of a dump (the agent drops a pass when a
//! newer event or shutdown wins) must leave the next read whole.

use std::io::Write;
use std::process::{Command, Stdio};

use podroute::dataplane::Dataplane;
use podroute::lab::netns::{unique_name, Netns};
use podroute::model::Config;

use crate::support::{have_root, host_only};

/// Well over 128 datagrams of routes: a dump yields to the runtime only
/// when tokio's cooperative budget (128 socket reads per poll of a task)
/// runs out, so only a dump this long can be cut in the middle.
const OURS: usize = 120_000;
const FOREIGN: usize = 100;

fn ip_batch(ns: &str, batch: &str) {
    let mut child = Command::new("ip")
        .args(["-n", ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ip");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(batch.as_bytes()).expect("write batch");
    drop(stdin);
    let out = child.wait_with_output().expect("wait for ip");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ip -batch: {stderr}");
}

#[test]
fn a_read_cut_short_anywhere_leaves_the_next_one_whole() {
    // Host only: 120k routes would take minutes in the emulated VM.
    if !have_root() || !host_only() {
        return;
    }
    let netns = Netns::create(&unique_name("prdump")).expect("netns");
    let mut batch = String::new();
    for i in 0..OURS {
        let (a, b, c) = (64 + i / 65536, (i / 256) % 256, i % 256);
        batch += &format!("route add blackhole 100.{a}.{b}.{c}/32 proto 91\n");
    }
    for i in 0..FOREIGN {
        batch += &format!("route add blackhole 198.18.{i}.0/24 proto static\n");
    }
    ip_batch(netns.name(), &batch);

    netns
        .run_async(|| async {
            let mut dp = Dataplane::connect(Config::default()).expect("connect");
            let no_sysctls: Vec<String> = Vec::new();
            let whole = dp.observe(&no_sysctls).await.expect("first read");
            assert_eq!(whole.routes.len(), OURS);
            assert_eq!(whole.foreign_routes.len(), FOREIGN);

            // Cut after 0, 1, 2, ... polls: in the link or address dump, in
            // the middle of the route dump, or after it.
            for polls in 0..12 {
                {
                    let mut pass = std::pin::pin!(dp.observe(&no_sysctls));
                    for _ in 0..polls {
                        if futures::poll!(pass.as_mut()).is_ready() {
                            break;
                        }
                        tokio::task::yield_now().await;
                    }
                }
                let again = dp.observe(&no_sysctls).await;
                let again = again.unwrap_or_else(|e| panic!("read after {polls} polls: {e}"));
                assert_eq!(again.routes, whole.routes, "after a cut at {polls} polls");
                assert_eq!(again.foreign_routes, whole.foreign_routes);
            }
        })
        .expect("run in netns");
}
