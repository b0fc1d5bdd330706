//! The kube store's parsers through its public API: a fake API server on
//! loopback answers the list of Nodes and of ClusterRoutings with the JSON
//! under test (and holds every watch open); a fresh `KubeStore` per case
//! lists both and either publishes a snapshot or logs that a list failed.
//!
//! `KubeNode` and `RoutingView` are private to the store; this is the only
//! way a test outside the crate reaches them, and it is the way the agent
//! reads them (kube-runtime's watcher, the same deserialisation).

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use podroute::api::ClusterRouting;
use podroute::store::{ClusterStore, KubeStore, Snapshot};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::subscriber::DefaultGuard;

use crate::harness::CASE_LIMIT;

type Body = BoxBody<Bytes, Infallible>;

#[derive(Default)]
struct Bodies {
    nodes: String,
    routings: String,
}

/// An API server that knows two lists and nothing else.
struct FakeApi {
    addr: SocketAddr,
    bodies: Arc<Mutex<Bodies>>,
    /// Bumped at the end of a case: the watches of that case end.
    epoch: watch::Sender<u64>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl FakeApi {
    async fn start() -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a loopback port");
        let addr = listener.local_addr().expect("the bound address");
        let bodies = Arc::new(Mutex::new(Bodies::default()));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let epoch = watch::Sender::new(0);
        let accept = tokio::spawn(accept_loop(
            listener,
            bodies.clone(),
            epoch.clone(),
            connections.clone(),
        ));
        FakeApi {
            addr,
            bodies,
            epoch,
            connections,
            accept,
        }
    }

    fn serve(&self, nodes: String, routings: String) {
        *self.bodies.lock().unwrap_or_else(|e| e.into_inner()) = Bodies { nodes, routings };
    }

    /// Ends the watches of the last case; the connections that carried its
    /// lists stay in the client's pool for the next one.
    fn end_watches(&self) {
        self.epoch.send_modify(|e| *e += 1);
        self.connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|c| !c.is_finished());
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        for c in self
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            c.abort();
        }
        self.accept.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    bodies: Arc<Mutex<Bodies>>,
    epoch: watch::Sender<u64>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    while let Ok((stream, _)) = listener.accept().await {
        let bodies = bodies.clone();
        let epoch = epoch.clone();
        let service =
            hyper::service::service_fn(move |req| answer(req, bodies.clone(), epoch.subscribe()));
        let conn = tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
    }
}

async fn answer(
    req: Request<Incoming>,
    bodies: Arc<Mutex<Bodies>>,
    mut epoch: watch::Receiver<u64>,
) -> Result<Response<Body>, Infallible> {
    let watch = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .any(|p| p == "watch=true" || p == "watch=1");
    if watch {
        // Nothing happens: the watch stays open until the case ends.
        let case_over = futures::stream::once(async move {
            let _ = epoch.changed().await;
        })
        .filter_map(|()| async { None::<Result<Frame<Bytes>, Infallible>> });
        return Ok(Response::new(BodyExt::boxed(StreamBody::new(case_over))));
    }
    let path = req.uri().path();
    let body = {
        let b = bodies.lock().unwrap_or_else(|e| e.into_inner());
        if path == "/api/v1/nodes" {
            Some(b.nodes.clone())
        } else if path.ends_with("/clusterroutings") {
            Some(b.routings.clone())
        } else {
            None
        }
    };
    let response = match body {
        Some(body) => Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)).boxed()),
        None => Response::builder()
            .status(404)
            .body(Full::new(Bytes::from_static(b"404 page not found")).boxed()),
    };
    Ok(response.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed())))
}

/// The store's log lines at warn and above, for telling a failed list from a
/// slow one without waiting out kube-runtime's backoff.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What one case came to.
#[derive(Debug)]
pub enum Outcome {
    /// Both lists parsed: the first snapshot.
    Published(Arc<Snapshot>),
    /// The Node list did not parse (the store's log line).
    NodesFailed(String),
    /// The ClusterRouting list did not parse.
    RoutingFailed(String),
    /// Neither within the case limit: a hang, or a panic in the store's task.
    Nothing { logs: String },
}

/// A runtime, the fake API server and a client, reused by every case. Lives
/// on one thread (the logs are captured with a thread-local subscriber and a
/// current-thread runtime, so the store's tasks log to it).
pub struct KubeHarness {
    runtime: Runtime,
    fake: FakeApi,
    client: kube::Client,
    logs: Logs,
    _logging: DefaultGuard,
}

impl KubeHarness {
    pub fn new() -> KubeHarness {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .without_time()
            .with_writer(move || writer.clone())
            .finish();
        let logging = tracing::subscriber::set_default(subscriber);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let (fake, client) = runtime.block_on(async {
            let fake = FakeApi::start().await;
            let url = format!("http://{}", fake.addr).parse().expect("a URL");
            let client = kube::Client::try_from(kube::Config::new(url)).expect("a kube client");
            (fake, client)
        });
        KubeHarness {
            runtime,
            fake,
            client,
            logs,
            _logging: logging,
        }
    }

    /// A new store on these two list bodies; its first snapshot or failure.
    pub fn run(&self, nodes: String, routings: String) -> (Outcome, Duration) {
        let (outcome, took, _) = self.run_with_routing(nodes, routings);
        (outcome, took)
    }

    /// As [`KubeHarness::run`], with the ClusterRouting object the store
    /// then gives the coordinator ([`KubeStore::routing`]).
    pub fn run_with_routing(
        &self,
        nodes: String,
        routings: String,
    ) -> (Outcome, Duration, Option<Arc<ClusterRouting>>) {
        self.fake.serve(nodes, routings);
        self.logs.clear();
        let start = Instant::now();
        let (outcome, routing) = self.runtime.block_on(async {
            let store = KubeStore::new(self.client.clone()).expect("starting the store");
            let mut rx = store.subscribe();
            let outcome = loop {
                if let Some(s) = rx.borrow_and_update().clone() {
                    break Outcome::Published(s);
                }
                let logs = self.logs.text();
                let line = |what: &str| {
                    logs.lines()
                        .find(|l| l.contains(&format!("watching {what}:")))
                        .map(str::to_string)
                };
                if let Some(l) = line("Nodes") {
                    break Outcome::NodesFailed(l);
                }
                if let Some(l) = line("ClusterRouting") {
                    break Outcome::RoutingFailed(l);
                }
                if start.elapsed() > CASE_LIMIT {
                    break Outcome::Nothing { logs };
                }
                let _ = tokio::time::timeout(Duration::from_millis(1), rx.changed()).await;
            };
            let routing = store.routing().borrow().clone();
            (outcome, routing)
        });
        self.fake.end_watches();
        (outcome, start.elapsed(), routing)
    }

    /// The log lines of the last case.
    pub fn logs(&self) -> String {
        self.logs.text()
    }
}

/// A NodeList body around these items (JSON texts).
pub fn node_list(items: &[String]) -> String {
    list("v1", "NodeList", items)
}

/// A ClusterRoutingList body around these items (JSON texts).
pub fn routing_list(items: &[String]) -> String {
    list("podroute.io/v1alpha1", "ClusterRoutingList", items)
}

/// The items are JSON texts, spliced in as they are (damaged ones too).
fn list(api_version: &str, kind: &str, items: &[String]) -> String {
    format!(
        r#"{{"apiVersion":"{api_version}","kind":"{kind}","metadata":{{"resourceVersion":"100"}},"items":[{}]}}"#,
        items.join(",")
    )
}
