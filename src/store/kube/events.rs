//! core/v1 Events: Warnings on Nodes (the agent: another writer keeps
//! overwriting its condition; the coordinator: a Node left out for a value
//! podroute refuses), and the coordinator's Events on the ClusterRouting.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

use crate::{Error, Result};

/// Cluster-scoped objects' Events live in `default`.
pub const EVENTS_NAMESPACE: &str = "default";

/// The Event reason for a Node left out of the cluster.
pub const REASON_INVALID_NODE: &str = "PodrouteInvalidNode";

/// Who reports: the component and its instance (a node or pod name).
#[derive(Debug, Clone)]
pub struct Reporter {
    pub component: String,
    pub instance: String,
}

/// One Warning Event about `node`. The involved object's uid is the node's
/// name, as the kubelet does, so `kubectl describe node` lists it.
pub async fn warn_node(
    api: &Api<Event>,
    reporter: &Reporter,
    node: &str,
    reason: &str,
    message: &str,
) -> Result<()> {
    let node_ref = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(node.into()),
        uid: Some(node.into()),
        ..ObjectReference::default()
    };
    record(api, reporter, node_ref, "Warning", reason, message)
        .await
        .map_err(|e| Error::kube(format!("creating an Event ({reason}) on node {node}"), e))
}

/// One core/v1 Event of `type_` (Normal or Warning) about `object`.
pub async fn record(
    api: &Api<Event>,
    reporter: &Reporter,
    object: ObjectReference,
    type_: &str,
    reason: &str,
    message: &str,
) -> Result<(), kube::Error> {
    let now = Timestamp::now();
    let event = Event {
        metadata: ObjectMeta {
            generate_name: object.name.as_ref().map(|name| format!("{name}.")),
            namespace: Some(EVENTS_NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        involved_object: object,
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.into()),
        source: Some(EventSource {
            component: Some(reporter.component.clone()),
            host: None,
        }),
        reporting_component: Some(reporter.component.clone()),
        reporting_instance: Some(reporter.instance.clone()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: None::<MicroTime>,
        count: Some(1),
        ..Event::default()
    };
    api.create(&PostParams::default(), &event).await.map(drop)
}
