//! HTTP/2 framing (RFC 9113 §4, §6): the frame header, the frame types and flags a unary gRPC
//! client meets, and the payload layouts it reads and writes. No I/O here.

/// What a client sends first on a new connection (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const HEADER_LEN: usize = 9;
/// The protocol's default and minimum SETTINGS_MAX_FRAME_SIZE. We never raise ours, so a
/// longer frame from the server is a FRAME_SIZE_ERROR, refused before anything is allocated.
pub const DEFAULT_MAX_FRAME: usize = 16_384;
/// Largest value SETTINGS_MAX_FRAME_SIZE may take.
pub const MAX_FRAME_LIMIT: u32 = 16_777_215;
/// Flow-control windows start here (SETTINGS_INITIAL_WINDOW_SIZE default) and may not
/// exceed `MAX_WINDOW`.
pub const DEFAULT_WINDOW: i64 = 65_535;
pub const MAX_WINDOW: i64 = 0x7fff_ffff;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const FLAG_END_STREAM: u8 = 0x1;
pub const FLAG_ACK: u8 = 0x1;
pub const FLAG_END_HEADERS: u8 = 0x4;
pub const FLAG_PADDED: u8 = 0x8;
pub const FLAG_PRIORITY: u8 = 0x20;

pub const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
pub const SETTINGS_ENABLE_PUSH: u16 = 0x2;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

#[cfg(test)]
pub const NO_ERROR: u32 = 0x0;
#[cfg(test)]
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const REFUSED_STREAM: u32 = 0x7;
pub const CANCEL: u32 = 0x8;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;
pub const INADEQUATE_SECURITY: u32 = 0xc;

/// The 9-byte frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl Head {
    pub fn parse(b: &[u8; HEADER_LEN]) -> Head {
        Head {
            len: (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            // The reserved high bit is ignored on receipt.
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// Appends one frame. `payload` must fit the peer's maximum frame size (callers split).
pub fn put(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len();
    debug_assert!(len <= MAX_FRAME_LIMIT as usize);
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
}

pub fn put_settings(out: &mut Vec<u8>, settings: &[(u16, u32)]) {
    let mut payload = Vec::with_capacity(settings.len() * 6);
    for (id, value) in settings {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&value.to_be_bytes());
    }
    put(out, SETTINGS, 0, 0, &payload);
}

pub fn put_window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    put(
        out,
        WINDOW_UPDATE,
        0,
        stream,
        &(increment & 0x7fff_ffff).to_be_bytes(),
    );
}

#[cfg(test)]
pub fn put_goaway(out: &mut Vec<u8>, last_stream: u32, code: u32) {
    let mut payload = [0u8; 8];
    payload[..4].copy_from_slice(&last_stream.to_be_bytes());
    payload[4..].copy_from_slice(&code.to_be_bytes());
    put(out, GOAWAY, 0, 0, &payload);
}

/// A SETTINGS payload as (identifier, value) pairs; its length must be a multiple of 6.
pub fn settings(payload: &[u8]) -> Option<Vec<(u16, u32)>> {
    if payload.len() % 6 != 0 {
        return None;
    }
    Some(
        payload
            .chunks_exact(6)
            .map(|c| {
                (
                    u16::from_be_bytes([c[0], c[1]]),
                    u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                )
            })
            .collect(),
    )
}

/// A 4-byte big-endian value (RST_STREAM code, WINDOW_UPDATE increment without its reserved
/// bit is up to the caller).
pub fn u32_at(payload: &[u8], at: usize) -> Option<u32> {
    let b = payload.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The content of a DATA or HEADERS payload without its padding (and, for HEADERS with the
/// PRIORITY flag, without the 5 priority bytes). `None` when the padding length does not fit.
pub fn unpadded<'a>(head: &Head, payload: &'a [u8]) -> Option<&'a [u8]> {
    let mut body = payload;
    let mut pad = 0usize;
    if head.has(FLAG_PADDED) {
        pad = usize::from(*body.first()?);
        body = &body[1..];
    }
    if head.kind == HEADERS && head.has(FLAG_PRIORITY) {
        body = body.get(5..)?;
    }
    body.get(..body.len().checked_sub(pad)?)
}

/// The name RFC 9113 §7 gives an error code, for messages.
pub fn error_name(code: u32) -> String {
    let name = match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x4 => "SETTINGS_TIMEOUT",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xa => "CONNECT_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xc => "INADEQUATE_SECURITY",
        0xd => "HTTP_1_1_REQUIRED",
        other => return format!("error code {other:#x}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let mut out = Vec::new();
        put(&mut out, HEADERS, FLAG_END_HEADERS, 3, &[1, 2, 3]);
        assert_eq!(out, [0, 0, 3, 1, 4, 0, 0, 0, 3, 1, 2, 3]);
        let head = Head::parse(out[..9].try_into().unwrap());
        assert_eq!(
            head,
            Head {
                len: 3,
                kind: HEADERS,
                flags: FLAG_END_HEADERS,
                stream: 3
            }
        );
        // 24-bit length and the reserved stream bit.
        let head = Head::parse(&[0xff, 0xff, 0xff, 0, 0, 0x80, 0, 0, 1]);
        assert_eq!((head.len, head.stream), (16_777_215, 1));
    }

    #[test]
    fn settings_and_control_frames() {
        let mut out = Vec::new();
        put_settings(
            &mut out,
            &[
                (SETTINGS_ENABLE_PUSH, 0),
                (SETTINGS_MAX_FRAME_SIZE, 1 << 14),
            ],
        );
        assert_eq!(&out[..9], &[0, 0, 12, SETTINGS, 0, 0, 0, 0, 0]);
        assert_eq!(
            settings(&out[9..]).unwrap(),
            vec![(SETTINGS_ENABLE_PUSH, 0), (SETTINGS_MAX_FRAME_SIZE, 16_384)]
        );
        assert_eq!(settings(&[0; 7]), None);
        let mut w = Vec::new();
        put_window_update(&mut w, 5, 0x8000_0010);
        assert_eq!(w, [0, 0, 4, WINDOW_UPDATE, 0, 0, 0, 0, 5, 0, 0, 0, 0x10]);
        let mut g = Vec::new();
        put_goaway(&mut g, 7, PROTOCOL_ERROR);
        assert_eq!(&g[9..], &[0, 0, 0, 7, 0, 0, 0, 1]);
        assert_eq!(u32_at(&g[9..], 4), Some(1));
        assert_eq!(u32_at(&g[9..], 6), None);
    }

    #[test]
    fn padding_and_priority_are_stripped() {
        let head = |kind, flags| Head {
            len: 0,
            kind,
            flags,
            stream: 1,
        };
        assert_eq!(
            unpadded(&head(DATA, FLAG_PADDED), &[2, b'h', b'i', 0, 0]),
            Some(&b"hi"[..])
        );
        assert_eq!(unpadded(&head(DATA, FLAG_PADDED), &[9, b'h']), None);
        assert_eq!(unpadded(&head(DATA, FLAG_PADDED), &[]), None);
        assert_eq!(
            unpadded(
                &head(HEADERS, FLAG_PADDED | FLAG_PRIORITY),
                &[1, 0, 0, 0, 0, 16, 0x82, 0]
            ),
            Some(&[0x82][..])
        );
        assert_eq!(unpadded(&head(HEADERS, FLAG_PRIORITY), &[0, 0]), None);
        assert_eq!(unpadded(&head(DATA, 0), b"x"), Some(&b"x"[..]));
        assert_eq!(error_name(REFUSED_STREAM), "REFUSED_STREAM");
        assert_eq!(error_name(0x42), "error code 0x42");
    }
}
