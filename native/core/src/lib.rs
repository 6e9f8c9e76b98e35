//! fastclv's native core: one job, bytes in, typed Arrow batches and rejects out.
//!
//! * [`csv`]: the strict RFC 4180 state machine (framing and tokenizing).
//! * [`values`]: the contract's value rules (dates, timestamps, money, ...).
//! * [`check`]: the row-level checks per file and the Arrow columns they fill.
//! * [`scan`]: the parallel, bounded-memory driver over a byte stream.
//! * [`concat`]: staged Parquet files joined without decoding them (the buckets' files into
//!   the staged input).
//!
//! Duplicates, foreign keys and everything relational stay in Polars (STYLE.md).

pub mod check;
pub mod concat;
pub mod csv;
pub mod scan;
pub mod values;
