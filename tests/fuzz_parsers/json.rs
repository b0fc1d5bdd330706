//! Node and ClusterRouting objects for the fuzzer: realistic ones with what
//! the store must make of them, and hostile ones (fields retyped, dropped,
//! huge, odd addresses) with nothing expected but a sane answer.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Map, Value};

use crate::yaml::{good_cidr, good_ip, ODD_CIDRS, ODD_IPS, SPECIAL_CIDRS, SPECIAL_IPS};

// ================================================================= any JSON

fn arb_json_scalar() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        select(
            &[
                0u64,
                1,
                50,
                576,
                65535,
                65536,
                16_777_216,
                u32::MAX as u64,
                u64::MAX
            ][..]
        )
        .prop_map(Value::from),
        select(&[-1i64, i64::MIN, -576][..]).prop_map(Value::from),
        select(&[0.5f64, -0.0, 1e308, -1e308, 1400.0, 5e-324][..]).prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        select(SPECIAL_IPS).prop_map(Value::from),
        select(ODD_IPS).prop_map(Value::from),
        select(SPECIAL_CIDRS).prop_map(Value::from),
        select(ODD_CIDRS).prop_map(Value::from),
        select(
            &[
                "True",
                "False",
                "Unknown",
                "true",
                "",
                "RouteCreated",
                "InternalIP",
                "auto",
                "Auto",
                "50",
                "1400",
                "vxlan",
                "ipip",
                "native",
                "5m",
                "-5s",
                "1e3s",
                "3/vxlan",
                "18446744073709551616/vxlan",
                "-1/vxlan",
                "3/VXLAN",
                "3/",
                "/vxlan"
            ][..]
        )
        .prop_map(Value::from),
        (1usize..20_000).prop_map(|n| Value::from("x".repeat(n))),
    ]
    .boxed()
}

/// Any JSON value, a few levels deep.
pub fn arb_json() -> BoxedStrategy<Value> {
    arb_json_scalar()
        .prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..5).prop_map(Value::Array),
                vec(("[a-zA-Z]{0,8}", inner), 0..5)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
        .boxed()
}

/// `depth` nested arrays (or objects) around `1`.
pub fn deep_json(depth: usize, objects: bool) -> String {
    if objects {
        format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth))
    } else {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }
}

// ================================================================ JSON edits

/// Where in an object a hostile edit lands: a path of keys and indices.
pub type Path = Vec<String>;

/// One hostile edit of an object.
#[derive(Debug, Clone)]
pub enum Edit {
    Retype(Path, Value),
    Remove(Path),
    /// Many copies of the last element of the array at the path.
    Repeat(Path, usize),
    /// Replace the value by deep nesting (as text, past serde_json's limit).
    Deep(Path, usize),
}

fn get_mut<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = v;
    for p in path {
        cur = match cur {
            Value::Object(m) => m.get_mut(p)?,
            Value::Array(a) => {
                let len = a.len();
                if len == 0 {
                    return None;
                }
                a.get_mut(p.parse::<usize>().ok()? % len)?
            }
            _ => return None,
        };
    }
    Some(cur)
}

/// Applies `edits`; `Deep` leaves a marker string that [`to_text`] expands.
pub fn apply_edits(v: &mut Value, edits: &[Edit]) {
    for e in edits {
        match e {
            Edit::Retype(path, value) => {
                if let Some(slot) = get_mut(v, path) {
                    *slot = value.clone();
                }
            }
            Edit::Remove(path) => {
                let Some((last, parent)) = path.split_last() else {
                    continue;
                };
                match get_mut(v, parent) {
                    Some(Value::Object(m)) => {
                        m.remove(last);
                    }
                    Some(Value::Array(a)) if !a.is_empty() => {
                        let i = last.parse::<usize>().unwrap_or(0) % a.len();
                        a.remove(i);
                    }
                    _ => {}
                }
            }
            Edit::Repeat(path, n) => {
                if let Some(Value::Array(a)) = get_mut(v, path) {
                    if let Some(last) = a.last().cloned() {
                        // At most ~4 MB of copies.
                        let n = (*n).min(4_000_000 / (last.to_string().len() + 1));
                        a.extend(std::iter::repeat_n(last, n));
                    }
                }
            }
            Edit::Deep(path, depth) => {
                if let Some(slot) = get_mut(v, path) {
                    *slot = Value::from(format!("\u{1}DEEP{depth}\u{1}"));
                }
            }
        }
    }
}

/// The object as text, with the `Deep` markers expanded.
pub fn to_text(v: &Value) -> String {
    let mut text = v.to_string();
    while let Some(start) = text.find("\"\\u0001DEEP") {
        let rest = &text[start + 11..];
        let Some(end) = rest.find("\\u0001\"") else {
            break;
        };
        let depth: usize = rest[..end].parse().unwrap_or(1);
        text.replace_range(
            start..start + 11 + end + 7,
            &deep_json(depth, depth.is_multiple_of(2)),
        );
    }
    text
}

fn arb_edit(paths: &'static [&'static str]) -> BoxedStrategy<Edit> {
    let path = select(paths).prop_map(|p| {
        p.split('.')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect::<Vec<_>>()
    });
    prop_oneof![
        6 => (path.clone(), arb_json()).prop_map(|(p, v)| Edit::Retype(p, v)),
        3 => path.clone().prop_map(Edit::Remove),
        1 => (path.clone(), select(&[10usize, 1000, 20_000][..])).prop_map(|(p, n)| Edit::Repeat(p, n)),
        1 => (path, select(&[64usize, 127, 128, 129, 1000][..])).prop_map(|(p, d)| Edit::Deep(p, d)),
    ]
    .boxed()
}

// ===================================================================== Nodes

/// What the store must make of a realistic Node.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeExpect {
    /// Routed: this IP and IPv4 pod CIDR, this Ready, this annotation.
    Routed {
        name: String,
        ip: String,
        cidr: String,
        ready: bool,
        applied: Option<String>,
    },
    /// Left out (a special-purpose address or range).
    LeftOut { name: String },
    /// Anything sane.
    Unknown,
}

#[derive(Debug, Clone)]
pub struct NodeCase {
    pub nodes: Vec<(Value, NodeExpect)>,
    /// Damage to one item's text (a byte cut, a duplicate key, ...).
    pub raw: Option<(usize, TextEdit)>,
}

impl NodeCase {
    /// The item texts as the fake server sends them.
    pub fn items(&self) -> Vec<String> {
        let mut items: Vec<String> = self.nodes.iter().map(|(v, _)| to_text(v)).collect();
        if let Some((i, edit)) = &self.raw {
            if !items.is_empty() {
                let n = items.len();
                edit.apply(&mut items[i % n]);
            }
        }
        items
    }
}

/// Text-level damage to one JSON object.
#[derive(Debug, Clone)]
pub enum TextEdit {
    /// `"key": value,` inserted right after the opening brace: a duplicate
    /// of a key the object already has, at the top.
    DuplicateKey(&'static str, Value),
    /// A lone surrogate, an invalid escape, a NUL, ...
    Inject(f64, &'static str),
    Truncate(f64),
}

impl TextEdit {
    fn apply(&self, text: &mut String) {
        let at = |p: f64, t: &str| {
            let mut i = ((t.len() as f64) * p) as usize;
            i = i.min(t.len());
            while !t.is_char_boundary(i) {
                i -= 1;
            }
            i
        };
        match self {
            TextEdit::DuplicateKey(k, v) => {
                let pair = format!("{}:{},", json!(k), v);
                if text.starts_with('{') {
                    text.insert_str(1, &pair);
                }
            }
            TextEdit::Inject(p, s) => {
                let i = at(*p, text);
                text.insert_str(i, s);
            }
            TextEdit::Truncate(p) => {
                let i = at(*p, text);
                text.truncate(i);
            }
        }
    }
}

fn arb_text_edit() -> BoxedStrategy<TextEdit> {
    prop_oneof![
        (
            select(&["metadata", "spec", "status", "kind"][..]),
            arb_json()
        )
            .prop_map(|(k, v)| TextEdit::DuplicateKey(k, v)),
        (
            0.0f64..1.0,
            select(
                &[
                    "\\ud800",
                    "\"\\ud800\"",
                    "\\x00",
                    "\u{0}",
                    ",",
                    "}",
                    "]",
                    "\"",
                    "\\",
                    "\u{feff}",
                    "NaN",
                    "Infinity",
                    "1e999"
                ][..]
            )
        )
            .prop_map(|(p, s)| TextEdit::Inject(p, s)),
        (0.0f64..1.0).prop_map(TextEdit::Truncate),
    ]
    .boxed()
}

const NODE_PATHS: &[&str] = &[
    "",
    "metadata",
    "metadata.name",
    "metadata.resourceVersion",
    "metadata.annotations",
    "metadata.annotations.podroute.io/applied",
    "metadata.labels",
    "metadata.managedFields",
    "spec",
    "spec.podCIDR",
    "spec.podCIDRs",
    "spec.podCIDRs.0",
    "spec.podCIDRs.1",
    "status",
    "status.addresses",
    "status.addresses.0",
    "status.addresses.1",
    "status.addresses.0.type",
    "status.addresses.0.address",
    "status.addresses.1.address",
    "status.conditions",
    "status.conditions.0",
    "status.conditions.1",
    "status.conditions.0.type",
    "status.conditions.0.status",
    "status.conditions.1.status",
    "status.conditions.1.reason",
    "status.conditions.1.message",
    "status.images",
];

/// A realistic Node, `i`-th of its list (so its values are unique).
#[derive(Debug, Clone)]
struct NodeShape {
    cidr_form: usize,
    extra_addresses: Vec<usize>,
    ready: Option<&'static str>,
    network: usize,
    applied: Option<String>,
    noise: bool,
}

fn arb_node_shape() -> impl Strategy<Value = NodeShape> {
    (
        0usize..6,
        vec(0usize..5, 0..4),
        proptest::option::of(select(&["True", "False", "Unknown", "true", ""][..])),
        0usize..5,
        proptest::option::of(prop_oneof![
            (0u64..=u64::MAX, select(&["ipip", "vxlan", "native"][..]))
                .prop_map(|(g, m)| format!("{g}/{m}")),
            select(
                &[
                    "",
                    "3",
                    "3/",
                    "/vxlan",
                    "3/VXLAN",
                    "-1/vxlan",
                    "18446744073709551616/ipip",
                    "+3/vxlan",
                    " 3/vxlan",
                    "3/vxlan ",
                    "3//vxlan",
                    "3/vxlan/x",
                    "0x3/ipip"
                ][..]
            )
            .prop_map(str::to_string),
        ]),
        any::<bool>(),
    )
        .prop_map(
            |(cidr_form, extra_addresses, ready, network, applied, noise)| NodeShape {
                cidr_form,
                extra_addresses,
                ready,
                network,
                applied,
                noise,
            },
        )
}

fn realistic_node(i: usize, shape: &NodeShape) -> (Value, NodeExpect) {
    let name = format!("node-{i}");
    let ip = good_ip(i * 6);
    let cidr = good_cidr(i);
    let v6 = format!("fd00:{i:x}::/64");
    let spec = match shape.cidr_form {
        0 => json!({"podCIDR": cidr}),
        1 => json!({"podCIDRs": [cidr]}),
        2 => json!({"podCIDR": cidr, "podCIDRs": [cidr, v6]}),
        3 => json!({"podCIDR": v6, "podCIDRs": [v6, cidr]}),
        4 => json!({"podCIDR": cidr, "podCIDRs": []}),
        _ => json!({"podCIDRs": [cidr], "taints": [{"key": "k", "effect": "NoSchedule"}]}),
    };
    // The routed IP is the first IPv4 InternalIP: others go after it, or are
    // of another type or family.
    let mut addresses = Vec::new();
    let mut after = Vec::new();
    for (k, extra) in shape.extra_addresses.iter().enumerate() {
        match extra {
            0 => addresses
                .push(json!({"type": "InternalIP", "address": format!("fd00:250::{i:x}:{k}")})),
            1 => addresses.push(json!({"type": "Hostname", "address": name})),
            2 => addresses.push(json!({"type": "ExternalIP", "address": SPECIAL_IPS[k]})),
            3 => after.push(json!({"type": "InternalIP", "address": good_ip(i * 6 + 1 + k)})),
            _ => addresses.push(json!({"type": "InternalDNS", "address": ODD_IPS[k]})),
        }
    }
    addresses.push(json!({"type": "InternalIP", "address": ip}));
    addresses.extend(after);
    let mut conditions = Vec::new();
    if let Some(status) = shape.ready {
        conditions.push(json!({"type": "Ready", "status": status, "reason": "KubeletReady"}));
    }
    let network = |status: &str, reason: &str| {
        let mut c = json!({"type": "NetworkUnavailable", "message": "m"});
        c["status"] = json!(status);
        c["reason"] = json!(reason);
        c
    };
    match shape.network {
        0 => {}
        1 => conditions.push(network("False", "RouteCreated")),
        2 => conditions.push(network("True", "NoRouteCreated")),
        3 => conditions.push(network("False", "CalicoIsUp")),
        _ => conditions.push(json!({"type": "NetworkUnavailable"})),
    }
    let mut annotations = Map::new();
    annotations.insert("node.alpha.kubernetes.io/ttl".into(), json!("0"));
    if let Some(a) = &shape.applied {
        annotations.insert("podroute.io/applied".into(), json!(a));
    }
    let mut node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "resourceVersion": format!("{}", 1000 + i),
            "annotations": annotations,
        },
        "spec": spec,
        "status": {"addresses": addresses, "conditions": conditions},
    });
    if shape.noise {
        node["metadata"]["labels"] = json!({"kubernetes.io/hostname": name});
        node["metadata"]["managedFields"] =
            json!([{"manager": "kubelet", "fieldsV1": {"f:status": {"f:conditions": {}}}}]);
        node["status"]["images"] =
            json!([{"names": ["registry.example/big:1"], "sizeBytes": 123456789}]);
    }
    let expect = NodeExpect::Routed {
        name,
        ip,
        cidr,
        ready: shape.ready == Some("True"),
        applied: shape.applied.clone(),
    };
    (node, expect)
}

/// A list of Nodes: each realistic, or with a special-purpose address or
/// range (must be left out), or hostile (edits, anything goes).
pub fn arb_node_case() -> impl Strategy<Value = NodeCase> {
    let node = (
        arb_node_shape(),
        0usize..10,
        prop_oneof![select(SPECIAL_IPS), select(SPECIAL_CIDRS)],
        prop_oneof![select(ODD_IPS), select(ODD_CIDRS)],
        vec(arb_edit(NODE_PATHS), 1..4),
    );
    (
        vec(node, 0..6),
        proptest::option::weighted(0.1, (0usize..8, arb_text_edit())),
    )
        .prop_map(|(nodes, raw)| {
            let nodes = nodes
                .into_iter()
                .enumerate()
                .map(|(i, (shape, kind, special, odd, edits))| {
                    let (mut v, expect) = realistic_node(i, &shape);
                    let name = format!("node-{i}");
                    match kind {
                        // A special-purpose node IP or pod CIDR: left out.
                        0 | 1 => {
                            if special.contains('/') {
                                v["spec"] = json!({"podCIDRs": [special]});
                            } else {
                                v["status"]["addresses"] =
                                    json!([{"type": "InternalIP", "address": special}]);
                            }
                            (v, NodeExpect::LeftOut { name })
                        }
                        // An odd IP or CIDR text: anything sane.
                        2 => {
                            if odd.contains('/') || odd.contains("::/") {
                                v["spec"] = json!({"podCIDRs": [odd]});
                            } else {
                                v["status"]["addresses"] =
                                    json!([{"type": "InternalIP", "address": odd}]);
                            }
                            (v, NodeExpect::Unknown)
                        }
                        3 | 4 => {
                            apply_edits(&mut v, &edits);
                            (v, NodeExpect::Unknown)
                        }
                        _ => (v, expect),
                    }
                })
                .collect();
            NodeCase { nodes, raw }
        })
}

// ============================================================ ClusterRouting

/// What a realistic ClusterRouting object says, independent of the parser.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingExpect {
    pub off_subnet: Option<&'static str>,
    pub mtu: Option<u32>,
    pub vni: Option<u32>,
    pub port: Option<u16>,
    /// generation, route mode, decap (with the route mode as given).
    pub plan: Option<(u64, &'static str, Vec<&'static str>)>,
}

#[derive(Debug, Clone)]
pub struct RoutingCase {
    pub object: Value,
    /// `None` when edited: anything sane.
    pub expect: Option<RoutingExpect>,
    pub raw: Option<TextEdit>,
}

impl RoutingCase {
    pub fn item(&self) -> String {
        let mut text = to_text(&self.object);
        if let Some(edit) = &self.raw {
            edit.apply(&mut text);
        }
        text
    }
}

const ROUTING_PATHS: &[&str] = &[
    "",
    "metadata",
    "metadata.name",
    "metadata.resourceVersion",
    "spec",
    "spec.mode",
    "spec.native",
    "spec.native.offSubnet",
    "spec.mtu",
    "spec.vxlan",
    "spec.vxlan.vni",
    "spec.vxlan.port",
    "spec.rollout",
    "spec.rollout.nodeTimeout",
    "spec.rollout.notReadyPolicy",
    "status",
    "status.phase",
    "status.plan",
    "status.plan.generation",
    "status.plan.routeMode",
    "status.plan.decap",
    "status.plan.decap.0",
    "status.nodes",
    "status.conditions",
    "status.inFlight",
    "status.switchPhase",
    "status.phaseStartedAt",
    "status.from",
    "status.skipped",
];

const MODES: [&str; 3] = ["ipip", "vxlan", "native"];

pub fn arb_routing_case() -> impl Strategy<Value = RoutingCase> {
    let spec = (
        select(&MODES[..]),
        proptest::option::of(select(&["encap", "underlay"][..])),
        proptest::option::of(prop_oneof![Just(None), (576u32..=65535).prop_map(Some)]),
        any::<bool>(),
        proptest::option::of(1u32..=16_777_215),
        proptest::option::of(1u16..=65535),
        proptest::option::of(prop_oneof![
            (0u64..100_000).prop_map(Value::from),
            select(&[0, 1, i64::MAX as u64, u64::MAX][..]).prop_map(Value::from),
            select(
                &[
                    "90s",
                    "5m",
                    "1h30m",
                    "1.5h",
                    "250ms",
                    "0",
                    "0s",
                    "1µs",
                    "2h45m30.5s",
                    "18446744073709549568s",
                    "9223372036854775807s",
                    "2562047788015215h"
                ][..]
            )
            .prop_map(Value::from),
        ]),
    );
    // Where a switch stands, and since when (Unix seconds, extremes too).
    let progress = (
        select(&["Steady", "Prepare", "Switch", "Finalize", "Blocked"][..]),
        proptest::option::of(select(&MODES[..])),
        select(
            &[
                0u64,
                1_750_000_000,
                i64::MAX as u64,
                u64::MAX - 299,
                u64::MAX,
            ][..],
        ),
    );
    let plan = proptest::option::of((
        // Kubernetes integers are int64: larger generations are refused
        // (regression_a_status_generation_past_int64_is_refused).
        1u64..=i64::MAX as u64,
        select(&MODES[..]),
        proptest::sample::subsequence(MODES.to_vec(), 0..=3),
    ));
    (
        spec,
        plan,
        progress,
        proptest::option::weighted(0.5, vec(arb_edit(ROUTING_PATHS), 1..4)),
        proptest::option::weighted(0.05, arb_text_edit()),
    )
        .prop_map(
            |(
                (mode, off_subnet, mtu, mtu_as_text, vni, port, timeout),
                plan,
                (phase, from, started),
                edits,
                raw,
            )| {
                let mut spec = json!({"mode": mode});
                if let Some(o) = off_subnet {
                    spec["native"] = json!({"offSubnet": o});
                }
                match mtu {
                    Some(None) => spec["mtu"] = json!("auto"),
                    Some(Some(n)) if mtu_as_text => spec["mtu"] = json!(n.to_string()),
                    Some(Some(n)) => spec["mtu"] = json!(n),
                    None => {}
                }
                let mut vxlan = Map::new();
                if let Some(v) = vni {
                    vxlan.insert("vni".into(), json!(v));
                }
                if let Some(p) = port {
                    vxlan.insert("port".into(), json!(p));
                }
                if !vxlan.is_empty() {
                    spec["vxlan"] = Value::Object(vxlan);
                }
                if let Some(t) = timeout {
                    spec["rollout"] = json!({"nodeTimeout": t, "notReadyPolicy": "Skip"});
                }
                let mut object = json!({
                    "apiVersion": "podroute.io/v1alpha1",
                    "kind": "ClusterRouting",
                    "metadata": {"name": "default", "resourceVersion": "7", "generation": 3},
                    "spec": spec,
                });
                if let Some((generation, route, decap)) = &plan {
                    object["status"] = json!({
                        "phase": phase,
                        "switchPhase": if phase == "Blocked" { "Switch" } else { phase },
                        "plan": {"generation": generation, "routeMode": route, "decap": decap},
                        "nodes": {"total": 3, "applied": 1, "waiting": ["a", "b"]},
                        "observedGeneration": 3,
                        "phaseStartedAt": started,
                    });
                    if let Some(from) = from {
                        object["status"]["from"] = json!(from);
                        object["status"]["to"] = json!(mode);
                    }
                }
                let expect = RoutingExpect {
                    off_subnet,
                    mtu: mtu.flatten(),
                    vni,
                    port,
                    plan,
                };
                let expect = match &edits {
                    Some(edits) => {
                        apply_edits(&mut object, edits);
                        None
                    }
                    None if raw.is_some() => None,
                    None => Some(expect),
                };
                RoutingCase {
                    object,
                    expect,
                    raw,
                }
            },
        )
}
