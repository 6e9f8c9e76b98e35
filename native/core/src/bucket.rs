//! Key-hash buckets: the rows of a batch split by the hash of their key, so that duplicate
//! and foreign-key resolution can hold one bucket at a time (and shards can share the work).
//!
//! A row that passed the scanner's checks goes to bucket `hash & (buckets - 1)`; a row the
//! scanner rejected goes to the extra bucket `buckets`. Row order is kept inside a bucket.

use arrow_array::{Array, RecordBatch, UInt32Array, UInt64Array};
use arrow_schema::ArrowError;
use arrow_select::take::take_record_batch;

use crate::check::{KEY_HASH, REASON};

/// Split `batch` into `(bucket, rows)` parts, in bucket order, leaving out empty buckets.
///
/// `buckets` must be a power of two (1 keeps every passing row in bucket 0).
pub fn split(batch: &RecordBatch, buckets: usize) -> Result<Vec<(usize, RecordBatch)>, ArrowError> {
    if !buckets.is_power_of_two() {
        return Err(ArrowError::InvalidArgumentError(format!(
            "the bucket count must be a power of two, not {buckets}"
        )));
    }
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| ArrowError::SchemaError(format!("no column {name}")))
    };
    let reason = column(REASON)?;
    let hash = column(KEY_HASH)?
        .as_any()
        .downcast_ref::<UInt64Array>()
        .ok_or_else(|| ArrowError::SchemaError(format!("{KEY_HASH} is not UInt64")))?;
    let mask = (buckets - 1) as u64;
    let n = batch.num_rows();
    // A counting sort of the row indices by bucket: stable, two passes over the tags.
    let tags: Vec<usize> = (0..n)
        .map(|i| {
            if reason.is_null(i) && hash.is_valid(i) {
                (hash.value(i) & mask) as usize
            } else {
                buckets
            }
        })
        .collect();
    let mut counts = vec![0usize; buckets + 1];
    for &t in &tags {
        counts[t] += 1;
    }
    if let Some(only) = counts.iter().position(|&c| c == n) {
        return Ok(if n == 0 {
            Vec::new()
        } else {
            vec![(only, batch.clone())]
        });
    }
    let mut next: Vec<usize> = counts
        .iter()
        .scan(0, |sum, &c| {
            let start = *sum;
            *sum += c;
            Some(start)
        })
        .collect();
    let mut order = vec![0u32; n];
    for (i, &t) in tags.iter().enumerate() {
        order[next[t]] = i as u32;
        next[t] += 1;
    }
    let sorted = take_record_batch(batch, &UInt32Array::from(order))?;
    let mut parts = Vec::new();
    let mut start = 0;
    for (bucket, &count) in counts.iter().enumerate() {
        if count > 0 {
            parts.push((bucket, sorted.slice(start, count)));
        }
        start += count;
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batch(hashes: &[Option<u64>], reasons: &[Option<&str>]) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("row", DataType::Int64, false),
            Field::new(KEY_HASH, DataType::UInt64, true),
            Field::new(REASON, DataType::Utf8, true),
        ]);
        let rows = Int64Array::from_iter_values(1..=hashes.len() as i64);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(rows),
                Arc::new(UInt64Array::from(hashes.to_vec())),
                Arc::new(StringArray::from(reasons.to_vec())),
            ],
        )
        .unwrap()
    }

    fn rows(part: &RecordBatch) -> Vec<i64> {
        let col = part
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        col.values().to_vec()
    }

    #[test]
    fn rows_go_to_their_hash_bucket_in_order_and_rejects_last() {
        let b = batch(
            &[Some(5), Some(2), None, Some(7), Some(4), Some(1)],
            &[
                None,
                None,
                Some("malformed_row"),
                None,
                Some("bad_date"),
                None,
            ],
        );
        let parts = split(&b, 4).unwrap();
        let got: Vec<(usize, Vec<i64>)> = parts.iter().map(|(k, p)| (*k, rows(p))).collect();
        assert_eq!(
            got,
            vec![(1, vec![1, 6]), (2, vec![2]), (3, vec![4]), (4, vec![3, 5])]
        );
    }

    #[test]
    fn one_bucket_keeps_the_batch_and_empty_gives_nothing() {
        let b = batch(&[Some(5), Some(2)], &[None, None]);
        let parts = split(&b, 1).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!((parts[0].0, rows(&parts[0].1)), (0, vec![1, 2]));
        assert!(split(&b.slice(0, 0), 8).unwrap().is_empty());
        assert!(split(&b, 3).is_err());
    }
}
