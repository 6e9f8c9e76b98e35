//! A bounded fuzz run: random hostile bytes through the whole scanner must never panic, and
//! every chunking and thread count must give exactly the single-chunk result.
//!
//! `FASTCLV_FUZZ_ITERS` sets the number of inputs (default 40; `make fuzz` runs many more).

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::RecordBatch;
use fastclv_core::check::Kind;
use fastclv_core::csv::Dialect;
use fastclv_core::scan::{read_header, Layout, Scanner, Tuning};

/// A small deterministic generator (xorshift64*), so failures replay from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const PIECES: &[&[u8]] = &[
    b"o1",
    b"c1",
    b"2024-01-05T10:00:00Z",
    b"completed",
    b"1",
    b"2.50",
    b",",
    b",",
    b"\"",
    b"\"\"",
    b"\n",
    b"\r\n",
    b"\r",
    b" ",
    b"\t",
    b"\xff",
    b"\xc3",
    b"\xc3\xa9",
    b"\xef\xbb\xbf",
    b"\"a\nb\"",
    b"x",
];

fn input(rng: &mut Rng) -> Vec<u8> {
    let mut data = b"order_id,customer_id,order_ts,status\n".to_vec();
    for _ in 0..rng.below(200) {
        if rng.below(3) == 0 {
            data.extend_from_slice(b"o1,c1,2024-01-05,completed\n");
        } else {
            data.extend_from_slice(PIECES[rng.below(PIECES.len())]);
        }
    }
    if rng.below(4) == 0 {
        for _ in 0..rng.below(64) {
            data.push(rng.next() as u8);
        }
    }
    data
}

fn scan(data: &[u8], tuning: Tuning) -> Vec<RecordBatch> {
    scan_to(data, None, tuning)
}

/// The rows that start before file offset `end` (None: every row), unsplit.
fn scan_to(data: &[u8], end: Option<u64>, tuning: Tuning) -> Vec<RecordBatch> {
    let dialect = Dialect::new(b',');
    let mut reader = data;
    let (names, rest) = read_header(&mut reader, &dialect).expect("the header is valid");
    let header_bytes = (data.len() - reader.len() - rest.len()) as u64;
    let layout = Layout::from_header(Kind::Orders, &names).expect("all columns present");
    let mut scanner =
        Scanner::new(reader, layout, dialect, tuning, rest, header_bytes).limited(end);
    let mut out = Vec::new();
    while let Some(batches) = scanner.next_batches().expect("reading a slice never fails") {
        out.extend(batches);
    }
    out
}

fn flatten(batches: &[RecordBatch]) -> Vec<String> {
    let mut rows = Vec::new();
    for batch in batches {
        for i in 0..batch.num_rows() {
            let one = batch.slice(i, 1);
            rows.push(format!("{:?}", one.columns()));
        }
    }
    rows
}

#[test]
fn random_bytes_never_panic_and_chunking_never_changes_the_result() {
    let iterations: usize = std::env::var("FASTCLV_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let seed: u64 = std::env::var("FASTCLV_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED);
    let mut rng = Rng(seed | 1);
    for i in 0..iterations {
        let data = input(&mut rng);
        let whole = flatten(&scan(
            &data,
            Tuning {
                chunk_bytes: 1 << 30,
                threads: 1,
            },
        ));
        for (chunk_bytes, threads) in [(1, 1), (3, 2), (17, 3)] {
            let got = flatten(&scan(
                &data,
                Tuning {
                    chunk_bytes,
                    threads,
                },
            ));
            assert_eq!(
                got, whole,
                "iteration {i} (seed {seed}), chunk {chunk_bytes}, threads {threads}: {data:?}"
            );
        }
    }
}

/// One byte range's scan: its rows (row numbers from 1 in the range), the offset of its first
/// record, and where the records after it begin.
fn scan_range(
    data: &[u8],
    start: u64,
    align: bool,
    end: Option<u64>,
    tuning: Tuning,
) -> (Vec<RecordBatch>, Option<u64>, u64) {
    let dialect = Dialect::new(b',');
    let mut header = data;
    let (names, _) = read_header(&mut header, &dialect).expect("the header is valid");
    let layout = Layout::from_header(Kind::Orders, &names).expect("all columns present");
    let base = if align { start - 1 } else { start };
    let mut reader = std::io::Cursor::new(data);
    reader.set_position(base);
    let mut scanner = Scanner::range(reader, layout, dialect, tuning, base, align, end);
    let mut out = Vec::new();
    while let Some(batches) = scanner.next_batches().expect("reading a slice never fails") {
        out.extend(batches);
    }
    let next = scanner
        .next_record()
        .expect("a finished scan says where the next records are");
    (out, scanner.first_record(), next)
}

/// Every row as (row number, the rest of its columns).
fn numbered(batches: &[RecordBatch]) -> Vec<(i64, String)> {
    let mut rows = Vec::new();
    for batch in batches {
        let numbers = batch.column(0).as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            let one = batch.slice(i, 1);
            rows.push((numbers.value(i), format!("{:?}", &one.columns()[1..])));
        }
    }
    rows
}

/// The rows of every range, stitched the way the sharded plan does: a range whose guessed
/// start is not where the range before it ended is scanned again from there, and row numbers
/// are shifted by the rows of the ranges before.
fn scan_ranges(data: &[u8], data_start: u64, cuts: &[u64], tuning: Tuning) -> Vec<(i64, String)> {
    let mut bounds = vec![data_start];
    bounds.extend(cuts.iter().copied().filter(|&c| c > data_start));
    let mut rows = Vec::new();
    let mut expected = data_start;
    for (k, &start) in bounds.iter().enumerate() {
        let end = bounds.get(k + 1).copied();
        let (mut batches, first, mut next) = scan_range(data, start, k > 0, end, tuning);
        if k > 0 && first.unwrap_or(next) != expected {
            (batches, _, next) = scan_range(data, expected, false, end, tuning);
        }
        let shift = rows.len() as i64;
        rows.extend(
            numbered(&batches)
                .into_iter()
                .map(|(n, line)| (n + shift, line)),
        );
        expected = next;
    }
    assert_eq!(
        expected,
        data.len() as u64,
        "the last range ends at the end of the file"
    );
    rows
}

#[test]
fn byte_ranges_stitched_give_the_whole_file_scan() {
    let iterations: usize = std::env::var("FASTCLV_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let mut rng = Rng(0xB17E5 | 1);
    let tuning = Tuning {
        chunk_bytes: 7,
        threads: 2,
    };
    for i in 0..iterations {
        let data = input(&mut rng);
        let mut header = data.as_slice();
        let (_, rest) = read_header(&mut header, &Dialect::new(b',')).expect("valid header");
        let data_start = (data.len() - header.len() - rest.len()) as u64;
        let whole = numbered(&scan(&data, tuning));
        let size = data.len() as u64;
        // Random sets of up to 8 cuts (a single cut in half of them).
        let mut cut_sets = Vec::new();
        for _ in 0..24 {
            let n = if rng.below(2) == 0 {
                1
            } else {
                1 + rng.below(8)
            };
            let mut cuts: Vec<u64> = (0..n)
                .map(|_| data_start + 1 + rng.below((size - data_start).max(1) as usize) as u64)
                .filter(|&c| c < size)
                .collect();
            cuts.sort_unstable();
            cuts.dedup();
            cut_sets.push(cuts);
        }
        for cuts in cut_sets {
            let got = scan_ranges(&data, data_start, &cuts, tuning);
            assert_eq!(got, whole, "iteration {i}, cuts {cuts:?}: {data:?}");
        }
    }
}

/// Every row of a scan split into `buckets` (with [`Scanner::split`]), by bucket, each bucket's
/// rows as (row number, the rest of its columns), in the order the scan gave them; `end` cuts
/// the scan at a byte range's end (from the data's start).
fn scan_split(
    data: &[u8],
    buckets: usize,
    end: Option<u64>,
    tuning: Tuning,
) -> Vec<Vec<(i64, String)>> {
    let dialect = Dialect::new(b',');
    let mut reader = data;
    let (names, rest) = read_header(&mut reader, &dialect).expect("the header is valid");
    let header_bytes = (data.len() - reader.len() - rest.len()) as u64;
    let layout = Layout::from_header(Kind::Orders, &names).expect("all columns present");
    let mut scanner = Scanner::new(reader, layout, dialect, tuning, rest, header_bytes)
        .limited(end)
        .split(buckets);
    let mut out = vec![Vec::new(); buckets + 1];
    while let Some(parts) = scanner.next_parts().expect("reading a slice never fails") {
        for (bucket, batch) in parts {
            let bucket = bucket.expect("a split scan tags every batch");
            out[bucket].extend(numbered(&[batch]));
        }
    }
    out
}

/// The rows of an unsplit scan put in buckets by the rule: a passing row (no reason) by its
/// key hash, a rejected one in bucket `buckets`.
fn by_rule(batches: &[RecordBatch], buckets: usize) -> Vec<Vec<(i64, String)>> {
    let mut out = vec![Vec::new(); buckets + 1];
    for batch in batches {
        let reason = batch.column_by_name("_reason").expect("a reason column");
        let hash = batch
            .column_by_name("_key_hash")
            .expect("a key hash column")
            .as_primitive::<arrow_array::types::UInt64Type>();
        let rows = numbered(std::slice::from_ref(batch));
        for (i, row) in rows.into_iter().enumerate() {
            let bucket = if reason.is_null(i) {
                (hash.value(i) & (buckets as u64 - 1)) as usize
            } else {
                buckets
            };
            out[bucket].push(row);
        }
    }
    out
}

#[test]
fn a_split_scan_routes_every_row_to_its_bucket_in_order_under_any_chunking() {
    let mut rng = Rng(0xB0C4 | 1);
    for i in 0..30 {
        let data = input(&mut rng);
        let whole = scan(
            &data,
            Tuning {
                chunk_bytes: 1 << 30,
                threads: 1,
            },
        );
        // A byte range's end somewhere in the data: the rows that start before it.
        let cut = data.len() as u64 / 2 + 1;
        let limited = scan_to(
            &data,
            Some(cut),
            Tuning {
                chunk_bytes: 1 << 30,
                threads: 1,
            },
        );
        for buckets in [1, 4] {
            let expected = by_rule(&whole, buckets);
            let expected_limited = by_rule(&limited, buckets);
            for (chunk_bytes, threads) in [(1 << 30, 1), (1, 1), (5, 2), (23, 3)] {
                let tuning = Tuning {
                    chunk_bytes,
                    threads,
                };
                assert_eq!(
                    scan_split(&data, buckets, None, tuning),
                    expected,
                    "iteration {i}, {buckets} buckets, chunk {chunk_bytes}, threads {threads}: {data:?}"
                );
                assert_eq!(
                    scan_split(&data, buckets, Some(cut), tuning),
                    expected_limited,
                    "iteration {i}, {buckets} buckets, cut at {cut}, chunk {chunk_bytes}, threads {threads}: {data:?}"
                );
            }
        }
    }
}
