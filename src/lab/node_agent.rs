//! A real agent (monitor, dataplane, reconcile loop) on its own thread in a
//! node namespace, on a shared in-process store: how the lab and the tests
//! run a whole cluster in one process.

use std::sync::Arc;
use std::thread::JoinHandle;

use futures::future::BoxFuture;

use tokio::sync::{mpsc, watch};

use super::netns::enter_current_thread;
use crate::agent::{pump, Agent, AgentOptions, Metrics, Pass};
use crate::dataplane::monitor::Monitor;
use crate::dataplane::Dataplane;
use crate::model::Config;
use crate::store::{ClusterStore, NodeReport, Snapshot};
use crate::{Error, Result};

pub struct NodeAgent {
    name: String,
    metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl NodeAgent {
    /// Start the agent of `options.node` in `netns`; `passes` gets every
    /// reconcile pass when given.
    pub fn spawn(
        netns: &str,
        options: AgentOptions,
        store: Arc<dyn ClusterStore>,
        config: Config,
        passes: Option<mpsc::UnboundedSender<Pass>>,
    ) -> Result<NodeAgent> {
        // Writes leave from the caller's runtime, in the caller's namespace:
        // an API server on the host's loopback is out of the node's reach.
        let store: Arc<dyn ClusterStore> = match tokio::runtime::Handle::try_current() {
            Ok(home) => Arc::new(WritesAtHome { inner: store, home }),
            Err(_) => store,
        };
        let (shutdown, stop) = watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<Arc<Metrics>>>();
        let netns = netns.to_string();
        let name = options.node.clone();
        let thread = std::thread::Builder::new()
            .name(format!("agent {name}"))
            .spawn(move || -> Result<()> {
                let runtime = enter_current_thread(&netns).and_then(|()| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| Error::io("tokio runtime", e))
                });
                let runtime = match runtime {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return Ok(());
                    }
                };
                runtime.block_on(async move {
                    let started = (|| {
                        let monitor = Monitor::start(&config)?;
                        let dataplane = Dataplane::connect(config)?;
                        Ok::<_, Error>((monitor, dataplane))
                    })();
                    let (monitor, dataplane) = match started {
                        Ok(parts) => parts,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return Ok(());
                        }
                    };
                    let mut agent = Agent::new(options, store, dataplane);
                    if let Some(tx) = passes {
                        agent.observe_passes(tx);
                    }
                    let _ = ready_tx.send(Ok(agent.metrics()));
                    let events = pump(monitor, agent.uplink_updates());
                    agent.run(events, stop).await
                })
            })
            .map_err(|e| Error::io("spawning an agent thread", e))?;
        let metrics = ready_rx.recv().map_err(|_| {
            Error::io("agent thread", std::io::Error::other("died while starting"))
        })??;
        Ok(NodeAgent {
            name,
            metrics,
            shutdown,
            thread: Some(thread),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn metrics_handle(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Stop the loop (the dataplane stays) and wait for the thread.
    pub fn stop(mut self) -> Result<()> {
        self.halt()
    }

    fn halt(&mut self) -> Result<()> {
        let _ = self.shutdown.send(true);
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| {
                Error::io(
                    format!("agent {}", self.name),
                    std::io::Error::other("panicked"),
                )
            })?,
            None => Ok(()),
        }
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}

/// A store whose reports run on another runtime (the agent's own thread
/// sits in the node namespace).
struct WritesAtHome {
    inner: Arc<dyn ClusterStore>,
    home: tokio::runtime::Handle,
}

impl ClusterStore for WritesAtHome {
    fn subscribe(&self) -> watch::Receiver<Option<Arc<Snapshot>>> {
        self.inner.subscribe()
    }

    fn report<'a>(&'a self, node: &'a str, report: &'a NodeReport) -> BoxFuture<'a, Result<()>> {
        let (inner, node, report) = (self.inner.clone(), node.to_string(), report.clone());
        self.at_home(
            "reporting",
            async move { inner.report(&node, &report).await },
        )
    }

    fn warn_event<'a>(
        &'a self,
        node: &'a str,
        reason: &'a str,
        message: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        let inner = self.inner.clone();
        let (node, reason, message) = (node.to_string(), reason.to_string(), message.to_string());
        self.at_home("recording an Event", async move {
            inner.warn_event(&node, &reason, &message).await
        })
    }
}

impl WritesAtHome {
    /// Run `write` on the home runtime and wait for it.
    fn at_home(
        &self,
        what: &'static str,
        write: impl std::future::Future<Output = Result<()>> + Send + 'static,
    ) -> BoxFuture<'static, Result<()>> {
        let task = self.home.spawn(write);
        Box::pin(async move {
            task.await
                .map_err(|e| Error::io(what, std::io::Error::other(e.to_string())))?
        })
    }
}
