//! The probe on the wire: a 16-byte header, padded with zeros to the size
//! being checked. A reply echoes the request's nonce and, when it fits on
//! the way back, its size.

/// Bytes of the header; the smallest probe.
pub const HEADER_LEN: usize = 16;
const MAGIC: [u8; 4] = *b"prck";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    /// The answer, as large as the request.
    Reply,
    /// The answer, cut to the header: the full-size one did not fit the
    /// way back (the answering node's path MTU is below the request's size).
    ReplyShort,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Request => 1,
            Kind::Reply => 2,
            Kind::ReplyShort => 3,
        }
    }

    fn from_code(code: u8) -> Option<Kind> {
        match code {
            1 => Some(Kind::Request),
            2 => Some(Kind::Reply),
            3 => Some(Kind::ReplyShort),
            _ => None,
        }
    }
}

/// A packet of `len` bytes (at least [`HEADER_LEN`]).
pub fn encode(kind: Kind, nonce: u64, len: usize) -> Vec<u8> {
    let mut packet = vec![0u8; len.max(HEADER_LEN)];
    packet[..4].copy_from_slice(&MAGIC);
    packet[4] = kind.code();
    packet[8..HEADER_LEN].copy_from_slice(&nonce.to_be_bytes());
    packet
}

/// The kind and nonce of a podroute probe; `None` for anything else.
pub fn decode(packet: &[u8]) -> Option<(Kind, u64)> {
    let header = packet.get(..HEADER_LEN)?;
    if header[..4] != MAGIC || header[5..8] != [0, 0, 0] {
        return None;
    }
    let kind = Kind::from_code(header[4])?;
    let nonce = u64::from_be_bytes(header[8..HEADER_LEN].try_into().ok()?);
    Some((kind, nonce))
}

/// Turns a request into its reply in place; `None` leaves anything that is
/// not a request unanswered (a reply, a stray packet, a reflection attempt).
pub fn answer(packet: &mut [u8]) -> Option<u64> {
    match decode(packet)? {
        (Kind::Request, nonce) => {
            packet[4] = Kind::Reply.code();
            Some(nonce)
        }
        _ => None,
    }
}

/// The reply's header alone, marked short.
pub fn shorten(reply: &[u8]) -> Vec<u8> {
    let mut short = reply[..HEADER_LEN.min(reply.len())].to_vec();
    if short.len() == HEADER_LEN {
        short[4] = Kind::ReplyShort.code();
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_request_becomes_a_reply_of_the_same_size_and_nonce() {
        let mut p = encode(Kind::Request, 42, 1450);
        assert_eq!(answer(&mut p), Some(42));
        assert_eq!(p.len(), 1450);
        assert_eq!(decode(&p), Some((Kind::Reply, 42)));
        assert_eq!(decode(&shorten(&p)), Some((Kind::ReplyShort, 42)));
    }

    #[test]
    fn replies_and_strangers_are_not_answered() {
        let mut reply = encode(Kind::Reply, 1, 64);
        assert_eq!(answer(&mut reply), None);
        let mut short = b"prck".to_vec();
        assert_eq!(answer(&mut short), None);
        let mut other = encode(Kind::Request, 1, 64);
        other[0] = b'x';
        assert_eq!(answer(&mut other), None);
    }

    proptest! {
        #[test]
        fn nothing_but_a_request_is_ever_answered(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut packet = bytes.clone();
            let answered = answer(&mut packet);
            prop_assert_eq!(answered.is_some(), matches!(decode(&bytes), Some((Kind::Request, _))));
            prop_assert_eq!(packet.len(), bytes.len());
        }
    }
}
