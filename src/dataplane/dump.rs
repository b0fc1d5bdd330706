//! Dumps of the large tables (routes, neighbours, FDB) read straight off a
//! netlink socket of our own. rtnetlink parses every attribute of every
//! message into owned values and queues the whole dump before the first
//! message reaches us; here each message is handed over in place and its
//! reader parses only the attributes it keeps. At 10k VXLAN peers that is
//! 30k messages per resync, and most of its userspace cost.

use std::sync::atomic::{AtomicU32, Ordering};

use rtnetlink::packet_core::{
    NetlinkBuffer, NetlinkMessage, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLM_F_DUMP, NLM_F_REQUEST,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{
    protocols::NETLINK_ROUTE, AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket,
};

use crate::{Error, Result};

/// The kernel sizes each datagram of a dump after the largest buffer the
/// reader has offered (up to 32 KiB). Small datagrams are costly: the
/// VXLAN FDB dump walks the device's table from the start for each one.
const RECEIVE_BUFFER: usize = 64 * 1024;

pub struct DumpSocket {
    socket: TokioSocket,
    sequence: AtomicU32,
    /// The sequence number of a dump whose reader went away before its end
    /// (0: none). The kernel runs one dump per socket at a time (a second
    /// is refused with EBUSY), so the next dump first drains that one.
    unfinished: AtomicU32,
}

impl DumpSocket {
    /// A strict-check socket in the calling thread's network namespace.
    /// Must be called inside a tokio runtime.
    pub fn open() -> Result<DumpSocket> {
        let failed = |e| Error::io("opening a netlink socket for dumps", e);
        let mut socket = TokioSocket::new(NETLINK_ROUTE).map_err(failed)?;
        socket.socket_mut().bind_auto().map_err(failed)?;
        let raw = socket.socket_ref();
        raw.set_netlink_get_strict_chk(true).map_err(failed)?;
        raw.connect(&SocketAddr::new(0, 0)).map_err(failed)?;
        Ok(DumpSocket {
            socket,
            sequence: AtomicU32::new(0),
            unfinished: AtomicU32::new(0),
        })
    }

    /// Send `request` as a dump and hand the payload of each message of the
    /// reply to `each`, in the kernel's order.
    pub async fn dump(
        &self,
        request: RouteNetlinkMessage,
        what: &str,
        mut each: impl FnMut(u16, &[u8]),
    ) -> Result<()> {
        let failed = |e: std::io::Error| Error::io(format!("dumping {what}"), e);
        let unfinished = self.unfinished.swap(0, Ordering::Relaxed);
        if unfinished != 0 {
            self.drain(unfinished);
        }
        let sequence = self
            .sequence
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1);
        let bytes = dump_request(request, sequence);
        // Set first: a pass cancelled anywhere from here on leaves the
        // dump to be drained before the next one.
        self.unfinished.store(sequence, Ordering::Relaxed);
        self.socket.send(&bytes).await.map_err(failed)?;
        self.read_to_end(sequence, &mut each)
            .await
            .map_err(failed)?;
        self.unfinished.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Read what is left of an abandoned dump, without waiting: while a dump
    /// runs the kernel queues its next datagram as each one is read, so
    /// "nothing to read" means it is over (or was never sent).
    fn drain(&self, sequence: u32) {
        let mut chunk = Vec::with_capacity(RECEIVE_BUFFER);
        loop {
            chunk.clear();
            let read = self
                .socket
                .socket_ref()
                .recv(&mut chunk, libc::MSG_DONTWAIT);
            if read.is_err() || !matches!(messages(&chunk, sequence, &mut |_, _| {}), Ok(None)) {
                return;
            }
        }
    }

    async fn read_to_end(
        &self,
        sequence: u32,
        mut each: impl FnMut(u16, &[u8]),
    ) -> std::io::Result<()> {
        let mut chunk = Vec::with_capacity(RECEIVE_BUFFER);
        loop {
            chunk.clear();
            self.socket.recv(&mut chunk).await?;
            if let Some(done) = messages(&chunk, sequence, &mut each)? {
                return done;
            }
        }
    }
}

/// `request` as a dump request numbered `sequence`, ready to send.
pub(super) fn dump_request(request: RouteNetlinkMessage, sequence: u32) -> Vec<u8> {
    let mut message = NetlinkMessage::from(request);
    message.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    message.header.sequence_number = sequence;
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

/// Walk one datagram of a dump: each message of `sequence` goes to `each`
/// as (type, payload); messages of other sequence numbers (the tail of an
/// abandoned dump) are skipped. `Some(result)` once the dump ended (done
/// or refused).
pub(super) fn messages(
    mut chunk: &[u8],
    sequence: u32,
    each: &mut impl FnMut(u16, &[u8]),
) -> std::io::Result<Option<std::io::Result<()>>> {
    let malformed = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
    while !chunk.is_empty() {
        let message = NetlinkBuffer::new_checked(chunk).map_err(|e| malformed(e.to_string()))?;
        let length = message.length() as usize;
        if message.sequence_number() == sequence {
            let payload = message.payload();
            match message.message_type() {
                NLMSG_DONE => return Ok(Some(status(payload).or_else(empty_table))),
                NLMSG_ERROR => return Ok(Some(status(payload))),
                NLMSG_NOOP => {}
                kind => each(kind, payload),
            }
        }
        // Messages are aligned to 4 bytes; the last one may end unpadded.
        chunk = chunk.get(length.next_multiple_of(4)..).unwrap_or_default();
    }
    Ok(None)
}

/// A strict dump of a routing table that was never created ends with
/// ENOENT in its done message: an empty table, not a failed read.
fn empty_table(e: std::io::Error) -> std::io::Result<()> {
    match e.raw_os_error() {
        Some(libc::ENOENT) => Ok(()),
        _ => Err(e),
    }
}

/// The error code that opens a done or error message: 0 or -errno.
fn status(payload: &[u8]) -> std::io::Result<()> {
    let code = payload
        .first_chunk::<4>()
        .map_or(0, |bytes| i32::from_ne_bytes(*bytes));
    match code {
        0 => Ok(()),
        code => Err(std::io::Error::from_raw_os_error(code.saturating_neg())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u16, sequence: u32, payload: &[u8]) -> Vec<u8> {
        let length = 16 + payload.len();
        let mut out = Vec::new();
        out.extend((length as u32).to_ne_bytes());
        out.extend(kind.to_ne_bytes());
        out.extend(0u16.to_ne_bytes());
        out.extend(sequence.to_ne_bytes());
        out.extend(0u32.to_ne_bytes());
        out.extend(payload);
        out.resize(length.next_multiple_of(4), 0);
        out
    }

    #[test]
    fn hands_over_the_messages_of_its_dump_until_done() {
        let mut chunk = frame(24, 7, &[1, 2, 3]);
        chunk.extend(frame(24, 6, &[9]));
        chunk.extend(frame(28, 7, &[4, 5, 6, 7]));
        let mut seen = Vec::new();
        let more = messages(&chunk, 7, &mut |kind, p| seen.push((kind, p.to_vec()))).unwrap();
        assert!(more.is_none());
        assert_eq!(seen, [(24, vec![1, 2, 3]), (28, vec![4, 5, 6, 7])]);

        let done = frame(NLMSG_DONE, 7, &0i32.to_ne_bytes());
        let end = messages(&done, 7, &mut |_, _| panic!("nothing after done")).unwrap();
        assert!(matches!(end, Some(Ok(()))));
    }

    #[test]
    fn a_dump_of_a_table_never_created_is_empty_and_other_done_errors_fail() {
        let missing = frame(NLMSG_DONE, 4, &(-libc::ENOENT).to_ne_bytes());
        let end = messages(&missing, 4, &mut |_, _| {}).unwrap();
        assert!(matches!(end, Some(Ok(()))));
        let interrupted = frame(NLMSG_DONE, 4, &(-libc::EINTR).to_ne_bytes());
        let end = messages(&interrupted, 4, &mut |_, _| {}).unwrap();
        assert_eq!(end.unwrap().unwrap_err().raw_os_error(), Some(libc::EINTR));
    }

    #[test]
    fn a_refused_dump_is_an_error_naming_the_errno() {
        let refused = frame(NLMSG_ERROR, 3, &(-libc::EBUSY).to_ne_bytes());
        let end = messages(&refused, 3, &mut |_, _| {}).unwrap();
        let error = end.unwrap().unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::EBUSY));
    }

    #[test]
    fn a_truncated_message_is_malformed_not_a_panic() {
        let mut chunk = frame(24, 1, &[1, 2, 3, 4, 5, 6, 7, 8]);
        chunk.truncate(20);
        assert!(messages(&chunk, 1, &mut |_, _| {}).is_err());
    }
}
