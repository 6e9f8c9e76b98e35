//! A bounded fuzz run: random hostile bytes through the whole scanner must never panic, and
//! every chunking and thread count must give exactly the single-chunk result.
//!
//! `FASTCLV_FUZZ_ITERS` sets the number of inputs (default 40; `make fuzz` runs many more).

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
    let dialect = Dialect::new(b',');
    let mut reader = data;
    let (names, rest) = read_header(&mut reader, &dialect).expect("the header is valid");
    let header_bytes = (data.len() - reader.len() - rest.len()) as u64;
    let layout = Layout::from_header(Kind::Orders, &names).expect("all columns present");
    let mut scanner = Scanner::new(reader, layout, dialect, tuning, rest, header_bytes);
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
