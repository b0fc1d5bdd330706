//! What the agent needs of a dataplane, so the loop can be tested against a
//! model of the kernel.

use futures::future::BoxFuture;

use crate::dataplane::{Dataplane, Held};
use crate::engine::{self, Outcome};
use crate::model::{Cluster, Node};
use crate::plan::check::{self, ProbeTarget};
use crate::plan::Touched;
use crate::Result;

pub trait Kernel: Send {
    /// Make the kernel hold what `cluster` asks of `node`, and read it back.
    fn converge<'a>(
        &'a mut self,
        cluster: &'a Cluster,
        node: &'a Node,
    ) -> BoxFuture<'a, Result<Outcome>>;

    /// The uplink the last converge used (the monitor watches it: IPv4
    /// drops routes through a device that goes down without a word).
    fn uplink(&self) -> Option<String> {
        None
    }

    /// Where the periodic check probes the peers the last converge routed.
    fn probe_targets(&self) -> Vec<ProbeTarget> {
        Vec::new()
    }

    /// What the kernel held of ours at the last read (the gauges).
    fn held(&self) -> Option<Held> {
        None
    }

    /// Put back the one object a kernel event names, against the plan the
    /// last converge verified. `Ok(Some(writes))` when settled alone,
    /// `Ok(None)` when only a full pass will do.
    fn repair<'a>(&'a mut self, _touched: &'a Touched) -> BoxFuture<'a, Result<Option<usize>>> {
        Box::pin(async { Ok(None) })
    }
}

impl Kernel for Dataplane {
    fn converge<'a>(
        &'a mut self,
        cluster: &'a Cluster,
        node: &'a Node,
    ) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(async move {
            self.last_desired = None;
            let (desired, uplink) = engine::desired_for(self, cluster, node).await?;
            self.last_probe_targets = check::targets(&desired, &cluster.nodes, node, uplink.mtu);
            self.last_uplink = Some(uplink.name);
            let outcome = engine::converge(self, &desired).await?;
            self.last_desired = Some(desired);
            Ok(outcome)
        })
    }

    fn repair<'a>(&'a mut self, touched: &'a Touched) -> BoxFuture<'a, Result<Option<usize>>> {
        Box::pin(Dataplane::repair(self, touched))
    }

    fn uplink(&self) -> Option<String> {
        self.last_uplink.clone()
    }

    fn held(&self) -> Option<Held> {
        Dataplane::held(self)
    }

    fn probe_targets(&self) -> Vec<ProbeTarget> {
        self.last_probe_targets.clone()
    }
}
