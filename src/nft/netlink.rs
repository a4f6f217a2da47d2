//! The one netlink codec of netnat's own code (nf_tables dumps and acks, the trace monitor and
//! its events, ctnetlink): messages split from a datagram, attributes read from a payload, and
//! messages built. Every length read from the kernel is checked here, once, against the bytes
//! there are; nothing here panics on what a socket delivered, and nothing is unsafe but the view
//! of a receive buffer as bytes.

use std::fmt;

/// struct nlmsghdr: length, type, flags, sequence number, port id.
pub const NLMSG_HDRLEN: usize = 16;
/// struct nlattr: length, type.
pub const NLA_HDRLEN: usize = 4;
/// struct nfgenmsg: family, version, resource id (the start of every nfnetlink payload).
pub const NFGENMSG_LEN: usize = 4;

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP_INTR: u16 = 0x10;
/// NLM_F_ROOT | NLM_F_MATCH.
pub const NLM_F_DUMP: u16 = 0x100 | 0x200;

pub const NLA_F_NESTED: u16 = 0x8000;
pub const NLA_F_NET_BYTEORDER: u16 = 0x4000;
const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);

/// Netlink aligns messages and attributes to 4 bytes.
pub fn align4(n: usize) -> usize {
    n.next_multiple_of(4)
}

/// One netlink message: its header's fields, the whole message and what follows the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Msg<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub whole: &'a [u8],
    pub payload: &'a [u8],
}

/// A message whose header does not hold together with the bytes that came with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed {
    /// The length the header claims (0 when not even a header was there).
    pub len: usize,
    /// The bytes that were left.
    pub left: usize,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed netlink message (length {}, {} bytes left)", self.len, self.left)
    }
}

impl std::error::Error for Malformed {}

/// The message at the start of `data` (which may hold more after it).
pub fn message(data: &[u8]) -> Result<Msg<'_>, Malformed> {
    let malformed = |len| Malformed { len, left: data.len() };
    let Some(hdr) = data.get(..NLMSG_HDRLEN) else { return Err(malformed(0)) };
    let len = ne32(&hdr[0..4]).map_or(0, |l| l as usize);
    if len < NLMSG_HDRLEN || len > data.len() {
        return Err(malformed(len));
    }
    Ok(Msg {
        kind: u16::from_ne_bytes([hdr[4], hdr[5]]),
        flags: u16::from_ne_bytes([hdr[6], hdr[7]]),
        seq: ne32(&hdr[8..12]).unwrap_or(0),
        whole: &data[..len],
        payload: &data[NLMSG_HDRLEN..len],
    })
}

/// The type of the message at the start of `data`, read without checking its length.
pub fn msg_kind(data: &[u8]) -> Option<u16> {
    let b = data.get(4..6)?;
    Some(u16::from_ne_bytes([b[0], b[1]]))
}

/// The messages of one datagram, in order. A message that does not fit is yielded as an error,
/// and ends the iteration.
pub fn messages(mut data: &[u8]) -> impl Iterator<Item = Result<Msg<'_>, Malformed>> {
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        match message(data) {
            Ok(m) => {
                data = data.get(align4(m.whole.len())..).unwrap_or(&[]);
                Some(Ok(m))
            }
            Err(e) => {
                data = &[];
                Some(Err(e))
            }
        }
    })
}

/// The errno of an NLMSG_ERROR payload as a positive number (0: an ack), or None when the
/// payload is too short to hold one.
pub fn error_code(payload: &[u8]) -> Option<i32> {
    let raw = i32::from_ne_bytes(payload.get(..4)?.try_into().ok()?);
    Some(raw.checked_neg().unwrap_or(libc::EPROTO))
}

/// The attributes of `buf`: (type without the nested and byte-order flags, value). An attribute
/// that does not fit ends the iteration.
pub fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let hdr = buf.get(..NLA_HDRLEN)?;
        let len = u16::from_ne_bytes([hdr[0], hdr[1]]) as usize;
        let kind = u16::from_ne_bytes([hdr[2], hdr[3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > buf.len() {
            buf = &[];
            return None;
        }
        let value = &buf[NLA_HDRLEN..len];
        buf = buf.get(align4(len)..).unwrap_or(&[]);
        Some((kind, value))
    })
}

/// The value of the first attribute of type `kind`.
pub fn find(buf: &[u8], kind: u16) -> Option<&[u8]> {
    attrs(buf).find(|&(k, _)| k == kind).map(|(_, v)| v)
}

pub fn be16(b: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(..2)?.try_into().ok()?))
}

pub fn be32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

pub fn be64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))
}

pub fn ne32(b: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

/// A NUL-terminated string attribute (or all of `b` when it has no NUL).
pub fn c_str(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Builds one netlink message: header, a fixed payload header (nfgenmsg), then attributes.
pub struct MsgBuilder {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl MsgBuilder {
    pub fn new(kind: u16, flags: u16, seq: u32, header: &[u8]) -> MsgBuilder {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
        buf.extend_from_slice(header);
        buf.resize(align4(buf.len()), 0);
        MsgBuilder { buf, nests: Vec::new() }
    }

    pub fn attr(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let len = u16::try_from(NLA_HDRLEN + value.len()).expect("a netlink attribute holds at most 64 KiB");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    /// Opens a nested attribute; `end` closes it.
    pub fn begin(&mut self, kind: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.attr(kind | NLA_F_NESTED, &[])
    }

    pub fn end(&mut self) -> &mut Self {
        let start = self.nests.pop().expect("unbalanced nest");
        let len = u16::try_from(self.buf.len() - start).expect("a netlink attribute holds at most 64 KiB");
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    pub fn finish(&mut self) -> Vec<u8> {
        assert!(self.nests.is_empty(), "unclosed nest");
        let len = u32::try_from(self.buf.len()).expect("a netlink message fits in 4 GiB");
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        std::mem::take(&mut self.buf)
    }
}

/// A receive buffer aligned for netlink headers (libnftnl reads a message through a pointer to
/// `struct nlmsghdr`, which needs 4-byte alignment; a `Vec<u8>` promises 1).
pub struct RecvBuf(Vec<u64>);

impl RecvBuf {
    pub fn new(bytes: usize) -> RecvBuf {
        RecvBuf(vec![0u64; bytes.div_ceil(8)])
    }

    /// The whole buffer, to receive into.
    pub fn as_mut_bytes(&mut self) -> &mut [u8] {
        let len = self.0.len() * 8;
        // SAFETY: the Vec owns `len` initialised bytes, any bit pattern is a valid u8, u8 needs no
        // alignment, and the returned slice borrows `self` mutably, so nothing else reads or
        // writes the memory meanwhile.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast::<u8>(), len) }
    }

    /// The first `n` bytes (what a receive of `n` bytes filled); all of them when `n` is larger
    /// than the buffer.
    pub fn filled(&self, n: usize) -> &[u8] {
        let len = self.0.len() * 8;
        // SAFETY: as in `as_mut_bytes`, for a shared borrow of `self`.
        let all = unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast::<u8>(), len) };
        &all[..n.min(len)]
    }
}

#[cfg(test)]
mod tests {
    use super::{attrs, error_code, message, messages, MsgBuilder, RecvBuf, NLMSG_DONE, NLMSG_ERROR};

    fn msg(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut b = MsgBuilder::new(kind, 0, seq, payload);
        b.finish()
    }

    #[test]
    fn splits_a_datagram_and_stops_at_a_message_that_does_not_fit() {
        let mut data = msg(NLMSG_ERROR, 7, &0i32.to_ne_bytes());
        data.extend(msg(NLMSG_DONE, 8, &[1, 2, 3])); // padded to 4
        let got: Vec<_> = messages(&data).collect();
        assert_eq!(got.len(), 2);
        let first = got[0].unwrap();
        assert_eq!((first.kind, first.seq, error_code(first.payload)), (NLMSG_ERROR, 7, Some(0)));
        assert_eq!(got[1].unwrap().payload, &[1, 2, 3, 0]);

        // A length beyond the bytes there are: one error, then nothing.
        let mut bad = data.clone();
        bad[0] = 200;
        let got: Vec<_> = messages(&bad).collect();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].unwrap_err().len, 200);
        // A header cut short, and a length below a header's.
        assert!(message(&data[..10]).is_err());
        let mut short = data.clone();
        short[0] = 4;
        assert!(message(&short).is_err());
    }

    #[test]
    fn a_last_message_without_padding_is_read() {
        // 17 bytes: the kernel pads, but a datagram cut right after a message must not panic.
        let mut data = msg(NLMSG_DONE, 1, &[9]);
        data.truncate(17);
        data[0] = 17;
        let got: Vec<_> = messages(&data).collect();
        assert_eq!(got, vec![Ok(message(&data).unwrap())]);
        assert_eq!(got[0].unwrap().payload, &[9]);
    }

    #[test]
    fn error_codes() {
        assert_eq!(error_code(&(-2i32).to_ne_bytes()), Some(2));
        assert_eq!(error_code(&[1, 2]), None);
        assert_eq!(error_code(&i32::MIN.to_ne_bytes()), Some(libc::EPROTO));
    }

    #[test]
    fn attributes_nested_and_truncated() {
        let mut b = MsgBuilder::new(1, 0, 0, &[]);
        b.begin(3).attr(1, &[1, 2, 3, 4, 5]).end().attr(2, b"x\0");
        let m = b.finish();
        let payload = message(&m).unwrap().payload;
        let top: Vec<_> = attrs(payload).collect();
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].0, 3, "the nested flag is masked");
        assert_eq!(attrs(top[0].1).collect::<Vec<_>>(), vec![(1, &[1u8, 2, 3, 4, 5][..])]);
        assert_eq!(super::c_str(top[1].1), "x");
        // An attribute claiming more than there is ends the walk.
        let mut cut = payload.to_vec();
        cut[0] = 250;
        assert_eq!(attrs(&cut).count(), 0);
        assert_eq!(attrs(&payload[..3]).count(), 0);
    }

    #[test]
    fn receive_buffer_bounds() {
        let mut b = RecvBuf::new(10);
        assert_eq!(b.as_mut_bytes().len(), 16);
        b.as_mut_bytes()[0] = 5;
        assert_eq!(b.filled(1), &[5]);
        assert_eq!(b.filled(1000).len(), 16, "never past the buffer");
    }
}
