//! Pod-to-pod traffic checks over UDP, without `ping`: an echo responder in a
//! pod namespace and a [`Prober`] that sends sequence-numbered probes from
//! another one and counts what comes back.
//!
//! A socket stays in the namespace it was created in, so the prober creates
//! its socket on a thread inside the pod namespace and then uses it from the
//! caller's thread: one socket per sender, any number of probes.
//!
//! A prober speaks one family, that of the address it is made for; the echo
//! responder answers both (one socket per family, on the same port).

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::netns::run_in_netns;
use crate::check::socket::{bind_both_families, set_df};
pub use crate::check::socket::{overhead, OVERHEAD, OVERHEAD_V6};
use crate::{Error, Result};

/// Probe payload header: magic (4 bytes) + sequence number (8 bytes).
pub const HEADER_LEN: usize = 12;
const MAGIC: [u8; 4] = *b"prb1";
const POLL: Duration = Duration::from_millis(50);

/// A UDP echo responder bound to 0.0.0.0:port, and to [::]:port where the
/// namespace has IPv6, inside a namespace, one thread per socket. Stops on
/// [`EchoServer::stop`] or drop.
#[derive(Debug)]
pub struct EchoServer {
    port: u16,
    stop: Arc<AtomicBool>,
    echoed: Arc<AtomicU64>,
    threads: Vec<JoinHandle<Result<()>>>,
}

impl EchoServer {
    /// Starts the responder; returns once the socket is bound. Port 0 picks a
    /// free port (see [`EchoServer::port`]). Replies may be fragmented (no DF),
    /// so a round trip measures the forward path.
    pub fn start(netns: &str, port: u16) -> Result<EchoServer> {
        let stop = Arc::new(AtomicBool::new(false));
        let echoed = Arc::new(AtomicU64::new(0));
        let sockets = run_in_netns(netns, || bind_echo(netns, port))??;
        let port = sockets[0]
            .local_addr()
            .map_err(|e| Error::io(format!("netns {netns}: echo socket address"), e))?
            .port();
        let mut server = EchoServer {
            port,
            stop,
            echoed,
            threads: Vec::new(),
        };
        for sock in sockets {
            let (name, stop, echoed) = (
                netns.to_string(),
                server.stop.clone(),
                server.echoed.clone(),
            );
            let thread = std::thread::Builder::new()
                .name(format!("echo-{netns}"))
                .spawn(move || echo_loop(&name, &sock, &stop, &echoed))
                .map_err(|e| Error::io(format!("spawning echo thread in {netns}"), e))?;
            server.threads.push(thread);
        }
        Ok(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Packets echoed so far.
    pub fn echoed(&self) -> u64 {
        self.echoed.load(Ordering::Relaxed)
    }

    /// Stops the thread and returns the number of packets echoed.
    pub fn stop(mut self) -> Result<u64> {
        self.shutdown()?;
        Ok(self.echoed())
    }

    fn shutdown(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        let mut result = Ok(());
        for thread in self.threads.drain(..) {
            let joined = thread.join().unwrap_or_else(|_| {
                Err(Error::Netns {
                    name: format!("echo server on port {}", self.port),
                    reason: "echo thread panicked".to_string(),
                })
            });
            result = result.and(joined);
        }
        result
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!(error = %e, "stopping echo server");
        }
    }
}

/// The echo sockets, made on a thread inside `netns`: IPv4 first (it picks
/// the port when `port` is 0), then IPv6 on the same port unless the
/// namespace has no IPv6.
fn bind_echo(netns: &str, port: u16) -> Result<Vec<UdpSocket>> {
    let sockets = bind_both_families(port, &format!("netns {netns}: echo"))?;
    for sock in &sockets {
        sock.set_read_timeout(Some(POLL))
            .map_err(|e| Error::io("setting echo read timeout", e))?;
        set_df(sock, false)?;
    }
    Ok(sockets)
}

fn echo_loop(netns: &str, sock: &UdpSocket, stop: &AtomicBool, echoed: &AtomicU64) -> Result<()> {
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let (len, from) = match sock.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(format!("netns {netns}: echo recv"), e)),
        };
        match sock.send_to(&buf[..len], from) {
            Ok(_) => {
                echoed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(netns, %from, error = %e, "echo reply not sent"),
        }
    }
    Ok(())
}

/// Counters of a [`Prober`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbeStats {
    /// Probes attempted (including those the kernel refused to send).
    pub sent: u64,
    /// Distinct probes whose echo came back.
    pub received: u64,
}

impl ProbeStats {
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.received)
    }
}

/// A UDP sender with one socket in a (pod) namespace. Each probe carries a
/// sequence number; an echo counts once, only from the address it was sent to.
#[derive(Debug)]
pub struct Prober {
    sock: UdpSocket,
    netns: String,
    next_seq: u64,
    in_flight: HashMap<u64, SocketAddr>,
    stats: ProbeStats,
    buf: Vec<u8>,
}

impl Prober {
    /// Opens an IPv4 socket inside `netns`; `df` sets IP_MTU_DISCOVER=IP_PMTUDISC_DO
    /// (never fragment), otherwise IP_PMTUDISC_DONT.
    pub fn new(netns: &str, df: bool) -> Result<Prober> {
        Prober::for_family(netns, IpAddr::V4(Ipv4Addr::UNSPECIFIED), df)
    }

    /// Opens a socket of `family`'s family (any address of it) inside
    /// `netns`. For IPv6, `df` sets IPV6_MTU_DISCOVER=IPV6_PMTUDISC_DO: IPv6
    /// has no DF bit, but with it the kernel never fragments the probe.
    pub fn for_family(netns: &str, family: IpAddr, df: bool) -> Result<Prober> {
        let any = match family {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let sock = run_in_netns(netns, || UdpSocket::bind((any, 0)))?
            .map_err(|e| Error::io(format!("netns {netns}: binding a UDP socket"), e))?;
        set_df(&sock, df)?;
        Ok(Prober {
            sock,
            netns: netns.to_string(),
            next_seq: 0,
            in_flight: HashMap::new(),
            stats: ProbeStats::default(),
            buf: vec![0u8; 65536],
        })
    }

    pub fn set_df(&self, df: bool) -> Result<()> {
        set_df(&self.sock, df)
    }

    pub fn stats(&self) -> ProbeStats {
        self.stats
    }

    /// Sequence numbers still waiting for their echo.
    pub fn pending(&self) -> impl Iterator<Item = u64> + '_ {
        self.in_flight.keys().copied()
    }

    /// Whether probe `seq` was sent and its echo has not come back yet.
    pub fn is_pending(&self, seq: u64) -> bool {
        self.in_flight.contains_key(&seq)
    }

    /// Sends one probe of `payload_len` bytes (at least [`HEADER_LEN`]).
    /// Returns its sequence number, or None when the kernel refused it
    /// (EMSGSIZE with DF, no route): counted as sent and lost.
    pub fn send(&mut self, to: impl Into<SocketAddr>, payload_len: usize) -> Result<Option<u64>> {
        let to = to.into();
        if payload_len < HEADER_LEN {
            return Err(Error::invalid(
                "payload_len",
                format!("must be at least {HEADER_LEN}"),
            ));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.stats.sent += 1;
        let payload = probe_payload(seq, payload_len);
        match self.sock.send_to(&payload, to) {
            Ok(_) => {
                self.in_flight.insert(seq, to);
                Ok(Some(seq))
            }
            Err(e) if not_delivered(&e) => {
                tracing::debug!(netns = %self.netns, %to, payload_len, error = %e, "probe not sent");
                Ok(None)
            }
            Err(e) => Err(Error::io(
                format!("netns {}: sending to {to}", self.netns),
                e,
            )),
        }
    }

    /// Collects echoes until `deadline`, or until `until_seq` came back.
    /// Returns whether `until_seq` (if any) was received.
    pub fn recv_until(&mut self, deadline: Instant, until_seq: Option<u64>) -> Result<bool> {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            self.sock
                .set_read_timeout(Some(deadline - now))
                .map_err(|e| Error::io("setting probe read timeout", e))?;
            let (len, from) = match self.sock.recv_from(&mut self.buf) {
                Ok(got) => got,
                Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if not_delivered(&e) => continue,
                Err(e) => return Err(Error::io(format!("netns {}: probe recv", self.netns), e)),
            };
            let Some(seq) = parse_seq(&self.buf[..len]) else {
                continue;
            };
            let expected = self.in_flight.get(&seq).copied();
            if expected.is_some_and(|to| to == from) {
                self.in_flight.remove(&seq);
                self.stats.received += 1;
                if until_seq == Some(seq) {
                    return Ok(true);
                }
            }
        }
    }

    /// One probe and its echo: true when it came back within `timeout`.
    pub fn roundtrip(
        &mut self,
        to: impl Into<SocketAddr>,
        payload_len: usize,
        timeout: Duration,
    ) -> Result<bool> {
        match self.send(to, payload_len)? {
            Some(seq) => self.recv_until(Instant::now() + timeout, Some(seq)),
            None => Ok(false),
        }
    }

    /// A steady stream: one probe every `interval` for `duration`, then waits
    /// `grace` for late echoes. Returns the counters of this stream only.
    pub fn stream(
        &mut self,
        to: impl Into<SocketAddr>,
        payload_len: usize,
        interval: Duration,
        duration: Duration,
        grace: Duration,
    ) -> Result<ProbeStats> {
        let to = to.into();
        let before = self.stats;
        let start = Instant::now();
        let mut next = start;
        while next < start + duration {
            self.send(to, payload_len)?;
            next += interval;
            self.recv_until(next, None)?;
        }
        self.recv_until(Instant::now() + grace, None)?;
        self.in_flight.clear();
        Ok(ProbeStats {
            sent: self.stats.sent - before.sent,
            received: self.stats.received - before.received,
        })
    }
}

/// One round trip from a fresh socket in `from_netns` to `to_ip:port`, in
/// `to_ip`'s family. For many probes, keep a [`Prober`] instead.
pub fn udp_roundtrip(
    from_netns: &str,
    to_ip: impl Into<IpAddr>,
    port: u16,
    payload_len: usize,
    df: bool,
    timeout: Duration,
) -> Result<bool> {
    let to_ip = to_ip.into();
    Prober::for_family(from_netns, to_ip, df)?.roundtrip(
        SocketAddr::new(to_ip, port),
        payload_len,
        timeout,
    )
}

fn probe_payload(seq: u64, len: usize) -> Vec<u8> {
    let mut payload = vec![0u8; len];
    payload[..4].copy_from_slice(&MAGIC);
    payload[4..HEADER_LEN].copy_from_slice(&seq.to_be_bytes());
    payload
}

fn parse_seq(payload: &[u8]) -> Option<u64> {
    if payload.len() < HEADER_LEN || payload[..4] != MAGIC {
        return None;
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&payload[4..HEADER_LEN]);
    Some(u64::from_be_bytes(seq))
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Errors that mean "this packet did not get through", not a broken prober.
fn not_delivered(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMSGSIZE | libc::EHOSTUNREACH | libc::ENETUNREACH | libc::ECONNREFUSED)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_roundtrips_sequence() {
        let p = probe_payload(42, 100);
        assert_eq!(p.len(), 100);
        assert_eq!(parse_seq(&p), Some(42));
        assert_eq!(parse_seq(&p[..8]), None);
        assert_eq!(parse_seq(b"xxxx00000000"), None);
    }

    #[test]
    fn lost_is_sent_minus_received() {
        let s = ProbeStats {
            sent: 10,
            received: 7,
        };
        assert_eq!(s.lost(), 3);
    }
}
