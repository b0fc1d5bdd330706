//! What a lab run measured (the CLI renders it as JSON or a table).

use serde::Serialize;

use super::topology::IpFamily;
use super::traffic::{FamilyTallies, BUCKET};
use crate::api::Mode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MtuCheck {
    /// Size of the DF packets sent, equal to the pods' MTU.
    pub mtu: u32,
    pub ok: usize,
    pub total: usize,
}

impl MtuCheck {
    /// Both checks as one: the smaller MTU, the counts added up.
    pub fn merge(a: Option<MtuCheck>, b: Option<MtuCheck>) -> Option<MtuCheck> {
        match (a, b) {
            (Some(a), Some(b)) => Some(MtuCheck {
                mtu: a.mtu.min(b.mtu),
                ok: a.ok + b.ok,
                total: a.total + b.total,
            }),
            (a, b) => a.or(b),
        }
    }
}

/// What one address family measured, in a phase or over the whole run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FamilyReport {
    pub sent: u64,
    pub lost: u64,
    /// In a phase, its DF check in this family; over the run, every
    /// phase's checks added up, at the smallest pod MTU of the run.
    pub mtu_check: Option<MtuCheck>,
}

impl FamilyReport {
    pub fn add(&mut self, other: &FamilyReport) {
        self.sent += other.sent;
        self.lost += other.lost;
        self.mtu_check = MtuCheck::merge(self.mtu_check, other.mtu_check);
    }
}

/// The families the lab has, each measured on its own: `None` (and left
/// out of the JSON) for a family the lab's pods do not have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Families {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<FamilyReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<FamilyReport>,
}

impl Families {
    /// An empty report for each family of `family`.
    pub fn of(family: IpFamily) -> Families {
        Families {
            ipv4: family.has_v4().then(FamilyReport::default),
            ipv6: family.has_v6().then(FamilyReport::default),
        }
    }

    /// Sent, lost and the DF check over every family.
    pub fn total(&self) -> FamilyReport {
        let mut total = FamilyReport::default();
        for family in [&self.ipv4, &self.ipv6].into_iter().flatten() {
            total.add(family);
        }
        total
    }

    /// Both families' reports when the lab has both.
    pub fn dual(&self) -> Option<(&FamilyReport, &FamilyReport)> {
        Some((self.ipv4.as_ref()?, self.ipv6.as_ref()?))
    }

    pub fn add(&mut self, other: &Families) {
        for (mine, theirs) in [(&mut self.ipv4, &other.ipv4), (&mut self.ipv6, &other.ipv6)] {
            match (mine, theirs) {
                (Some(a), Some(b)) => a.add(b),
                (a @ None, Some(b)) => *a = Some(*b),
                _ => {}
            }
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseReport {
    pub name: String,
    pub generation: u64,
    /// When it began, from the first probe of the run.
    pub start_ms: u64,
    pub duration_ms: u64,
    /// Every family added up (as [`PhaseReport::families`] has them apart).
    pub sent: u64,
    pub lost: u64,
    pub mtu_check: Option<MtuCheck>,
    pub families: Families,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    pub rollout: &'static str,
    pub from: Mode,
    pub to: Mode,
    pub nodes: usize,
    pub subnets: usize,
    /// `ipv4`, `ipv6` or `dual`.
    pub ip_family: &'static str,
    /// Every family added up.
    pub sent: u64,
    pub lost: u64,
    pub families: Families,
    pub phases: Vec<PhaseReport>,
    /// Probes from each pod to each other pod of its family, over the run.
    pub pairs: Vec<PairReport>,
    pub timeline: Timeline,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PairReport {
    pub from: String,
    pub to: String,
    /// `ipv4` or `ipv6`.
    pub family: &'static str,
    pub sent: u64,
    pub lost: u64,
}

/// Probes sent and lost per `bucket_ms` from the first probe of the run,
/// every family added up; a probe counts in the bucket it was sent in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    pub bucket_ms: u64,
    pub sent: Vec<u64>,
    pub lost: Vec<u64>,
}

impl Timeline {
    pub fn of(buckets: &[FamilyTallies]) -> Timeline {
        Timeline {
            bucket_ms: BUCKET.as_millis() as u64,
            sent: buckets.iter().map(|[a, b]| a.sent + b.sent).collect(),
            lost: buckets.iter().map(|[a, b]| a.lost + b.lost).collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LabReport {
    /// Why these modes: e.g. the kernel has no ipip.
    pub modes_chosen: String,
    #[serde(flatten)]
    pub run: RunReport,
    /// The naive rollout measured the same way (`--compare`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub naive: Option<RunReport>,
    /// Namespaces left in place with `--keep`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept_namespaces: Vec<String>,
}
