//! Leader election on a `coordination.k8s.io/v1` Lease, hand-rolled (no client-go
//! leaderelection in Rust): the holder renews it, anyone may take it once expired.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;

use super::kube::Options;
use super::metrics::CoordinatorMetrics;
use crate::{Error, Result};

/// The Lease's name, in the coordinator's lease namespace.
pub const LEASE_NAME: &str = "podroute-coordinator";

pub struct LeaseLock {
    api: Api<Lease>,
    options: Options,
    leading_until: Option<Instant>,
    /// When to call the API server next.
    pub next_attempt: Instant,
}

impl LeaseLock {
    pub fn new(client: Client, options: &Options) -> LeaseLock {
        LeaseLock {
            api: Api::namespaced(client, &options.lease_namespace),
            options: options.clone(),
            leading_until: None,
            next_attempt: Instant::now(),
        }
    }

    /// Whether we lead now: acquire or renew the Lease when due; lead only
    /// while the last successful renewal is younger than the lease duration.
    pub async fn lead(&mut self, metrics: &CoordinatorMetrics) -> bool {
        if Instant::now() >= self.next_attempt {
            let attempt = Instant::now();
            let answer = self.acquire_or_renew().await;
            let o = &self.options;
            match answer {
                Ok(true) => {
                    metrics.lease_answered(true);
                    if self.leading_until.is_none_or(|t| t <= attempt) {
                        tracing::info!(identity = %o.identity, "leading: holding Lease {}/{LEASE_NAME}", o.lease_namespace);
                    }
                    self.leading_until = Some(attempt + o.lease_duration);
                    self.next_attempt = attempt + o.renew_every;
                }
                Ok(false) => {
                    metrics.lease_answered(false);
                    if self.leading_until.is_some_and(|t| t > attempt) {
                        tracing::warn!("lost the Lease to another coordinator");
                    }
                    self.leading_until = None;
                    self.next_attempt = attempt + o.renew_every.min(Duration::from_secs(2));
                }
                Err(e) => {
                    metrics.lease_failed();
                    tracing::warn!("Lease {}/{LEASE_NAME}: {e}", o.lease_namespace);
                    self.next_attempt = attempt + Duration::from_secs(1);
                }
            }
        }
        self.leading_until.is_some_and(|t| t > Instant::now())
    }

    /// On shutdown: a successor takes over at once.
    pub async fn release(&mut self) {
        if self.leading_until.is_some() {
            match self.give_up().await {
                Ok(()) => tracing::info!("released the Lease"),
                Err(e) => tracing::warn!("releasing the Lease: {e}"),
            }
        }
    }

    /// True when we hold the Lease after this call. Get, then create or
    /// replace with the resourceVersion read: a stale write gets 409.
    async fn acquire_or_renew(&mut self) -> Result<bool> {
        let now = MicroTime(Timestamp::now());
        let seconds = i32::try_from(self.options.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let current = self
            .api
            .get_opt(LEASE_NAME)
            .await
            .map_err(|e| Error::kube("reading the Lease", e))?;
        let exists = current.is_some();
        let mut lease = current.unwrap_or_else(|| Lease {
            metadata: ObjectMeta {
                name: Some(LEASE_NAME.into()),
                ..ObjectMeta::default()
            },
            spec: None,
        });
        let spec = lease.spec.take().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.options.identity;
        let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(renewed), Some(d)) => renewed.0.as_second() + i64::from(d) < now.0.as_second(),
            _ => true,
        };
        if !(ours || holder.is_empty() || expired) {
            return Ok(false);
        }
        if !ours && exists {
            tracing::info!(previous = %holder, "taking over the Lease");
        }
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.options.identity.clone()),
            lease_duration_seconds: Some(seconds),
            acquire_time: if ours {
                spec.acquire_time.clone()
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(
                spec.lease_transitions.unwrap_or(0) + i32::from(!ours && exists),
            ),
            ..spec
        });
        let params = PostParams::default();
        let written = if exists {
            self.api.replace(LEASE_NAME, &params, &lease).await
        } else {
            self.api.create(&params, &lease).await
        };
        match written {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) if exists => Err(Error::kube("renewing the Lease", e)),
            Err(e) => Err(Error::kube("creating the Lease", e)),
        }
    }

    /// Give the Lease up when we hold it.
    async fn give_up(&mut self) -> Result<()> {
        let Some(mut lease) = self
            .api
            .get_opt(LEASE_NAME)
            .await
            .map_err(|e| Error::kube("reading the Lease", e))?
        else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.options.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        self.api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
            .map_err(|e| Error::kube("releasing the Lease", e))?;
        Ok(())
    }
}
