//! Cluster files for the fuzzer: a small YAML tree that can say anything YAML
//! can (tags, anchors, aliases, odd scalars), a cluster model that is valid
//! and its mutations, and byte-level damage to the text.

use std::fmt::Write as _;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

// ================================================================ the tree

/// A YAML node, emitted as text by [`emit`] / [`emit_block`].
#[derive(Debug, Clone, PartialEq)]
pub enum Y {
    /// A plain scalar, written as is (it may well break the syntax: fine).
    Plain(String),
    /// A double-quoted scalar.
    Quoted(String),
    Seq(Vec<Y>),
    Map(Vec<(Y, Y)>),
    Tag(String, Box<Y>),
    Anchor(String, Box<Y>),
    Alias(String),
}

impl Y {
    pub fn plain(s: impl Into<String>) -> Y {
        Y::Plain(s.into())
    }

    pub fn key(k: &str) -> Y {
        Y::Plain(k.into())
    }
}

/// Double-quoted YAML; what YAML may not carry raw is escaped.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~'
            | '\u{a0}'..='\u{d7ff}'
            | '\u{e000}'..='\u{fefe}'
            | '\u{ff00}'..='\u{fffd}' => out.push(c),
            c if u32::from(c) >= 0x10000 => out.push(c),
            c => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
        }
    }
    out.push('"');
    out
}

/// Flow style: one line.
pub fn emit(y: &Y, out: &mut String) {
    match y {
        Y::Plain(s) => out.push_str(s),
        Y::Quoted(s) => out.push_str(&quote(s)),
        Y::Seq(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                emit(item, out);
            }
            out.push(']');
        }
        Y::Map(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                emit(k, out);
                out.push_str(": ");
                emit(v, out);
            }
            out.push('}');
        }
        Y::Tag(tag, inner) => {
            out.push_str(tag);
            out.push(' ');
            emit(inner, out);
        }
        Y::Anchor(name, inner) => {
            let _ = write!(out, "&{name} ");
            emit(inner, out);
        }
        Y::Alias(name) => {
            let _ = write!(out, "*{name}");
        }
    }
}

pub fn flow(y: &Y) -> String {
    let mut s = String::new();
    emit(y, &mut s);
    s
}

/// Block style for maps and sequences of maps, flow below that.
pub fn emit_block(y: &Y, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match y {
        Y::Map(entries) if !entries.is_empty() => {
            for (k, v) in entries {
                let _ = write!(out, "{pad}{}:", flow(k));
                block_value(v, indent, out);
            }
        }
        Y::Seq(items) if !items.is_empty() => {
            for item in items {
                match item {
                    Y::Map(entries) if !entries.is_empty() => {
                        // `- k: v` then the other keys under the first.
                        let mut inner = String::new();
                        emit_block(item, indent + 2, &mut inner);
                        let _ = write!(out, "{pad}- {}", inner.trim_start());
                    }
                    other => {
                        let _ = writeln!(out, "{pad}- {}", flow(other));
                    }
                }
            }
        }
        other => {
            let _ = writeln!(out, "{pad}{}", flow(other));
        }
    }
}

fn block_value(v: &Y, indent: usize, out: &mut String) {
    match v {
        Y::Map(e) if !e.is_empty() => {
            out.push('\n');
            emit_block(v, indent + 2, out);
        }
        Y::Seq(items)
            if items
                .iter()
                .any(|i| matches!(i, Y::Map(e) if !e.is_empty())) =>
        {
            out.push('\n');
            emit_block(v, indent + 2, out);
        }
        other => {
            let _ = writeln!(out, " {}", flow(other));
        }
    }
}

// ============================================================ value pools

/// Node IPs the contract allows (10/8, 172.16/12, 192.168/16, 100.64/10,
/// 198.18/15, public).
pub fn good_ip(i: usize) -> String {
    match i % 6 {
        0 => format!("10.250.{}.{}", i / 250 % 250, i % 250 + 1),
        1 => format!("172.16.{}.{}", i / 250 % 250, i % 250 + 1),
        2 => format!("192.168.{}.{}", i / 250 % 250, i % 250 + 1),
        3 => format!("100.64.{}.{}", i / 250 % 250, i % 250 + 1),
        4 => format!("198.18.{}.{}", i / 250 % 250, i % 250 + 1),
        _ => format!("8.{}.{}.{}", i / 250 % 250, i % 250 + 1, i % 7 + 1),
    }
}

/// A /24 pod CIDR the contract allows, distinct per `i` (< 64000) and clear
/// of every `good_ip` (10.0-249.x.0/24 never holds 10.250.x.y).
pub fn good_cidr(i: usize) -> String {
    format!("10.{}.{}.0/24", i / 256 % 250, i % 256)
}

/// Addresses in every special-purpose range, at their edges and inside.
pub const SPECIAL_IPS: &[&str] = &[
    "0.0.0.0",
    "0.0.0.1",
    "0.255.255.255",
    "127.0.0.1",
    "127.255.255.254",
    "169.254.0.1",
    "169.254.169.254",
    "192.0.0.8",
    "192.0.0.170",
    "192.0.2.1",
    "198.51.100.7",
    "203.0.113.9",
    "224.0.0.1",
    "239.1.2.3",
    "239.255.255.255",
    "240.0.0.1",
    "250.1.2.3",
    "255.255.255.254",
    "255.255.255.255",
];

/// Text that is not quite an IPv4 address.
pub const ODD_IPS: &[&str] = &[
    "",
    " ",
    "::1",
    "fd00::1",
    "::ffff:10.250.0.1",
    "::ffff:127.0.0.1",
    "fe80::1%eth0",
    "10.250.0.1%eth0",
    "010.250.0.1",
    "10.250.00.1",
    " 10.250.0.1",
    "10.250.0.1 ",
    "10.250.0.1\t",
    "10.250.0.1\n",
    "10.250.1",
    "10.250",
    "0x0a.0xfa.0.1",
    "167772161",
    "10.250.0.256",
    "10.250.0.1.",
    "10.250.0.-1",
    "+10.250.0.1",
    "１０.250.0.1",
    "10.250.0.1/32",
    "[10.250.0.1]",
    "10.250.0.1:80",
    "10.250.0.1\u{0}",
];

/// Pod CIDRs the contract refuses as special-purpose.
pub const SPECIAL_CIDRS: &[&str] = &[
    "127.0.0.0/8",
    "127.0.0.0/30",
    "0.0.0.0/8",
    "0.0.0.0/0",
    "224.0.0.0/4",
    "239.1.2.0/24",
    "169.254.0.0/16",
    "240.0.0.0/24",
    "255.255.255.0/24",
    "96.0.0.0/3",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "192.0.0.0/2",
    "128.0.0.0/1",
];

/// Text that is not quite a usable pod CIDR.
pub const ODD_CIDRS: &[&str] = &[
    "",
    "10.244.1.1/24",
    "10.244.1.0/31",
    "10.244.1.0/32",
    "10.244.1.0/33",
    "10.244.1.0/-1",
    "10.244.1.0/",
    "10.244.1.0",
    "10.244.0.0/255.255.0.0",
    "10.244.0.0/255.0.255.0",
    "10.244.0.0/0.0.255.255",
    "10.244.1.0/024",
    "10.244.1.0/+24",
    " 10.244.1.0/24",
    "10.244.1.0/24 ",
    "10.244.1/24",
    "fd00:1::/64",
    "fd00:1::1/64",
    "::ffff:10.244.0.0/120",
    "::ffff:127.0.0.0/104",
    "::/0",
    "fe80::/10",
    "10.244.1.0/24/24",
    "10.244.1.0\\24",
];

/// Scalars of every YAML type, including the ones YAML 1.1 reads as
/// booleans and the numbers no Rust integer holds.
pub const ODD_SCALARS: &[&str] = &[
    "~",
    "null",
    "Null",
    "NULL",
    "true",
    "false",
    "yes",
    "no",
    "on",
    "off",
    "y",
    "n",
    "0",
    "-0",
    "1",
    "-1",
    "50",
    "575",
    "576",
    "1500",
    "9000",
    "65535",
    "65536",
    "16777215",
    "16777216",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "340282366920938463463374607431768211456",
    "1_500",
    "0x5dc",
    "0o2734",
    "0b101",
    "1e3",
    "1.5",
    "1e400",
    "-1e400",
    ".inf",
    "-.inf",
    ".nan",
    "0.",
    "''",
    "\"\"",
    "'1500'",
    "\"vxlan\"",
    "vxlan",
    "ipip",
    "native",
    "VXLAN",
    "encap",
    "underlay",
    "2001-12-14t21:59:43.10-05:00",
    "=",
    "<<",
    "?",
    "-",
    "|\n  block\n",
    ">\n  folded\n",
    "!!binary dnhsYW4=",
    "!!binary ////",
    "!!str 1500",
    "!!int 1500",
    "!!int vxlan",
    "!!float 1500",
    "!!bool yes",
    "!!null ''",
    "!!seq []",
    "!!map {}",
    "!!set {a, b}",
    "!!omap [a: 1]",
    "!vxlan",
    "!ipip ~",
    "!custom x",
    "!<tag:yaml.org,2002:str> vxlan",
    "!!timestamp 2001-12-14",
    "*undefined",
    "&dangling",
    "\u{feff}",
    "\u{0}",
    "\t",
    "\u{200b}",
    "é",
    "😀",
    "\u{10ffff}",
];

// ============================================================== strategies

/// A scalar of any kind: from the pools, or random unicode, or very long.
pub fn arb_scalar() -> BoxedStrategy<Y> {
    prop_oneof![
        4 => select(ODD_SCALARS).prop_map(Y::plain),
        2 => select(SPECIAL_IPS).prop_map(Y::plain),
        2 => select(ODD_IPS).prop_map(|s| Y::Quoted(s.into())),
        2 => select(SPECIAL_CIDRS).prop_map(Y::plain),
        2 => select(ODD_CIDRS).prop_map(|s| Y::Quoted(s.into())),
        2 => any::<String>().prop_map(Y::Quoted),
        1 => "[a-z0-9.:/ _-]{0,20}".prop_map(Y::Plain),
        1 => any::<i64>().prop_map(|n| Y::Plain(n.to_string())),
        1 => any::<u64>().prop_map(|n| Y::Plain(n.to_string())),
        1 => any::<f64>().prop_map(|n| Y::Plain(format!("{n:e}"))),
        1 => (1usize..50_000, select(&["a", "é", "9", "[", " "][..]))
            .prop_map(|(n, s)| Y::Quoted(s.repeat(n))),
    ]
    .boxed()
}

const TAGS: &[&str] = &[
    "!!str", "!!int", "!!float", "!!null", "!!binary", "!!seq", "!!map", "!!set", "!x", "!vxlan",
];

/// Any YAML value: scalars, nested collections, tags, anchors, aliases.
pub fn arb_y() -> BoxedStrategy<Y> {
    arb_scalar()
        .prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                3 => vec(inner.clone(), 0..6).prop_map(Y::Seq),
                3 => vec((prop_oneof![arb_key(), inner.clone()], inner.clone()), 0..6)
                    .prop_map(Y::Map),
                1 => (select(TAGS), inner.clone()).prop_map(|(t, y)| Y::Tag(t.into(), Box::new(y))),
                1 => (select(&["a", "b", "c"][..]), inner.clone())
                    .prop_map(|(a, y)| Y::Anchor(a.into(), Box::new(y))),
                1 => select(&["a", "b", "c", "zz"][..]).prop_map(|a| Y::Alias(a.into())),
            ]
        })
        .boxed()
}

/// A mapping key: ours, near ours, or anything.
pub fn arb_key() -> BoxedStrategy<Y> {
    prop_oneof![
        3 => select(&[
            "mode", "offSubnet", "mtu", "generation", "decap", "vxlan", "nodes", "vni", "port",
            "name", "ip", "podCIDR", "podCIDRs", "Mode", "podCidr", "pod_cidr", "offsubnet",
            "<<", "? mode", "\"mode\"", "'nodes'", "!!str mode", "~", "", "mode ", "m\u{0}de",
        ][..])
        .prop_map(Y::plain),
        1 => any::<String>().prop_map(Y::Quoted),
    ]
    .boxed()
}

// ---------------------------------------------------------- a valid cluster

/// A cluster the contract accepts, as the values the file holds.
#[derive(Debug, Clone)]
pub struct ValidCluster {
    pub mode: &'static str,
    pub off_subnet: Option<&'static str>,
    pub mtu: Option<u32>,
    pub generation: Option<u64>,
    pub decap: Option<Vec<&'static str>>,
    pub vni: Option<u32>,
    pub port: Option<u16>,
    pub nodes: Vec<ValidNode>,
}

#[derive(Debug, Clone)]
pub struct ValidNode {
    pub name: String,
    pub ip: String,
    /// IPv4 first, then maybe an IPv6 one.
    pub cidrs: Vec<String>,
    /// `podCIDR: x` instead of `podCIDRs: [x]` (one CIDR only).
    pub single: bool,
}

const MODES: [&str; 3] = ["ipip", "vxlan", "native"];

pub fn arb_valid_cluster(max_nodes: usize) -> impl Strategy<Value = ValidCluster> {
    let nodes = vec(
        (
            // RFC 1123 subdomains, as Kubernetes names nodes.
            "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,4}[a-z0-9])?)?",
            0usize..6,
            any::<bool>(),
            any::<bool>(),
        ),
        0..=max_nodes,
    )
    .prop_map(|raw| {
        let mut names = std::collections::HashSet::new();
        raw.into_iter()
            .enumerate()
            .filter(|(_, (name, ..))| names.insert(name.clone()))
            .map(|(i, (name, pool, v6, single))| {
                let mut cidrs = vec![good_cidr(i)];
                if v6 {
                    cidrs.push(format!("fd00:{i:x}::/64"));
                }
                ValidNode {
                    name,
                    ip: good_ip(i * 6 + pool),
                    single: single && cidrs.len() == 1,
                    cidrs,
                }
            })
            .collect::<Vec<_>>()
    });
    (
        select(&MODES[..]),
        proptest::option::of(select(&["encap", "underlay"][..])),
        proptest::option::of(576u32..=65535),
        // Kubernetes integers are int64.
        proptest::option::of(1u64..=i64::MAX as u64),
        proptest::option::of(proptest::sample::subsequence(MODES.to_vec(), 0..=3)),
        proptest::option::of(1u32..=16_777_215),
        proptest::option::of(1u16..=65535),
        nodes,
    )
        .prop_map(
            |(mode, off_subnet, mtu, generation, decap, vni, port, nodes)| ValidCluster {
                mode,
                off_subnet,
                mtu,
                generation,
                decap,
                vni,
                port,
                nodes,
            },
        )
}

impl ValidCluster {
    /// The file as a tree: top-level keys in the usual order.
    pub fn tree(&self) -> Vec<(Y, Y)> {
        let mut top = vec![(Y::key("mode"), Y::plain(self.mode))];
        if let Some(v) = self.off_subnet {
            top.push((Y::key("offSubnet"), Y::plain(v)));
        }
        if let Some(v) = self.mtu {
            top.push((Y::key("mtu"), Y::plain(v.to_string())));
        }
        if let Some(v) = self.generation {
            top.push((Y::key("generation"), Y::plain(v.to_string())));
        }
        if let Some(d) = &self.decap {
            top.push((
                Y::key("decap"),
                Y::Seq(d.iter().map(|m| Y::plain(*m)).collect()),
            ));
        }
        if self.vni.is_some() || self.port.is_some() {
            let mut v = Vec::new();
            if let Some(vni) = self.vni {
                v.push((Y::key("vni"), Y::plain(vni.to_string())));
            }
            if let Some(port) = self.port {
                v.push((Y::key("port"), Y::plain(port.to_string())));
            }
            top.push((Y::key("vxlan"), Y::Map(v)));
        }
        let nodes = self
            .nodes
            .iter()
            .map(|n| {
                let cidrs = if n.single {
                    (Y::key("podCIDR"), Y::plain(&n.cidrs[0]))
                } else {
                    (
                        Y::key("podCIDRs"),
                        Y::Seq(n.cidrs.iter().map(Y::plain).collect()),
                    )
                };
                Y::Map(vec![
                    (Y::key("name"), Y::Quoted(n.name.clone())),
                    (Y::key("ip"), Y::plain(&n.ip)),
                    cidrs,
                ])
            })
            .collect();
        top.push((Y::key("nodes"), Y::Seq(nodes)));
        top
    }
}

/// The document as text: block style, or one flow mapping.
pub fn render(top: &[(Y, Y)], block: bool) -> String {
    let doc = Y::Map(top.to_vec());
    if block {
        let mut out = String::new();
        emit_block(&doc, 0, &mut out);
        out
    } else {
        flow(&doc) + "\n"
    }
}

// ---------------------------------------------------------------- mutations

/// One change to a valid cluster's tree.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Remove the top-level entry `i` (mod len).
    DropTop(usize),
    /// Repeat the top-level entry `i`, maybe with another value.
    DuplicateTop(usize, Option<Y>),
    /// Replace the value of the top-level entry `i`.
    RetypeTop(usize, Y),
    /// Add an entry.
    AddTop(Y, Y),
    /// Set a top-level setting (replacing it if present) to this value.
    SetTop(&'static str, Y),
    /// In node `n`, drop its field `f`.
    DropNodeField(usize, usize),
    /// In node `n`, replace the value of field `f`.
    RetypeNodeField(usize, usize, Y),
    /// In node `n`, add an entry (unknown key, or podCIDR next to podCIDRs).
    AddNodeField(usize, Y, Y),
    /// Node `n`'s IP becomes this text.
    NodeIp(usize, String),
    /// Node `n`'s first pod CIDR becomes this text.
    NodeCidr(usize, String),
    /// Node `n` takes node `m`'s IP through an anchor and an alias.
    AliasIp(usize, usize),
    /// Node `n` is node `m` again, through an alias.
    AliasNode(usize, usize),
    /// Tag the value of top-level entry `i`.
    TagTop(usize, &'static str),
}

pub fn arb_mutation() -> BoxedStrategy<Mutation> {
    use Mutation::*;
    let idx = 0usize..16;
    let ip = prop_oneof![select(SPECIAL_IPS), select(ODD_IPS)].prop_map(str::to_string);
    let cidr = prop_oneof![select(SPECIAL_CIDRS), select(ODD_CIDRS)].prop_map(str::to_string);
    let setting = (select(&["mtu", "generation"][..]), select(ODD_SCALARS))
        .prop_map(|(k, v)| SetTop(k, Y::plain(v)));
    let vxlan = (select(&["vni", "port"][..]), select(ODD_SCALARS))
        .prop_map(|(k, v)| SetTop("vxlan", Y::Map(vec![(Y::key(k), Y::plain(v))])));
    prop_oneof![
        1 => idx.clone().prop_map(DropTop),
        1 => (idx.clone(), proptest::option::of(arb_y())).prop_map(|(i, y)| DuplicateTop(i, y)),
        2 => (idx.clone(), arb_y()).prop_map(|(i, y)| RetypeTop(i, y)),
        1 => (arb_key(), arb_y()).prop_map(|(k, y)| AddTop(k, y)),
        1 => (idx.clone(), 0usize..4).prop_map(|(n, f)| DropNodeField(n, f)),
        2 => (idx.clone(), 0usize..4, arb_y()).prop_map(|(n, f, y)| RetypeNodeField(n, f, y)),
        1 => (idx.clone(), arb_key(), arb_y()).prop_map(|(n, k, y)| AddNodeField(n, k, y)),
        4 => (idx.clone(), ip).prop_map(|(n, s)| NodeIp(n, s)),
        4 => (idx.clone(), cidr).prop_map(|(n, s)| NodeCidr(n, s)),
        2 => setting,
        2 => vxlan,
        1 => (idx.clone(), idx.clone()).prop_map(|(n, m)| AliasIp(n, m)),
        1 => (idx.clone(), idx.clone()).prop_map(|(n, m)| AliasNode(n, m)),
        1 => (idx, select(TAGS)).prop_map(|(i, t)| TagTop(i, t)),
    ]
    .boxed()
}

fn nodes_of(top: &mut [(Y, Y)]) -> Option<&mut Vec<Y>> {
    top.iter_mut()
        .find(|(k, _)| *k == Y::key("nodes"))
        .and_then(|(_, v)| match v {
            Y::Seq(items) => Some(items),
            _ => None,
        })
}

fn node_fields(nodes: &mut [Y], n: usize) -> Option<&mut Vec<(Y, Y)>> {
    let len = nodes.len();
    if len == 0 {
        return None;
    }
    match &mut nodes[n % len] {
        Y::Map(fields) => Some(fields),
        _ => None,
    }
}

fn set_field(fields: &mut [(Y, Y)], key: &str, value: Y) {
    for (k, v) in fields.iter_mut() {
        if *k == Y::key(key) {
            *v = value;
            return;
        }
    }
}

pub fn mutate(top: &mut Vec<(Y, Y)>, m: &Mutation) {
    let len = top.len().max(1);
    match m.clone() {
        Mutation::DropTop(i) if !top.is_empty() => {
            top.remove(i % len);
        }
        Mutation::DuplicateTop(i, y) if !top.is_empty() => {
            let (k, v) = top[i % len].clone();
            top.push((k, y.unwrap_or(v)));
        }
        Mutation::RetypeTop(i, y) if !top.is_empty() => top[i % len].1 = y,
        Mutation::AddTop(k, y) => top.push((k, y)),
        Mutation::SetTop(k, y) => match top.iter_mut().find(|(key, _)| *key == Y::key(k)) {
            Some((_, v)) => *v = y,
            None => top.insert(0, (Y::key(k), y)),
        },
        Mutation::TagTop(i, tag) if !top.is_empty() => {
            let v = top[i % len].1.clone();
            top[i % len].1 = Y::Tag(tag.into(), Box::new(v));
        }
        Mutation::DropNodeField(n, f) => {
            if let Some(fields) = nodes_of(top).and_then(|ns| node_fields(ns, n)) {
                if !fields.is_empty() {
                    let l = fields.len();
                    fields.remove(f % l);
                }
            }
        }
        Mutation::RetypeNodeField(n, f, y) => {
            if let Some(fields) = nodes_of(top).and_then(|ns| node_fields(ns, n)) {
                if !fields.is_empty() {
                    let l = fields.len();
                    fields[f % l].1 = y;
                }
            }
        }
        Mutation::AddNodeField(n, k, y) => {
            if let Some(fields) = nodes_of(top).and_then(|ns| node_fields(ns, n)) {
                fields.push((k, y));
            }
        }
        Mutation::NodeIp(n, s) => {
            if let Some(fields) = nodes_of(top).and_then(|ns| node_fields(ns, n)) {
                set_field(fields, "ip", Y::Quoted(s));
            }
        }
        Mutation::NodeCidr(n, s) => {
            if let Some(fields) = nodes_of(top).and_then(|ns| node_fields(ns, n)) {
                set_field(fields, "podCIDR", Y::Quoted(s.clone()));
                for (k, v) in fields.iter_mut() {
                    if *k == Y::key("podCIDRs") {
                        if let Y::Seq(items) = v {
                            if let Some(first) = items.first_mut() {
                                *first = Y::Quoted(s.clone());
                            }
                        }
                    }
                }
            }
        }
        Mutation::AliasIp(n, m) => {
            if let Some(nodes) = nodes_of(top) {
                let l = nodes.len();
                if l > 1 && n % l != m % l {
                    let (n, m) = ((n % l).min(m % l), (n % l).max(m % l));
                    // The anchor must come first in the text: on the earlier node.
                    if let Some(fields) = node_fields(nodes, n) {
                        for (k, v) in fields.iter_mut() {
                            if *k == Y::key("ip") {
                                *v = Y::Anchor("ip".into(), Box::new(v.clone()));
                            }
                        }
                    }
                    if let Some(fields) = node_fields(nodes, m) {
                        set_field(fields, "ip", Y::Alias("ip".into()));
                    }
                }
            }
        }
        Mutation::AliasNode(n, m) => {
            if let Some(nodes) = nodes_of(top) {
                let l = nodes.len();
                if l > 1 && n % l != m % l {
                    let (n, m) = ((n % l).min(m % l), (n % l).max(m % l));
                    nodes[n] = Y::Anchor("node".into(), Box::new(nodes[n].clone()));
                    nodes[m] = Y::Alias("node".into());
                }
            }
        }
        _ => {}
    }
}

// ------------------------------------------------------------- text damage

/// One byte-level edit of the text, at a relative position.
#[derive(Debug, Clone)]
pub enum Damage {
    Insert(f64, String),
    Delete(f64, usize),
    Duplicate(f64, usize),
    Truncate(f64),
    SwapLines(usize, usize),
}

pub fn arb_damage() -> BoxedStrategy<Damage> {
    let at = 0.0f64..1.0;
    let tokens = select(
        &[
            "[",
            "]",
            "{",
            "}",
            ",",
            ":",
            ": ",
            "- ",
            "\n",
            "\n  ",
            "\t",
            "\r",
            "\r\n",
            "#",
            "&a ",
            "*a",
            "!!binary ",
            "!x ",
            "? ",
            "|",
            ">",
            "'",
            "\"",
            "\\",
            "%YAML 1.2\n",
            "---\n",
            "...\n",
            "\u{feff}",
            "\u{0}",
            "\u{85}",
            "\u{2028}",
            "@",
            "`",
            "<<: ",
        ][..],
    )
    .prop_map(str::to_string);
    prop_oneof![
        4 => (at.clone(), prop_oneof![tokens, any::<String>()]).prop_map(|(p, s)| Damage::Insert(p, s)),
        2 => (at.clone(), 1usize..40).prop_map(|(p, n)| Damage::Delete(p, n)),
        1 => (at.clone(), 1usize..200).prop_map(|(p, n)| Damage::Duplicate(p, n)),
        1 => at.prop_map(Damage::Truncate),
        1 => (0usize..64, 0usize..64).prop_map(|(a, b)| Damage::SwapLines(a, b)),
    ]
    .boxed()
}

fn boundary(text: &str, p: f64) -> usize {
    let mut i = ((text.len() as f64) * p) as usize;
    i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

pub fn damage(text: &mut String, d: &Damage) {
    match d {
        Damage::Insert(p, s) => {
            let i = boundary(text, *p);
            text.insert_str(i, s);
        }
        Damage::Delete(p, n) => {
            let i = boundary(text, *p);
            let mut j = (i + n).min(text.len());
            while !text.is_char_boundary(j) {
                j += 1;
            }
            text.replace_range(i..j, "");
        }
        Damage::Duplicate(p, n) => {
            let i = boundary(text, *p);
            let mut j = (i + n).min(text.len());
            while !text.is_char_boundary(j) {
                j += 1;
            }
            let copy = text[i..j].to_string();
            text.insert_str(j, &copy);
        }
        Damage::Truncate(p) => {
            let i = boundary(text, *p);
            text.truncate(i);
        }
        Damage::SwapLines(a, b) => {
            let mut lines: Vec<&str> = text.split('\n').collect();
            let l = lines.len();
            lines.swap(a % l, b % l);
            *text = lines.join("\n");
        }
    }
}

// ---------------------------------------------------------------- the rest

/// Billion laughs: `levels` anchors, each a list of `width` aliases of the
/// previous one, and the last one where the parser must expand it.
pub fn alias_bomb(levels: usize, width: usize, place: usize) -> String {
    let mut out = String::new();
    let mut prev = "x".to_string();
    let mut defs = Vec::new();
    for l in 0..levels {
        let items = if l == 0 {
            vec!["lol"; width].join(", ")
        } else {
            vec![format!("*{prev}"); width].join(", ")
        };
        let name = format!("l{l}");
        defs.push(format!("&{name} [{items}]"));
        prev = name;
    }
    // Nest every definition inside the first node so that the anchors are
    // defined before use, wherever the last alias goes.
    let hidden = defs.join(", ");
    let bomb = format!("*{prev}");
    match place % 5 {
        // Under nodes: the parser expands it to find the first node.
        0 => {
            let _ = write!(out, "mode: vxlan\nx: [{hidden}]\nnodes: {bomb}\n");
        }
        // As decap.
        1 => {
            let _ = write!(
                out,
                "mode: vxlan\nnodes: [{{name: a, ip: 10.250.0.1, podCIDR: 10.244.0.0/24, podCIDRs: [{hidden}]}}]\ndecap: {bomb}\n"
            );
        }
        // As a node's podCIDRs.
        2 => {
            let _ = write!(
                out,
                "mode: vxlan\ndecap: []\nnodes: [{{name: [{hidden}], ip: 10.250.0.1, podCIDRs: {bomb}}}]\n"
            );
        }
        // As a whole document.
        3 => {
            let _ = writeln!(out, "[{hidden}, {bomb}]");
        }
        // As a mapping key.
        _ => {
            let _ = write!(out, "mode: vxlan\nnodes: []\n? [{hidden}, {bomb}]\n: x\n");
        }
    }
    out
}

/// `depth` nested collections, closed or not, in one of several shapes.
pub fn nesting(depth: usize, shape: usize, closed: bool) -> String {
    let (open, close) = match shape % 4 {
        0 => ("[", "]"),
        1 => ("{a: ", "}"),
        2 => ("- ", ""),
        _ => ("[{a: ", "}]"),
    };
    let mut out = String::from("mode: vxlan\nnodes: ");
    if shape % 4 == 2 {
        // Block sequences: one level per line, two spaces deeper each.
        out.push('\n');
        for d in 0..depth {
            out.push_str(&" ".repeat(d * 2));
            out.push_str("-\n");
        }
        return out;
    }
    out.push_str(&open.repeat(depth));
    out.push('1');
    if closed {
        out.push_str(&close.repeat(depth));
    }
    out.push('\n');
    out
}
