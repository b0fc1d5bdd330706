//! Netlink notifications on what we own, for the agent's reconcile loop: a
//! route, neighbour, FDB entry, address or device of ours that someone else
//! deleted or changed is reported at once, and so is a lost notification
//! (ENOBUFS on a full socket), after which only a full resync is safe.
//!
//! Devices are known by name: an index -> link map is filled by a link dump
//! at start (after subscribing, so no link is missing) and kept current by
//! link notifications. After an overrun the monitor dumps again, off the
//! runtime, before it reports [`KernelEvent::Overrun`]. (netlink-proto 0.14
//! turns `ENOBUFS` into a synthetic `NLMSG_OVERRUN` with sequence number 0,
//! which arrives on the unsolicited channel; the connection keeps reading.)
//!
//! The kernel's caveat: IPv4 removes routes whose device went down (or lost
//! its last address) without an RTM_DELROUTE. The link event covers our
//! tunnel devices; for native routes via the uplink, [`Monitor::watch_uplink`].

mod dump;
mod filter;

use std::io;

use futures::channel::mpsc::UnboundedReceiver;
use futures::StreamExt;
use nix::sys::socket::{setsockopt, sockopt};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{AsyncSocket, Socket, SocketAddr};
use rtnetlink::MulticastGroup;
use tokio::task::JoinHandle;

use crate::model::Config;
use crate::plan::Touched;
use crate::{Error, Result};
use dump::LinkDumper;
use filter::Filter;

/// Receive buffer asked for by [`Monitor::start`]: room for a burst of some
/// ten thousand notifications (the kernel doubles it for bookkeeping).
pub const RECEIVE_BUFFER: usize = 4 << 20;

/// Why the agent should look at the kernel again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelEvent {
    /// Something of ours changed (deleted or modified): a short description
    /// for the log, e.g. "route 10.244.2.0/24 (proto 91) deleted".
    Changed(String),
    /// One object of ours changed, named whole: it can be repaired alone.
    Object { what: String, touched: Touched },
    /// The kernel dropped notifications (ENOBUFS): only a full resync is safe.
    Overrun,
}

type Messages = UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>;

/// A subscription to the kernel's notifications on what we own, in the
/// network namespace of the thread that called [`Monitor::start`].
pub struct Monitor {
    messages: Messages,
    filter: Filter,
    /// A plain blocking socket for link dumps, opened in the monitor's
    /// namespace; taken while `dumping` runs it off the runtime.
    dumper: Option<LinkDumper>,
    /// Kept across calls, so a dropped `next` loses no overrun.
    dumping: Option<JoinHandle<(LinkDumper, Result<Vec<LinkMessage>>)>>,
    connection: JoinHandle<()>,
}

impl Monitor {
    /// Subscribe in the calling thread's network namespace (must run inside
    /// a tokio runtime, like `Dataplane::connect`). Start the monitor before
    /// the agent's first full observe: a change made between the two is then
    /// either seen by that observe or reported here.
    pub fn start(config: &Config) -> Result<Monitor> {
        Monitor::start_with_receive_buffer(config, RECEIVE_BUFFER)
    }

    /// [`Monitor::start`] with a chosen receive buffer (bytes, before the
    /// kernel doubles it). Tests use a tiny one to provoke an overrun.
    pub fn start_with_receive_buffer(config: &Config, bytes: usize) -> Result<Monitor> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
            let e = io::Error::other(format!("not inside a tokio runtime: {e}"));
            Error::io("starting the netlink monitor", e)
        })?;
        // Subscribe first, then dump: every link is in the dump or in a
        // later notification. (A change of our device in that instant is
        // already in the dump and goes unreported; the agent's first full
        // observe, which comes after `start`, sees it.)
        let (mut connection, _handle, messages) = rtnetlink::new_multicast_connection(&[
            MulticastGroup::Ipv4Route,
            MulticastGroup::Ipv6Route,
            MulticastGroup::Link,
            MulticastGroup::Neigh,
            MulticastGroup::Ipv4Ifaddr,
            MulticastGroup::Ipv6Ifaddr,
        ])
        .map_err(|e| Error::io("subscribing to netlink notifications", e))?;
        set_receive_buffer(connection.socket_mut().socket_mut(), bytes)?;

        let mut dumper = LinkDumper::open()?;
        let mut filter = Filter::new(config);
        filter.reset_links(&dumper.dump()?);

        // `_handle` is dropped: the monitor sends no requests on this socket.
        let connection = runtime.spawn(connection);
        Ok(Monitor {
            messages,
            filter,
            dumper: Some(dumper),
            dumping: None,
            connection,
        })
    }

    /// Also report the uplink going down or up, a change of its MTU and
    /// addresses added or deleted on it: IPv4 drops routes via a device that
    /// goes down without telling anyone, so native routes need this.
    /// `None` stops watching.
    pub fn watch_uplink(&mut self, name: Option<&str>) {
        self.filter.uplink = name.map(str::to_string);
    }

    /// Next event; None when the socket is gone. Cancel-safe: an event is
    /// never lost when the future is dropped (fine in `tokio::select!`).
    pub async fn next(&mut self) -> Option<KernelEvent> {
        loop {
            if let Some(dumping) = &mut self.dumping {
                let done = dumping.await;
                self.dumping = None;
                let (dumper, links) = done.ok()?; // the dump panicked, or the runtime shuts down
                self.dumper = Some(dumper);
                match links {
                    Ok(links) => self.filter.reset_links(&links),
                    Err(e) => tracing::warn!(error = %e, "netlink monitor: link dump"),
                }
                return Some(KernelEvent::Overrun);
            }
            let (message, _) = self.messages.next().await?;
            match message.payload {
                NetlinkPayload::InnerMessage(inner) => {
                    if Filter::is_fdb_echo_without_destination(&inner) {
                        tracing::debug!(
                            "netlink monitor: FDB notice without destination, a repeat"
                        );
                        continue;
                    }
                    if let Some(what) = self.filter.event(&inner) {
                        tracing::debug!(%what, "netlink monitor");
                        return Some(match self.filter.touched(&inner) {
                            Some(touched) => KernelEvent::Object { what, touched },
                            None => KernelEvent::Changed(what),
                        });
                    }
                }
                NetlinkPayload::Overrun(_) => {
                    tracing::warn!("netlink monitor: the kernel dropped notifications (ENOBUFS)");
                    // Link notifications were lost too: dump again before
                    // the agent's resync, so later events compare against
                    // the current state. The dump blocks (up to its timeout),
                    // so it runs off the runtime; the loop awaits it.
                    let mut dumper = self.dumper.take()?;
                    self.dumping = Some(tokio::task::spawn_blocking(move || {
                        let links = dumper.dump();
                        (dumper, links)
                    }));
                }
                other => tracing::debug!(?other, "netlink monitor: ignored message"),
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        // The connection would otherwise linger until the next notification.
        self.connection.abort();
    }
}

/// SO_RCVBUFFORCE (CAP_NET_ADMIN, may exceed rmem_max), else SO_RCVBUF.
fn set_receive_buffer(socket: &Socket, bytes: usize) -> Result<()> {
    setsockopt(socket, sockopt::RcvBufForce, &bytes)
        .or_else(|_| setsockopt(socket, sockopt::RcvBuf, &bytes))
        .map_err(|e| Error::io("setting the netlink monitor's receive buffer", e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_outside_a_runtime_is_an_error_and_next_is_send() {
        let err = Monitor::start(&Config::default())
            .err()
            .expect("no runtime");
        assert!(err.to_string().contains("tokio runtime"), "{err}");
        fn send<T: Send>(_: &T) {}
        fn check(monitor: &mut Monitor) {
            send(&monitor.next());
        }
        let _ = check;
    }
}
