//! The few pieces of the protobuf wire format (protobuf.dev/programming-guides/encoding) that
//! hand-written messages need: varints, string fields, and a reader that walks fields and
//! skips the ones it does not know. Nothing here allocates from a length the peer sent.

/// Wire types.
pub const VARINT: u8 = 0;
pub const I64: u8 = 1;
pub const LEN: u8 = 2;
pub const I32: u8 = 5;

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire));
}

/// A `string`/`bytes` field; proto3 leaves an empty one out.
pub fn put_string(out: &mut Vec<u8>, field: u32, value: &str) {
    if value.is_empty() {
        return;
    }
    put_tag(out, field, LEN);
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value.as_bytes());
}

#[cfg(test)]
/// An `int64` field: two's complement, so a negative value takes ten bytes.
pub fn put_int64(out: &mut Vec<u8>, field: u32, value: i64) {
    if value == 0 {
        return;
    }
    put_tag(out, field, VARINT);
    put_varint(out, value as u64);
}

/// One decoded field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

/// Walks the fields of one message.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let Some((&b, rest)) = self.buf.split_first() else {
                return Err("truncated varint".into());
            };
            self.buf = rest;
            // The tenth byte may only carry the top bit of a 64-bit value.
            if i == 9 && b > 1 {
                return Err("varint longer than 64 bits".into());
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.buf.len() {
            return Err(format!(
                "field of {n} bytes, but only {} left in the message",
                self.buf.len()
            ));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next (field number, value), `None` at the end of the message.
    pub fn next_field(&mut self) -> Result<Option<(u32, Value<'a>)>, String> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let field = tag >> 3;
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            return Err(format!("invalid field number {field}"));
        }
        let value = match (tag & 7) as u8 {
            VARINT => Value::Varint(self.varint()?),
            I64 => Value::Fixed64(u64::from_le_bytes(
                self.take(8)?.try_into().unwrap_or([0; 8]),
            )),
            LEN => {
                let n = self.varint()?;
                let n = usize::try_from(n).map_err(|_| format!("field of {n} bytes"))?;
                Value::Bytes(self.take(n)?)
            }
            I32 => Value::Fixed32(u32::from_le_bytes(
                self.take(4)?.try_into().unwrap_or([0; 4]),
            )),
            other => return Err(format!("unsupported wire type {other}")),
        };
        Ok(Some((field as u32, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint_bytes(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, v);
        out
    }

    #[test]
    fn varints() {
        assert_eq!(varint_bytes(0), [0]);
        assert_eq!(varint_bytes(1), [1]);
        assert_eq!(varint_bytes(127), [0x7f]);
        assert_eq!(varint_bytes(128), [0x80, 1]);
        assert_eq!(varint_bytes(300), [0xac, 0x02]);
        assert_eq!(
            varint_bytes(u64::MAX),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
        for v in [0, 1, 127, 128, 300, 1 << 35, i64::MAX as u64, u64::MAX] {
            let mut msg = Vec::new();
            put_tag(&mut msg, 1, VARINT);
            put_varint(&mut msg, v);
            let mut r = Reader::new(&msg);
            assert_eq!(r.next_field().unwrap(), Some((1, Value::Varint(v))));
            assert_eq!(r.next_field().unwrap(), None);
        }
    }

    #[test]
    fn int64_negative_and_large() {
        let mut msg = Vec::new();
        put_int64(&mut msg, 1, -1);
        assert_eq!(
            msg,
            [
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
            ]
        );
        let Some((1, Value::Varint(v))) = Reader::new(&msg).next_field().unwrap() else {
            panic!()
        };
        assert_eq!(v as i64, -1);
        let mut big = Vec::new();
        put_int64(&mut big, 1, i64::MIN);
        let Some((1, Value::Varint(v))) = Reader::new(&big).next_field().unwrap() else {
            panic!()
        };
        assert_eq!(v as i64, i64::MIN);
        let mut zero = Vec::new();
        put_int64(&mut zero, 1, 0);
        assert!(zero.is_empty(), "proto3 leaves zero out");
    }

    #[test]
    fn strings_and_unknown_wire_types() {
        let mut msg = Vec::new();
        put_string(&mut msg, 1, "default");
        put_string(&mut msg, 2, "");
        put_string(&mut msg, 2, "WorkflowType=\"x\"");
        assert_eq!(&msg[..2], &[0x0a, 7]);
        msg.extend_from_slice(&[(3 << 3) | I64, 1, 2, 3, 4, 5, 6, 7, 8]);
        msg.extend_from_slice(&[(4 << 3) | I32, 1, 0, 0, 0]);
        let mut r = Reader::new(&msg);
        assert_eq!(
            r.next_field().unwrap(),
            Some((1, Value::Bytes(&b"default"[..])))
        );
        assert_eq!(
            r.next_field().unwrap(),
            Some((2, Value::Bytes(&b"WorkflowType=\"x\""[..])))
        );
        assert_eq!(
            r.next_field().unwrap(),
            Some((3, Value::Fixed64(0x0807060504030201)))
        );
        assert_eq!(r.next_field().unwrap(), Some((4, Value::Fixed32(1))));
        assert_eq!(r.next_field().unwrap(), None);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic_or_an_allocation() {
        let cases: &[&[u8]] = &[
            &[0x08],       // varint value missing
            &[0x08, 0x80], // truncated varint
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
            ], // > 64 bits
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ], // 11 bytes
            &[0x12, 0xff, 0xff, 0xff, 0xff, 0x0f], // 4 GiB length, 0 bytes present
            &[0x12, 0x05, b'a'], // length beyond the message
            &[0x09, 1, 2], // fixed64 cut short
            &[0x0b],       // group start (wire type 3)
            &[0x00, 0x00], // field number 0
        ];
        for case in cases {
            let mut r = Reader::new(case);
            let mut result = Ok(None);
            for _ in 0..4 {
                result = r.next_field();
                if !matches!(result, Ok(Some(_))) {
                    break;
                }
            }
            assert!(result.is_err(), "{case:?} gave {result:?}");
        }
    }
}
