//! Row-level checks of the contract (section 2, `malformed_row` .. `discount_exceeds_amount`)
//! and the Arrow columns they fill, one builder set per input file kind.

use std::sync::Arc;

use arrow_array::builder::{
    Date32Builder, Decimal128Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder, UInt64Builder,
};
use arrow_array::{new_null_array, ArrayRef, Int64Array, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field as ArrowField, Schema, SchemaRef, TimeUnit};
use xxhash_rust::xxh3::xxh3_64;

use crate::values::{parse_date, parse_money, parse_quantity, parse_status, parse_timestamp};

/// The three input files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Customers,
    Orders,
    OrderItems,
}

impl Kind {
    /// From the contract's short name.
    pub fn from_name(name: &str) -> Option<Kind> {
        match name {
            "customers" => Some(Kind::Customers),
            "orders" => Some(Kind::Orders),
            "order_items" => Some(Kind::OrderItems),
            _ => None,
        }
    }

    /// The contract columns read from the file, in slot order: required ones, then optional.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Kind::Customers => &["customer_id", "signup_date", "country"],
            Kind::Orders => &["order_id", "customer_id", "order_ts", "status"],
            Kind::OrderItems => &["order_id", "sku", "quantity", "unit_price", "discount"],
        }
    }

    /// How many of [`Kind::columns`] are required.
    pub fn n_required(self) -> usize {
        match self {
            Kind::Customers => 2,
            Kind::Orders => 4,
            Kind::OrderItems => 4,
        }
    }
}

/// Reject reason codes the scanner decides, in the contract's priority order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    MalformedRow,
    MissingValue,
    BadDate,
    BadTimestamp,
    BadStatus,
    BadQuantity,
    BadMoney,
    DiscountExceedsAmount,
}

impl Reason {
    pub fn code(self) -> &'static str {
        match self {
            Reason::MalformedRow => "malformed_row",
            Reason::MissingValue => "missing_value",
            Reason::BadDate => "bad_date",
            Reason::BadTimestamp => "bad_timestamp",
            Reason::BadStatus => "bad_status",
            Reason::BadQuantity => "bad_quantity",
            Reason::BadMoney => "bad_money",
            Reason::DiscountExceedsAmount => "discount_exceeds_amount",
        }
    }
}

/// A failed check: the reason and the offending column (None for the whole row).
pub type Failure = (Reason, Option<&'static str>);

/// Names of the columns every batch carries besides the typed ones.
pub const ROW: &str = "row";
pub const REASON: &str = "_reason";
pub const COLUMN: &str = "_column";
pub const RAW: &str = "_raw";
pub const OFFSET: &str = "_offset";
pub const LENGTH: &str = "_length";
pub const KEY_HASH: &str = "_key_hash";
/// An order's hash of its customer_id (the same [`key_hash`] as the customer's own): the
/// customer-hash bucket an order's customer lookup is routed to.
pub const PARENT_HASH: &str = "_parent_hash";

/// Longest raw record text kept with a reject (bytes); longer ones are cut, and say so.
pub const RAW_LIMIT: usize = 64 * 1024;

/// The Arrow schema of one kind's batches.
pub fn schema(kind: Kind) -> SchemaRef {
    let utf8 = |name: &str| ArrowField::new(name, DataType::Utf8, true);
    let mut fields = vec![ArrowField::new(ROW, DataType::Int64, false)];
    match kind {
        Kind::Customers => fields.extend([
            utf8("customer_id"),
            ArrowField::new("signup_date", DataType::Date32, true),
            utf8("country"),
            ArrowField::new(KEY_HASH, DataType::UInt64, true),
        ]),
        Kind::Orders => fields.extend([
            utf8("order_id"),
            utf8("customer_id"),
            ArrowField::new(
                "order_ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            utf8("status"),
            ArrowField::new(KEY_HASH, DataType::UInt64, true),
            ArrowField::new(PARENT_HASH, DataType::UInt64, true),
        ]),
        Kind::OrderItems => fields.extend([
            utf8("order_id"),
            utf8("sku"),
            ArrowField::new("quantity", DataType::Int32, true),
            ArrowField::new("unit_price", DataType::Decimal128(18, 2), true),
            ArrowField::new("discount", DataType::Decimal128(18, 2), true),
            ArrowField::new(KEY_HASH, DataType::UInt64, true),
        ]),
    }
    fields.extend([
        utf8(REASON),
        utf8(COLUMN),
        utf8(RAW),
        ArrowField::new(OFFSET, DataType::Int64, false),
        ArrowField::new(LENGTH, DataType::Int64, false),
    ]);
    Arc::new(Schema::new(fields))
}

/// The hash (xxh3, 64 bits, of the trimmed value) of a file's own key (customers, orders)
/// or of its parent's key (an item's order_id): repeated keys are found on it, and rows
/// are put in key-hash buckets by it, so that an order and its items share a bucket. Stable
/// across runs and machines, so buckets and shards agree on it.
#[inline]
pub fn key_hash(value: &[u8]) -> u64 {
    xxh3_64(value)
}

/// Values of the contract columns of one record, trimmed; `None` when missing.
pub type Values<'a> = [Option<&'a [u8]>];

fn required<'a>(kind: Kind, values: &Values<'a>) -> Result<(), Failure> {
    let names = kind.columns();
    for (slot, name) in names.iter().enumerate().take(kind.n_required()) {
        if values[slot].is_none() {
            return Err((Reason::MissingValue, Some(name)));
        }
    }
    Ok(())
}

// Values are valid UTF-8 (the record was checked); this is the zero-cost view.
fn text(v: &[u8]) -> &str {
    std::str::from_utf8(v).unwrap_or_default()
}

/// A record's values once every check has passed: what its row holds.
enum Checked<'a> {
    Customer {
        id: &'a [u8],
        day: i32,
        country: Option<&'a [u8]>,
    },
    Order {
        id: &'a [u8],
        customer: &'a [u8],
        instant: i64,
        status: &'static str,
    },
    Item {
        order: &'a [u8],
        sku: &'a [u8],
        qty: i32,
        price: i64,
        discount: i64,
    },
}

impl Checked<'_> {
    /// The value [`key_hash`] is taken of: the file's own key, or an item's order_id.
    fn key(&self) -> &[u8] {
        match self {
            Checked::Customer { id, .. } | Checked::Order { id, .. } => id,
            Checked::Item { order, .. } => order,
        }
    }
}

/// Every row-level check of one well-formed record, in the contract's order.
fn check<'a>(kind: Kind, v: &Values<'a>) -> Result<Checked<'a>, Failure> {
    required(kind, v)?;
    match kind {
        Kind::Customers => {
            let (id, signup) = (v[0].unwrap_or_default(), v[1].unwrap_or_default());
            let day = parse_date(signup).ok_or((Reason::BadDate, Some("signup_date")))?;
            Ok(Checked::Customer {
                id,
                day,
                country: v[2],
            })
        }
        Kind::Orders => {
            let [Some(id), Some(customer), Some(ts), Some(status)] = [v[0], v[1], v[2], v[3]]
            else {
                return Err((Reason::MissingValue, None));
            };
            let instant = parse_timestamp(ts).ok_or((Reason::BadTimestamp, Some("order_ts")))?;
            let status = parse_status(status).ok_or((Reason::BadStatus, Some("status")))?;
            Ok(Checked::Order {
                id,
                customer,
                instant,
                status,
            })
        }
        Kind::OrderItems => {
            let [Some(order), Some(sku), Some(qty), Some(price)] = [v[0], v[1], v[2], v[3]] else {
                return Err((Reason::MissingValue, None));
            };
            let qty = parse_quantity(qty).ok_or((Reason::BadQuantity, Some("quantity")))?;
            let price = parse_money(price).ok_or((Reason::BadMoney, Some("unit_price")))?;
            let discount = match v[4] {
                None => 0,
                Some(d) => parse_money(d).ok_or((Reason::BadMoney, Some("discount")))?,
            };
            if i128::from(discount) > i128::from(qty) * i128::from(price) {
                return Err((Reason::DiscountExceedsAmount, Some("discount")));
            }
            Ok(Checked::Item {
                order,
                sku,
                qty,
                price,
                discount,
            })
        }
    }
}

/// The column builders of one batch.
pub struct Columns {
    kind: Kind,
    rows: usize,
    /// Holds passing rows only (a key-hash bucket's set): the reject columns are not
    /// built row by row but made all null at the end (fewer memory streams per row).
    passing: bool,
    s1: StringBuilder,
    s2: StringBuilder,
    s3: StringBuilder,
    date: Date32Builder,
    ts: TimestampMicrosecondBuilder,
    qty: Int32Builder,
    price: Decimal128Builder,
    discount: Decimal128Builder,
    key_hash: UInt64Builder,
    parent_hash: UInt64Builder,
    reason: StringBuilder,
    column: StringBuilder,
    raw: StringBuilder,
    offset: Int64Builder,
    length: Int64Builder,
}

impl Columns {
    pub fn new(kind: Kind, capacity: usize) -> Self {
        Columns {
            kind,
            rows: 0,
            passing: false,
            s1: StringBuilder::with_capacity(capacity, capacity * 8),
            s2: StringBuilder::with_capacity(capacity, capacity * 8),
            s3: StringBuilder::with_capacity(if kind == Kind::Customers { capacity } else { 0 }, 0),
            date: Date32Builder::with_capacity(0),
            ts: TimestampMicrosecondBuilder::with_capacity(0).with_timezone("UTC"),
            qty: Int32Builder::with_capacity(0),
            price: Decimal128Builder::with_capacity(0),
            discount: Decimal128Builder::with_capacity(0),
            key_hash: UInt64Builder::with_capacity(capacity),
            parent_hash: UInt64Builder::with_capacity(if kind == Kind::Orders {
                capacity
            } else {
                0
            }),
            reason: StringBuilder::with_capacity(capacity, 0),
            column: StringBuilder::with_capacity(capacity, 0),
            raw: StringBuilder::with_capacity(capacity, 0),
            offset: Int64Builder::with_capacity(capacity),
            length: Int64Builder::with_capacity(capacity),
        }
    }

    /// Builders for passing rows only (see [`Columns::push_checked`]).
    fn passing(kind: Kind, capacity: usize) -> Self {
        let mut columns = Columns::new(kind, capacity);
        columns.reason = StringBuilder::new();
        columns.column = StringBuilder::new();
        columns.raw = StringBuilder::new();
        columns.passing = true;
        columns
    }

    /// Rows appended so far.
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Append a row that passed every check (`hash`: [`key_hash`] of its key).
    fn push_checked(&mut self, row: &Checked<'_>, hash: u64, offset: i64, length: usize) {
        match *row {
            Checked::Customer { id, day, country } => {
                self.s1.append_value(text(id));
                self.date.append_value(day);
                self.s3.append_option(country.map(text));
            }
            Checked::Order {
                id,
                customer,
                instant,
                status,
            } => {
                self.s1.append_value(text(id));
                self.s2.append_value(text(customer));
                self.ts.append_value(instant);
                self.s3.append_value(status);
                self.parent_hash.append_value(key_hash(customer));
            }
            Checked::Item {
                order,
                sku,
                qty,
                price,
                discount,
            } => {
                self.s1.append_value(text(order));
                self.s2.append_value(text(sku));
                self.qty.append_value(qty);
                self.price.append_value(i128::from(price));
                self.discount.append_value(i128::from(discount));
            }
        }
        self.key_hash.append_value(hash);
        if !self.passing {
            self.reason.append_null();
            self.column.append_null();
            self.raw.append_null();
        }
        self.finish_row(offset, length);
    }

    /// Append a reject: the typed columns null, the reason, column and raw text.
    fn push_reject(&mut self, failure: Failure, raw: &[u8], offset: i64) {
        assert!(!self.passing, "a reject routed to a bucket of passing rows");
        self.push_nulls();
        self.push_failure(failure, raw);
        self.finish_row(offset, raw.len());
    }

    /// Append a `malformed_row` reject.
    pub fn push_malformed(&mut self, raw: &[u8], offset: i64) {
        self.push_reject((Reason::MalformedRow, None), raw, offset);
    }

    fn finish_row(&mut self, offset: i64, length: usize) {
        self.offset.append_value(offset);
        self.length.append_value(length as i64);
        self.rows += 1;
    }

    fn push_failure(&mut self, (reason, column): Failure, raw: &[u8]) {
        self.reason.append_value(reason.code());
        self.column.append_option(column);
        self.raw.append_value(escape_raw(raw));
    }

    fn push_nulls(&mut self) {
        self.s1.append_null();
        if self.kind != Kind::Customers {
            self.s2.append_null();
        }
        match self.kind {
            Kind::Customers => {
                self.date.append_null();
                self.s3.append_null();
                self.key_hash.append_null();
            }
            Kind::Orders => {
                self.ts.append_null();
                self.s3.append_null();
                self.key_hash.append_null();
                self.parent_hash.append_null();
            }
            Kind::OrderItems => {
                self.qty.append_null();
                self.price.append_null();
                self.discount.append_null();
                self.key_hash.append_null();
            }
        }
    }

    /// The batch, with row numbers `first_row ..`.
    pub fn finish(mut self, first_row: i64) -> Result<RecordBatch, ArrowError> {
        let n = self.rows as i64;
        let row: ArrayRef = Arc::new(arrow_array::Int64Array::from_iter_values(
            first_row..first_row + n,
        ));
        let mut columns: Vec<ArrayRef> = vec![row];
        match self.kind {
            Kind::Customers => {
                columns.push(Arc::new(self.s1.finish()));
                columns.push(Arc::new(self.date.finish()));
                columns.push(Arc::new(self.s3.finish()));
                columns.push(Arc::new(self.key_hash.finish()));
            }
            Kind::Orders => {
                columns.push(Arc::new(self.s1.finish()));
                columns.push(Arc::new(self.s2.finish()));
                columns.push(Arc::new(self.ts.finish()));
                columns.push(Arc::new(self.s3.finish()));
                columns.push(Arc::new(self.key_hash.finish()));
                columns.push(Arc::new(self.parent_hash.finish()));
            }
            Kind::OrderItems => {
                columns.push(Arc::new(self.s1.finish()));
                columns.push(Arc::new(self.s2.finish()));
                columns.push(Arc::new(self.qty.finish()));
                columns.push(Arc::new(
                    self.price.finish().with_precision_and_scale(18, 2)?,
                ));
                columns.push(Arc::new(
                    self.discount.finish().with_precision_and_scale(18, 2)?,
                ));
                columns.push(Arc::new(self.key_hash.finish()));
            }
        }
        if self.passing {
            let nulls = new_null_array(&DataType::Utf8, self.rows);
            columns.extend([nulls.clone(), nulls.clone(), nulls]);
        } else {
            columns.push(Arc::new(self.reason.finish()));
            columns.push(Arc::new(self.column.finish()));
            columns.push(Arc::new(self.raw.finish()));
        }
        columns.push(Arc::new(self.offset.finish()));
        columns.push(Arc::new(self.length.finish()));
        RecordBatch::try_new(schema(self.kind), columns)
    }
}

/// The rows of one chunk, routed as they are checked: all in one builder set, or (with key-hash
/// buckets) a passing row to the set of bucket `key_hash & (buckets - 1)` and a rejected one
/// to the extra set `buckets`, so that a scan split by bucket copies no row twice. Row order
/// is kept inside each set, and each row's index in the chunk with it.
pub struct Routed {
    parts: Vec<Columns>,
    /// Per set, the index in the chunk of each of its rows (with buckets only).
    index: Vec<Vec<usize>>,
    /// `buckets - 1`, or None for one set.
    mask: Option<u64>,
    rows: usize,
}

impl Routed {
    /// `buckets` a power of two, or 0 for one set of every row.
    pub fn new(kind: Kind, buckets: usize, capacity: usize) -> Self {
        if buckets == 0 {
            return Routed {
                parts: vec![Columns::new(kind, capacity)],
                index: Vec::new(),
                mask: None,
                rows: 0,
            };
        }
        debug_assert!(buckets.is_power_of_two());
        let each = capacity / buckets + 16;
        let mut parts: Vec<Columns> = (0..buckets).map(|_| Columns::passing(kind, each)).collect();
        parts.push(Columns::new(kind, 16));
        Routed {
            parts,
            index: (0..=buckets).map(|_| Vec::with_capacity(each)).collect(),
            mask: Some(buckets as u64 - 1),
            rows: 0,
        }
    }

    /// Rows appended so far.
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Check one well-formed record's values and append it to its set.
    pub fn push_values(&mut self, values: &Values<'_>, raw: &[u8], offset: i64) {
        let kind = self.parts[0].kind;
        match check(kind, values) {
            Ok(row) => {
                let hash = key_hash(row.key());
                let k = self.mask.map_or(0, |m| (hash & m) as usize);
                self.parts[k].push_checked(&row, hash, offset, raw.len());
                self.note(k);
            }
            Err(failure) => {
                let k = self.rejects();
                self.parts[k].push_reject(failure, raw, offset);
                self.note(k);
            }
        }
    }

    /// Append a `malformed_row` reject.
    pub fn push_malformed(&mut self, raw: &[u8], offset: i64) {
        let k = self.rejects();
        self.parts[k].push_malformed(raw, offset);
        self.note(k);
    }

    fn rejects(&self) -> usize {
        self.parts.len() - 1
    }

    fn note(&mut self, k: usize) {
        if self.mask.is_some() {
            self.index[k].push(self.rows);
        }
        self.rows += 1;
    }

    /// The sets as batches, with the bucket of each (None for one set), leaving out the
    /// chunk's first `skip` rows and empty sets; the chunk's row `skip` is numbered
    /// `first_row`, and the rows after it follow on.
    pub fn finish(
        self,
        skip: usize,
        first_row: i64,
    ) -> Result<Vec<(Option<usize>, RecordBatch)>, ArrowError> {
        let number = |batch: RecordBatch, rows: Int64Array| {
            let mut arrays = batch.columns().to_vec();
            arrays[0] = Arc::new(rows);
            RecordBatch::try_new(batch.schema(), arrays)
        };
        let Routed {
            parts, index, mask, ..
        } = self;
        if mask.is_none() {
            let Some(columns) = parts.into_iter().next() else {
                return Ok(Vec::new());
            };
            if columns.len() <= skip {
                return Ok(Vec::new());
            }
            let batch = columns.finish(0)?;
            let n = batch.num_rows() - skip;
            let rows = Int64Array::from_iter_values(first_row..first_row + n as i64);
            return Ok(vec![(None, number(batch.slice(skip, n), rows)?)]);
        }
        let mut out = Vec::new();
        for (k, (columns, index)) in parts.into_iter().zip(index).enumerate() {
            let from = index.partition_point(|&i| i < skip);
            if from == index.len() {
                continue;
            }
            let batch = columns.finish(0)?;
            let rows = Int64Array::from_iter_values(
                index[from..].iter().map(|&i| first_row + (i - skip) as i64),
            );
            out.push((
                Some(k),
                number(batch.slice(from, index.len() - from), rows)?,
            ));
        }
        Ok(out)
    }
}

/// A reject's raw text: UTF-8 kept as it is, each invalid byte as `\xNN`, cut at
/// [`RAW_LIMIT`] bytes with a note of how much was cut.
pub fn escape_raw(raw: &[u8]) -> String {
    let (head, cut) = if raw.len() > RAW_LIMIT {
        (&raw[..RAW_LIMIT], raw.len() - RAW_LIMIT)
    } else {
        (raw, 0)
    };
    let mut out = String::with_capacity(head.len());
    for chunk in head.utf8_chunks() {
        // NUL is valid UTF-8 but makes a row malformed (`scan::is_text`): escaped like a bad byte.
        for (i, piece) in chunk.valid().split('\0').enumerate() {
            if i > 0 {
                out.push_str("\\x00");
            }
            out.push_str(piece);
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    if cut > 0 {
        out.push_str(&format!("... [{cut} more bytes]"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one batch of an unsplit chunk, rows numbered from 1.
    fn one_batch(rows: Routed) -> RecordBatch {
        let mut parts = rows.finish(0, 1).unwrap();
        assert_eq!(parts.len(), 1);
        parts.remove(0).1
    }

    #[test]
    fn escapes_invalid_utf8_and_nul_only() {
        assert_eq!(escape_raw(b"a\xffb\xc3\xa9"), "a\\xffbé");
        assert_eq!(escape_raw(b"\0U\0\0S\0"), "\\x00U\\x00\\x00S\\x00");
        let long = vec![b'x'; RAW_LIMIT + 5];
        assert!(escape_raw(&long).ends_with("... [5 more bytes]"));
    }

    #[test]
    fn item_checks_in_contract_order() {
        let mut c = Routed::new(Kind::OrderItems, 0, 4);
        let row =
            |o: &'static str, s, q, p, d: Option<&'static str>| -> Vec<Option<&'static [u8]>> {
                [Some(o), Some(s), Some(q), Some(p), d]
                    .iter()
                    .map(|v| v.map(str::as_bytes))
                    .collect()
            };
        c.push_values(&row("o1", "s", "x", "-1", None), b"r", 0);
        c.push_values(&row("o1", "s", "2", "1.5", Some("3.01")), b"r", 1);
        c.push_values(&row("o1", "s", "2", "1.5", Some("3.00")), b"r", 2);
        let mut missing = row("o1", "s", "2", "1", None);
        missing[1] = None;
        c.push_values(&missing, b"r", 3);
        let batch = one_batch(c);
        let reasons = batch.column_by_name(REASON).unwrap();
        let reasons = reasons
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .unwrap();
        let got: Vec<_> = reasons.iter().collect();
        assert_eq!(
            got,
            vec![
                Some("bad_quantity"),
                Some("discount_exceeds_amount"),
                None,
                Some("missing_value")
            ]
        );
    }

    #[test]
    fn an_order_carries_its_customers_key_hash() {
        let mut customers = Routed::new(Kind::Customers, 0, 1);
        customers.push_values(&[Some(b"c7"), Some(b"2024-01-02"), None], b"r", 0);
        let mut orders = Routed::new(Kind::Orders, 0, 2);
        let order =
            |ts: &'static [u8]| [Some(&b"o1"[..]), Some(b"c7"), Some(ts), Some(b"completed")];
        orders.push_values(&order(b"2024-03-01T10:00:00Z"), b"r", 0);
        orders.push_values(&order(b"not a time"), b"r", 1);
        let hashes = |batch: &RecordBatch, name: &str| -> Vec<Option<u64>> {
            let column = batch.column_by_name(name).unwrap();
            let column = column
                .as_any()
                .downcast_ref::<arrow_array::UInt64Array>()
                .unwrap();
            column.iter().collect()
        };
        let customers = one_batch(customers);
        let orders = one_batch(orders);
        let own = hashes(&customers, KEY_HASH)[0];
        assert_eq!(own, Some(key_hash(b"c7")));
        assert_eq!(hashes(&orders, PARENT_HASH), vec![own, None]);
        assert_eq!(hashes(&orders, KEY_HASH)[0], Some(key_hash(b"o1")));
        assert!(customers.column_by_name(PARENT_HASH).is_none());
    }
}
