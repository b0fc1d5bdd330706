//! Keeping PodrouteNode records in step with their Nodes: the agent keeps
//! its own, the coordinator every one (see docs/scale.md).
//!
//! Every write carries a precondition (create: the name is free; replace:
//! the resourceVersion we read; delete: that and the Node's absence), so
//! when the other writer got there first the write fails with a conflict
//! and is dropped: the watch brings what it wrote, and the next pass reads
//! it again. Nothing is ever forced.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};

use super::state::{Keep, KeepWrite, RecordWrite, Source, Watched};
use super::view::{KubeNode, RecordView};
use super::Shared;
use crate::api::PodrouteNode;

/// Retry delays after a failed write: the first failure is retried soon,
/// a lasting one (RBAC, admission, no CRD) at most every 30 s.
const RETRY: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(4),
    Duration::from_secs(10),
    Duration::from_secs(30),
];

/// Writes in flight at once: a coordinator that meets 5000 Nodes without
/// records (the upgrade) writes them in seconds, not minutes.
const PARALLEL_WRITES: usize = 16;

/// Runs until the store is dropped: after every change to the Nodes or
/// records it holds, writes what [`super::state::State::record_writes`] asks.
pub(super) async fn keep(shared: Arc<Shared>, records: Api<PodrouteNode>, nodes: Api<KubeNode>) {
    let mut failures = 0usize;
    loop {
        let writes = shared.lock().record_writes();
        let writing = writes.into_iter().map(|write| {
            let (shared, records, nodes) = (shared.clone(), records.clone(), nodes.clone());
            async move { apply(&shared, &records, &nodes, &write).await }
        });
        let errors: Vec<String> = futures::stream::iter(writing)
            .buffer_unordered(PARALLEL_WRITES)
            .filter_map(|result| async move { result.err() })
            .collect()
            .await;
        let failed = !errors.is_empty();
        if let Some(first) = errors.first() {
            let more = errors.len() - 1;
            let message =
                format!("keeping PodrouteNode records: {first} (and {more} more); retrying");
            if failures == 0 {
                tracing::warn!("{message}");
            } else {
                tracing::debug!("{message}");
            }
        }
        if failed {
            shared.lock().recheck_records();
            let delay = RETRY[failures.min(RETRY.len() - 1)];
            failures += 1;
            // A change meanwhile does not cut the wait short: a lasting
            // refusal must not turn every Node event into a write.
            tokio::time::sleep(delay).await;
            continue;
        }
        if failures > 0 {
            tracing::info!("PodrouteNode records written again");
        }
        failures = 0;
        shared.records_dirty.notified().await;
    }
}

async fn apply(
    shared: &Shared,
    records: &Api<PodrouteNode>,
    nodes: &Api<KubeNode>,
    write: &RecordWrite,
) -> Result<(), String> {
    match write {
        RecordWrite::Keep(keep) => keep_one(shared, records, keep).await,
        RecordWrite::DeleteIfNodeGone { name, owner, rv } => {
            delete_orphan(records, nodes, name, owner.as_deref(), rv.clone()).await
        }
    }
}

async fn keep_one(shared: &Shared, records: &Api<PodrouteNode>, keep: &Keep) -> Result<(), String> {
    let params = PostParams::default();
    let written = match &keep.write {
        KeepWrite::Create => records.create(&params, &record(keep, None)).await,
        KeepWrite::Replace { rv } => {
            let object = record(keep, rv.clone());
            records.replace(&keep.name, &params, &object).await
        }
    };
    let object = match written {
        Ok(object) => object,
        Err(kube::Error::Api(s)) if s.code == 409 => {
            tracing::debug!(node = %keep.name, "PodrouteNode record written by someone else first");
            return Ok(());
        }
        Err(e) => return Err(format!("writing {}: {e}", keep.name)),
    };
    let (ips, pod_cidrs) = (&keep.facts.node_ips, &keep.facts.pod_cidrs);
    match keep.write {
        KeepWrite::Create => tracing::info!(
            node = %keep.name, ?ips, ?pod_cidrs,
            "PodrouteNode record created: the Node had none"
        ),
        KeepWrite::Replace { .. } => tracing::info!(
            node = %keep.name, ?ips, ?pod_cidrs,
            "PodrouteNode record updated: the Node's IPs, pod CIDRs or uid changed"
        ),
    }
    if let Some(view) = as_view(&object) {
        shared.update(|s| s.apply(Watched::Records, view, Source::Response));
    }
    Ok(())
}

async fn delete_orphan(
    records: &Api<PodrouteNode>,
    nodes: &Api<KubeNode>,
    name: &str,
    owner: Option<&str>,
    rv: Option<String>,
) -> Result<(), String> {
    match nodes.get_opt(name).await {
        Ok(Some(node)) if node.uid().is_some() && node.uid() == owner => {
            return Ok(()); // the Node list is behind; its watch will bring it
        }
        Ok(_) => {}
        Err(e) => return Err(format!("reading Node {name}: {e}")),
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: rv,
            uid: None,
        }),
        ..DeleteParams::default()
    };
    match records.delete(name, &params).await {
        Ok(_) => {
            tracing::info!(node = %name, "PodrouteNode record deleted: its Node is gone");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(format!("deleting {name}: {e}")),
    }
}

fn record(keep: &Keep, rv: Option<String>) -> PodrouteNode {
    let mut record = PodrouteNode::new(&keep.name, keep.facts.clone());
    record.metadata.resource_version = rv;
    // The garbage collector deletes the record with its Node.
    record.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: keep.name.clone(),
        uid: keep.uid.clone(),
        ..OwnerReference::default()
    }]);
    record
}

/// The API server's answer, read as the watch would read it.
fn as_view(object: &PodrouteNode) -> Option<KubeNode> {
    let value = serde_json::to_value(object).ok()?;
    serde_json::from_value::<RecordView>(value)
        .ok()
        .map(KubeNode::from)
}
