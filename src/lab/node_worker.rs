//! One thread per lab node, living in the node's namespace with its own
//! runtime and netlink socket, that converges the node to the plans it is
//! sent: the in-process stand-in for the node agent.

use std::sync::mpsc;
use std::thread::JoinHandle;

use super::netns::enter_current_thread;
use crate::dataplane::Dataplane;
use crate::engine::{self, Outcome};
use crate::model::{Cluster, Config, Plan};
use crate::{Error, Result};

type Request = (Plan, mpsc::Sender<Result<Outcome>>);

pub struct NodeWorker {
    name: String,
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

impl NodeWorker {
    /// `cluster` gives the node list and settings; each request's plan replaces its plan.
    pub fn spawn(netns: &str, name: &str, cluster: Cluster, config: Config) -> Result<NodeWorker> {
        let (tx, rx) = mpsc::channel::<Request>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let (netns, node) = (netns.to_string(), name.to_string());
        let thread = std::thread::Builder::new()
            .name(format!("node {name}"))
            .spawn(move || serve(&netns, &node, cluster, config, rx, ready_tx))
            .map_err(|e| Error::io("spawning a node thread", e))?;
        ready_rx.recv().map_err(|_| {
            Error::io("node thread", std::io::Error::other("died while starting"))
        })??;
        Ok(NodeWorker {
            name: name.to_string(),
            requests: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Converge the node to `plan` and wait for the kernel to hold it.
    pub fn apply(&self, plan: &Plan) -> Result<Outcome> {
        let gone = || {
            Error::io(
                format!("node {}", self.name),
                std::io::Error::other("worker stopped"),
            )
        };
        let (reply_tx, reply_rx) = mpsc::channel();
        self.requests
            .as_ref()
            .ok_or_else(gone)?
            .send((plan.clone(), reply_tx))
            .map_err(|_| gone())?;
        reply_rx.recv().map_err(|_| gone())?
    }
}

impl Drop for NodeWorker {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    netns: &str,
    node: &str,
    mut cluster: Cluster,
    config: Config,
    requests: mpsc::Receiver<Request>,
    ready: mpsc::Sender<Result<()>>,
) {
    let started = enter_current_thread(netns).and_then(|()| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("tokio runtime", e))
    });
    let runtime = match started {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    runtime.block_on(async {
        let mut dp = match Dataplane::connect(config) {
            Ok(dp) => dp,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        while let Ok((plan, reply)) = requests.recv() {
            cluster.plan = plan;
            let result = async {
                let local = engine::local_node(&dp, &cluster, Some(node)).await?.clone();
                let (desired, _) = engine::desired_for(&mut dp, &cluster, &local).await?;
                engine::converge(&mut dp, &desired).await
            }
            .await;
            let _ = reply.send(result);
        }
    });
}
