//! Probing one peer: a small probe and a full-size one with DF, each sent
//! up to [`ATTEMPTS`] times from a connected UDP socket, so the kernel
//! reports what it learns on the way: a port nobody listens on (the peer's
//! ICMP), a packet too big for the path, a route it does not have.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::UdpSocket;

use super::socket::{overhead, set_df};
use super::wire::{self, Kind, HEADER_LEN};
use crate::plan::check::ProbeTarget;

/// Sends of each probe before it counts as lost.
pub const ATTEMPTS: u32 = 3;

/// Why a probe got no answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "detail")]
pub enum Lost {
    /// Nothing came back in time.
    Timeout,
    /// The peer's kernel answered "port unreachable": nothing listens.
    Refused,
    /// Too big for the path: the kernel's path MTU, when it knows one.
    TooBig(Option<u32>),
    /// The answer came back cut: too big for the way back.
    ShortReply,
    /// The source address is not on this node.
    NoSource(String),
    /// The kernel refused to send (no route, unreachable network, ...).
    Send(String),
}

/// What one peer's two probes got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probed {
    /// The small probe's round trip.
    pub small: Result<Duration, Lost>,
    /// The full-size DF probe's round trip.
    pub full: Result<Duration, Lost>,
}

/// Probe `target` on `port`, giving each attempt `timeout / ATTEMPTS`.
pub async fn probe(target: &ProbeTarget, port: u16, timeout: Duration) -> Probed {
    match Probe::open(target, port) {
        Ok(p) => p.run(target, timeout).await,
        Err(lost) => Probed {
            small: Err(lost.clone()),
            full: Err(lost),
        },
    }
}

struct Probe {
    sock: UdpSocket,
    small_nonce: u64,
    full_nonce: u64,
}

/// Nonces differ between probes and processes: a late answer to an earlier
/// probe is never taken for this one's.
fn next_nonce() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = u64::from(std::process::id()) << 40;
    seed ^ NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Probe {
    fn open(target: &ProbeTarget, port: u16) -> Result<Probe, Lost> {
        let any = match target.dst {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let src = target.src.unwrap_or(any);
        let sock = StdUdpSocket::bind((src, 0)).map_err(|e| match e.raw_os_error() {
            Some(libc::EADDRNOTAVAIL) => Lost::NoSource(format!("{src} is not on this node")),
            _ => Lost::Send(format!("binding {src}: {e}")),
        })?;
        set_df(&sock, true).map_err(|e| Lost::Send(e.to_string()))?;
        sock.connect(SocketAddr::new(target.dst, port))
            .map_err(|e| Lost::Send(format!("connecting to {}: {e}", target.dst)))?;
        sock.set_nonblocking(true)
            .map_err(|e| Lost::Send(e.to_string()))?;
        let sock = UdpSocket::from_std(sock).map_err(|e| Lost::Send(e.to_string()))?;
        Ok(Probe {
            sock,
            small_nonce: next_nonce(),
            full_nonce: next_nonce(),
        })
    }

    async fn run(self, target: &ProbeTarget, timeout: Duration) -> Probed {
        let full_len = (target.mtu as usize).saturating_sub(overhead(target.dst));
        let small = wire::encode(Kind::Request, self.small_nonce, HEADER_LEN);
        let full = wire::encode(Kind::Request, self.full_nonce, full_len);
        let per_attempt = timeout / ATTEMPTS;
        let mut result = Probed {
            small: Err(Lost::Timeout),
            full: Err(Lost::Timeout),
        };
        let mut buf = vec![0u8; full_len.max(HEADER_LEN) + 64];
        for _ in 0..ATTEMPTS {
            let sent = Instant::now();
            for (packet, slot) in [(&small, &mut result.small), (&full, &mut result.full)] {
                if matches!(slot, Err(Lost::Timeout)) {
                    if let Err(e) = self.sock.send(packet).await {
                        *slot = Err(self.send_error(&e));
                    }
                }
            }
            let deadline = tokio::time::Instant::from_std(sent + per_attempt);
            while waiting(&result) {
                let received = tokio::time::timeout_at(deadline, self.sock.recv(&mut buf)).await;
                match received {
                    Err(_) => break,
                    Ok(Ok(len)) => self.take(&buf[..len], sent.elapsed(), &mut result),
                    Ok(Err(e)) => {
                        let lost = self.send_error(&e);
                        for slot in [&mut result.small, &mut result.full] {
                            if matches!(slot, Err(Lost::Timeout)) {
                                *slot = Err(lost.clone());
                            }
                        }
                    }
                }
            }
            if !waiting(&result) {
                break;
            }
        }
        result
    }

    fn take(&self, packet: &[u8], rtt: Duration, result: &mut Probed) {
        let Some((kind, nonce)) = wire::decode(packet) else {
            return;
        };
        let slot = match nonce {
            n if n == self.small_nonce => &mut result.small,
            n if n == self.full_nonce => &mut result.full,
            _ => return,
        };
        *slot = match kind {
            Kind::Reply => Ok(rtt),
            Kind::ReplyShort => Err(Lost::ShortReply),
            Kind::Request => return,
        };
    }

    fn send_error(&self, e: &std::io::Error) -> Lost {
        match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => Lost::Refused,
            Some(libc::EMSGSIZE) => Lost::TooBig(path_mtu(&self.sock)),
            _ => Lost::Send(e.to_string()),
        }
    }
}

fn waiting(p: &Probed) -> bool {
    matches!(p.small, Err(Lost::Timeout)) || matches!(p.full, Err(Lost::Timeout))
}

/// The kernel's path MTU of a connected socket.
fn path_mtu(sock: &UdpSocket) -> Option<u32> {
    use nix::sys::socket::{getsockopt, sockopt};
    let mtu = match sock.local_addr().ok()? {
        SocketAddr::V4(_) => getsockopt(sock, sockopt::IpMtu).ok()?,
        SocketAddr::V6(_) => return None,
    };
    u32::try_from(mtu).ok()
}
