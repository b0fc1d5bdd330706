//! The store's memory: one small record per Node, the ClusterRouting view,
//! and the snapshot built from them. Pure: no I/O, no clock.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::view::{node_field, KubeNode, LeftOut, RoutingFields, RoutingView};
use crate::api::{Plan, PodrouteNodeSpec};
use crate::model::cross_node_conflicts;
use crate::model::Settings;
use crate::store::{ReportedNode, Snapshot};

/// A write that brings one PodrouteNode record in step with its Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordWrite {
    Keep(Keep),
    /// A record with no Node in the list: deleted once a read of the Node
    /// confirms it is gone (or is another Node of the same name), since the
    /// record may be newer than the Node list.
    DeleteIfNodeGone {
        name: String,
        owner: Option<String>,
        rv: Option<String>,
    },
}

/// The record `name` must hold `facts` and belong to the Node `uid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keep {
    pub name: String,
    pub uid: String,
    pub facts: PodrouteNodeSpec,
    pub write: KeepWrite,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepWrite {
    Create,
    /// Replace the record known at `rv` (the write's precondition).
    Replace {
        rv: Option<String>,
    },
}

/// Where a node version comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The watch: ordered, authoritative.
    Watch,
    /// The response to our own patch: it may arrive after a newer watch
    /// event, so it only ever moves a known node forward.
    Response,
}

#[derive(Debug)]
struct Record {
    /// resourceVersion as a number (etcd revision); `None` when it is not one.
    rv: Option<u64>,
    /// The Node's uid (of a record: the uid in its ownerReference).
    uid: Option<String>,
    fields: RoutingFields,
}

/// One watched kind: what its watch delivered, by name.
#[derive(Debug, Default)]
struct Table {
    entries: BTreeMap<String, Record>,
    synced: bool,
}

impl Table {
    /// Apply one version; true when what the table holds changed.
    fn apply(&mut self, view: KubeNode, source: Source, log: bool) -> bool {
        let rv = view.resource_version().and_then(|v| v.parse::<u64>().ok());
        let uid = view.uid().map(str::to_string);
        let name = view.name().to_string();
        let Some(record) = self.entries.get_mut(&name) else {
            if source == Source::Response {
                return false; // deleted meanwhile, or not listed yet: the watch decides
            }
            if log {
                note_excluded(&name, &view.fields, None);
            }
            let fields = view.fields;
            self.entries.insert(name, Record { rv, uid, fields });
            return true;
        };
        match (source, record.rv, rv) {
            (_, Some(have), Some(new)) if new < have => return false,
            (Source::Response, _, None) | (Source::Response, None, _) => return false,
            _ => {}
        }
        record.rv = rv;
        if record.fields == view.fields && record.uid == uid {
            return false;
        }
        if log {
            note_excluded(&name, &view.fields, Some(&record.fields));
        }
        record.fields = view.fields;
        record.uid = uid;
        true
    }

    fn delete(&mut self, name: &str) -> bool {
        self.entries.remove(name).is_some()
    }

    /// A complete list (after a (re)connect). An entry we know at a newer
    /// version (from a write's response) keeps that version.
    fn replace(&mut self, views: Vec<KubeNode>, log: bool) -> bool {
        let mut old = std::mem::take(&mut self.entries);
        let mut changed = !self.synced;
        self.synced = true;
        for view in views {
            let name = view.name().to_string();
            let rv = view.resource_version().and_then(|v| v.parse::<u64>().ok());
            let uid = view.uid().map(str::to_string);
            let record = match old.remove(&name) {
                Some(known) if matches!((known.rv, rv), (Some(k), Some(n)) if k > n) => known,
                known => {
                    let before = known.as_ref().map(|k| &k.fields);
                    changed |= before != Some(&view.fields)
                        || known.as_ref().map(|k| &k.uid) != Some(&uid);
                    if log {
                        note_excluded(&name, &view.fields, before);
                    }
                    let fields = view.fields;
                    Record { rv, uid, fields }
                }
            };
            self.entries.insert(name, record);
        }
        changed || !old.is_empty()
    }
}

/// The two watched kinds read as nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched {
    Nodes,
    Records,
}

/// Where snapshots take the cluster's nodes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Peers {
    /// Every Node (the coordinator, `--peers-from nodes`).
    #[default]
    Nodes,
    /// The PodrouteNode records, and of Nodes only this agent's own.
    Records { own: String },
}

#[derive(Debug, Default)]
pub struct State {
    peers: Peers,
    /// Every Node, or with [`Peers::Records`] the agent's own.
    nodes: Table,
    /// PodrouteNode records: the peers, or for the coordinator the records
    /// it keeps in step with the Nodes.
    records: Table,
    plan: Option<Plan>,
    settings: Settings,
    routing_synced: bool,
    /// Nodes left out by the cross-node checks, with why (logged once).
    conflicts: HashMap<String, LeftOut>,
    /// Names whose Node or record changed since [`State::record_writes`]
    /// last looked: under churn the keeper compares one node, not 5000.
    unchecked: Unchecked,
}

#[derive(Debug, Default)]
enum Unchecked {
    #[default]
    All,
    Names(BTreeSet<String>),
}

impl Unchecked {
    fn note(&mut self, name: &str, changed: bool) -> bool {
        if let (true, Unchecked::Names(names)) = (changed, &mut *self) {
            names.insert(name.to_string());
        }
        changed
    }
}

impl State {
    pub fn new(peers: Peers) -> State {
        State {
            peers,
            ..State::default()
        }
    }

    fn records_feed_snapshots(&self) -> bool {
        matches!(self.peers, Peers::Records { .. })
    }

    /// The table of `watched`, and whether its entries feed snapshots (so
    /// nodes left out of them are logged).
    fn table(&mut self, watched: Watched) -> (&mut Table, bool) {
        let records_feed = self.records_feed_snapshots();
        match watched {
            Watched::Nodes => (&mut self.nodes, !records_feed),
            Watched::Records => (&mut self.records, records_feed),
        }
    }

    /// Apply one version of a Node or a record (read as its Node); true
    /// when what the store knows changed.
    pub fn apply(&mut self, watched: Watched, view: KubeNode, source: Source) -> bool {
        let name = view.name().to_string();
        let (table, log) = self.table(watched);
        let changed = table.apply(view, source, log);
        self.unchecked.note(&name, changed)
    }

    pub fn delete(&mut self, watched: Watched, name: &str) -> bool {
        let changed = self.table(watched).0.delete(name);
        self.unchecked.note(name, changed)
    }

    /// A complete list of `watched` (after a (re)connect).
    pub fn replace(&mut self, watched: Watched, views: Vec<KubeNode>) -> bool {
        self.unchecked = Unchecked::All;
        let (table, log) = self.table(watched);
        table.replace(views, log)
    }

    /// Look at every record again at the next [`State::record_writes`]
    /// (after a write failed).
    pub fn recheck_records(&mut self) {
        self.unchecked = Unchecked::All;
    }

    /// The record writes that bring the records in step with the Nodes
    /// (nothing until both are listed), for the names changed since the
    /// last call: with [`Peers::Records`] the agent's own record only, else
    /// every Node's, and records of Nodes not seen.
    pub fn record_writes(&mut self) -> Vec<RecordWrite> {
        if !(self.nodes.synced && self.records.synced) {
            return Vec::new();
        }
        let names: Vec<String> =
            match std::mem::replace(&mut self.unchecked, Unchecked::Names(BTreeSet::new())) {
                Unchecked::Names(names) => names.into_iter().collect(),
                Unchecked::All => {
                    let mut all: BTreeSet<&String> = self.nodes.entries.keys().collect();
                    all.extend(self.records.entries.keys());
                    all.into_iter().cloned().collect()
                }
            };
        let only = match &self.peers {
            Peers::Records { own } => Some(own.as_str()),
            Peers::Nodes => None,
        };
        (names.iter())
            .filter(|name| only.is_none_or(|own| own == name.as_str()))
            .filter_map(|name| self.record_write(name, only.is_none()))
            .collect()
    }

    fn record_write(&self, name: &str, delete_orphans: bool) -> Option<RecordWrite> {
        let record = self.records.entries.get(name);
        let Some(node) = self.nodes.entries.get(name) else {
            let record = record.filter(|_| delete_orphans)?;
            return Some(RecordWrite::DeleteIfNodeGone {
                name: name.to_string(),
                owner: record.uid.clone(),
                rv: record.rv.map(|rv| rv.to_string()),
            });
        };
        let uid = node.uid.as_ref()?;
        let write = match record {
            None => KeepWrite::Create,
            Some(r) if r.fields.facts != node.fields.facts || r.uid.as_ref() != Some(uid) => {
                KeepWrite::Replace {
                    rv: r.rv.map(|rv| rv.to_string()),
                }
            }
            Some(_) => return None,
        };
        Some(RecordWrite::Keep(Keep {
            name: name.to_string(),
            uid: uid.clone(),
            facts: node.fields.facts.clone(),
            write,
        }))
    }

    /// The ClusterRouting object (`None`: there is none). A part that does
    /// not parse keeps its last good value.
    pub fn set_routing(&mut self, view: Option<RoutingView>) -> bool {
        let (plan, settings) = match view {
            None => (None, Settings::default()),
            Some(view) => {
                let plan = view.plan.unwrap_or_else(|e| {
                    tracing::warn!("ClusterRouting {e}; keeping the last good plan");
                    self.plan.clone()
                });
                let settings = view.settings.unwrap_or_else(|e| {
                    tracing::warn!("ClusterRouting {e}; keeping the last good settings");
                    self.settings.clone()
                });
                (plan, settings)
            }
        };
        let changed = !self.routing_synced || plan != self.plan || settings != self.settings;
        self.routing_synced = true;
        self.plan = plan;
        self.settings = settings;
        changed
    }

    /// What a node shows now (for "report only what differs").
    pub fn fields(&self, name: &str) -> Option<&RoutingFields> {
        self.nodes.entries.get(name).map(|r| &r.fields)
    }

    /// The nodes snapshots are made of: every Node; or every record, with
    /// the agent's own Node in place of its own record.
    /// When a node's routing facts first appeared: its record's creation
    /// where peers come from records (the own node's too, so every agent
    /// orders nodes alike), else its Node's.
    fn created<'a>(&'a self, name: &str, fields: &'a RoutingFields) -> Option<&'a str> {
        let record = match &self.peers {
            Peers::Records { .. } => self.records.entries.get(name),
            _ => None,
        };
        record
            .and_then(|r| r.fields.created.as_deref())
            .or(fields.created.as_deref())
    }

    fn routed(&self) -> Vec<(&String, &RoutingFields)> {
        let Peers::Records { own } = &self.peers else {
            return (self.nodes.entries.iter())
                .map(|(name, r)| (name, &r.fields))
                .collect();
        };
        let own_node = self.nodes.entries.get_key_value(own);
        let mut routed: Vec<(&String, &RoutingFields)> = (self.records.entries.iter())
            .filter(|(name, _)| own_node.is_none() || *name != own)
            .map(|(name, r)| (name, &r.fields))
            .collect();
        if let Some((name, r)) = own_node {
            let at = routed.partition_point(|(n, _)| *n < name);
            routed.insert(at, (name, &r.fields));
        }
        routed
    }

    fn synced(&self) -> bool {
        let records = !self.records_feed_snapshots() || self.records.synced;
        self.nodes.synced && records && self.routing_synced
    }

    /// Nodes left out for values podroute refuses (not the ones that are
    /// merely not routable yet): name -> `field: reason`, as of the last
    /// snapshot.
    pub fn invalid_nodes(&self) -> BTreeMap<String, String> {
        let per_node =
            (self.routed().into_iter()).filter_map(|(name, fields)| match &fields.node {
                Err(why @ LeftOut::Invalid { .. }) => Some((name.clone(), why.to_string())),
                _ => None,
            });
        let cross = self
            .conflicts
            .iter()
            .map(|(name, why)| (name.clone(), why.to_string()));
        per_node.chain(cross).collect()
    }

    /// `None` until both watches have listed once.
    pub fn snapshot(&mut self) -> Option<Snapshot> {
        if !self.synced() {
            return None;
        }
        let (mut nodes, created): (Vec<ReportedNode>, Vec<Option<&str>>) =
            (self.routed().into_iter())
                .filter_map(|(name, fields)| {
                    let node = fields.node.as_ref().ok()?;
                    let reported = ReportedNode {
                        node: node.clone(),
                        ready: fields.ready,
                        report: fields.report.clone(),
                    };
                    Some((reported, self.created(name, fields)))
                })
                .unzip();
        // Of two nodes that clash, the one known longest keeps what they
        // clash over: a newcomer (misconfigured or hostile) never takes an
        // established node's pod CIDR, whatever its name. Same second: by name.
        let mut order: Vec<usize> = (0..nodes.len()).collect();
        order.sort_by_key(|&i| (created[i].is_none(), created[i], &nodes[i].node.name));
        let by_age: Vec<&ReportedNode> = order.iter().map(|&i| &nodes[i]).collect();
        let mut conflicts = HashMap::new();
        let mut keep = vec![true; nodes.len()];
        for c in cross_node_conflicts(&by_age) {
            let index = order[c.index];
            keep[index] = false;
            let why = LeftOut::Invalid {
                field: node_field(c.field),
                reason: c.reason,
            };
            conflicts.insert(nodes[index].node.name.clone(), why);
        }
        for (name, why) in &conflicts {
            if self.conflicts.get(name) != Some(why) {
                tracing::warn!(node = %name, "left out of the cluster: {why}");
            }
        }
        let mut keep = keep.into_iter();
        nodes.retain(|_| keep.next().unwrap_or(true));
        self.conflicts = conflicts;
        Some(Snapshot {
            nodes,
            plan: self.plan.clone(),
            settings: self.settings.clone(),
        })
    }
}

fn note_excluded(name: &str, new: &RoutingFields, old: Option<&RoutingFields>) {
    if old.map(|o| &o.node) == Some(&new.node) {
        return;
    }
    match &new.node {
        Ok(_) => {}
        // A new node has no pod CIDR for a few seconds: not worth more than debug.
        Err(why @ LeftOut::Pending(_)) => {
            tracing::debug!(node = %name, "not in the cluster (yet): {why}")
        }
        Err(why) => tracing::warn!(node = %name, "left out of the cluster: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn view(name: &str, rv: u64, ip: &str, cidr: &str, applied: Option<&str>) -> KubeNode {
        let mut annotations = json!({});
        if let Some(a) = applied {
            annotations["podroute.io/applied"] = json!(a);
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "uid": format!("uid-{name}"), "resourceVersion": rv.to_string(), "annotations": annotations},
            "spec": {"podCIDRs": [cidr]},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}],
                       "conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .unwrap()
    }

    fn record(name: &str, rv: u64, ip: &str, cidr: &str) -> KubeNode {
        let view: super::super::view::RecordView = serde_json::from_value(json!({
            "metadata": {"name": name, "resourceVersion": rv.to_string(),
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": format!("uid-{name}")}]},
            "spec": {"nodeIPs": [ip], "podCIDRs": [cidr]},
        }))
        .unwrap();
        KubeNode::from(view)
    }

    fn routing() -> RoutingView {
        serde_json::from_value(json!({
            "metadata": {"name": "default"},
            "spec": {"mode": "vxlan"},
            "status": {"plan": {"generation": 1, "routeMode": "vxlan", "decap": ["vxlan"]}},
        }))
        .unwrap()
    }

    fn names(s: &Snapshot) -> Vec<&str> {
        s.nodes.iter().map(|n| n.node.name.as_str()).collect()
    }

    #[test]
    fn no_snapshot_until_both_lists_are_in() {
        let mut state = State::default();
        assert!(state.snapshot().is_none());
        assert!(state.replace(
            Watched::Nodes,
            vec![view("a", 1, "10.251.0.1", "10.244.1.0/24", None)]
        ));
        assert!(state.snapshot().is_none());
        assert!(state.set_routing(None));
        let s = state.snapshot().unwrap();
        assert_eq!(names(&s), ["a"]);
        assert_eq!(s.plan, None);
        assert!(state.set_routing(Some(routing())));
        assert_eq!(state.snapshot().unwrap().plan.unwrap().generation, 1);
        assert!(
            !state.set_routing(Some(routing())),
            "same content is no change"
        );
    }

    #[test]
    fn only_content_counts_and_responses_never_go_back() {
        let mut state = State::default();
        state.replace(
            Watched::Nodes,
            vec![view("a", 5, "10.251.0.1", "10.244.1.0/24", None)],
        );
        assert!(!state.apply(
            Watched::Nodes,
            view("a", 6, "10.251.0.1", "10.244.1.0/24", None),
            Source::Watch
        ));
        assert!(state.apply(
            Watched::Nodes,
            view("a", 8, "10.251.0.1", "10.244.1.0/24", Some("1/vxlan")),
            Source::Response
        ));
        // the watch catches up: same content
        assert!(!state.apply(
            Watched::Nodes,
            view("a", 8, "10.251.0.1", "10.244.1.0/24", Some("1/vxlan")),
            Source::Watch
        ));
        // an older version (a late response, a late event) is ignored
        assert!(!state.apply(
            Watched::Nodes,
            view("a", 7, "10.251.0.1", "10.244.1.0/24", None),
            Source::Response
        ));
        assert!(!state.apply(
            Watched::Nodes,
            view("a", 7, "10.251.0.1", "10.244.1.0/24", None),
            Source::Watch
        ));
        assert!(state.fields("a").unwrap().report.applied.is_some());
        // a response never brings back a node the watch deleted
        assert!(state.delete(Watched::Nodes, "a"));
        assert!(!state.apply(
            Watched::Nodes,
            view("a", 9, "10.251.0.1", "10.244.1.0/24", None),
            Source::Response
        ));
        assert!(state.fields("a").is_none());
        // a relist keeps a version we know to be newer
        state.apply(
            Watched::Nodes,
            view("b", 20, "10.251.0.2", "10.244.2.0/24", Some("2/ipip")),
            Source::Watch,
        );
        state.replace(
            Watched::Nodes,
            vec![view("b", 19, "10.251.0.2", "10.244.2.0/24", None)],
        );
        assert!(state.fields("b").unwrap().report.applied.is_some());
    }

    #[test]
    fn nodes_that_break_the_cluster_are_left_out() {
        let mut state = State::default();
        state.set_routing(None);
        state.replace(
            Watched::Nodes,
            vec![
                view("a", 1, "10.251.0.1", "10.244.1.0/24", None),
                view("b-dup-ip", 1, "10.251.0.1", "10.244.2.0/24", None),
                view("c-overlap", 1, "10.251.0.3", "10.244.0.0/16", None),
                view("d-swallow", 1, "10.251.0.4", "10.251.0.0/24", None),
                view("e", 1, "10.251.0.5", "10.244.5.0/24", None),
                view("f-inside", 1, "10.251.0.6", "10.244.5.128/25", None),
                view("g-no-cidr-yet", 1, "10.251.0.7", "bad", None),
            ],
        );
        let s = state.snapshot().unwrap();
        assert_eq!(names(&s), ["a", "e"]);
        assert_eq!(state.conflicts.len(), 4, "{:?}", state.conflicts);
    }

    #[test]
    fn an_agent_routes_the_records_and_reports_from_its_own_node() {
        let mut state = State::new(Peers::Records { own: "b".into() });
        state.set_routing(Some(routing()));
        state.replace(
            Watched::Records,
            vec![
                record("a", 1, "10.251.0.1", "10.244.1.0/24"),
                record("b", 2, "10.251.0.2", "10.244.2.0/24"),
            ],
        );
        assert!(state.snapshot().is_none(), "its own Node is not listed yet");
        state.replace(
            Watched::Nodes,
            vec![view("b", 3, "10.251.0.2", "10.244.2.0/24", Some("1/vxlan"))],
        );
        let s = state.snapshot().unwrap();
        assert_eq!(names(&s), ["a", "b"]);
        assert_eq!(s.node("b").unwrap().report.applied.unwrap().generation, 1);
        assert!(state.fields("b").unwrap().report.applied.is_some());
        // A peer's record changes its pod CIDR: the snapshot follows.
        assert!(state.apply(
            Watched::Records,
            record("a", 4, "10.251.0.1", "10.244.9.0/24"),
            Source::Watch
        ));
        let a = state.snapshot().unwrap().node("a").unwrap().node.clone();
        assert_eq!(a.pod_cidr().unwrap().to_string(), "10.244.9.0/24");
        // The same record again, at a newer version, is no change.
        assert!(!state.apply(
            Watched::Records,
            record("a", 5, "10.251.0.1", "10.244.9.0/24"),
            Source::Watch
        ));
        // Its own node, with no record yet, is still routed from its Node.
        assert!(state.delete(Watched::Records, "b"));
        assert_eq!(names(&state.snapshot().unwrap()), ["a", "b"]);
        // An invalid record is left out, and named.
        state.apply(
            Watched::Records,
            record("c", 6, "10.251.0.3", "127.0.0.0/24"),
            Source::Watch,
        );
        assert_eq!(names(&state.snapshot().unwrap()), ["a", "b"]);
        assert!(
            state.invalid_nodes().contains_key("c"),
            "{:?}",
            state.invalid_nodes()
        );
    }

    /// A Node or record (`kind`) created at `created`.
    fn created_at(kind: Watched, name: &str, created: &str, ip: &str, cidr: &str) -> KubeNode {
        let metadata = json!({"name": name, "uid": format!("uid-{name}"), "resourceVersion": "1",
                              "creationTimestamp": created,
                              "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": format!("uid-{name}")}]});
        match kind {
            Watched::Records => {
                let view: super::super::view::RecordView = serde_json::from_value(
                    json!({"metadata": metadata, "spec": {"nodeIPs": [ip], "podCIDRs": [cidr]}}),
                )
                .unwrap();
                KubeNode::from(view)
            }
            _ => serde_json::from_value(json!({
                "metadata": metadata,
                "spec": {"podCIDRs": [cidr]},
                "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
            }))
            .unwrap(),
        }
    }

    const EARLY: &str = "2026-01-01T00:00:00Z";
    const LATE: &str = "2026-06-01T00:00:00Z";

    #[test]
    fn an_established_node_keeps_its_pod_cidr_against_a_newcomer_of_any_name() {
        let mut state = State::default();
        state.set_routing(Some(routing()));
        let node =
            |name, created, ip| created_at(Watched::Nodes, name, created, ip, "10.244.2.0/24");
        state.replace(
            Watched::Nodes,
            vec![
                node("node-2", EARLY, "10.251.0.2"),
                // Sorts first by name, came last.
                node("aaa", LATE, "10.251.0.9"),
            ],
        );
        let s = state.snapshot().unwrap();
        assert_eq!(names(&s), ["node-2"]);
        let why = &state.invalid_nodes()["aaa"];
        assert!(why.contains("node-2"), "{why}");
        // Created in the same second: the name decides, as before.
        state.replace(
            Watched::Nodes,
            vec![
                node("b1", EARLY, "10.251.0.2"),
                node("b0", EARLY, "10.251.0.9"),
            ],
        );
        assert_eq!(names(&state.snapshot().unwrap()), ["b0"]);
    }

    #[test]
    fn with_records_every_agent_orders_nodes_by_their_records_own_one_included() {
        let mut state = State::new(Peers::Records { own: "aaa".into() });
        state.set_routing(Some(routing()));
        let cidr = "10.244.2.0/24";
        state.replace(
            Watched::Records,
            vec![
                created_at(Watched::Records, "node-2", EARLY, "10.251.0.2", cidr),
                created_at(Watched::Records, "aaa", LATE, "10.251.0.9", cidr),
            ],
        );
        // Its own Node claims to be older than node-2's record: the records
        // decide, as they do on every other agent.
        state.replace(
            Watched::Nodes,
            vec![created_at(
                Watched::Nodes,
                "aaa",
                "2025-01-01T00:00:00Z",
                "10.251.0.9",
                cidr,
            )],
        );
        assert_eq!(names(&state.snapshot().unwrap()), ["node-2"]);
        assert!(state.invalid_nodes().contains_key("aaa"));
    }

    fn keep(name: &str, write: KeepWrite, cidr: &str) -> RecordWrite {
        RecordWrite::Keep(Keep {
            name: name.into(),
            uid: format!("uid-{name}"),
            facts: PodrouteNodeSpec {
                node_ips: vec![format!("10.251.0.{}", &name[1..])],
                pod_cidrs: vec![cidr.into()],
            },
            write,
        })
    }

    #[test]
    fn an_agent_writes_its_own_record_only_and_only_when_it_differs() {
        let mut state = State::new(Peers::Records { own: "n2".into() });
        state.replace(
            Watched::Nodes,
            vec![view("n2", 3, "10.251.0.2", "10.244.2.0/24", None)],
        );
        assert_eq!(
            state.record_writes(),
            [],
            "nothing before the records are listed"
        );
        state.replace(
            Watched::Records,
            vec![record("n1", 1, "10.251.0.1", "10.244.1.0/24")],
        );
        assert_eq!(
            state.record_writes(),
            [keep("n2", KeepWrite::Create, "10.244.2.0/24")]
        );
        state.apply(
            Watched::Records,
            record("n2", 4, "10.251.0.2", "10.244.2.0/24"),
            Source::Watch,
        );
        assert_eq!(state.record_writes(), []);
        // Its Node gets another pod CIDR: the record is replaced at the version read.
        state.apply(
            Watched::Nodes,
            view("n2", 5, "10.251.0.2", "10.244.7.0/24", None),
            Source::Watch,
        );
        let rv = Some("4".to_string());
        assert_eq!(
            state.record_writes(),
            [keep("n2", KeepWrite::Replace { rv }, "10.244.7.0/24")]
        );
    }

    #[test]
    fn the_coordinator_writes_every_missing_or_stale_record_and_deletes_orphans() {
        let mut state = State::new(Peers::Nodes);
        state.replace(
            Watched::Records,
            vec![
                record("n1", 1, "10.251.0.1", "10.244.1.0/24"),
                record("n2", 2, "10.251.0.2", "10.244.2.0/24"),
                record("n9", 3, "10.251.0.9", "10.244.9.0/24"),
            ],
        );
        state.replace(
            Watched::Nodes,
            vec![
                view("n1", 4, "10.251.0.1", "10.244.1.0/24", None),
                view("n2", 5, "10.251.0.2", "10.244.5.0/24", None),
                view("n3", 6, "10.251.0.3", "10.244.3.0/24", None),
            ],
        );
        assert_eq!(
            state.record_writes(),
            [
                keep(
                    "n2",
                    KeepWrite::Replace {
                        rv: Some("2".into())
                    },
                    "10.244.5.0/24"
                ),
                keep("n3", KeepWrite::Create, "10.244.3.0/24"),
                RecordWrite::DeleteIfNodeGone {
                    name: "n9".into(),
                    owner: Some("uid-n9".into()),
                    rv: Some("3".into()),
                },
            ]
        );
        // Kubelet churn (a new resourceVersion, the same facts) asks for nothing new.
        assert!(!state.apply(
            Watched::Nodes,
            view("n1", 7, "10.251.0.1", "10.244.1.0/24", None),
            Source::Watch
        ));
    }
}
