//! Blocking RTM_GETLINK dumps on a socket of their own.

use std::io;

use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;
use rtnetlink::packet_core::{
    NetlinkBuffer, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

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
        let mut request =
            NetlinkMessage::from(RouteNetlinkMessage::GetLink(LinkMessage::default()));
        request.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        request.header.sequence_number = self.sequence;
        request.finalize();
        let mut buffer = vec![0; request.buffer_len()];
        request.serialize(&mut buffer);
        self.socket.send(&buffer, 0).map_err(fail)?;

        let mut links = Vec::new();
        loop {
            let (datagram, _) = self.socket.recv_from_full().map_err(fail)?;
            let mut rest = datagram.as_slice();
            while !rest.is_empty() {
                let length = NetlinkBuffer::new_checked(rest)
                    .map_err(|e| fail(io::Error::new(io::ErrorKind::InvalidData, e.to_string())))?
                    .length() as usize;
                let (this, next) = rest.split_at(length.next_multiple_of(4).min(rest.len()));
                rest = next;
                let message = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(this) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "netlink monitor: unparsable link skipped");
                        continue;
                    }
                };
                if message.header.sequence_number != self.sequence {
                    continue; // the tail of an earlier, abandoned dump
                }
                match message.payload {
                    NetlinkPayload::Done(_) => return Ok(links),
                    NetlinkPayload::Error(e) if e.code.is_some() => return Err(fail(e.to_io())),
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                        links.push(link)
                    }
                    _ => {}
                }
            }
        }
    }
}
