//! Wire formats: one file per format, each one parsing and emitting bytes and
//! never doing I/O, reading a clock or allocating.
//!
//! Parsers follow the smoltcp pattern: a `Packet<T: AsRef<[u8]>>` view whose
//! `new_checked` is the one door for untrusted bytes, after which every
//! accessor is in bounds. Emitters render into caller-owned fixed buffers
//! through [`SliceWriter`], which refuses (rather than grows) when full.
//!
//! - [`ts`]: MPEG-TS packets and stream alignment (ISO/IEC 13818-1).
//! - [`psi`]: PSI sections, PAT, PMT and SDT (ISO/IEC 13818-1 §2.4.4, EN 300 468).
//! - [`es`]: video codecs of a PMT and keyframe detection at a PES start.
//! - [`http`]: HTTP/1.1 heads, chunked decoding and response emitters (RFC 9112).
//! - [`rtp`]: RTP fixed header (RFC 3550), MP2T payload type (RFC 3551).
//! - [`udpxy`]: udpxy / msd_lite on-demand multicast URL paths.

pub mod es;
pub mod http;
pub mod psi;
pub mod rtp;
pub mod ssdp;
pub mod ts;
pub mod udpxy;

use core::fmt;

/// The writer's buffer has no room for the bytes asked to be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

impl fmt::Display for Full {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("output buffer full")
    }
}

impl From<fmt::Error> for Full {
    fn from(_: fmt::Error) -> Self {
        Full
    }
}

/// Appends bytes to a fixed, caller-owned buffer.
///
/// Each `write_bytes` / `write_str` call is all-or-nothing: if the bytes do
/// not fit, nothing of that call is written and `Err` is returned. A
/// formatted write (`write!`) is made of several such calls, so after an
/// error the buffer may hold a partial rendering; callers discard it (or
/// [`clear`](Self::clear)) and answer with a smaller response.
pub struct SliceWriter<'a> {
    buffer: &'a mut [u8],
    len: usize,
}

impl<'a> SliceWriter<'a> {
    /// A writer that starts at the beginning of `buffer`.
    pub fn new(buffer: &'a mut [u8]) -> Self {
        SliceWriter { buffer, len: 0 }
    }

    /// Appends `bytes`, or writes nothing and returns `Err(Full)`.
    pub fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), Full> {
        let end = self.len.checked_add(bytes.len()).ok_or(Full)?;
        let target = self.buffer.get_mut(self.len..end).ok_or(Full)?;
        target.copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes that can still be written.
    pub fn remaining(&self) -> usize {
        self.buffer.len() - self.len
    }

    /// The bytes written so far.
    pub fn written(&self) -> &[u8] {
        &self.buffer[..self.len]
    }

    /// Forgets everything written; the buffer is reused from its start.
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

impl fmt::Write for SliceWriter<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.write_bytes(text.as_bytes()).map_err(|Full| fmt::Error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn writes_until_full_then_refuses_whole_call() {
        let mut buffer = [0u8; 8];
        let mut w = SliceWriter::new(&mut buffer);
        assert!(w.is_empty());
        assert_eq!(w.write_bytes(b"abc"), Ok(()));
        assert_eq!(w.write_bytes(b"defgh"), Ok(()));
        assert_eq!(w.remaining(), 0);
        assert_eq!(w.write_bytes(b"i"), Err(Full));
        assert_eq!(w.written(), b"abcdefgh");
        assert_eq!(w.len(), 8);
    }

    #[test]
    fn oversized_write_leaves_buffer_untouched() {
        let mut buffer = [0u8; 4];
        let mut w = SliceWriter::new(&mut buffer);
        assert_eq!(w.write_bytes(b"ab"), Ok(()));
        assert_eq!(w.write_bytes(b"cde"), Err(Full));
        assert_eq!(w.written(), b"ab");
        assert_eq!(w.write_bytes(b""), Ok(()));
    }

    #[test]
    fn formats_without_allocating() {
        let mut buffer = [0u8; 16];
        let mut w = SliceWriter::new(&mut buffer);
        assert!(write!(w, "n={} ", 42u64).is_ok());
        assert_eq!(w.written(), b"n=42 ");
        assert!(w.write_str("0123456789abcdef").is_err());
        w.clear();
        assert!(write!(w, "ok").is_ok());
        assert_eq!(w.written(), b"ok");
    }

    #[test]
    fn zero_sized_buffer_refuses_everything_but_nothing() {
        let mut buffer = [0u8; 0];
        let mut w = SliceWriter::new(&mut buffer);
        assert_eq!(w.write_bytes(b""), Ok(()));
        assert_eq!(w.write_bytes(b"x"), Err(Full));
    }
}
