//! `/healthz`, `/readyz` and `/metrics` on one small listener, for the
//! agent and the coordinator alike.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::{Error, Result};

/// What a process answers on its listener.
pub trait Endpoints: Send + Sync + 'static {
    /// `/healthz`: `Err(why)` answers 503, and the kubelet restarts the process.
    fn liveness(&self) -> std::result::Result<(), String> {
        Ok(())
    }
    /// `/readyz`: `Ok(note)` answers 200 `ok` (with the note after it, when
    /// there is one), `Err(why not)` 503 with the reason.
    fn readiness(&self) -> std::result::Result<String, String>;
    /// `/metrics`: the Prometheus text exposition.
    fn render(&self) -> String;
}

/// Bind now (a taken port is a start-up error), serve in the background.
pub async fn serve(addr: SocketAddr, endpoints: Arc<dyn Endpoints>) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("listening on {addr}"), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io("local address", e))?;
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::debug!("accepting an http connection: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let endpoints = endpoints.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(req, endpoints.clone()));
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!("http connection: {e}");
                }
            });
        }
    });
    Ok(bound)
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    endpoints: Arc<dyn Endpoints>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match req.uri().path() {
        "/healthz" => match endpoints.liveness() {
            Ok(()) => (StatusCode::OK, "ok\n".to_string()),
            Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        },
        "/readyz" => match endpoints.readiness() {
            Ok(note) if note.is_empty() => (StatusCode::OK, "ok\n".to_string()),
            Ok(note) => (StatusCode::OK, format!("ok: {note}\n")),
            Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        },
        "/metrics" => (StatusCode::OK, endpoints.render()),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    Ok(response)
}

/// The Prometheus text exposition of a registry.
pub fn encode_registry(registry: &prometheus_client::registry::Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}
