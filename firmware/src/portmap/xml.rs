//! A tolerant, borrowing XML scanner for the small documents a UPnP IGD
//! serves: device descriptions and SOAP responses (XML 1.0 syntax only as far
//! as those need it). It owns tokenising, not validation: it yields element
//! starts and ends by *local* name (namespace prefix dropped), and text runs
//! (character data and CDATA content, raw: neither unescaped nor trimmed).
//! Declarations, processing instructions, comments and `<!DOCTYPE>` are
//! skipped, attributes are skipped (quoted values may hold `>`), and nesting
//! is not checked beyond a depth limit: callers match names themselves.
//!
//! On malformed input (an unterminated tag, `<` followed by nothing
//! name-like, nesting deeper than [`DEPTH_MAX`]) or after [`EVENTS_MAX`]
//! events the scanner stops, and [`Scanner::failed`] tells that apart from a
//! clean end. Nothing here allocates or panics on input.

/// Events one scanner yields at most; bounds the work on a huge input (a
/// 16 KiB document has at most about 5,500 events).
pub const EVENTS_MAX: usize = 8 * 1024;

/// Open elements at most; IGD descriptions nest about 10 deep.
pub const DEPTH_MAX: usize = 32;

/// Bytes of one entity reference between `&` and `;` (`#x10FFFF` is 8).
pub const ENTITY_BYTES_MAX: usize = 8;

/// One token of the document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// An element starts; its local name.
    Start(&'a [u8]),
    /// An element ends (also right after `Start` for `<a/>`); its local name.
    End(&'a [u8]),
    /// Character data or CDATA content, raw.
    Text(&'a [u8]),
}

/// Iterates over the [`Event`]s of a document.
#[derive(Clone, Debug)]
pub struct Scanner<'a> {
    input: &'a [u8],
    position: usize,
    events: usize,
    depth: usize,
    /// The name of a self-closing element whose `End` is still due.
    pending_end: Option<&'a [u8]>,
    last_text_is_cdata: bool,
    failed: bool,
}

impl<'a> Scanner<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        Scanner {
            input,
            position: 0,
            events: 0,
            depth: 0,
            pending_end: None,
            last_text_is_cdata: false,
            failed: false,
        }
    }

    /// True when scanning stopped on malformed input or a limit rather than
    /// at the end of the input.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// True when the last `Text` event was the content of a CDATA section
    /// (which must not be entity-unescaped).
    pub fn last_text_is_cdata(&self) -> bool {
        self.last_text_is_cdata
    }

    /// Elements open at this point of the scan.
    pub fn depth(&self) -> usize {
        self.depth
    }

    fn fail(&mut self) -> Option<Event<'a>> {
        self.failed = true;
        self.position = self.input.len();
        None
    }

    fn rest(&self) -> &'a [u8] {
        self.input.get(self.position..).unwrap_or(&[])
    }

    /// Scans the next token at `position`; `None` at the end or on error.
    fn scan(&mut self) -> Option<Event<'a>> {
        // Each pass either returns or skips a non-empty construct, so the
        // loop runs at most once per input byte.
        loop {
            let rest = self.rest();
            if rest.is_empty() {
                return None;
            }
            if rest[0] != b'<' {
                let length = find_byte(rest, b'<').unwrap_or(rest.len());
                self.position += length;
                self.last_text_is_cdata = false;
                return Some(Event::Text(&rest[..length]));
            }
            if let Some(content) = rest.strip_prefix(b"<![CDATA[") {
                let length = find(content, b"]]>")?;
                self.position += 9 + length + 3;
                self.last_text_is_cdata = true;
                return Some(Event::Text(&content[..length]));
            }
            let skipped = if rest.starts_with(b"<?") {
                find(rest, b"?>").map(|end| end + 2)
            } else if rest.starts_with(b"<!--") {
                find(&rest[4..], b"-->").map(|end| 4 + end + 3)
            } else if rest.starts_with(b"<!") {
                declaration_length(rest)
            } else {
                return self.tag(rest);
            };
            self.position += skipped?;
        }
    }

    /// Scans a start, end or empty-element tag at the start of `rest`.
    fn tag(&mut self, rest: &'a [u8]) -> Option<Event<'a>> {
        let closing = rest.get(1) == Some(&b'/');
        let name_start = if closing { 2 } else { 1 };
        let after = rest.get(name_start..)?;
        let name_length = after
            .iter()
            .position(|&byte| is_space(byte) || byte == b'/' || byte == b'>')
            .unwrap_or(after.len());
        let name = &after[..name_length];
        let length = tag_length(rest)?;
        if name.is_empty() || (!closing && self.depth >= DEPTH_MAX) {
            return None;
        }
        self.position += length;
        let local = local_name(name);
        if closing {
            self.depth = self.depth.saturating_sub(1);
            return Some(Event::End(local));
        }
        // `length >= 2` since the tag holds `<`, a name byte and `>`.
        if rest[length - 2] == b'/' {
            self.pending_end = Some(local);
        } else {
            self.depth += 1;
        }
        Some(Event::Start(local))
    }
}

impl<'a> Iterator for Scanner<'a> {
    type Item = Event<'a>;

    fn next(&mut self) -> Option<Event<'a>> {
        if self.events >= EVENTS_MAX {
            // Only a limit if there was more to scan.
            self.failed |= self.pending_end.is_some() || self.position < self.input.len();
            return None;
        }
        if let Some(name) = self.pending_end.take() {
            self.events += 1;
            return Some(Event::End(name));
        }
        if self.position >= self.input.len() {
            return None;
        }
        match self.scan() {
            Some(event) => {
                self.events += 1;
                Some(event)
            }
            None if self.position >= self.input.len() => None,
            None => self.fail(),
        }
    }
}

/// The name after the last `:`, if any.
fn local_name(name: &[u8]) -> &[u8] {
    match name.iter().rposition(|&byte| byte == b':') {
        Some(colon) => &name[colon + 1..],
        None => name,
    }
}

fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r' | b'\n')
}

fn find_byte(haystack: &[u8], needle: u8) -> Option<usize> {
    haystack.iter().position(|&byte| byte == needle)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Length of a tag from `<` through `>`, skipping quoted attribute values.
fn tag_length(tag: &[u8]) -> Option<usize> {
    let mut quote = None;
    for (index, &byte) in tag.iter().enumerate().skip(1) {
        match (quote, byte) {
            (Some(open), _) if byte == open => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(byte),
            (None, b'>') => return Some(index + 1),
            (None, b'<') => return None,
            (None, _) => {}
        }
    }
    None
}

/// Length of a `<!...>` declaration (DOCTYPE), with its internal subset in
/// brackets and quoted literals.
fn declaration_length(declaration: &[u8]) -> Option<usize> {
    let mut quote = None;
    let mut in_subset = false;
    for (index, &byte) in declaration.iter().enumerate().skip(2) {
        match (quote, byte) {
            (Some(open), _) if byte == open => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(byte),
            (None, b'[') => in_subset = true,
            (None, b']') => in_subset = false,
            (None, b'>') if !in_subset => return Some(index + 1),
            (None, _) => {}
        }
    }
    None
}

/// Strips XML white space (space, tab, CR, LF) from both ends.
pub fn trim(text: &[u8]) -> &[u8] {
    let start = text.iter().position(|&byte| !is_space(byte));
    let Some(start) = start else {
        return &[];
    };
    let end = text
        .iter()
        .rposition(|&byte| !is_space(byte))
        .unwrap_or(start);
    &text[start..=end]
}

/// Writes `text` with the five predefined entities and numeric character
/// references replaced into `out`; returns the bytes written. `None` for an
/// unknown or unterminated entity, a reference to an invalid character, or
/// an `out` too small.
pub fn unescape(text: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut read = 0;
    let mut written = 0;
    while read < text.len() {
        let rest = &text[read..];
        let Some(amp) = find_byte(rest, b'&') else {
            copy(rest, out, &mut written)?;
            break;
        };
        copy(&rest[..amp], out, &mut written)?;
        let entity = &rest[amp + 1..];
        let end = entity
            .iter()
            .take(ENTITY_BYTES_MAX + 1)
            .position(|&b| b == b';')?;
        let character = entity_char(&entity[..end])?;
        let mut utf8 = [0u8; 4];
        copy(
            character.encode_utf8(&mut utf8).as_bytes(),
            out,
            &mut written,
        )?;
        read += amp + 1 + end + 1;
    }
    Some(written)
}

fn copy(bytes: &[u8], out: &mut [u8], written: &mut usize) -> Option<()> {
    let end = written.checked_add(bytes.len())?;
    out.get_mut(*written..end)?.copy_from_slice(bytes);
    *written = end;
    Some(())
}

/// The character an entity name (between `&` and `;`) stands for.
fn entity_char(name: &[u8]) -> Option<char> {
    let code = match name {
        b"lt" => return Some('<'),
        b"gt" => return Some('>'),
        b"amp" => return Some('&'),
        b"quot" => return Some('"'),
        b"apos" => return Some('\''),
        [b'#', b'x' | b'X', hex @ ..] => parse_radix(hex, 16)?,
        [b'#', decimal @ ..] => parse_radix(decimal, 10)?,
        _ => return None,
    };
    char::from_u32(code).filter(|&character| character != '\0')
}

fn parse_radix(digits: &[u8], radix: u32) -> Option<u32> {
    if digits.is_empty() {
        return None;
    }
    let mut value = 0u32;
    for &digit in digits {
        let digit = char::from(digit).to_digit(radix)?;
        value = value.checked_mul(radix)?.checked_add(digit)?;
    }
    Some(value)
}

/// Collects the text of one element from several `Text` events (text and
/// CDATA may alternate), unescaping character data but not CDATA, into at
/// most `N` bytes.
///
/// Character data with a bad entity reference (routers write bare `&` in
/// URLs) is kept raw rather than refused. Text longer than `N` marks the
/// buffer as overflowed, and [`TextBuffer::trimmed`] then gives `None`.
#[derive(Clone, Debug)]
pub struct TextBuffer<const N: usize> {
    bytes: [u8; N],
    length: usize,
    overflow: bool,
}

impl<const N: usize> Default for TextBuffer<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> TextBuffer<N> {
    pub const fn new() -> Self {
        TextBuffer {
            bytes: [0; N],
            length: 0,
            overflow: false,
        }
    }

    /// Forgets the collected text.
    pub fn clear(&mut self) {
        self.length = 0;
        self.overflow = false;
    }

    /// Appends one `Text` event; `cdata` from [`Scanner::last_text_is_cdata`].
    pub fn push(&mut self, raw: &[u8], cdata: bool) {
        if self.overflow {
            return;
        }
        let spare = &mut self.bytes[self.length..];
        let written = if cdata { None } else { unescape(raw, spare) };
        let written = match written {
            Some(written) => written,
            None if raw.len() <= spare.len() => {
                spare[..raw.len()].copy_from_slice(raw);
                raw.len()
            }
            None => {
                self.overflow = true;
                return;
            }
        };
        self.length += written;
    }

    /// The collected text without surrounding white space, if it fitted and
    /// is UTF-8.
    pub fn trimmed(&self) -> Option<&str> {
        if self.overflow {
            return None;
        }
        core::str::from_utf8(trim(&self.bytes[..self.length])).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    fn events(input: &[u8]) -> (Vec<Event<'_>>, bool) {
        let mut scanner = Scanner::new(input);
        let list = scanner.by_ref().collect();
        (list, scanner.failed())
    }

    #[test]
    fn elements_text_and_local_names() {
        let input = b"<?xml version=\"1.0\"?>\n<s:Envelope xmlns:s=\"x\"><s:Body><u:A/>t&amp;<B>x</B></s:Body></s:Envelope>\n";
        let (list, failed) = events(input);
        assert!(!failed);
        assert_eq!(
            list,
            [
                Event::Text(b"\n"),
                Event::Start(b"Envelope"),
                Event::Start(b"Body"),
                Event::Start(b"A"),
                Event::End(b"A"),
                Event::Text(b"t&amp;"),
                Event::Start(b"B"),
                Event::Text(b"x"),
                Event::End(b"B"),
                Event::End(b"Body"),
                Event::End(b"Envelope"),
                Event::Text(b"\n"),
            ]
        );
    }

    #[test]
    fn skips_comments_doctype_and_tricky_attributes() {
        let input = br#"<!DOCTYPE root [ <!ENTITY x "a>b"> ]><!-- <no> --><?pi x?><root a='1>2' b="/>" c = "q" ><e x="y"/><f
  n="1" /></root>"#;
        let (list, failed) = events(input);
        assert!(!failed);
        assert_eq!(
            list,
            [
                Event::Start(b"root"),
                Event::Start(b"e"),
                Event::End(b"e"),
                Event::Start(b"f"),
                Event::End(b"f"),
                Event::End(b"root"),
            ]
        );
    }

    #[test]
    fn cdata_is_raw_text() {
        let input = b"<a> <![CDATA[/ctl?a=1&b=<2>]]> </a>";
        let mut scanner = Scanner::new(input);
        assert_eq!(scanner.next(), Some(Event::Start(b"a")));
        assert_eq!(scanner.next(), Some(Event::Text(b" ")));
        assert!(!scanner.last_text_is_cdata());
        assert_eq!(scanner.next(), Some(Event::Text(b"/ctl?a=1&b=<2>")));
        assert!(scanner.last_text_is_cdata());
        assert_eq!(scanner.next(), Some(Event::Text(b" ")));
        assert!(!scanner.last_text_is_cdata());
        assert_eq!(scanner.next(), Some(Event::End(b"a")));
        assert_eq!(scanner.next(), None);
        assert!(!scanner.failed());
    }

    #[test]
    fn stops_on_malformed_input() {
        let cases: [&[u8]; 8] = [
            b"<a><",
            b"<a>< b>",
            b"<a x=\"1></a>",
            b"<a><!-- never closed",
            b"<a><![CDATA[ open",
            b"<?xml",
            b"</>",
            b"<a<b>",
        ];
        for input in cases {
            let (_, failed) = events(input);
            assert!(failed, "{:?}", core::str::from_utf8(input));
        }
    }

    #[test]
    fn depth_and_event_limits() {
        let mut deep = Vec::new();
        for _ in 0..DEPTH_MAX + 1 {
            deep.extend_from_slice(b"<d>");
        }
        let (list, failed) = events(&deep);
        assert_eq!(list.len(), DEPTH_MAX);
        assert!(failed);

        let mut flat = Vec::new();
        for _ in 0..EVENTS_MAX {
            flat.extend_from_slice(b"<e/>");
        }
        let (list, failed) = events(&flat);
        assert_eq!(list.len(), EVENTS_MAX);
        assert!(failed);
    }

    #[test]
    fn unescapes_entities() {
        let mut out = [0u8; 64];
        let text = b"a&lt;b&gt;&amp;&quot;&apos;&#65;&#x42;&#xe9;";
        let length = unescape(text, &mut out).unwrap();
        assert_eq!(&out[..length], "a<b>&\"'AB\u{e9}".as_bytes());
        assert_eq!(unescape(b"plain", &mut out), Some(5));
        for bad in [
            &b"&bogus;"[..],
            b"&amp",
            b"&#;",
            b"&#0;",
            b"&#xD800;",
            b"&#99999999999;",
        ] {
            assert_eq!(unescape(bad, &mut out), None, "{bad:?}");
        }
        let mut small = [0u8; 3];
        assert_eq!(unescape(b"ab&amp;c", &mut small), None);
        assert_eq!(unescape(b"ab&amp;", &mut small), Some(3));
    }

    #[test]
    fn trims_xml_white_space() {
        assert_eq!(trim(b" \r\n\tx y\n"), b"x y");
        assert_eq!(trim(b"   "), b"");
        assert_eq!(trim(b""), b"");
        assert_eq!(trim(b"z"), b"z");
    }

    #[test]
    fn text_buffer_joins_text_and_cdata() {
        let input = b"<u> /ctl?a=1&amp;b=2 <![CDATA[&amp;]]>&x\n</u>";
        let mut scanner = Scanner::new(input);
        let mut text = TextBuffer::<32>::new();
        while let Some(event) = scanner.next() {
            if let Event::Text(raw) = event {
                text.push(raw, scanner.last_text_is_cdata());
            }
        }
        assert_eq!(text.trimmed(), Some("/ctl?a=1&b=2 &amp;&x"));
        let mut small = TextBuffer::<4>::new();
        small.push(b"abc", false);
        assert_eq!(small.trimmed(), Some("abc"));
        small.push(b"de", true);
        assert_eq!(small.trimmed(), None);
        small.clear();
        small.push(b"\xff", true);
        assert_eq!(small.trimmed(), None);
    }
}
