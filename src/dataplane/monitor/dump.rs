//! Blocking RTM_GETLINK dumps on a socket of their own.

use std::io;

use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;
use rtnetlink::packet_core::Parseable;
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::dataplane::dump::{dump_request, messages};
use crate::{Error, Result};

const DUMP_TIMEOUT_SECS: i64 = 5;

/// The socket belongs to the namespace it was opened in, whichever thread
/// later dumps on it.
pub(super) struct LinkDumper {
    socket: Socket,
    sequence: u32,
}

impl LinkDumper {
    pub(super) fn open() -> Result<LinkDumper> {
        let context = "opening a netlink socket for link dumps";
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| Error::io(context, e))?;
        socket.bind_auto().map_err(|e| Error::io(context, e))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| Error::io(context, e))?;
        // The kernel always answers a dump; never hang the agent if not.
        let timeout = TimeVal::new(DUMP_TIMEOUT_SECS, 0);
        setsockopt(&socket, sockopt::ReceiveTimeout, &timeout)
            .map_err(|e| Error::io(context, e.into()))?;
        Ok(LinkDumper {
            socket,
            sequence: 0,
        })
    }

    pub(super) fn dump(&mut self) -> Result<Vec<LinkMessage>> {
        let context = "dumping links for the netlink monitor";
        let fail = |e: io::Error| Error::io(context, e);
        self.sequence = self.sequence.wrapping_add(1);
        let request = RouteNetlinkMessage::GetLink(LinkMessage::default());
        let request = dump_request(request, self.sequence);
        self.socket.send(&request, 0).map_err(fail)?;

        let mut links = Vec::new();
        loop {
            let (datagram, _) = self.socket.recv_from_full().map_err(fail)?;
            let mut each = |kind, payload: &[u8]| {
                if kind != libc::RTM_NEWLINK {
                    return;
                }
                match LinkMessage::parse(payload) {
                    Ok(link) => links.push(link),
                    Err(e) => {
                        tracing::warn!(error = %e, "netlink monitor: unparsable link skipped")
                    }
                }
            };
            if let Some(done) = messages(&datagram, self.sequence, &mut each).map_err(fail)? {
                return done.map(|()| links).map_err(fail);
            }
        }
    }
}
