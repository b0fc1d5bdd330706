//! The `ClusterRouting` custom resource (group `podroute.io`, version
//! `v1alpha1`, cluster-scoped, one object named `default`): the operator
//! writes `spec`, the coordinator writes `status`, agents read both.
//! `mtu` and `rollout.nodeTimeout` are int-or-string (see [`super::Mtu`]).

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

#[cfg(feature = "kube")]
use super::ClusterRoutingStatus;
use super::{Condition, Mode, Mtu, NodeTimeout, OffSubnet};

/// The name of the one ClusterRouting object podroute reads.
pub const CLUSTER_ROUTING_NAME: &str = "default";

/// How pods on different nodes reach each other, cluster-wide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(
    feature = "kube",
    derive(kube::CustomResource),
    kube(
        group = "podroute.io",
        version = "v1alpha1",
        kind = "ClusterRouting",
        plural = "clusterroutings",
        singular = "clusterrouting",
        status = "ClusterRoutingStatus",
        derive = "PartialEq",
        doc = "Cluster-wide pod routing: the mode the operator asks for (spec) and the plan the coordinator rolls out (status). One object, named `default`.",
        printcolumn = r#"{"name": "Mode", "type": "string", "jsonPath": ".spec.mode", "description": "The mode the operator asked for"}"#,
        printcolumn = r#"{"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Where the coordinator is"}"#,
        printcolumn = r#"{"name": "Applied", "type": "integer", "jsonPath": ".status.nodes.applied", "description": "Nodes that hold the current plan"}"#,
        printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRoutingSpec {
    /// The dataplane the cluster should run: ipip, vxlan or native.
    #[schemars(schema_with = "mode_schema")]
    pub mode: Mode,
    /// Native routing options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native: Option<NativeSpec>,
    /// Underlay MTU the tunnel MTUs are derived from: `auto` (the uplink's) or bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<Mtu>,
    /// VXLAN device options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan: Option<VxlanSpec>,
    /// How the coordinator rolls a switch out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NativeSpec {
    /// Peers off the uplink's subnet: `encap` (through a tunnel) or
    /// `underlay` (install nothing; the cloud route table carries them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "off_subnet_schema")]
    pub off_subnet: Option<OffSubnet>,
}

/// `vxlan` of the spec and of the cluster file. An unknown field is refused
/// (a typo in the file); the API server prunes them from the spec anyway.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VxlanSpec {
    /// VXLAN network identifier (default 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16777215), extend("format" = "int32"))]
    pub vni: Option<u32>,
    /// UDP destination port (default 4789).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1), extend("format" = "int32"))]
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// How long a node may take to apply a plan before `notReadyPolicy`
    /// applies: seconds, or a duration such as `90s`, `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_timeout: Option<NodeTimeout>,
    /// NotReady nodes: `Wait` for them (default) or `Skip` them after `nodeTimeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_ready_policy: Option<NotReadyPolicy>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum NotReadyPolicy {
    #[default]
    Wait,
    Skip,
}

pub(super) fn mode_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "enum": ["ipip", "vxlan", "native"]})
}

pub(super) fn switch_phase_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "enum": ["Steady", "Prepare", "Switch", "Finalize"]})
}

pub(super) fn decap_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": {"type": "string", "enum": ["ipip", "vxlan", "native"]},
        "x-kubernetes-list-type": "set",
    })
}

fn off_subnet_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "enum": ["encap", "underlay"]})
}

pub(super) fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut items = generator.subschema_for::<Condition>();
    items.remove("nullable");
    json_schema!({
        "type": "array",
        "items": items,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
    })
}

#[cfg(all(test, feature = "kube"))]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    #[test]
    fn crd_names_scope_columns_and_status() {
        let crd = ClusterRouting::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("clusterroutings.podroute.io")
        );
        assert_eq!(crd.spec.scope, "Cluster");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        let columns: Vec<&str> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(columns, ["Mode", "Phase", "Applied", "Age"]);
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        let json = serde_json::to_string(&crd).unwrap();
        assert_eq!(json, serde_json::to_string(&ClusterRouting::crd()).unwrap());
    }
}
