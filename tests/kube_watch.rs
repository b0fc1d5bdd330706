//! A Node watch against a real kube-apiserver + etcd: it sees add, update and
//! delete, and keeps going after kube-apiserver is killed and started again on
//! the same etcd and port. Also: the helper cleans up when a test panics.
//!
//! Each test owns its control plane (the restart would disturb shared ones).

mod kube_env;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::runtime::watcher::Event;
use kube::runtime::WatchStreamExt;
use kube_env::{kube_node, ControlPlane};
use serde_json::json;
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Init,
    InitApply(String, Option<String>),
    InitDone,
    Apply(String, Option<String>),
    Delete(String),
    Error(String),
}

fn applied(node: &Node) -> Option<String> {
    node.metadata
        .annotations
        .as_ref()?
        .get("podroute.io/applied")
        .cloned()
}

fn name(node: &Node) -> String {
    node.metadata.name.clone().unwrap_or_default()
}

/// Reads events until one matches `want`; returns everything read (the match last).
async fn until(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    what: &str,
    want: impl Fn(&Seen) -> bool,
) -> Vec<Seen> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(ev)) => {
                let hit = want(&ev);
                seen.push(ev);
                if hit {
                    return seen;
                }
            }
            Ok(None) => panic!("watcher ended while waiting for {what}; saw {seen:?}"),
            Err(_) => panic!("timed out waiting for {what}; saw {seen:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_watch_sees_add_update_delete_and_resumes_after_apiserver_restart() {
    let Some(cp) = ControlPlane::start_or_skip() else {
        return;
    };
    let cp = Arc::new(cp);
    let nodes: Api<Node> = Api::all(cp.client().await);

    // A node that exists before the watch and through the restart.
    nodes
        .create(
            &PostParams::default(),
            &kube_node("keep", "10.251.0.1", "10.244.1.0/24"),
        )
        .await
        .expect("create keep");

    let (tx, mut rx) = mpsc::unbounded_channel();
    let watch_api: Api<Node> = Api::all(cp.client().await);
    let watch = tokio::spawn(async move {
        let mut stream = watcher(watch_api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(ev) = stream.next().await {
            let seen = match ev {
                Ok(Event::Init) => Seen::Init,
                Ok(Event::InitApply(n)) => Seen::InitApply(name(&n), applied(&n)),
                Ok(Event::InitDone) => Seen::InitDone,
                Ok(Event::Apply(n)) => Seen::Apply(name(&n), applied(&n)),
                Ok(Event::Delete(n)) => Seen::Delete(name(&n)),
                Err(e) => Seen::Error(e.to_string()),
            };
            if tx.send(seen).is_err() {
                break;
            }
        }
    });

    let initial = until(&mut rx, "the initial list", |e| *e == Seen::InitDone).await;
    assert!(
        initial.contains(&Seen::InitApply("keep".into(), None)),
        "{initial:?}"
    );

    // add, update, delete
    nodes
        .create(
            &PostParams::default(),
            &kube_node("a", "10.251.0.2", "10.244.2.0/24"),
        )
        .await
        .expect("create a");
    until(&mut rx, "add of a", |e| *e == Seen::Apply("a".into(), None)).await;
    let annotate =
        |v: &str| Patch::Merge(json!({"metadata": {"annotations": {"podroute.io/applied": v}}}));
    nodes
        .patch("a", &PatchParams::default(), &annotate("1/vxlan"))
        .await
        .expect("patch a");
    until(&mut rx, "update of a", |e| {
        *e == Seen::Apply("a".into(), Some("1/vxlan".into()))
    })
    .await;
    nodes
        .delete("a", &DeleteParams::default())
        .await
        .expect("delete a");
    until(&mut rx, "delete of a", |e| *e == Seen::Delete("a".into())).await;

    // Kill kube-apiserver (SIGKILL, etcd keeps running); the watch must notice.
    let old_pids = cp.pids();
    cp.kill_apiserver();
    until(&mut rx, "a watch error while kube-apiserver is down", |e| {
        matches!(e, Seen::Error(_))
    })
    .await;

    // Start it again on the same etcd and port (blocking: off the runtime).
    let cp2 = cp.clone();
    tokio::task::spawn_blocking(move || cp2.start_apiserver())
        .await
        .unwrap()
        .expect("kube-apiserver restarts");
    let new_pids = cp.pids();
    assert_ne!(old_pids, new_pids, "a new kube-apiserver process");

    // Changes after the restart reach the same watcher: add, update, delete.
    let nodes: Api<Node> = Api::all(cp.client().await);
    nodes
        .create(
            &PostParams::default(),
            &kube_node("b", "10.251.0.3", "10.244.3.0/24"),
        )
        .await
        .expect("create b after restart");
    let resumed = until(
        &mut rx,
        "add of b after the restart",
        |e| matches!(e, Seen::Apply(n, _) | Seen::InitApply(n, _) if n == "b"),
    )
    .await;
    nodes
        .patch("b", &PatchParams::default(), &annotate("2/native"))
        .await
        .expect("patch b");
    let mut rest = until(&mut rx, "update of b", |e| {
        matches!(e, Seen::Apply(n, Some(v)) | Seen::InitApply(n, Some(v)) if n == "b" && v == "2/native")
    })
    .await;
    nodes
        .delete("b", &DeleteParams::default())
        .await
        .expect("delete b");
    rest.extend(until(&mut rx, "delete of b", |e| *e == Seen::Delete("b".into())).await);

    // Nothing that survived was reported deleted, nothing deleted came back.
    let after: Vec<&Seen> = resumed.iter().chain(rest.iter()).collect();
    assert!(!after.contains(&&Seen::Delete("keep".into())), "{after:?}");
    assert!(
        !after
            .iter()
            .any(|e| matches!(e, Seen::Apply(n, _) | Seen::InitApply(n, _) if n == "a")),
        "{after:?}"
    );
    let relisted = resumed.contains(&Seen::Init);
    eprintln!(
        "after the restart the watcher {} ({} events until b was seen: {:?})",
        if relisted {
            "re-listed (410 Gone or a fresh list)"
        } else {
            "resumed from its resourceVersion"
        },
        resumed.len(),
        resumed
    );
    if relisted {
        // A re-list must include the node that survived the restart. The
        // list comes in name order, so it may arrive after b's.
        assert!(
            after
                .iter()
                .any(|e| matches!(e, Seen::InitApply(n, _) if n == "keep")),
            "{after:?}"
        );
    }
    assert!(!watch.is_finished(), "the watcher must keep running");
    watch.abort();

    // Dropping the control plane kills both processes and removes its directory.
    let dir = cp.dir().to_path_buf();
    let pids = cp.pids();
    drop(Arc::into_inner(cp).expect("sole owner"));
    assert_gone(&pids, &dir);
}

fn assert_gone(pids: &[u32], dir: &std::path::Path) {
    for pid in pids {
        // SAFETY: signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(*pid as libc::pid_t, 0) } == 0;
        assert!(!alive, "process {pid} still running");
    }
    assert!(!dir.exists(), "{} still exists", dir.display());
}

/// A test that panics while it holds a control plane leaves nothing behind:
/// the value is dropped during unwinding.
#[test]
fn a_panicking_test_leaves_no_processes_or_files() {
    // pids and directory of the control plane, recorded before the panic
    type Held = Option<(Vec<u32>, PathBuf)>;
    let held: Arc<Mutex<Held>> = Arc::default();
    let h = held.clone();
    let result = std::panic::catch_unwind(move || {
        let Some(cp) = ControlPlane::start_or_skip() else {
            return;
        };
        *h.lock().unwrap() = Some((cp.pids(), cp.dir().to_path_buf()));
        assert_eq!(cp.pids().len(), 2);
        panic!("deliberate panic while holding a control plane (expected by this test)");
    });
    let Some((pids, dir)) = held.lock().unwrap().take() else {
        // Skipped (binaries not built), unless the closure panicked before it
        // held a control plane: a failed start is a failure, not a skip.
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
        return;
    };
    assert!(result.is_err(), "the closure panicked");
    assert_gone(&pids, &dir);
}
