//! The agent's side of `podroute check`: a small UDP responder that answers
//! podroute probes, and nothing else, on every address of the node, so it
//! answers on the tunnel address and the node address alike, whichever
//! the plan of the moment routes through (a mode switch changes which).
//!
//! An answer leaves from the address the probe was sent to (IP_PKTINFO),
//! as large as the probe and with DF set, so the way back is checked at the
//! same MTU; when it does not fit, the answer is cut to its header and
//! marked short. It is never larger than the request, and at most
//! [`MAX_REPLIES_PER_SECOND`] leave per second: no use as an amplifier.

use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    SockaddrStorage,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::socket::{bind_both_families, set_df};
use super::wire;
use crate::{Error, Result};

/// Answers per second (both families together) beyond which requests are
/// dropped. A node of 5000 is probed by 4999 peers: 2 probes each per
/// minute by default, about 170 a second.
pub const MAX_REPLIES_PER_SECOND: u32 = 5000;
/// Largest probe: an IPv6 jumbo-free MTU is at most 65535.
const MAX_PACKET: usize = 65_536;

/// Bound sockets, one per family the host has.
pub struct Responder {
    sockets: Vec<UdpSocket>,
    port: u16,
}

impl Responder {
    /// Bind now (a taken port is a start-up error). Inside a tokio runtime.
    pub fn bind(port: u16) -> Result<Responder> {
        let std_sockets = bind_both_families(port, "the check responder")?;
        let port = std_sockets[0]
            .local_addr()
            .map_err(|e| Error::io("check responder address", e))?
            .port();
        let mut sockets = Vec::new();
        for sock in std_sockets {
            let v6 = sock.local_addr().is_ok_and(|a| a.is_ipv6());
            let pktinfo = if v6 {
                setsockopt(&sock, sockopt::Ipv6RecvPacketInfo, &true)
            } else {
                setsockopt(&sock, sockopt::Ipv4PacketInfo, &true)
            };
            pktinfo.map_err(|e| Error::io("setsockopt(IP_PKTINFO)", e.into()))?;
            set_df(&sock, true)?;
            sock.set_nonblocking(true)
                .map_err(|e| Error::io("check responder socket", e))?;
            sockets.push(
                UdpSocket::from_std(sock).map_err(|e| Error::io("check responder socket", e))?,
            );
        }
        Ok(Responder { sockets, port })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Answer until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let budget = std::sync::Arc::new(std::sync::Mutex::new(Budget::new()));
        let tasks: Vec<_> = self
            .sockets
            .into_iter()
            .map(|sock| tokio::spawn(answer_on(sock, budget.clone())))
            .collect();
        let _ = shutdown.wait_for(|stop| *stop).await;
        for task in tasks {
            task.abort();
        }
    }
}

/// At most [`MAX_REPLIES_PER_SECOND`] in each one-second window.
struct Budget {
    window: Instant,
    spent: u32,
}

impl Budget {
    fn new() -> Budget {
        Budget {
            window: Instant::now(),
            spent: 0,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.spent = 0;
        }
        self.spent += 1;
        self.spent <= MAX_REPLIES_PER_SECOND
    }
}

async fn answer_on(sock: UdpSocket, budget: std::sync::Arc<std::sync::Mutex<Budget>>) {
    let mut buf = vec![0u8; MAX_PACKET];
    let fd = sock.as_raw_fd();
    loop {
        let received = sock
            .async_io(Interest::READABLE, || receive(fd, &mut buf))
            .await;
        let (len, from, to) = match received {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("check responder: receiving: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let packet = &mut buf[..len];
        let Some(nonce) = wire::answer(packet) else {
            continue;
        };
        let allowed = budget
            .lock()
            .map(|mut b| b.take(Instant::now()))
            .unwrap_or(false);
        if !allowed {
            tracing::debug!(%from, "check responder: over budget, probe dropped");
            continue;
        }
        match send_from(fd, packet, from, to) {
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                let _ = send_from(fd, &wire::shorten(packet), from, to);
            }
            Err(e) => tracing::debug!(%from, nonce, "check responder: answering: {e}"),
            Ok(()) => {}
        }
    }
}

/// One datagram: its length, sender, and the local address it was sent to.
fn receive(fd: RawFd, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo);
    let msg = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_DONTWAIT)?;
    let mut to = None;
    for c in msg.cmsgs()? {
        match c {
            ControlMessageOwned::Ipv4PacketInfo(info) => {
                to = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    info.ipi_addr.s_addr,
                ))));
            }
            ControlMessageOwned::Ipv6PacketInfo(info) => {
                to = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
            }
            _ => {}
        }
    }
    let from = msg
        .address
        .and_then(|a: SockaddrStorage| {
            a.as_sockaddr_in()
                .map(|v4| SocketAddr::from(std::net::SocketAddrV4::from(*v4)))
                .or_else(|| {
                    a.as_sockaddr_in6()
                        .map(|v6| SocketAddr::from(std::net::SocketAddrV6::from(*v6)))
                })
        })
        .ok_or_else(|| std::io::Error::other("a datagram without a sender"))?;
    Ok((msg.bytes, from, to))
}

/// Send `packet` to `to_peer` from `local` (the address the probe came to).
fn send_from(
    fd: RawFd,
    packet: &[u8],
    to_peer: SocketAddr,
    local: Option<IpAddr>,
) -> std::io::Result<()> {
    let iov = [IoSlice::new(packet)];
    let flags = MsgFlags::MSG_DONTWAIT;
    let peer = SockaddrStorage::from(to_peer);
    match local {
        Some(IpAddr::V4(src)) => {
            let info = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(src).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            sendmsg(
                fd,
                &iov,
                &[ControlMessage::Ipv4PacketInfo(&info)],
                flags,
                Some(&peer),
            )?;
        }
        Some(IpAddr::V6(src)) => {
            let info = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: src.octets(),
                },
                ipi6_ifindex: 0,
            };
            sendmsg(
                fd,
                &iov,
                &[ControlMessage::Ipv6PacketInfo(&info)],
                flags,
                Some(&peer),
            )?;
        }
        None => {
            sendmsg(fd, &iov, &[], flags, Some(&peer))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_refills_each_second() {
        let mut b = Budget::new();
        let start = b.window;
        assert!((0..MAX_REPLIES_PER_SECOND).all(|_| b.take(start)));
        assert!(!b.take(start + Duration::from_millis(999)));
        assert!(b.take(start + Duration::from_secs(1)));
    }
}
