//! UDP socket helpers shared by the check and the lab's probes.

use std::net::{IpAddr, Ipv6Addr, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};

use crate::{Error, Result};

/// IPv4 + UDP header bytes: payload_len + OVERHEAD = IP packet size.
pub const OVERHEAD: usize = 28;
/// IPv6 + UDP header bytes (40 + 8): IPv6's [`OVERHEAD`].
pub const OVERHEAD_V6: usize = 48;

/// UDP sockets on `0.0.0.0:port` and, where the host has IPv6, on
/// `[::]:port`: one port for both families (port 0: a free one, that of the
/// IPv4 socket, which comes first). `what` names the sockets in errors.
pub fn bind_both_families(port: u16, what: &str) -> Result<Vec<UdpSocket>> {
    let v4 = UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, port))
        .map_err(|e| Error::io(format!("{what}: binding UDP 0.0.0.0:{port}"), e))?;
    let port = v4
        .local_addr()
        .map_err(|e| Error::io(format!("{what}: socket address"), e))?
        .port();
    let mut sockets = vec![v4];
    match bind_v6_only(port) {
        Ok(v6) => sockets.push(v6),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL)
            ) =>
        {
            tracing::debug!(what, error = %e, "IPv4 only: no IPv6 here");
        }
        Err(e) => return Err(Error::io(format!("{what}: binding UDP [::]:{port}"), e)),
    }
    Ok(sockets)
}

/// A UDP socket on `[::]:port` for IPv6 alone: with the default
/// `bindv6only=0` it would also claim IPv4's port, which the IPv4 socket holds.
fn bind_v6_only(port: u16) -> std::io::Result<UdpSocket> {
    use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn6};
    let fd: OwnedFd = socket::socket(
        AddressFamily::Inet6,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    let addr = SockaddrIn6::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0));
    socket::bind(fd.as_raw_fd(), &addr)?;
    Ok(UdpSocket::from(fd))
}

/// DF on (IP_PMTUDISC_DO: packets over the path MTU fail with EMSGSIZE)
/// or off, by the socket's family.
pub fn set_df(sock: &UdpSocket, df: bool) -> Result<()> {
    let v6 = sock
        .local_addr()
        .map_err(|e| Error::io("reading a UDP socket's address", e))?
        .is_ipv6();
    let (level, name, option, value) = match (v6, df) {
        (false, true) => (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            "IP_MTU_DISCOVER",
            libc::IP_PMTUDISC_DO,
        ),
        (false, false) => (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            "IP_MTU_DISCOVER",
            libc::IP_PMTUDISC_DONT,
        ),
        (true, true) => (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            "IPV6_MTU_DISCOVER",
            libc::IPV6_PMTUDISC_DO,
        ),
        (true, false) => (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            "IPV6_MTU_DISCOVER",
            libc::IPV6_PMTUDISC_DONT,
        ),
    };
    // SAFETY: valid fd owned by `sock`; pointer and length describe a c_int.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(Error::io(
            format!("setsockopt({option})"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// [`OVERHEAD`] or [`OVERHEAD_V6`], by the family of `ip`.
pub fn overhead(ip: IpAddr) -> usize {
    match ip {
        IpAddr::V4(_) => OVERHEAD,
        IpAddr::V6(_) => OVERHEAD_V6,
    }
}
