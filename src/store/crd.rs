//! The `ClusterRouting` custom resource (group `podroute.io`, version
//! `v1alpha1`, cluster-scoped, one object named `default`): the operator
//! writes `spec`, the coordinator writes `status`, agents read both.
//!
//! Two fields take either an integer or a string, as Kubernetes does for
//! ports and quantities (`x-kubernetes-int-or-string`, checked by CEL rules
//! in the schema, so the API server refuses anything else):
//! - `mtu`: `auto` (also: field absent) or a number of bytes, 576..=65535;
//! - `rollout.nodeTimeout`: whole seconds, or a Go duration (`90s`, `5m`, `1h30m`).

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use kube::CustomResource;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::coordinator::machine::InFlight;
use crate::coordinator::{CoordinatorStatus, StatusPhase};
use crate::model::{Mode, OffSubnet, Plan};
use crate::store::Settings;
use crate::Error;

/// The name of the one ClusterRouting object podroute reads.
pub const CLUSTER_ROUTING_NAME: &str = "default";

/// A 404 that is not an object's NotFound: the API server does not serve
/// clusterroutings at all (the CRD is not installed).
pub fn crd_missing(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404 && s.reason != "NotFound")
}

/// What to tell a user whose cluster lacks the CRD, or the `default` object.
pub fn routing_read_error(e: kube::Error) -> Error {
    match &e {
        _ if crd_missing(&e) => Error::invalid(
            "ClusterRouting",
            "the cluster has no CRD clusterroutings.podroute.io: install podroute \
             (kubectl apply -k manifests/restricted) or `podroute crd | kubectl apply -f -`",
        ),
        kube::Error::Api(s) if s.code == 404 => Error::invalid(
            "ClusterRouting",
            "no ClusterRouting named default (manifests/base/clusterrouting.yaml creates it)",
        ),
        _ => Error::kube("reading ClusterRouting default", e),
    }
}

/// How pods on different nodes reach each other, cluster-wide.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
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

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VxlanSpec {
    /// VXLAN network identifier (default 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16777215))]
    pub vni: Option<u32>,
    /// UDP destination port (default 4789).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
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

/// Written by the coordinator.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRoutingStatus {
    /// The coordinator's phase (e.g. Steady, Prepare, Switch, Finalize).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The plan every agent follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanStatus>,
    /// Rollout progress of `plan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodesStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` of the spec this status is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The phase of the switch (Steady, Prepare, Switch, Finalize); `phase`
    /// shows `Blocked` instead while late nodes hold it up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "switch_phase_schema")]
    pub switch_phase: Option<StatusPhase>,
    /// The mode the switch in progress comes from; absent when Steady.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "mode_schema")]
    pub from: Option<Mode>,
    /// The mode the cluster is heading to (the steady mode when Steady).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "mode_schema")]
    pub to: Option<Mode>,
    /// Unix seconds when `plan` was published: node deadlines count from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_started_at: Option<u64>,
    /// What the plans nodes may still hold amount to: a re-target (abort)
    /// is published at once only when it is safe against all of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<InFlightStatus>,
    /// NotReady nodes left out of scope (policy Skip, past nodeTimeout).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// Nodes in scope past nodeTimeout without converging.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked: Vec<String>,
}

/// `InFlight` of the coordinator's state machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InFlightStatus {
    /// Route modes some node may still use.
    #[serde(default)]
    #[schemars(schema_with = "decap_schema")]
    pub routes: Vec<Mode>,
    /// Modes every node can receive.
    #[serde(default)]
    #[schemars(schema_with = "decap_schema")]
    pub receive: Vec<Mode>,
}

impl ClusterRoutingStatus {
    /// The status as the coordinator writes it: the machine's status plus
    /// the conditions and the spec generation it stepped on.
    pub fn from_coordinator(
        status: &CoordinatorStatus,
        conditions: Vec<Condition>,
        observed_generation: Option<i64>,
    ) -> ClusterRoutingStatus {
        ClusterRoutingStatus {
            phase: Some(status.phase_name()),
            plan: status.plan.as_ref().map(PlanStatus::from),
            nodes: Some(status.nodes.clone()),
            conditions,
            observed_generation,
            switch_phase: Some(status.phase),
            from: status.from,
            to: status.to,
            phase_started_at: status.phase_started_at,
            in_flight: Some(InFlightStatus {
                routes: status.in_flight.routes.iter().copied().collect(),
                receive: status.in_flight.receive.iter().copied().collect(),
            }),
            skipped: status.skipped.clone(),
            blocked: status.blocked.clone(),
        }
    }

    /// What a (restarted) coordinator resumes from. A status written by an
    /// older coordinator has no `inFlight`: it reads as "unknown" (empty),
    /// which the machine treats as "anything may be in flight".
    pub fn to_coordinator(&self) -> CoordinatorStatus {
        let phase = self.switch_phase.unwrap_or_else(|| {
            match self.phase.as_deref() {
                Some("Prepare") => StatusPhase::Prepare,
                Some("Switch") => StatusPhase::Switch,
                Some("Finalize") => StatusPhase::Finalize,
                Some("Steady") | None => StatusPhase::Steady,
                // Blocked, or unknown: a switch is under way when it has a source.
                Some(_) if self.from.is_some() => StatusPhase::Switch,
                Some(_) => StatusPhase::Steady,
            }
        });
        CoordinatorStatus {
            phase,
            plan: self.plan.as_ref().map(Plan::from),
            from: self.from,
            to: self.to,
            phase_started_at: self.phase_started_at,
            in_flight: self
                .in_flight
                .as_ref()
                .map(|f| InFlight {
                    routes: f.routes.iter().copied().collect(),
                    receive: f.receive.iter().copied().collect(),
                })
                .unwrap_or_default(),
            nodes: self.nodes.clone().unwrap_or_default(),
            skipped: self.skipped.clone(),
            blocked: self.blocked.clone(),
        }
    }
}

/// `Plan` as the coordinator publishes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanStatus {
    /// Counts up with every plan; agents report it back once applied.
    #[serde(deserialize_with = "bounded_generation")]
    pub generation: u64,
    /// Which routes agents install.
    #[schemars(schema_with = "mode_schema")]
    pub route_mode: Mode,
    /// Encapsulations every node must be able to receive.
    #[serde(default)]
    #[schemars(schema_with = "decap_schema")]
    pub decap: Vec<Mode>,
}

/// A generation read back from the API server: at most 2^63-1, like every
/// Kubernetes integer, so counting up from it never overflows.
fn bounded_generation<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let generation = u64::deserialize(d)?;
    if generation > crate::model::MAX_GENERATION {
        return Err(serde::de::Error::custom(format!(
            "generation {generation} is over {}",
            crate::model::MAX_GENERATION
        )));
    }
    Ok(generation)
}

impl From<&Plan> for PlanStatus {
    fn from(plan: &Plan) -> Self {
        PlanStatus {
            generation: plan.generation,
            route_mode: plan.route_mode,
            decap: plan.decap.iter().copied().collect(),
        }
    }
}

impl From<&PlanStatus> for Plan {
    fn from(p: &PlanStatus) -> Self {
        Plan {
            generation: p.generation,
            route_mode: p.route_mode,
            decap: p.decap.iter().copied().collect(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodesStatus {
    /// Nodes in scope of the plan.
    pub total: u32,
    /// Nodes that report the current generation applied.
    pub applied: u32,
    /// Nodes the coordinator waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<String>,
}

/// A condition in the shape of `metav1.Condition`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl ClusterRoutingSpec {
    /// The settings agents take from the spec.
    pub fn settings(&self) -> Settings {
        Settings {
            off_subnet: self.native.as_ref().and_then(|n| n.off_subnet),
            mtu: match self.mtu {
                Some(Mtu::Bytes(n)) => Some(n),
                Some(Mtu::Auto) | None => None,
            },
            vxlan_vni: self.vxlan.as_ref().and_then(|v| v.vni),
            vxlan_port: self.vxlan.as_ref().and_then(|v| v.port),
        }
    }
}

// --- mtu: "auto" or bytes ----------------------------------------------------

/// `auto` (the uplink's MTU) or a number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mtu {
    Auto,
    Bytes(u32),
}

impl Serialize for Mtu {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Mtu::Auto => s.serialize_str("auto"),
            Mtu::Bytes(n) => s.serialize_u32(*n),
        }
    }
}

impl<'de> Deserialize<'de> for Mtu {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match IntOrString::deserialize(d)? {
            IntOrString::Unsigned(n) => u32::try_from(n)
                .map(Mtu::Bytes)
                .map_err(|_| serde::de::Error::custom(format!("mtu {n} out of range"))),
            IntOrString::Signed(n) => {
                Err(serde::de::Error::custom(format!("mtu {n} out of range")))
            }
            IntOrString::String(s) if s == "auto" => Ok(Mtu::Auto),
            IntOrString::String(s) => s.parse().map(Mtu::Bytes).map_err(|_| {
                serde::de::Error::custom(format!("mtu {s:?} is neither auto nor a number"))
            }),
        }
    }
}

impl JsonSchema for Mtu {
    fn schema_name() -> Cow<'static, str> {
        "Mtu".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "`auto` (the uplink's MTU) or bytes, 576..=65535.",
            "x-kubernetes-int-or-string": true,
            "x-kubernetes-validations": [{
                "rule": "type(self) == string ? self == 'auto' : (self >= 576 && self <= 65535)",
                "message": "mtu must be auto or a number of bytes from 576 to 65535",
            }],
        })
    }
}

// --- nodeTimeout: seconds or a duration ---------------------------------------

/// Seconds (integer) or a Go-style duration string (`90s`, `5m`, `1h30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeTimeout(pub Duration);

impl Serialize for NodeTimeout {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Whole seconds as a number, else the largest unit that is exact.
        let nanos = self.0.subsec_nanos();
        if nanos == 0 {
            s.serialize_u64(self.0.as_secs())
        } else if nanos.is_multiple_of(1_000_000) {
            s.serialize_str(&format!("{}ms", self.0.as_millis()))
        } else if nanos.is_multiple_of(1_000) {
            s.serialize_str(&format!("{}us", self.0.as_micros()))
        } else {
            s.serialize_str(&format!("{}ns", self.0.as_nanos()))
        }
    }
}

impl<'de> Deserialize<'de> for NodeTimeout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match IntOrString::deserialize(d)? {
            IntOrString::Unsigned(n) => Ok(NodeTimeout(Duration::from_secs(n))),
            IntOrString::Signed(_) => {
                Err(serde::de::Error::custom("nodeTimeout must not be negative"))
            }
            IntOrString::String(s) => parse_duration(&s).map(NodeTimeout).ok_or_else(|| {
                serde::de::Error::custom(format!("nodeTimeout {s:?} is not a duration"))
            }),
        }
    }
}

impl JsonSchema for NodeTimeout {
    fn schema_name() -> Cow<'static, str> {
        "NodeTimeout".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Seconds, or a duration such as `90s`, `5m`, `1h30m`.",
            "x-kubernetes-int-or-string": true,
            "x-kubernetes-validations": [{
                "rule": "type(self) == string ? duration(self) >= duration('0s') : self >= 0",
                "message": "nodeTimeout must be seconds or a duration such as 90s, 5m",
            }],
        })
    }
}

impl fmt::Display for NodeTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A Go duration (`300ms`, `1.5h`, `2h45m`): a sequence of decimal numbers,
/// each with a unit (ns, us, µs, ms, s, m, h). No sign.
pub fn parse_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IntOrString {
    /// Tried first: every integer from 0 to 2^64-1.
    Unsigned(u64),
    Signed(i64),
    String(String),
}

// --- schemas of model types ----------------------------------------------------

fn mode_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "enum": ["ipip", "vxlan", "native"]})
}

fn switch_phase_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "enum": ["Steady", "Prepare", "Switch", "Finalize"]})
}

fn decap_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": {"type": "string", "enum": ["ipip", "vxlan", "native"]},
        "x-kubernetes-list-type": "set",
    })
}

fn off_subnet_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "enum": ["encap", "underlay"]})
}

fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut items = generator.subschema_for::<Condition>();
    items.remove("nullable");
    json_schema!({
        "type": "array",
        "items": items,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
    })
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    #[test]
    fn a_missing_crd_is_told_from_a_missing_object() {
        let api = |code: u16, reason: &str| {
            kube::Error::Api(
                kube::core::Status::failure("x", reason)
                    .with_code(code)
                    .boxed(),
            )
        };
        // What kube-apiserver answers for a resource it does not serve: a
        // plain "404 page not found", which kube-rs turns into this Status.
        assert!(crd_missing(&api(404, "Failed to parse error data")));
        assert!(!crd_missing(&api(404, "NotFound")));
        assert!(!crd_missing(&api(403, "Forbidden")));
        let text = |e: kube::Error| routing_read_error(e).to_string();
        assert!(text(api(404, "")).contains("podroute crd | kubectl apply"));
        assert!(text(api(404, "NotFound")).contains("no ClusterRouting named default"));
        assert!(text(api(403, "Forbidden")).starts_with("reading ClusterRouting default"));
    }

    #[test]
    fn mtu_is_auto_or_bytes() {
        let parse = |v: serde_json::Value| serde_json::from_value::<Mtu>(v);
        assert_eq!(parse(serde_json::json!("auto")).unwrap(), Mtu::Auto);
        assert_eq!(parse(serde_json::json!(1400)).unwrap(), Mtu::Bytes(1400));
        assert_eq!(parse(serde_json::json!("1400")).unwrap(), Mtu::Bytes(1400));
        assert!(parse(serde_json::json!("big")).is_err());
        assert!(parse(serde_json::json!(-1)).is_err());
        assert_eq!(serde_json::to_value(Mtu::Auto).unwrap(), "auto");
        assert_eq!(serde_json::to_value(Mtu::Bytes(9000)).unwrap(), 9000);
    }

    #[test]
    fn node_timeout_is_seconds_or_a_duration() {
        let parse = |v: serde_json::Value| serde_json::from_value::<NodeTimeout>(v).map(|t| t.0);
        assert_eq!(
            parse(serde_json::json!(300)).unwrap(),
            Duration::from_secs(300)
        );
        assert_eq!(
            parse(serde_json::json!("90s")).unwrap(),
            Duration::from_secs(90)
        );
        assert_eq!(
            parse(serde_json::json!("1h30m")).unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse(serde_json::json!("1.5m")).unwrap(),
            Duration::from_secs(90)
        );
        assert_eq!(
            parse(serde_json::json!("250ms")).unwrap(),
            Duration::from_millis(250)
        );
        for bad in ["", "5", "m", "5x", "-5s", "1h-5m"] {
            assert!(parse(serde_json::json!(bad)).is_err(), "{bad:?}");
        }
        assert!(parse(serde_json::json!(-1)).is_err());
    }

    #[test]
    fn spec_gives_settings() {
        let spec: ClusterRoutingSpec = serde_json::from_value(serde_json::json!({
            "mode": "native",
            "native": {"offSubnet": "underlay"},
            "mtu": 1400,
            "vxlan": {"vni": 7, "port": 8472},
            "rollout": {"nodeTimeout": "5m", "notReadyPolicy": "Skip"},
        }))
        .unwrap();
        assert_eq!(
            spec.settings(),
            Settings {
                off_subnet: Some(OffSubnet::Underlay),
                mtu: Some(1400),
                vxlan_vni: Some(7),
                vxlan_port: Some(8472),
            }
        );
        let auto: ClusterRoutingSpec =
            serde_json::from_value(serde_json::json!({"mode": "vxlan", "mtu": "auto"})).unwrap();
        assert_eq!(auto.settings(), Settings::default());
    }

    #[test]
    fn status_holds_the_whole_machine_status() {
        use std::collections::BTreeSet;
        let machine = CoordinatorStatus {
            phase: StatusPhase::Switch,
            plan: Some(Plan {
                generation: 7,
                route_mode: Mode::Native,
                decap: BTreeSet::from([Mode::Vxlan, Mode::Native]),
            }),
            from: Some(Mode::Vxlan),
            to: Some(Mode::Native),
            phase_started_at: Some(1_700_000_000),
            in_flight: InFlight {
                routes: BTreeSet::from([Mode::Vxlan, Mode::Native]),
                receive: BTreeSet::from([Mode::Vxlan, Mode::Native]),
            },
            nodes: NodesStatus {
                total: 3,
                applied: 1,
                waiting: vec!["b".into(), "c".into()],
            },
            skipped: vec!["d".into()],
            blocked: vec!["c".into()],
        };
        let status = ClusterRoutingStatus::from_coordinator(&machine, Vec::new(), Some(4));
        assert_eq!(status.phase.as_deref(), Some("Blocked"));
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["switchPhase"], "Switch");
        assert_eq!(json["phaseStartedAt"], 1_700_000_000u64);
        assert_eq!(
            json["inFlight"]["routes"],
            serde_json::json!(["vxlan", "native"])
        );
        let back: ClusterRoutingStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back.to_coordinator(), machine);
        assert_eq!(back.observed_generation, Some(4));

        // Written by an older coordinator: no switchPhase, no inFlight.
        let old: ClusterRoutingStatus = serde_json::from_value(serde_json::json!({
            "phase": "Blocked", "from": "vxlan", "to": "native",
            "plan": {"generation": 2, "routeMode": "native", "decap": ["native", "vxlan"]},
        }))
        .unwrap();
        let resumed = old.to_coordinator();
        assert_eq!(resumed.phase, StatusPhase::Switch);
        assert_eq!(resumed.in_flight, InFlight::default());
        assert_eq!(
            ClusterRoutingStatus::default().to_coordinator(),
            CoordinatorStatus::default()
        );
    }

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
        let yaml = serde_yaml::to_string(&crd).unwrap();
        assert_eq!(yaml, serde_yaml::to_string(&ClusterRouting::crd()).unwrap());
    }
}
