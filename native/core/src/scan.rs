//! The scan driver: a byte stream -> header + typed Arrow batches, on every core, in bounded
//! memory.
//!
//! Each step reads about `threads * chunk_bytes` more bytes after the carried-over tail, cuts
//! the buffer at its last LF and splits it into one chunk per thread at line starts. Every
//! chunk is parsed in parallel *as if* it started at a record start; it also notes where it
//! would get back to a record start if it began inside an open multi-line record
//! ([`csv::resync_from_open`]). The chunks are then stitched in order: a chunk that really
//! starts inside a record that an earlier chunk left open drops its records before the
//! resync point (or is re-parsed from there when its speculative parse did not pass through
//! that point), and the record that crosses the boundary is framed once, from its start.
//! A record still open at the end of the buffer is carried into the next step, so memory
//! holds one step's bytes (plus at most one long record), never the file.

use std::fmt;
use std::io::{self, Read};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::RecordBatch;
use arrow_schema::ArrowError;
use memchr::{memchr, memrchr};

use crate::check::{Kind, Routed, OFFSET};
use crate::csv::{frame, joined_text, resync_from_open, Dialect, Field, Framed, Span, Tokenized};
use crate::values::trim;

/// Longest header line read before giving up (a file with no line end, `/dev/zero`, ...).
pub const HEADER_LIMIT: usize = 16 * 1024 * 1024;

/// Longest record kept whole: a longer one (an unclosed quote that would swallow the rest of
/// the file) is a `malformed_row` with the start of its text, and memory stays bounded.
pub const RECORD_LIMIT: usize = 64 * 1024 * 1024;

/// Bytes a range scan reads past its end at once, to finish its last record.
const RANGE_TAIL: usize = 64 * 1024;

/// Why a scan stopped.
#[derive(Debug)]
pub enum ScanError {
    /// Reading the source failed.
    Io(io::Error),
    /// The file is not CSV text we can read (encoding, header): a message for the user.
    Format(String),
    /// Building a batch failed (a bug, never bad input).
    Arrow(ArrowError),
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScanError::Io(e) => write!(f, "read error: {e}"),
            ScanError::Format(m) => f.write_str(m),
            ScanError::Arrow(e) => write!(f, "internal error while building a batch: {e}"),
        }
    }
}

impl std::error::Error for ScanError {}

impl From<io::Error> for ScanError {
    fn from(e: io::Error) -> Self {
        ScanError::Io(e)
    }
}

impl From<ArrowError> for ScanError {
    fn from(e: ArrowError) -> Self {
        ScanError::Arrow(e)
    }
}

/// Which header field feeds each contract column of a kind.
#[derive(Clone, Debug)]
pub struct Layout {
    pub kind: Kind,
    /// Number of fields in the header: any other count is a malformed row.
    pub n_fields: usize,
    /// Per slot of [`Kind::columns`]: the 0-based field index, or None when the (optional)
    /// column is not in the file.
    pub positions: Vec<Option<usize>>,
}

impl Layout {
    /// The layout of a header by name: the first field of each name wins. Errors name the
    /// first required column that is missing.
    pub fn from_header(kind: Kind, names: &[String]) -> Result<Layout, &'static str> {
        let mut positions = Vec::new();
        for (slot, column) in kind.columns().iter().enumerate() {
            let found = names.iter().position(|n| n == column);
            if found.is_none() && slot < kind.n_required() {
                return Err(column);
            }
            positions.push(found);
        }
        Ok(Layout {
            kind,
            n_fields: names.len(),
            positions,
        })
    }
}

/// Tuning of a scan.
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    /// Bytes per chunk (one chunk per thread per step).
    pub chunk_bytes: usize,
    /// Worker threads (>= 1).
    pub threads: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Tuning {
            chunk_bytes: 8 * 1024 * 1024,
            threads,
        }
    }
}

/// Read the header line: BOM and encoding checks, then its field names (unquoted, trimmed).
///
/// Returns the names and the bytes read past the header line (the start of the data).
pub fn read_header<R: Read>(
    reader: &mut R,
    dialect: &Dialect,
) -> Result<(Vec<String>, Vec<u8>), ScanError> {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let line_end = loop {
        if let Some(p) = memchr(b'\n', &buf) {
            break p;
        }
        if buf.len() > HEADER_LIMIT {
            return Err(ScanError::Format(format!(
                "no line end in the first {} MiB: this is not a CSV file with a header row",
                HEADER_LIMIT >> 20
            )));
        }
        let n = read_some(reader, &mut chunk)?;
        if n == 0 {
            break buf.len();
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let rest = buf
        .get(line_end + 1..)
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    let mut line = &buf[..line_end];
    if line.starts_with(&[0xFF, 0xFE]) || line.starts_with(&[0xFE, 0xFF]) {
        return Err(ScanError::Format(
            "the file starts with a UTF-16 byte order mark: it is UTF-16, not UTF-8 text".into(),
        ));
    }
    if let Some(stripped) = line.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        line = stripped;
    }
    if let Some(stripped) = line.strip_suffix(b"\r") {
        line = stripped;
    }
    if line.is_empty() && rest.is_empty() {
        return Err(ScanError::Format(
            "the file is empty: the first row must be a header".into(),
        ));
    }
    if memchr(b'\r', line).is_some() {
        return Err(ScanError::Format(
            "the header line holds bare CR (carriage return) line ends: records must end with LF or CRLF".into(),
        ));
    }
    if memchr(0, line).is_some() && memchr(0, line.get(1..).unwrap_or_default()).is_some() {
        return Err(ScanError::Format(
            "the header holds NUL bytes: the file looks like UTF-16 or binary data, not UTF-8 text"
                .into(),
        ));
    }
    let header = std::str::from_utf8(line).map_err(|e| {
        ScanError::Format(format!(
            "the header is not valid UTF-8 (at byte {}): the file must be UTF-8 text",
            e.valid_up_to()
        ))
    })?;
    let mut fields = Vec::new();
    match dialect.tokenize(header.as_bytes(), &mut fields) {
        Tokenized::Complete => {}
        Tokenized::Malformed | Tokenized::OpenQuote => {
            return Err(ScanError::Format(
                "the header row is not valid CSV: check its quotes and the delimiter".into(),
            ));
        }
    }
    let names = fields
        .iter()
        .map(|f| {
            let raw = &header[f.start as usize..f.end as usize];
            let value = if f.escaped {
                raw.replace("\"\"", "\"")
            } else {
                raw.to_string()
            };
            String::from_utf8_lossy(trim(value.as_bytes())).into_owned()
        })
        .collect();
    Ok((names, rest))
}

fn read_some<R: Read>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match reader.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// What one chunk's parse produced.
struct ChunkOut {
    columns: Routed,
    /// Start of each record, as buffer positions (for the stitcher).
    starts: Vec<usize>,
    /// End of each record including its line ending.
    nexts: Vec<usize>,
    /// Start of a record that is still open where the chunk ends.
    pending: Option<usize>,
}

/// Reusable per-thread scratch space.
#[derive(Default)]
struct Scratch {
    fields: Vec<Field>,
    joined: Vec<u8>,
    unescaped: Vec<Vec<u8>>,
}

struct Parser<'a> {
    layout: &'a Layout,
    dialect: Dialect,
    /// Key-hash buckets the rows are routed to as they are checked (0: none).
    buckets: usize,
    /// File offset of buffer position 0.
    base: u64,
}

/// Whether `bytes` are text a row can hold: valid UTF-8 without NUL (`U+0000` is valid UTF-8,
/// but no PostgreSQL text value can hold it, so a row holding one is a `malformed_row`).
fn is_text(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok() && memchr::memchr(0, bytes).is_none()
}

impl Parser<'_> {
    /// Parse the records that start in `buf[from..to]`, reading at most up to `to`.
    fn parse(&self, buf: &[u8], from: usize, to: usize, at_eof: bool) -> ChunkOut {
        let capacity = (to - from) / 48 + 16;
        let mut out = ChunkOut {
            columns: Routed::new(self.layout.kind, self.buckets, capacity),
            starts: Vec::with_capacity(capacity),
            nexts: Vec::with_capacity(capacity),
            pending: None,
        };
        let mut scratch = Scratch::default();
        let text_ok = is_text(&buf[from..to]);
        let view = &buf[..to];
        let mut pos = from;
        while pos < to {
            match frame(&self.dialect, view, pos, at_eof, &mut scratch.fields) {
                Framed::Blank { next } => pos = next,
                Framed::Incomplete => {
                    out.pending = Some(pos);
                    break;
                }
                Framed::Record { span, tokenized } => {
                    self.record(
                        view,
                        span,
                        tokenized,
                        text_ok,
                        &mut scratch,
                        &mut out.columns,
                    );
                    out.starts.push(span.start);
                    out.nexts.push(span.next);
                    pos = span.next;
                }
            }
        }
        out
    }

    /// The record that starts at `start` and ends inside `buf` (a record that crossed a chunk
    /// boundary, or ran to the end of the file), checked.
    fn one_record(&self, buf: &[u8], start: usize) -> Routed {
        let mut one = Routed::new(self.layout.kind, self.buckets, 1);
        let mut scratch = Scratch::default();
        match frame(&self.dialect, buf, start, true, &mut scratch.fields) {
            Framed::Record { span, tokenized } => {
                self.record(buf, span, tokenized, false, &mut scratch, &mut one);
            }
            // Framing at the end of `buf` always finds a record: it starts on a non-blank line.
            other => unreachable!("an open record at {start} must frame: {other:?}"),
        }
        one
    }

    /// Check one framed record and append it.
    fn record(
        &self,
        buf: &[u8],
        span: Span,
        tokenized: Option<Tokenized>,
        text_ok: bool,
        scratch: &mut Scratch,
        columns: &mut Routed,
    ) {
        let raw = &buf[span.start..span.end];
        let offset = (self.base + span.start as u64) as i64;
        if !text_ok && !is_text(raw) {
            columns.push_malformed(raw, offset);
            return;
        }
        let Scratch {
            fields,
            joined,
            unescaped,
        } = scratch;
        let (text, tokenized): (&[u8], Tokenized) = match tokenized {
            Some(t) => (raw, t),
            None => {
                joined_text(raw, joined);
                let t = self.dialect.tokenize(joined, fields);
                (joined.as_slice(), t)
            }
        };
        if tokenized != Tokenized::Complete || fields.len() != self.layout.n_fields {
            columns.push_malformed(raw, offset);
            return;
        }
        let positions = &self.layout.positions;
        unescaped.resize_with(positions.len(), Vec::new);
        for (slot, position) in positions.iter().enumerate() {
            if let Some(i) = position {
                let f = fields[*i];
                if f.escaped {
                    unescape(
                        &text[f.start as usize..f.end as usize],
                        &mut unescaped[slot],
                    );
                }
            }
        }
        let mut values: [Option<&[u8]>; 8] = [None; 8];
        for (slot, position) in positions.iter().enumerate() {
            if let Some(i) = position {
                let f = fields[*i];
                let value = if f.escaped {
                    unescaped[slot].as_slice()
                } else {
                    &text[f.start as usize..f.end as usize]
                };
                let value = trim(value);
                values[slot] = (!value.is_empty()).then_some(value);
            }
        }
        columns.push_values(&values[..positions.len()], raw, offset);
    }
}

fn unescape(quoted: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut start = 0;
    while let Some(p) = memchr(b'"', &quoted[start..]) {
        out.extend_from_slice(&quoted[start..start + p + 1]);
        start += p + 2; // skip the second quote of the pair
    }
    out.extend_from_slice(&quoted[start.min(quoted.len())..]);
}

/// A streaming scan of one file's data rows (after its header).
pub struct Scanner<R: Read> {
    reader: R,
    layout: Layout,
    dialect: Dialect,
    tuning: Tuning,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    base: u64,
    eof: bool,
    next_row: i64,
    /// Inside a record longer than [`RECORD_LIMIT`], already rejected.
    skipping: bool,
    /// Bytes at the start of `buf` already looked at: an open record carried over.
    carried: usize,
    /// Bytes read from the source so far (header included).
    pub bytes_read: u64,
    /// Skip to the first line start before framing (a range that starts at a guessed point).
    align: bool,
    /// Keep only the records that start before this file offset (a byte range's end).
    limit: Option<u64>,
    /// File offset of the first record framed.
    first_record: Option<u64>,
    /// File offset of the first record framed at or after `limit`, or of the end of the file.
    next_record: Option<u64>,
    finished: bool,
    /// Key-hash buckets the rows are split into as they are checked (0: none).
    buckets: usize,
}

/// One batch of a step, with its key-hash bucket when the scan is split (see
/// [`Scanner::split`]; the rejects' bucket is the bucket count).
pub type Part = (Option<usize>, RecordBatch);

impl<R: Read> Scanner<R> {
    /// A scan that starts after the header: `rest` holds the bytes already read past it, and
    /// `header_bytes` is the header's length in the file.
    pub fn new(
        reader: R,
        layout: Layout,
        dialect: Dialect,
        tuning: Tuning,
        rest: Vec<u8>,
        header_bytes: u64,
    ) -> Self {
        let bytes_read = header_bytes + rest.len() as u64;
        let tuning = Tuning {
            chunk_bytes: tuning.chunk_bytes.max(1),
            threads: tuning.threads.max(1),
        };
        Scanner {
            reader,
            layout,
            dialect,
            tuning,
            buf: rest,
            base: header_bytes,
            eof: false,
            next_row: 1,
            skipping: false,
            carried: 0,
            bytes_read,
            align: false,
            limit: None,
            first_record: None,
            next_record: None,
            finished: false,
            buckets: 0,
        }
    }

    /// A scan of one byte range of the file (the sharded plan): the reader stands at file
    /// offset `base` (no header before it). With `align`, the scan first skips to the next line
    /// start, *guessing* it is a record start (the caller checks the guess against the range
    /// before, see [`Scanner::first_record`]); without it, `base` is a known record start. Only
    /// the records that start before `limit` (None: the end of the file) are kept, and rows
    /// are numbered from 1 in the range.
    pub fn range(
        reader: R,
        layout: Layout,
        dialect: Dialect,
        tuning: Tuning,
        base: u64,
        align: bool,
        limit: Option<u64>,
    ) -> Self {
        let mut scanner = Scanner::new(reader, layout, dialect, tuning, Vec::new(), base);
        scanner.bytes_read = 0;
        scanner.align = align;
        scanner.limited(limit)
    }

    /// Split every step's rows by key hash as they are checked: a passing row goes to bucket
    /// `key_hash & (buckets - 1)`, a rejected one to bucket `buckets`; row order is kept inside
    /// a bucket (see [`Scanner::next_parts`]). `buckets` must be a power of two (0: no split).
    pub fn split(mut self, buckets: usize) -> Self {
        assert!(
            buckets == 0 || buckets.is_power_of_two(),
            "the bucket count must be a power of two, not {buckets}"
        );
        self.buckets = buckets;
        self
    }

    /// Keep only the records that start before file offset `limit` (None: every record).
    pub fn limited(mut self, limit: Option<u64>) -> Self {
        self.limit = limit;
        self
    }

    /// File offset of the first record this scan framed (None: none yet, or none at all).
    pub fn first_record(&self) -> Option<u64> {
        self.first_record
    }

    /// Where the records after this scan's begin: the file offset of the first record at or
    /// after the range's end, or the end of the file. None until the scan is over.
    pub fn next_record(&self) -> Option<u64> {
        self.next_record
    }

    /// Skip the bytes before the first line start (a range scan's guessed start).
    fn align_to_line(&mut self) -> io::Result<()> {
        let mut target = RANGE_TAIL;
        loop {
            self.fill(target)?;
            if let Some(p) = memchr(b'\n', &self.buf) {
                self.buf.drain(..=p);
                self.base += p as u64 + 1;
                break;
            }
            if self.eof {
                self.base += self.buf.len() as u64;
                self.buf.clear();
                break;
            }
            target = self.buf.len() + RANGE_TAIL.max(self.buf.len());
        }
        self.align = false;
        Ok(())
    }

    /// Note the first record, and cut the step's batches at the range's end.
    ///
    /// Each batch's records are in file order; with buckets, the batches of one step are
    /// not (each holds its bucket's records of one chunk), so every batch is cut on its own.
    fn clip(&mut self, batches: &mut Vec<Part>) {
        let offsets = |batch: &RecordBatch| {
            let column = batch.schema().index_of(OFFSET).ok()?;
            Some(batch.column(column).as_primitive::<Int64Type>().clone())
        };
        if self.first_record.is_none() {
            self.first_record = batches
                .iter()
                .filter_map(|(_, b)| offsets(b)?.values().first().copied())
                .min()
                .map(|o| o as u64);
        }
        let Some(limit) = self.limit else {
            return;
        };
        let mut dropped = 0;
        let mut next: Option<u64> = None;
        for (_, batch) in batches.iter_mut() {
            let Some(offsets) = offsets(batch) else {
                continue;
            };
            let values = offsets.values();
            let keep = values.partition_point(|&o| (o as u64) < limit);
            if keep < values.len() {
                let first = values[keep] as u64;
                next = Some(next.map_or(first, |n| n.min(first)));
                dropped += values.len() - keep;
                *batch = batch.slice(0, keep);
            }
        }
        if let Some(first) = next {
            self.next_record = Some(first);
            self.finished = true;
            self.next_row -= dropped as i64;
            batches.retain(|(_, b)| b.num_rows() > 0);
        }
    }

    /// Data rows numbered so far.
    pub fn rows(&self) -> i64 {
        self.next_row - 1
    }

    /// Read until the buffer holds `target` bytes or the source ends.
    fn fill(&mut self, target: usize) -> io::Result<()> {
        const READ_AT_ONCE: usize = 4 * 1024 * 1024;
        while !self.eof && self.buf.len() < target {
            let len = self.buf.len();
            self.buf.resize(len + (target - len).min(READ_AT_ONCE), 0);
            let n = read_some(&mut self.reader, &mut self.buf[len..]);
            self.buf.truncate(len + *n.as_ref().unwrap_or(&0));
            let n = n?;
            self.bytes_read += n as u64;
            if n == 0 {
                self.eof = true;
            }
        }
        Ok(())
    }

    /// The next batches in file order, or None at the end.
    pub fn next_batches(&mut self) -> Result<Option<Vec<RecordBatch>>, ScanError> {
        Ok(self
            .next_parts()?
            .map(|parts| parts.into_iter().map(|(_, batch)| batch).collect()))
    }

    /// The next step's batches, each with its key-hash bucket when the scan is split
    /// ([`Scanner::split`]): in file order, bucket by bucket inside each chunk. None at the end.
    pub fn next_parts(&mut self) -> Result<Option<Vec<Part>>, ScanError> {
        // Each step takes about `step` new bytes after the record carried over, whatever was
        // read ahead already (the header's read, a large read from a stream).
        if self.finished {
            return Ok(None);
        }
        if self.align {
            self.align_to_line()?;
        }
        let step = self.tuning.chunk_bytes.saturating_mul(self.tuning.threads);
        let mut target = self.carried + step;
        if let Some(limit) = self.limit {
            // Read only a little past the range's end: its last record, and where the next begins.
            let to_limit = usize::try_from(limit.saturating_sub(self.base)).unwrap_or(usize::MAX);
            // A record open across the end grows the read geometrically (it is framed again from
            // its start at each step).
            let past = to_limit.max(self.carried.saturating_mul(2));
            target = target.min(past.saturating_add(RANGE_TAIL));
        }
        let cut = loop {
            self.fill(target)?;
            let window = self.buf.len().min(target);
            if self.eof && window == self.buf.len() {
                break window;
            }
            // Only a line end after the carried part moves the scan on.
            match memrchr(b'\n', &self.buf[self.carried.min(window)..window]) {
                Some(p) => break self.carried.min(window) + p + 1,
                None => target += step, // one very long line: read on
            }
        };
        if cut == 0 {
            self.finished = true;
            self.next_record.get_or_insert(self.base);
            return Ok(None);
        }
        let mut buf = std::mem::take(&mut self.buf);
        if self.skipping {
            // Inside an overlong record: its lines go on while its quote count is odd.
            match resync_from_open(&buf[..cut]) {
                None => {
                    self.carried = 0;
                    self.base += cut as u64;
                    self.buf = buf.split_off(cut);
                    return Ok(Some(Vec::new()));
                }
                Some(p) => {
                    self.skipping = false;
                    self.carried = 0;
                    self.base += p as u64;
                    self.buf = buf.split_off(p);
                    return Ok(Some(Vec::new()));
                }
            }
        }
        let at_eof = self.eof && cut == buf.len();
        let bounds = chunk_bounds(&buf[..cut], self.tuning.threads);
        let parser = Parser {
            layout: &self.layout,
            dialect: self.dialect,
            buckets: self.buckets,
            base: self.base,
        };
        let n = bounds.len();
        let results: Vec<(ChunkOut, Option<usize>)> = std::thread::scope(|scope| {
            let parser = &parser;
            let buf = &buf;
            let handles: Vec<_> = bounds
                .iter()
                .enumerate()
                .skip(1)
                .map(|(i, &(from, to))| {
                    scope.spawn(move || {
                        let resync = resync_from_open(&buf[from..to]).map(|p| from + p);
                        (parser.parse(buf, from, to, at_eof && i == n - 1), resync)
                    })
                })
                .collect();
            let (from, to) = bounds[0];
            let mut results = vec![(parser.parse(buf, from, to, at_eof && n == 1), None)];
            for h in handles {
                // A panicking worker is a bug: pass its panic, message and all, on to this
                // thread, where the binding turns it into a Python error.
                results.push(
                    h.join()
                        .unwrap_or_else(|payload| std::panic::resume_unwind(payload)),
                );
            }
            results
        });

        let mut batches = Vec::new();
        let mut pending: Option<usize> = None;
        for (i, (chunk, resync)) in results.into_iter().enumerate() {
            let to = bounds[i].1;
            let last = i == n - 1;
            let Some(open) = pending else {
                pending = chunk.pending;
                emit(&mut self.next_row, chunk.columns, 0, &mut batches)?;
                continue;
            };
            // This chunk starts inside the record that starts at `open`.
            let Some(p) = resync else {
                continue; // the whole chunk is inside that record
            };
            emit(
                &mut self.next_row,
                parser.one_record(&buf[..p], open),
                0,
                &mut batches,
            )?;
            let k = chunk.starts.partition_point(|&s| s < p);
            let in_step =
                (k == 0 || chunk.nexts[k - 1] <= p) && chunk.pending.is_none_or(|q| q >= p);
            if in_step {
                pending = chunk.pending;
                emit(&mut self.next_row, chunk.columns, k, &mut batches)?;
            } else {
                let again = parser.parse(&buf, p, to, at_eof && last);
                pending = again.pending;
                emit(&mut self.next_row, again.columns, 0, &mut batches)?;
            }
        }

        let carry_from = match pending {
            Some(open) if at_eof => {
                emit(
                    &mut self.next_row,
                    parser.one_record(&buf, open),
                    0,
                    &mut batches,
                )?;
                buf.len()
            }
            Some(open) if cut - open > RECORD_LIMIT => {
                // An overlong record (an unclosed quote, most likely): reject it now with the
                // start of its text, and skip the rest of it in the next steps.
                let mut one = Routed::new(self.layout.kind, self.buckets, 1);
                one.push_malformed(&buf[open..cut], (self.base + open as u64) as i64);
                emit(&mut self.next_row, one, 0, &mut batches)?;
                self.skipping = true;
                cut
            }
            Some(open) => open,
            None => cut,
        };
        self.base += carry_from as u64;
        self.carried = cut.saturating_sub(carry_from);
        self.buf = buf.split_off(carry_from);
        self.clip(&mut batches);
        Ok(Some(batches))
    }
}

/// Finish a chunk's rows into batches (one, or one per key-hash bucket), dropping its first
/// `skip` records, and number its rows from `next_row` on.
fn emit(
    next_row: &mut i64,
    columns: Routed,
    skip: usize,
    batches: &mut Vec<Part>,
) -> Result<(), ScanError> {
    let n = columns.len();
    if n <= skip {
        return Ok(());
    }
    batches.extend(columns.finish(skip, *next_row)?);
    *next_row += (n - skip) as i64;
    Ok(())
}

/// Split `buf` (whole lines) into about `parts` ranges, each starting at a line start.
fn chunk_bounds(buf: &[u8], parts: usize) -> Vec<(usize, usize)> {
    let mut bounds = Vec::with_capacity(parts);
    let mut from = 0;
    for i in 1..parts {
        let target = buf.len() * i / parts;
        if target <= from {
            continue;
        }
        let Some(p) = memchr(b'\n', &buf[target..]) else {
            break;
        };
        let to = target + p + 1;
        if to >= buf.len() {
            break;
        }
        bounds.push((from, to));
        from = to;
    }
    bounds.push((from, buf.len()));
    bounds
}
