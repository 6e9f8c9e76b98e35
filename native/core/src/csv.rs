//! A strict RFC 4180 record reader: physical lines -> records -> fields.
//!
//! It follows the contract's reading rules (and `tests/reference.py`, the oracle), which differ
//! from lenient CSV readers on purpose: broken quoting is *reported*, never repaired.
//!
//! # Records (framing)
//!
//! A file is a sequence of physical lines split on LF; a CR right before the LF (or before the
//! end of the file) is part of the line ending. At a record start:
//!
//! * an empty line (nothing, or a lone CR) is skipped and takes no row number;
//! * the line is tokenized (below). If it ends *inside a quoted field*, the record is
//!   multi-line: it goes on over the next lines while the record holds an odd number of `"`
//!   (a line-by-line parity count, not a re-parse), or up to the end of the file;
//! * any other line is one record, well formed or not: a stray quote makes that one line
//!   malformed, it never swallows the lines after it.
//!
//! # Fields (tokenizing)
//!
//! A record is well formed iff it is exactly N fields separated by the delimiter, each either
//! `PAD* '"' ( [^"] | '""' )* '"' PAD*` or free of both the delimiter and `"`. `PAD` is space
//! or tab, minus the delimiter. The tokenizer is the state machine below; `memchr` finds the
//! next interesting byte inside a state.
//!
//! ```text
//!   FieldStart --PAD--> FieldStart          (a pad before a quote; else part of an unquoted value)
//!   FieldStart --'"'--> Quoted
//!   FieldStart --other-> Unquoted
//!   Unquoted   --delim--> FieldStart        --end--> Complete     --'"'--> Malformed
//!   Quoted     --'"'--> QuoteInQuoted       --end--> OpenQuote (a multi-line record)
//!   QuoteInQuoted --'"'--> Quoted ("" is an escaped quote)
//!   QuoteInQuoted --PAD--> AfterQuoted      --delim--> FieldStart --end--> Complete
//!   AfterQuoted/QuoteInQuoted --other--> Malformed (text after a closing quote)
//! ```

use memchr::{memchr, memchr2, memchr_iter};

/// One field of a tokenized record: its value range inside the record bytes.
///
/// For a quoted field the range is the text between the quotes, where `""` still stands for
/// one quote when `escaped` is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub start: u32,
    pub end: u32,
    pub escaped: bool,
}

/// How a record's text tokenized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tokenized {
    /// Well formed; the fields are in the output vector.
    Complete,
    /// Broken quoting (a quote in an unquoted value, text after a closing quote).
    Malformed,
    /// The text ends inside a quoted field.
    OpenQuote,
}

/// The field syntax of one file: its delimiter and which bytes are padding around quotes.
#[derive(Clone, Copy, Debug)]
pub struct Dialect {
    pub delimiter: u8,
    pad_space: bool,
    pad_tab: bool,
}

impl Dialect {
    /// A dialect with the given one-byte delimiter (never `"`, CR or LF: checked by the caller).
    pub fn new(delimiter: u8) -> Self {
        Dialect {
            delimiter,
            pad_space: delimiter != b' ',
            pad_tab: delimiter != b'\t',
        }
    }

    #[inline]
    fn is_pad(&self, byte: u8) -> bool {
        (byte == b' ' && self.pad_space) || (byte == b'\t' && self.pad_tab)
    }

    fn skip_pad(&self, text: &[u8], mut i: usize) -> usize {
        while i < text.len() && self.is_pad(text[i]) {
            i += 1;
        }
        i
    }

    /// Tokenize one record's text (no line ending) into `fields` (cleared first).
    ///
    /// Every field is tokenized, even past the header's count: whether a first line ends inside
    /// quotes decides the framing, whatever its field count.
    pub fn tokenize(&self, text: &[u8], fields: &mut Vec<Field>) -> Tokenized {
        fields.clear();
        let n = text.len();
        let d = self.delimiter;
        let mut i = 0; // state FieldStart
        loop {
            let value_start = i;
            let j = self.skip_pad(text, i);
            if j < n && text[j] == b'"' {
                // state Quoted
                let start = j + 1;
                let mut k = start;
                let mut escaped = false;
                let close = loop {
                    match memchr(b'"', &text[k..]) {
                        None => return Tokenized::OpenQuote,
                        Some(p) => {
                            let q = k + p;
                            // state QuoteInQuoted: another quote is an escape
                            if q + 1 < n && text[q + 1] == b'"' {
                                escaped = true;
                                k = q + 2;
                            } else {
                                break q;
                            }
                        }
                    }
                };
                fields.push(Field {
                    start: start as u32,
                    end: close as u32,
                    escaped,
                });
                // state AfterQuoted
                let m = self.skip_pad(text, close + 1);
                if m == n {
                    return Tokenized::Complete;
                }
                if text[m] != d {
                    return Tokenized::Malformed;
                }
                i = m + 1;
            } else {
                // state Unquoted (the pads, if any, are part of the value)
                match memchr2(d, b'"', &text[j..]) {
                    None => {
                        fields.push(Field {
                            start: value_start as u32,
                            end: n as u32,
                            escaped: false,
                        });
                        return Tokenized::Complete;
                    }
                    Some(p) => {
                        let q = j + p;
                        if text[q] == b'"' {
                            return Tokenized::Malformed;
                        }
                        fields.push(Field {
                            start: value_start as u32,
                            end: q as u32,
                            escaped: false,
                        });
                        i = q + 1;
                    }
                }
            }
        }
    }
}

/// One framed record inside a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// First byte of the record.
    pub start: usize,
    /// End of its text (its final line ending excluded).
    pub end: usize,
    /// Where the next line starts.
    pub next: usize,
    /// Whether the record runs over several physical lines.
    pub multiline: bool,
}

/// What [`frame`] found at a record start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framed {
    /// An empty line: no record; the next line starts at `next`.
    Blank { next: usize },
    /// A record. For a single-line record, the tokenizer's result is `tokenized`.
    Record {
        span: Span,
        tokenized: Option<Tokenized>,
    },
    /// The record does not end inside `buf` and more input may follow.
    Incomplete,
}

/// The text of a line starting at `pos`: (content end without CR, next line start), or None
/// when the line has no LF inside `buf` and `at_eof` is false.
#[inline]
fn line_at(buf: &[u8], pos: usize, at_eof: bool) -> Option<(usize, usize)> {
    let (end, next) = match memchr(b'\n', &buf[pos..]) {
        Some(p) => (pos + p, pos + p + 1),
        None if at_eof => (buf.len(), buf.len()),
        None => return None,
    };
    let content_end = if end > pos && buf[end - 1] == b'\r' {
        end - 1
    } else {
        end
    };
    Some((content_end, next))
}

/// Frame the record that starts at `pos` (a record start, `pos < buf.len()`).
///
/// `at_eof` says that `buf` ends where the file ends; otherwise a record that is not finished
/// inside `buf` is [`Framed::Incomplete`]. On a single-line record `fields` holds its fields.
pub fn frame(
    dialect: &Dialect,
    buf: &[u8],
    pos: usize,
    at_eof: bool,
    fields: &mut Vec<Field>,
) -> Framed {
    let Some((content_end, next)) = line_at(buf, pos, at_eof) else {
        return Framed::Incomplete;
    };
    if content_end == pos {
        return Framed::Blank { next };
    }
    let tokenized = dialect.tokenize(&buf[pos..content_end], fields);
    if tokenized != Tokenized::OpenQuote {
        let span = Span {
            start: pos,
            end: content_end,
            next,
            multiline: false,
        };
        return Framed::Record {
            span,
            tokenized: Some(tokenized),
        };
    }
    // A multi-line record: it goes on while its quote count is odd.
    let mut odd = memchr_iter(b'"', &buf[pos..content_end]).count() % 2 == 1;
    let mut line_start = next;
    let mut end = content_end;
    while odd {
        if line_start >= buf.len() {
            if !at_eof {
                return Framed::Incomplete;
            }
            end = buf.len();
            break;
        }
        let Some((line_end, line_next)) = line_at(buf, line_start, at_eof) else {
            return Framed::Incomplete;
        };
        odd ^= memchr_iter(b'"', &buf[line_start..line_end]).count() % 2 == 1;
        end = line_end;
        line_start = line_next;
    }
    let span = Span {
        start: pos,
        end,
        next: line_start.max(end),
        multiline: true,
    };
    Framed::Record {
        span,
        tokenized: None,
    }
}

/// The text of a multi-line record as the contract reads it: its lines joined by LF, each
/// without its CR (so a CRLF inside a quoted value reads as LF).
pub fn joined_text(raw: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut start = 0;
    for nl in memchr_iter(b'\n', raw) {
        let end = if nl > start && raw[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        out.extend_from_slice(&raw[start..end]);
        out.push(b'\n');
        start = nl + 1;
    }
    out.extend_from_slice(&raw[start..]);
}

/// Where a run that starts *inside* a multi-line record (odd quote parity) gets back to a
/// record start: the start of the line after the first line end with even parity, if any.
pub fn resync_from_open(buf: &[u8]) -> Option<usize> {
    let mut odd = true;
    let mut pos = 0;
    loop {
        if odd {
            // Lines without quotes keep the parity odd: jump to the next quote.
            let q = memchr(b'"', &buf[pos..])?;
            pos += q + 1;
            odd = false;
        } else {
            match memchr2(b'"', b'\n', &buf[pos..]) {
                None => return None,
                Some(p) => {
                    if buf[pos + p] == b'\n' {
                        return Some(pos + p + 1);
                    }
                    pos += p + 1;
                    odd = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields_of(text: &str) -> (Tokenized, Vec<String>) {
        let mut fields = Vec::new();
        let t = Dialect::new(b',').tokenize(text.as_bytes(), &mut fields);
        let values = fields
            .iter()
            .map(|f| {
                let v = &text[f.start as usize..f.end as usize];
                if f.escaped {
                    v.replace("\"\"", "\"")
                } else {
                    v.to_string()
                }
            })
            .collect();
        (t, values)
    }

    #[test]
    fn tokenize_table() {
        use Tokenized::*;
        let cases: &[(&str, Tokenized, &[&str])] = &[
            ("a,b,c", Complete, &["a", "b", "c"]),
            ("a,,", Complete, &["a", "", ""]),
            ("", Complete, &[""]),
            (" a , b ", Complete, &[" a ", " b "]),
            ("\"a,b\",c", Complete, &["a,b", "c"]),
            ("  \"x\"  ,y", Complete, &["x", "y"]),
            ("\"a\"\"b\"", Complete, &["a\"b"]),
            ("\"\"", Complete, &[""]),
            ("\"\"\"\"", Complete, &["\""]),
            ("a\"b,c", Malformed, &[]),
            ("\"a\"b,c", Malformed, &[]),
            ("\"a\" b", Malformed, &[]),
            ("a,\"b", OpenQuote, &[]),
            ("\"abc\"\"", OpenQuote, &[]),
            ("x,\"a\nb\",y", Complete, &["x", "a\nb", "y"]),
        ];
        for (text, want, values) in cases {
            let (got, got_values) = fields_of(text);
            assert_eq!(got, *want, "{text:?}");
            if *want == Complete {
                assert_eq!(got_values, *values, "{text:?}");
            }
        }
    }

    #[test]
    fn tab_delimiter_is_not_padding() {
        let mut fields = Vec::new();
        let d = Dialect::new(b'\t');
        assert_eq!(
            d.tokenize(b"\"a\"\t\"b\"", &mut fields),
            Tokenized::Complete
        );
        assert_eq!(fields.len(), 2);
        assert_eq!(d.tokenize(b"\"a\" \tb", &mut fields), Tokenized::Complete);
    }

    fn frames(text: &str) -> Vec<(String, bool)> {
        let d = Dialect::new(b',');
        let buf = text.as_bytes();
        let mut out = Vec::new();
        let mut fields = Vec::new();
        let mut pos = 0;
        while pos < buf.len() {
            match frame(&d, buf, pos, true, &mut fields) {
                Framed::Blank { next } => pos = next,
                Framed::Record { span, .. } => {
                    out.push((text[span.start..span.end].to_string(), span.multiline));
                    pos = span.next;
                }
                Framed::Incomplete => unreachable!("at eof"),
            }
        }
        out
    }

    #[test]
    fn framing_table() {
        let s = |v: &[(&str, bool)]| {
            v.iter()
                .map(|(a, b)| (a.to_string(), *b))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            frames("a,b\n\nc,d\r\n"),
            s(&[("a,b", false), ("c,d", false)])
        );
        assert_eq!(
            frames("a,\"b\nc\",d\ne"),
            s(&[("a,\"b\nc\",d", true), ("e", false)])
        );
        // A stray quote makes one malformed line, nothing more.
        assert_eq!(
            frames("a\"b\nc,\"d\""),
            s(&[("a\"b", false), ("c,\"d\"", false)])
        );
        // Parity, not a re-parse: the record stops at the first even line end.
        assert_eq!(
            frames("a,\"b\nx\",\",\"y\nz\""),
            s(&[("a,\"b\nx\",\",\"y", true), ("z\"", false)])
        );
        // An unclosed quote runs to the end of the file.
        assert_eq!(frames("a,\"b\n\nc\n"), s(&[("a,\"b\n\nc\n", true)]));
        // A lone CR is a blank line; CR before EOF is a line ending.
        assert_eq!(frames("\r\nx\r"), s(&[("x", false)]));
    }

    #[test]
    fn incomplete_without_eof() {
        let d = Dialect::new(b',');
        let mut fields = Vec::new();
        assert_eq!(frame(&d, b"a,b", 0, false, &mut fields), Framed::Incomplete);
        assert_eq!(
            frame(&d, b"a,\"b\nc\n", 0, false, &mut fields),
            Framed::Incomplete
        );
    }

    #[test]
    fn joined_text_drops_cr_before_lf() {
        let mut out = Vec::new();
        joined_text(b"a,\"b\r\nc\r\n\"", &mut out);
        assert_eq!(out, b"a,\"b\nc\n\"");
    }

    #[test]
    fn resync() {
        assert_eq!(resync_from_open(b"abc\ndef\n"), None);
        assert_eq!(resync_from_open(b"b\"\nnext\n"), Some(3));
        assert_eq!(resync_from_open(b"\"x\"\ny\"\nz"), Some(7));
    }
}
