//! Bounded binary reader and writer shared by every wire parser in the core.
//!
//! `Reader` never panics and never reads past its slice: every accessor returns
//! `Result<_, DecodeError>`. `sub(len)` hands out a child reader over exactly `len`
//! bytes so an inner parser cannot overrun its parent. Endianness is explicit at
//! every call site (`u32_le` vs `u32_be`); `usize` never reaches the wire.

use std::fmt;

/// What was wrong with a byte string handed to a decoder.
///
/// Every variant names the field or structure involved with a `&'static str`
/// so errors are cheap, allocation-free and precise enough for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended before `what` was complete.
    #[error("truncated input: {what}")]
    Truncated {
        /// The field or structure that was cut short.
        what: &'static str,
    },
    /// Bytes were left over after `what` was fully decoded.
    #[error("trailing bytes after {what}")]
    TrailingBytes {
        /// The structure that should have ended the input.
        what: &'static str,
    },
    /// A field carried a value this implementation does not know.
    #[error("unsupported {what}: {value:#x}")]
    Unsupported {
        /// The field.
        what: &'static str,
        /// The value found on the wire.
        value: u64,
    },
    /// A count or length exceeded the protocol's (or our) bound.
    #[error("{what} exceeds limit {max}")]
    LimitExceeded {
        /// The count or length.
        what: &'static str,
        /// The largest value accepted.
        max: u64,
    },
    /// A field had a value that violates the protocol's rules.
    #[error("invalid {what}")]
    Invalid {
        /// The rule that was broken.
        what: &'static str,
    },
}

impl DecodeError {
    /// A short, stable label for metrics (`truncated`, `trailing`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::TrailingBytes { .. } => "trailing",
            DecodeError::Unsupported { .. } => "unsupported",
            DecodeError::LimitExceeded { .. } => "limit",
            DecodeError::Invalid { .. } => "invalid",
        }
    }
}

/// A cursor over a byte slice that cannot read out of bounds.
#[derive(Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("len", &self.buf.len())
            .field("pos", &self.pos)
            .finish()
    }
}

impl<'a> Reader<'a> {
    /// A reader over all of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Bytes consumed so far (offset from the start of this reader's slice).
    pub fn position(&self) -> usize {
        self.pos
    }

    /// True when every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The unconsumed bytes, without consuming them.
    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    /// Consume exactly `len` bytes.
    pub fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(len)
            .ok_or(DecodeError::Truncated { what })?;
        let out = self
            .buf
            .get(self.pos..end)
            .ok_or(DecodeError::Truncated { what })?;
        self.pos = end;
        Ok(out)
    }

    /// Consume a fixed-size array.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// Consume `len` bytes and return a child reader limited to them.
    pub fn sub(&mut self, len: usize, what: &'static str) -> Result<Reader<'a>, DecodeError> {
        Ok(Reader::new(self.take(len, what)?))
    }

    /// Skip `len` bytes.
    pub fn skip(&mut self, len: usize, what: &'static str) -> Result<(), DecodeError> {
        self.take(len, what).map(|_| ())
    }

    /// One byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    /// Little-endian u16.
    pub fn u16_le(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    /// Big-endian u16.
    pub fn u16_be(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    /// Little-endian u32.
    pub fn u32_le(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// Big-endian u32.
    pub fn u32_be(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    /// Little-endian u64.
    pub fn u64_le(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Big-endian u64.
    pub fn u64_be(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// Fail with `TrailingBytes` unless every byte was consumed.
    pub fn expect_empty(&self, what: &'static str) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes { what })
        }
    }

    /// Skip zero padding so that `position()` becomes a multiple of `align`,
    /// tolerating a shorter tail at the end of the input (used where the
    /// last variable field of a message may or may not be padded).
    pub fn align_to(&mut self, align: usize, what: &'static str) -> Result<(), DecodeError> {
        let pad = (align - self.pos % align) % align;
        self.skip(pad, what)
    }
}

/// Append-only encoder with explicit endianness, the mirror of [`Reader`].
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Writer { buf: Vec::new() }
    }

    /// An empty writer with room for `cap` bytes.
    pub fn with_capacity(cap: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(cap),
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Raw bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }

    /// One byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    /// Little-endian u16.
    pub fn u16_le(&mut self, v: u16) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Big-endian u16.
    pub fn u16_be(&mut self, v: u16) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }

    /// Little-endian u32.
    pub fn u32_le(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Big-endian u32.
    pub fn u32_be(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }

    /// Little-endian u64.
    pub fn u64_le(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Big-endian u64.
    pub fn u64_be(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }

    /// `n` zero bytes (room for a field the caller fills in place later).
    pub fn zeros(&mut self, n: usize) -> &mut Self {
        self.buf.resize(self.buf.len() + n, 0);
        self
    }

    /// Zero bytes up to the next multiple of `align` (relative to the start).
    pub fn pad_to(&mut self, align: usize) -> &mut Self {
        let pad = (align - self.buf.len() % align) % align;
        self.buf.resize(self.buf.len() + pad, 0);
        self
    }

    /// Overwrite a big-endian u32 previously written at `at` (for length
    /// fields known only after the body). Returns false if `at` is out of range.
    pub fn patch_u32_be(&mut self, at: usize, v: u32) -> bool {
        match self.buf.get_mut(at..at.saturating_add(4)) {
            Some(slot) if slot.len() == 4 => {
                slot.copy_from_slice(&v.to_be_bytes());
                true
            }
            _ => false,
        }
    }

    /// The encoded bytes.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_endiannesses() {
        let data = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08];
        let mut r = Reader::new(&data);
        assert_eq!(r.u16_le("a").unwrap(), 0x0201);
        assert_eq!(r.u16_be("b").unwrap(), 0x0304);
        assert_eq!(r.u32_le("c").unwrap(), 0x08070605);
        assert!(r.is_empty());
        assert_eq!(r.u8("d").unwrap_err(), DecodeError::Truncated { what: "d" });
    }

    #[test]
    fn take_with_huge_length_is_truncated_not_panic() {
        let data = [0u8; 4];
        let mut r = Reader::new(&data);
        r.skip(1, "x").unwrap();
        assert!(matches!(
            r.take(usize::MAX, "huge"),
            Err(DecodeError::Truncated { what: "huge" })
        ));
        assert_eq!(r.position(), 1);
    }

    #[test]
    fn sub_reader_cannot_overrun_parent() {
        let data = [1u8, 2, 3, 4, 5];
        let mut r = Reader::new(&data);
        let mut s = r.sub(2, "sub").unwrap();
        assert_eq!(s.u16_be("v").unwrap(), 0x0102);
        assert!(s.u8("more").is_err());
        assert_eq!(r.u8("next").unwrap(), 3);
        assert_eq!(
            r.expect_empty("msg").unwrap_err(),
            DecodeError::TrailingBytes { what: "msg" }
        );
    }

    #[test]
    fn writer_pads_and_patches() {
        let mut w = Writer::new();
        w.u8(1).pad_to(4).u32_be(0);
        assert!(w.patch_u32_be(4, 0xAABBCCDD));
        assert!(!w.patch_u32_be(6, 1));
        assert_eq!(w.finish(), vec![1, 0, 0, 0, 0xAA, 0xBB, 0xCC, 0xDD]);
    }
}
