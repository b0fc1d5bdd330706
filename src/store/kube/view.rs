//! What the store keeps of a Node and of the ClusterRouting object.
//!
//! Both are read through their own `Resource` types whose `Deserialize` picks
//! out the fields podroute needs while the JSON is parsed (of a Node, not even
//! its metadata: images, managedFields, other annotations are skipped by the
//! parser and never allocated). No full Node object exists in this process.

use std::borrow::Cow;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::api::{
    ClusterRouting, ClusterRoutingSpec, NodeCondition, Plan, PodrouteNode, PodrouteNodeSpec,
    APPLIED_ANNOTATION, CLUSTER_ROUTING_NAME, NETWORK_UNAVAILABLE, REASON_ROUTE_CREATED,
};
use crate::model::{Node, NodeIps, Settings};
use crate::store::{Applied, Network, NodeReport};

/// `Resource` for a view of a full type (a struct with `metadata`): the
/// kind, group, version and plural are the full type's, the metadata the
/// view's own.
macro_rules! resource_view {
    ($view:ty, $full:ty) => {
        impl ::kube::Resource for $view {
            type DynamicType = ();
            type Scope = <$full as ::kube::Resource>::Scope;

            fn kind(_: &()) -> ::std::borrow::Cow<'_, str> {
                <$full as ::kube::Resource>::kind(&())
            }
            fn group(_: &()) -> ::std::borrow::Cow<'_, str> {
                <$full as ::kube::Resource>::group(&())
            }
            fn version(_: &()) -> ::std::borrow::Cow<'_, str> {
                <$full as ::kube::Resource>::version(&())
            }
            fn plural(_: &()) -> ::std::borrow::Cow<'_, str> {
                <$full as ::kube::Resource>::plural(&())
            }
            fn meta(&self) -> &::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }
            fn meta_mut(
                &mut self,
            ) -> &mut ::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}
pub(crate) use resource_view;

/// Status of a node condition, or its absence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CondStatus {
    Absent,
    True,
    False,
    Unknown,
}

impl CondStatus {
    fn parse(s: &str) -> CondStatus {
        match s {
            "True" => CondStatus::True,
            "False" => CondStatus::False,
            _ => CondStatus::Unknown,
        }
    }
}

/// Why a Node is not in snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeftOut {
    /// Not routable yet (no InternalIP or pod CIDR): normal for a node that
    /// just joined, for a few seconds.
    Pending(String),
    /// A value podroute refuses; `field` is its path on the Node object.
    Invalid { field: String, reason: String },
}

impl fmt::Display for LeftOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeftOut::Pending(why) => f.write_str(why),
            LeftOut::Invalid { field, reason } => write!(f, "{field}: {reason}"),
        }
    }
}

/// What podroute needs of one Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingFields {
    /// The validated node, or why it is left out of snapshots.
    pub node: Result<Node, LeftOut>,
    /// The kubelet's Ready condition is True.
    pub ready: bool,
    /// The `podroute.io/applied` annotation and our NetworkUnavailable condition.
    pub report: NodeReport,
    /// NetworkUnavailable as it stands, whoever wrote it: a report sets
    /// lastTransitionTime only when it flips this.
    pub network_status: CondStatus,
    /// The routing facts as read, unvalidated: what the Node's
    /// `PodrouteNode` record must hold.
    pub facts: PodrouteNodeSpec,
    /// `metadata.creationTimestamp` as the API server writes it (RFC 3339,
    /// UTC, whole seconds), so text order is time order: of two nodes
    /// claiming the same pod CIDR, the one known longest keeps it.
    pub created: Option<String>,
}

/// A Node, projected while it is parsed. Only `metadata.name`,
/// `metadata.uid` and `metadata.resourceVersion` are kept of the metadata.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "RawNode")]
pub struct KubeNode {
    metadata: ObjectMeta,
    pub fields: RoutingFields,
}

impl KubeNode {
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    pub fn resource_version(&self) -> Option<&str> {
        self.metadata.resource_version.as_deref()
    }

    /// The Node's uid; of a record, the uid of the Node it was written for.
    pub fn uid(&self) -> Option<&str> {
        self.metadata.uid.as_deref()
    }
}

resource_view!(KubeNode, k8s_openapi::api::core::v1::Node);

/// A `PodrouteNode` record, read as the Node it stands for: its facts
/// validated as a Node's are, no readiness, no report. The uid is that of
/// the Node in the record's ownerReference.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "RawRecord")]
pub struct RecordView {
    metadata: ObjectMeta,
    fields: RoutingFields,
}

resource_view!(RecordView, PodrouteNode);

impl From<RecordView> for KubeNode {
    fn from(record: RecordView) -> KubeNode {
        KubeNode {
            metadata: record.metadata,
            fields: record.fields,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawRecord {
    metadata: RawRecordMeta,
    spec: Option<PodrouteNodeSpec>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawRecordMeta {
    name: Option<String>,
    resource_version: Option<String>,
    creation_timestamp: Option<String>,
    owner_references: Vec<RawOwner>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawOwner {
    kind: String,
    uid: String,
}

impl From<RawRecord> for RecordView {
    fn from(raw: RawRecord) -> RecordView {
        let name = raw.metadata.name.unwrap_or_default();
        let facts = raw.spec.unwrap_or_default();
        let uid = raw
            .metadata
            .owner_references
            .into_iter()
            .find(|o| o.kind == "Node")
            .map(|o| o.uid);
        RecordView {
            fields: RoutingFields {
                node: project_node(&name, &facts.node_ips, &facts.pod_cidrs),
                ready: false,
                report: NodeReport {
                    applied: None,
                    network: None,
                },
                network_status: CondStatus::Absent,
                facts,
                created: raw.metadata.creation_timestamp,
            },
            metadata: ObjectMeta {
                name: Some(name),
                resource_version: raw.metadata.resource_version,
                uid,
                ..ObjectMeta::default()
            },
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawNode {
    metadata: RawMeta,
    spec: Option<RawNodeSpec>,
    status: Option<RawNodeStatus>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawMeta {
    name: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    creation_timestamp: Option<String>,
    annotations: Option<AppliedAnnotation>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawNodeSpec {
    #[serde(rename = "podCIDR")]
    pod_cidr: Option<String>,
    #[serde(rename = "podCIDRs")]
    pod_cidrs: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawNodeStatus {
    addresses: Option<Vec<RawAddress>>,
    conditions: Option<Vec<NodeCondition>>,
}

#[derive(Deserialize)]
struct RawAddress {
    #[serde(rename = "type")]
    type_: String,
    address: String,
}

/// The value of `podroute.io/applied` out of `metadata.annotations`; the
/// other annotations are skipped unread.
#[derive(Default)]
struct AppliedAnnotation(Option<String>);

impl<'de> Deserialize<'de> for AppliedAnnotation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AppliedAnnotation;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of annotations")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut found = None;
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if key == APPLIED_ANNOTATION {
                        found = Some(map.next_value::<String>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(AppliedAnnotation(found))
            }
        }
        d.deserialize_map(V)
    }
}

impl From<RawNode> for KubeNode {
    fn from(raw: RawNode) -> KubeNode {
        let name = raw.metadata.name.unwrap_or_default();
        let spec = raw.spec.unwrap_or_default();
        let status = raw.status.unwrap_or_default();
        let conditions = status.conditions.unwrap_or_default();
        let find = |type_: &str| conditions.iter().find(|c| c.type_ == type_);

        let ready = find("Ready").is_some_and(|c| c.status == "True");
        let network_condition = find(NETWORK_UNAVAILABLE);
        let network_status =
            network_condition.map_or(CondStatus::Absent, |c| CondStatus::parse(&c.status));
        let applied = raw
            .metadata
            .annotations
            .and_then(|a| a.0)
            .and_then(|value| match value.parse::<Applied>() {
                Ok(applied) => Some(applied),
                Err(e) => {
                    tracing::debug!(node = %name, "ignoring annotation: {e}");
                    None
                }
            });
        let report = NodeReport {
            applied,
            network: network_condition.and_then(parse_network),
        };
        let pod_cidrs = match spec.pod_cidrs {
            Some(cidrs) if !cidrs.is_empty() => cidrs,
            _ => spec.pod_cidr.into_iter().collect(),
        };
        let node_ips: Vec<String> = (status.addresses.unwrap_or_default().into_iter())
            .filter(|a| a.type_ == "InternalIP")
            .map(|a| a.address)
            .collect();
        let node = project_node(&name, &node_ips, &pod_cidrs);
        KubeNode {
            metadata: ObjectMeta {
                name: Some(name),
                uid: raw.metadata.uid,
                resource_version: raw.metadata.resource_version,
                ..ObjectMeta::default()
            },
            fields: RoutingFields {
                node,
                ready,
                report,
                network_status,
                facts: PodrouteNodeSpec {
                    node_ips,
                    pod_cidrs,
                },
                created: raw.metadata.creation_timestamp,
            },
        }
    }
}

/// NetworkUnavailable as podroute reads it back: False with reason
/// RouteCreated is "available" (podroute's, or a cloud route controller's:
/// either way the routes are there); True is "unavailable", whoever set it;
/// anything else (another CNI's False, Unknown) is no report.
fn parse_network(c: &NodeCondition) -> Option<Network> {
    let message = c.message.clone().unwrap_or_default();
    match c.status.as_str() {
        "False" if c.reason.as_deref() == Some(REASON_ROUTE_CREATED) => {
            Some(Network::Available { message })
        }
        "True" => Some(Network::Unavailable {
            reason: c.reason.clone().unwrap_or_default(),
            message,
        }),
        _ => None,
    }
}

/// A node with its first InternalIP of each family and its pod CIDRs,
/// validated as a cluster file's nodes are; errors name the Node's field.
fn project_node(name: &str, internal: &[String], pod_cidrs: &[String]) -> Result<Node, LeftOut> {
    let ip = internal.iter().find(|a| a.parse::<Ipv4Addr>().is_ok());
    let ip6 = internal.iter().find(|a| a.parse::<Ipv6Addr>().is_ok());
    let ips: Vec<String> = ip.into_iter().chain(ip6).map(|a| a.to_string()).collect();
    if ips.is_empty() {
        return Err(match internal.first() {
            None => LeftOut::Pending("no InternalIP address".into()),
            Some(bad) => LeftOut::Invalid {
                field: ADDRESSES_FIELD.into(),
                reason: format!("{bad:?} is not an IP address"),
            },
        });
    }
    if pod_cidrs.is_empty() {
        return Err(LeftOut::Pending("no pod CIDR yet".into()));
    }
    Node::parse("", name, NodeIps::List(&ips), pod_cidrs).map_err(|e| match e {
        crate::Error::Invalid { field, reason } => LeftOut::Invalid {
            field: node_field(&field),
            reason,
        },
        other => LeftOut::Invalid {
            field: "metadata.name".into(),
            reason: other.to_string(),
        },
    })
}

/// Where the InternalIP comes from on a Node object.
const ADDRESSES_FIELD: &str = "status.addresses";

/// A field of [`Node::parse`] (`ip`, `podCIDRs[0]`, `name`) as the path on
/// the Node object, so an Event names what the operator must fix.
pub fn node_field(field: &str) -> String {
    match field {
        ip if ip.starts_with("ip") => format!("{ADDRESSES_FIELD} (InternalIP)"),
        "name" => "metadata.name".into(),
        other => format!("spec.{other}"),
    }
}

/// The ClusterRouting object: plan and settings for agents, [`Self::object`]
/// for the coordinator; parts that do not parse are kept as errors.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "RawRouting")]
pub struct RoutingView {
    metadata: ObjectMeta,
    /// `None` when absent or unparsable (`settings` says why).
    spec: Option<ClusterRoutingSpec>,
    pub settings: Result<Settings, String>,
    pub plan: Result<Option<Plan>, String>,
}

resource_view!(RoutingView, ClusterRouting);

impl RoutingView {
    /// Metadata and spec, no status; `None` while the spec does not parse.
    pub fn object(&self) -> Option<ClusterRouting> {
        let mut object = ClusterRouting::new(CLUSTER_ROUTING_NAME, self.spec.clone()?);
        object.metadata = self.metadata.clone();
        Some(object)
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawRouting {
    metadata: ObjectMeta,
    spec: Option<serde_json::Value>,
    status: Option<RawRoutingStatus>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawRoutingStatus {
    plan: Option<serde_json::Value>,
}

impl From<RawRouting> for RoutingView {
    fn from(raw: RawRouting) -> RoutingView {
        let spec = raw.spec.map(serde_json::from_value::<ClusterRoutingSpec>);
        let settings = match &spec {
            None => Ok(Settings::default()),
            Some(Ok(spec)) => Settings::of_spec(spec).map_err(|e| format!("spec: {e}")),
            Some(Err(e)) => Err(format!("spec: {e}")),
        };
        let plan = match raw.status.and_then(|s| s.plan) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(plan) => serde_json::from_value::<Plan>(plan)
                .map(Some)
                .map_err(|e| format!("status.plan: {e}")),
        };
        RoutingView {
            metadata: raw.metadata,
            spec: spec.and_then(Result::ok),
            settings,
            plan,
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::Resource;
    use serde_json::json;

    use super::*;
    use crate::api::Mode;

    fn node_json(extra_status: serde_json::Value) -> serde_json::Value {
        let mut node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": "n1",
                "resourceVersion": "42",
                "annotations": {
                    "node.alpha.kubernetes.io/ttl": "0",
                    "podroute.io/applied": "3/vxlan",
                },
                "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}],
            },
            "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00:1::/64"]},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": "fd00::1"},
                    {"type": "InternalIP", "address": "10.251.0.1"},
                    {"type": "Hostname", "address": "n1"},
                ],
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "KubeletReady"},
                    {"type": "NetworkUnavailable", "status": "False", "reason": "RouteCreated", "message": "podroute: vxlan"},
                ],
                "images": [{"names": ["registry.example/big:1"], "sizeBytes": 123456789}],
            },
        });
        if let Some(extra) = extra_status.as_object() {
            for (k, v) in extra {
                node["status"][k] = v.clone();
            }
        }
        node
    }

    #[test]
    fn a_node_becomes_name_ip_cidrs_ready_and_report() {
        let view: KubeNode = serde_json::from_value(node_json(json!({}))).unwrap();
        assert_eq!(view.name(), "n1");
        assert_eq!(view.resource_version(), Some("42"));
        assert!(view.meta().annotations.is_none() && view.meta().managed_fields.is_none());
        let node = view.fields.node.as_ref().unwrap();
        assert_eq!(node.node_ip, Some(Ipv4Addr::new(10, 251, 0, 1)));
        assert_eq!(node.pod_cidr().unwrap().to_string(), "10.244.1.0/24");
        assert_eq!(node.pod_cidrs.len(), 2);
        assert!(view.fields.ready);
        assert_eq!(
            view.fields.report,
            NodeReport {
                applied: Some(Applied {
                    generation: 3,
                    mode: Mode::Vxlan
                }),
                network: Some(Network::Available {
                    message: "podroute: vxlan".into()
                }),
            }
        );
        assert_eq!(view.fields.network_status, CondStatus::False);
    }

    #[test]
    fn nodes_that_cannot_be_routed_yet_are_errors() {
        let mut no_cidr = node_json(json!({}));
        no_cidr["spec"] = json!({});
        let view: KubeNode = serde_json::from_value(no_cidr).unwrap();
        assert_eq!(
            view.fields.node,
            Err(LeftOut::Pending("no pod CIDR yet".into()))
        );

        // An IPv6 InternalIP with only an IPv4 pod CIDR: no family to route.
        let mut v6 =
            node_json(json!({"addresses": [{"type": "InternalIP", "address": "fd00::1"}]}));
        v6["spec"] = json!({"podCIDRs": ["10.244.1.0/24"]});
        let view: KubeNode = serde_json::from_value(v6).unwrap();
        let err = view.fields.node.unwrap_err().to_string();
        assert!(
            err.contains("spec.podCIDRs") && err.contains("no family has both"),
            "{err}"
        );

        let none =
            node_json(json!({"addresses": [{"type": "ExternalIP", "address": "198.51.100.1"}]}));
        let view: KubeNode = serde_json::from_value(none).unwrap();
        assert_eq!(
            view.fields.node,
            Err(LeftOut::Pending("no InternalIP address".into()))
        );

        let mut v6_only =
            node_json(json!({"addresses": [{"type": "InternalIP", "address": "10.251.0.1"}]}));
        v6_only["spec"] = json!({"podCIDRs": ["fd00:1::/64"]});
        let view: KubeNode = serde_json::from_value(v6_only).unwrap();
        assert!(view.fields.node.is_err(), "IPv6 pods, an IPv4 address only");
    }

    #[test]
    fn ipv6_only_nodes_route_ipv6() {
        let mut n =
            node_json(json!({"addresses": [{"type": "InternalIP", "address": "fd00:250::9"}]}));
        n["spec"] = json!({"podCIDRs": ["fd00:244:9::/64"]});
        let view: KubeNode = serde_json::from_value(n).unwrap();
        let node = view.fields.node.expect("an IPv6-only node");
        assert_eq!((node.v4(), node.node_ip), (None, None));
        assert_eq!(node.v6().expect("v6").1.to_string(), "fd00:244:9::/64");
    }

    #[test]
    fn ipv6_first_pod_cidrs_keep_the_ipv4_one_and_pod_cidr_is_the_fallback() {
        let mut n = node_json(json!({}));
        n["spec"] = json!({"podCIDRs": ["fd00:1::/64", "10.244.7.0/24"]});
        let view: KubeNode = serde_json::from_value(n).unwrap();
        assert_eq!(
            view.fields.node.unwrap().pod_cidr().unwrap().to_string(),
            "10.244.7.0/24"
        );
        let mut n = node_json(json!({}));
        n["spec"] = json!({"podCIDR": "10.244.8.0/24"});
        let view: KubeNode = serde_json::from_value(n).unwrap();
        assert_eq!(
            view.fields.node.unwrap().pod_cidr().unwrap().to_string(),
            "10.244.8.0/24"
        );
    }

    #[test]
    fn dual_stack_nodes_carry_the_first_internal_ip_of_each_family() {
        let mut n = node_json(json!({"addresses": [
            {"type": "InternalIP", "address": "fd00:250::7"},
            {"type": "ExternalIP", "address": "2001:470::7"},
            {"type": "InternalIP", "address": "10.250.0.7"},
            {"type": "InternalIP", "address": "fd00:250::8"},
        ]}));
        n["spec"] = json!({"podCIDRs": ["fd00:244:7::/64", "10.244.7.0/24"]});
        let view: KubeNode = serde_json::from_value(n).unwrap();
        let node = view.fields.node.unwrap();
        assert_eq!(node.node_ip.unwrap().to_string(), "10.250.0.7");
        assert_eq!(node.node_ip6.unwrap().to_string(), "fd00:250::7");
        let (_, cidr6) = node.v6().expect("routes IPv6");
        assert_eq!(cidr6.to_string(), "fd00:244:7::/64");

        // A bad IPv6 InternalIP names the field on the Node.
        let mut n = node_json(json!({"addresses": [
            {"type": "InternalIP", "address": "10.250.0.7"},
            {"type": "InternalIP", "address": "fe80::7"},
        ]}));
        n["spec"] = json!({"podCIDRs": ["10.244.7.0/24", "fd00:244:7::/64"]});
        let view: KubeNode = serde_json::from_value(n).unwrap();
        match view.fields.node {
            Err(LeftOut::Invalid { field, reason }) => {
                assert_eq!(field, "status.addresses (InternalIP)");
                assert!(reason.contains("link-local"), "{reason}");
            }
            other => panic!("expected an invalid node, got {other:?}"),
        }
    }

    #[test]
    fn network_condition_readings() {
        let with = |c: serde_json::Value| {
            let view: KubeNode =
                serde_json::from_value(node_json(json!({"conditions": [c]}))).unwrap();
            (
                view.fields.report.network,
                view.fields.network_status,
                view.fields.ready,
            )
        };
        assert_eq!(
            with(
                json!({"type": "NetworkUnavailable", "status": "True", "reason": "NoRouteCreated", "message": "m"})
            ),
            (
                Some(Network::Unavailable {
                    reason: "NoRouteCreated".into(),
                    message: "m".into()
                }),
                CondStatus::True,
                false
            )
        );
        assert_eq!(
            with(json!({"type": "NetworkUnavailable", "status": "False", "reason": "CalicoIsUp"})),
            (None, CondStatus::False, false)
        );
        assert_eq!(
            with(json!({"type": "Ready", "status": "Unknown"})),
            (None, CondStatus::Absent, false)
        );
    }

    #[test]
    fn a_bad_annotation_is_no_report() {
        let mut n = node_json(json!({}));
        n["metadata"]["annotations"] = json!({"podroute.io/applied": "garbage"});
        let view: KubeNode = serde_json::from_value(n).unwrap();
        assert_eq!(view.fields.report.applied, None);
        let mut n = node_json(json!({}));
        n["metadata"]["annotations"] = serde_json::Value::Null;
        let view: KubeNode = serde_json::from_value(n).unwrap();
        assert_eq!(view.fields.report.applied, None);
    }

    #[test]
    fn routing_gives_plan_and_settings_and_keeps_errors_apart() {
        let view: RoutingView = serde_json::from_value(json!({
            "metadata": {"name": "default", "resourceVersion": "7"},
            "spec": {"mode": "native", "native": {"offSubnet": "underlay"}, "mtu": "auto"},
            "status": {"phase": "Switch", "plan": {"generation": 4, "routeMode": "native", "decap": ["vxlan", "native"]}},
        }))
        .unwrap();
        assert_eq!(
            view.settings.as_ref().unwrap().off_subnet,
            Some(crate::api::OffSubnet::Underlay)
        );
        let plan = view.plan.unwrap().unwrap();
        assert_eq!((plan.generation, plan.route_mode), (4, Mode::Native));
        assert_eq!(plan.decap.len(), 2);

        let view: RoutingView = serde_json::from_value(json!({
            "metadata": {"name": "default"},
            "spec": {"mode": "wireguard"},
            "status": {"plan": {"generation": "x"}},
        }))
        .unwrap();
        assert!(view.settings.is_err());
        assert!(view.plan.is_err());

        let view: RoutingView = serde_json::from_value(
            json!({"metadata": {"name": "default"}, "spec": {"mode": "ipip"}}),
        )
        .unwrap();
        assert_eq!(view.plan, Ok(None));
    }
}
