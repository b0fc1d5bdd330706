//! What the coordinator reads of Nodes besides the store's snapshot: when
//! each node's Ready condition last flipped (`RolloutNode::since`), and the
//! underlay signal (`RolloutNode::underlay_ready`): a Node condition, named by
//! `--underlay-signal-condition`, that a cloud-specific controller sets True
//! once the node's routes are in the underlay.
//!
//! Not NetworkUnavailable: podroute writes NetworkUnavailable=False reason
//! RouteCreated itself, and the cloud route controller writes the same and
//! never rewrites it once False, so it cannot tell whose routes are there.
//!
//! A Node is parsed into [`SignalsView`] (name, the Ready transition time,
//! the one watched condition's status); the rest of the JSON is skipped.
//! It has its own watch so that the store's snapshots, which every agent
//! wakes on, do not change with these fields.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use serde::Deserialize;
use tokio::sync::watch;

use super::machine::RolloutNode;
use crate::api::{NodeCondition, NETWORK_UNAVAILABLE};
use crate::store::{resource_view, WarnOnce, NODE_PAGE_SIZE};
use crate::{Error, Result};

/// The watched condition type. A view is parsed by serde without context,
/// so this is process-wide, set once by [`watch_underlay_signal`].
static UNDERLAY_SIGNAL: OnceLock<String> = OnceLock::new();

/// Keep the status of Node condition `type_` from now on. A second call
/// must name the same condition.
pub fn watch_underlay_signal(type_: &str) -> Result<()> {
    let field = "--underlay-signal-condition";
    if type_.is_empty() {
        return Err(Error::invalid(field, "empty condition type"));
    }
    if type_ == NETWORK_UNAVAILABLE || type_ == "Ready" {
        return Err(Error::invalid(
            field,
            format!("{type_} is not a cloud's signal (podroute or the kubelet writes it)"),
        ));
    }
    let set = UNDERLAY_SIGNAL.get_or_init(|| type_.to_string());
    if set != type_ {
        return Err(Error::invalid(
            field,
            format!("this process already watches condition {set}"),
        ));
    }
    Ok(())
}

/// What one Node says beyond its snapshot entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnderlaySignal {
    /// Unix seconds of the Ready condition's lastTransitionTime.
    pub ready_since: Option<u64>,
    /// The watched condition is True; `None` when none is watched.
    pub underlay: Option<bool>,
}

/// A Node, projected to its [`UnderlaySignal`] while it is parsed.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "RawNode")]
pub struct SignalsView {
    metadata: ObjectMeta,
    pub signals: UnderlaySignal,
}

impl SignalsView {
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }
}

resource_view!(SignalsView, k8s_openapi::api::core::v1::Node);

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawNode {
    metadata: RawMeta,
    status: RawStatus,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawMeta {
    name: Option<String>,
    /// Kept so the watcher resumes from the last object it saw instead of
    /// listing every Node again.
    resource_version: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawStatus {
    conditions: Vec<NodeCondition>,
}

impl From<RawNode> for SignalsView {
    fn from(raw: RawNode) -> SignalsView {
        SignalsView::project(raw, UNDERLAY_SIGNAL.get().map(String::as_str))
    }
}

impl SignalsView {
    fn project(raw: RawNode, underlay_condition: Option<&str>) -> SignalsView {
        let conditions = &raw.status.conditions;
        let find = |type_: &str| conditions.iter().find(|c| c.type_ == type_);
        let signals = UnderlaySignal {
            ready_since: find("Ready")
                .and_then(|c| c.last_transition_time.as_deref())
                .and_then(unix_seconds),
            underlay: underlay_condition
                .map(|type_| find(type_).is_some_and(|c| c.status == "True")),
        };
        SignalsView {
            metadata: ObjectMeta {
                name: raw.metadata.name,
                resource_version: raw.metadata.resource_version,
                ..ObjectMeta::default()
            },
            signals,
        }
    }
}

/// An RFC 3339 time as Unix seconds; `None` when it does not parse or is
/// before 1970.
fn unix_seconds(time: &str) -> Option<u64> {
    let at: Timestamp = time.parse().ok()?;
    u64::try_from(at.as_second()).ok()
}

/// Signals by node name.
pub type SignalsByNode = BTreeMap<String, UnderlaySignal>;

/// Fill in what the snapshot does not carry; nodes the signals watch has
/// not seen yet keep `None`.
pub fn add_signals(facts: &mut [RolloutNode], signals: &SignalsByNode) {
    for fact in facts {
        if let Some(s) = signals.get(&fact.name) {
            fact.since = s.ready_since;
            fact.underlay_ready = s.underlay;
        }
    }
}

/// Follows every Node into `tx`; subscribers wake only when a signal changes.
pub async fn follow(api: Api<SignalsView>, tx: watch::Sender<SignalsByNode>) {
    let config = watcher::Config::default().page_size(NODE_PAGE_SIZE);
    let mut events = watcher(api, config).default_backoff().boxed();
    let (mut warn_once, what) = (WarnOnce::default(), "Nodes for their signals");
    let mut listing = SignalsByNode::new();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                warn_once.failed(what, &e);
                continue;
            }
        };
        warn_once.ok(what);
        match event {
            watcher::Event::Init => listing.clear(),
            watcher::Event::InitApply(view) => {
                listing.insert(view.name().to_string(), view.signals);
            }
            watcher::Event::InitDone => {
                let listed = std::mem::take(&mut listing);
                tx.send_if_modified(|known| replace_if_differs(known, listed));
            }
            watcher::Event::Apply(view) => {
                tx.send_if_modified(|known| {
                    known.insert(view.name().to_string(), view.signals) != Some(view.signals)
                });
            }
            watcher::Event::Delete(view) => {
                tx.send_if_modified(|known| known.remove(view.name()).is_some());
            }
        }
    }
}

fn replace_if_differs(known: &mut SignalsByNode, listed: SignalsByNode) -> bool {
    if *known == listed {
        return false;
    }
    *known = listed;
    true
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn raw(conditions: serde_json::Value) -> RawNode {
        serde_json::from_value(json!({
            "metadata": {"name": "n1", "resourceVersion": "42", "annotations": {"a": "b"}},
            "spec": {"podCIDR": "10.244.1.0/24"},
            "status": {
                "conditions": conditions,
                "images": [{"names": ["registry.example/big:1"], "sizeBytes": 1}],
            },
        }))
        .expect("a Node")
    }

    const CLOUD: &str = "example.com/RoutesReady";

    #[test]
    fn ready_since_is_the_ready_transition_time() {
        let view = SignalsView::project(
            raw(json!([
                {"type": "NetworkUnavailable", "status": "False", "lastTransitionTime": "2030-01-01T00:00:00Z"},
                {"type": "Ready", "status": "False", "lastTransitionTime": "2030-01-01T00:01:40Z"},
            ])),
            None,
        );
        assert_eq!(view.name(), "n1");
        // Without it the watcher lists every Node again after each watch ends.
        assert_eq!(view.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(
            view.signals,
            UnderlaySignal {
                ready_since: Some(1_893_456_100),
                underlay: None
            }
        );
        let unparsable = SignalsView::project(
            raw(json!([{"type": "Ready", "status": "True", "lastTransitionTime": "yesterday"}])),
            None,
        );
        assert_eq!(unparsable.signals.ready_since, None);
        assert_eq!(
            SignalsView::project(raw(json!([])), None).signals,
            UnderlaySignal::default()
        );
    }

    #[test]
    fn the_watched_condition_is_true_false_or_absent() {
        let underlay = |conditions| {
            SignalsView::project(raw(conditions), Some(CLOUD))
                .signals
                .underlay
        };
        assert_eq!(
            underlay(json!([{"type": CLOUD, "status": "True"}])),
            Some(true)
        );
        assert_eq!(
            underlay(json!([{"type": CLOUD, "status": "Unknown"}])),
            Some(false)
        );
        assert_eq!(
            underlay(
                json!([{"type": "NetworkUnavailable", "status": "False", "reason": "RouteCreated"}])
            ),
            Some(false),
            "podroute's own condition is no signal"
        );
        assert_eq!(
            SignalsView::project(raw(json!([{"type": CLOUD, "status": "True"}])), None)
                .signals
                .underlay,
            None,
            "not watched"
        );
    }

    #[test]
    fn signals_fill_since_and_underlay_of_the_nodes_seen() {
        let fact = |name: &str| RolloutNode {
            name: name.into(),
            ready: false,
            since: None,
            applied: None,
            available: false,
            underlay_ready: None,
        };
        let mut facts = [fact("seen"), fact("unseen")];
        let signals = SignalsByNode::from([(
            "seen".to_string(),
            UnderlaySignal {
                ready_since: Some(1_000),
                underlay: Some(true),
            },
        )]);
        add_signals(&mut facts, &signals);
        assert_eq!(
            (facts[0].since, facts[0].underlay_ready),
            (Some(1_000), Some(true))
        );
        assert_eq!(facts[1], fact("unseen"));
    }

    #[test]
    fn network_unavailable_cannot_be_the_signal() {
        assert!(watch_underlay_signal(NETWORK_UNAVAILABLE).is_err());
        assert!(watch_underlay_signal("").is_err());
    }
}
