//! The leader's Events: one per machine event on the ClusterRouting object,
//! and one per Node the store leaves out for a value podroute refuses.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference};
use kube::api::Api;

use super::machine::{Event, REASON_BLOCKED, REASON_SKIPPED};
use super::metrics::CoordinatorMetrics;
use crate::api::{ClusterRouting, CLUSTER_ROUTING_NAME};
use crate::store::{events as node_events, KubeStore};
use crate::{Error, Result};

/// The component named in Events and as the status writer.
pub const COMPONENT: &str = "podroute-coordinator";

/// One Warning Event per Node the store leaves out for a value podroute
/// refuses, naming the field, each time the reason changes. Only the leader
/// says it, so a cluster hears it once, not once per agent.
pub async fn announce_invalid_nodes(
    store: &KubeStore,
    identity: &str,
    metrics: &CoordinatorMetrics,
    announced: &mut BTreeMap<String, String>,
) {
    let reporter = reporter(identity);
    let invalid = store.invalid_nodes();
    for (node, why) in &invalid {
        if announced.get(node) == Some(why) {
            continue;
        }
        let message = format!("podroute leaves this node out of the cluster: {why}");
        let emitted = node_events::warn_node(
            store.events_api(),
            &reporter,
            node,
            node_events::REASON_INVALID_NODE,
            &message,
        )
        .await;
        note_emitted(metrics, node_events::REASON_INVALID_NODE, emitted);
    }
    *announced = invalid;
}

/// A failed Event write does not fail the step: the status already holds
/// what the Event tells, so it is only logged and counted.
fn note_emitted(metrics: &CoordinatorMetrics, reason: &str, emitted: Result<()>) {
    if let Err(e) = emitted {
        metrics.event_failed();
        tracing::warn!("emitting event {reason}: {e}");
    }
}

/// One core/v1 Event on the ClusterRouting object (cluster-scoped objects'
/// events live in `default`, where `kubectl describe` looks).
pub async fn emit(
    api: &Api<CoreEvent>,
    routing: &ClusterRouting,
    identity: &str,
    event: &Event,
    metrics: &CoordinatorMetrics,
) {
    let object = ObjectReference {
        api_version: Some("podroute.io/v1alpha1".into()),
        kind: Some("ClusterRouting".into()),
        name: Some(CLUSTER_ROUTING_NAME.into()),
        uid: routing.metadata.uid.clone(),
        resource_version: routing.metadata.resource_version.clone(),
        ..ObjectReference::default()
    };
    let warning = matches!(event.reason, REASON_BLOCKED | REASON_SKIPPED);
    let type_ = if warning { "Warning" } else { "Normal" };
    let (reporter, message) = (reporter(identity), &event.message);
    let created = node_events::record(api, &reporter, object, type_, event.reason, message).await;
    let emitted = created.map_err(|e| Error::kube("creating an Event", e));
    note_emitted(metrics, event.reason, emitted);
}

fn reporter(identity: &str) -> node_events::Reporter {
    node_events::Reporter {
        component: COMPONENT.into(),
        instance: identity.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Endpoints;

    #[test]
    fn a_failed_event_write_counts_as_an_api_error() {
        let metrics = CoordinatorMetrics::default();
        note_emitted(&metrics, REASON_BLOCKED, Ok(()));
        assert_eq!(metrics.api_errors.get(), 0);
        let forbidden = kube::core::Status::failure("events is forbidden", "Forbidden")
            .with_code(403)
            .boxed();
        let refused = Error::kube("creating an Event", kube::Error::Api(forbidden));
        note_emitted(&metrics, REASON_BLOCKED, Err(refused));
        assert_eq!(metrics.api_errors.get(), 1);
        assert!(metrics
            .render()
            .contains("podroute_coordinator_api_errors_total 1"));
    }
}
