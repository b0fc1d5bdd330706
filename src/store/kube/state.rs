//! The store's memory: one small record per Node, the ClusterRouting view,
//! and the snapshot built from them. Pure: no I/O, no clock.

use std::collections::{BTreeMap, HashMap};

use super::view::{node_field, KubeNode, LeftOut, RoutingFields, RoutingView};
use crate::api::Plan;
use crate::model::cross_node_conflicts;
use crate::model::Settings;
use crate::store::{ReportedNode, Snapshot};

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
    fields: RoutingFields,
}

#[derive(Debug, Default)]
pub struct State {
    nodes: BTreeMap<String, Record>,
    nodes_synced: bool,
    plan: Option<Plan>,
    settings: Settings,
    routing_synced: bool,
    /// Nodes left out by the cross-node checks, with why (logged once).
    conflicts: HashMap<String, LeftOut>,
}

impl State {
    /// Apply one node version; true when what the store knows changed.
    pub fn apply_node(&mut self, view: KubeNode, source: Source) -> bool {
        let rv = view.resource_version().and_then(|v| v.parse::<u64>().ok());
        let name = view.name().to_string();
        let Some(record) = self.nodes.get_mut(&name) else {
            if source == Source::Response {
                return false; // deleted meanwhile, or not listed yet: the watch decides
            }
            note_excluded(&name, &view.fields, None);
            self.nodes.insert(
                name,
                Record {
                    rv,
                    fields: view.fields,
                },
            );
            return true;
        };
        match (source, record.rv, rv) {
            (_, Some(have), Some(new)) if new < have => return false,
            (Source::Response, _, None) | (Source::Response, None, _) => return false,
            _ => {}
        }
        record.rv = rv;
        if record.fields == view.fields {
            return false;
        }
        note_excluded(&name, &view.fields, Some(&record.fields));
        record.fields = view.fields;
        true
    }

    pub fn delete_node(&mut self, name: &str) -> bool {
        self.nodes.remove(name).is_some()
    }

    /// A complete list (after a (re)connect). A node we know at a newer
    /// version (from a patch response) keeps that version.
    pub fn replace_nodes(&mut self, views: Vec<KubeNode>) -> bool {
        let mut old = std::mem::take(&mut self.nodes);
        let mut changed = !self.nodes_synced;
        self.nodes_synced = true;
        for view in views {
            let name = view.name().to_string();
            let rv = view.resource_version().and_then(|v| v.parse::<u64>().ok());
            let record = match old.remove(&name) {
                Some(known) if matches!((known.rv, rv), (Some(k), Some(n)) if k > n) => known,
                Some(known) => {
                    changed |= known.fields != view.fields;
                    note_excluded(&name, &view.fields, Some(&known.fields));
                    Record {
                        rv,
                        fields: view.fields,
                    }
                }
                None => {
                    changed = true;
                    note_excluded(&name, &view.fields, None);
                    Record {
                        rv,
                        fields: view.fields,
                    }
                }
            };
            self.nodes.insert(name, record);
        }
        changed || !old.is_empty()
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
        self.nodes.get(name).map(|r| &r.fields)
    }

    /// Nodes left out for values podroute refuses (not the ones that are
    /// merely not routable yet): name -> `field: reason`, as of the last
    /// snapshot.
    pub fn invalid_nodes(&self) -> BTreeMap<String, String> {
        let per_node = self
            .nodes
            .iter()
            .filter_map(|(name, r)| match &r.fields.node {
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
        if !(self.nodes_synced && self.routing_synced) {
            return None;
        }
        let mut nodes: Vec<ReportedNode> = self
            .nodes
            .values()
            .filter_map(|r| {
                let node = r.fields.node.as_ref().ok()?;
                Some(ReportedNode {
                    node: node.clone(),
                    ready: r.fields.ready,
                    report: r.fields.report.clone(),
                })
            })
            .collect();
        let mut conflicts = HashMap::new();
        let mut keep = vec![true; nodes.len()];
        for c in cross_node_conflicts(&nodes) {
            keep[c.index] = false;
            let why = LeftOut::Invalid {
                field: node_field(c.field),
                reason: c.reason,
            };
            conflicts.insert(nodes[c.index].node.name.clone(), why);
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
            "metadata": {"name": name, "resourceVersion": rv.to_string(), "annotations": annotations},
            "spec": {"podCIDRs": [cidr]},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}],
                       "conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .unwrap()
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
        assert!(state.replace_nodes(vec![view("a", 1, "10.251.0.1", "10.244.1.0/24", None)]));
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
        state.replace_nodes(vec![view("a", 5, "10.251.0.1", "10.244.1.0/24", None)]);
        assert!(!state.apply_node(
            view("a", 6, "10.251.0.1", "10.244.1.0/24", None),
            Source::Watch
        ));
        assert!(state.apply_node(
            view("a", 8, "10.251.0.1", "10.244.1.0/24", Some("1/vxlan")),
            Source::Response
        ));
        // the watch catches up: same content
        assert!(!state.apply_node(
            view("a", 8, "10.251.0.1", "10.244.1.0/24", Some("1/vxlan")),
            Source::Watch
        ));
        // an older version (a late response, a late event) is ignored
        assert!(!state.apply_node(
            view("a", 7, "10.251.0.1", "10.244.1.0/24", None),
            Source::Response
        ));
        assert!(!state.apply_node(
            view("a", 7, "10.251.0.1", "10.244.1.0/24", None),
            Source::Watch
        ));
        assert!(state.fields("a").unwrap().report.applied.is_some());
        // a response never brings back a node the watch deleted
        assert!(state.delete_node("a"));
        assert!(!state.apply_node(
            view("a", 9, "10.251.0.1", "10.244.1.0/24", None),
            Source::Response
        ));
        assert!(state.fields("a").is_none());
        // a relist keeps a version we know to be newer
        state.apply_node(
            view("b", 20, "10.251.0.2", "10.244.2.0/24", Some("2/ipip")),
            Source::Watch,
        );
        state.replace_nodes(vec![view("b", 19, "10.251.0.2", "10.244.2.0/24", None)]);
        assert!(state.fields("b").unwrap().report.applied.is_some());
    }

    #[test]
    fn nodes_that_break_the_cluster_are_left_out() {
        let mut state = State::default();
        state.set_routing(None);
        state.replace_nodes(vec![
            view("a", 1, "10.251.0.1", "10.244.1.0/24", None),
            view("b-dup-ip", 1, "10.251.0.1", "10.244.2.0/24", None),
            view("c-overlap", 1, "10.251.0.3", "10.244.0.0/16", None),
            view("d-swallow", 1, "10.251.0.4", "10.251.0.0/24", None),
            view("e", 1, "10.251.0.5", "10.244.5.0/24", None),
            view("f-inside", 1, "10.251.0.6", "10.244.5.128/25", None),
            view("g-no-cidr-yet", 1, "10.251.0.7", "bad", None),
        ]);
        let s = state.snapshot().unwrap();
        assert_eq!(names(&s), ["a", "e"]);
        assert_eq!(state.conflicts.len(), 4, "{:?}", state.conflicts);
    }
}
