//! `fastclv._native`: the scanner as a Python iterator of Arrow record batches.
//!
//! The batches leave through the Arrow PyCapsule interface (`__arrow_c_array__`), so pyarrow
//! and Polars take them without a copy. Nothing here panics across the boundary: scanner
//! errors become `FormatError` or `OSError`, and a panic (a bug) becomes `InternalError`.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use arrow_array::ffi::to_ffi;
use arrow_array::{Array, RecordBatch, StructArray};
use fastclv_core::check::{Columns, Kind};
use fastclv_core::concat::{self, ConcatError};
use fastclv_core::csv::Dialect;
use fastclv_core::scan::{read_header, Layout, ScanError, Scanner, Tuning};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyCapsule, PyTuple};

create_exception!(
    _native,
    FormatError,
    PyException,
    "The input is not CSV text the scanner can read."
);
create_exception!(
    _native,
    InternalError,
    PyException,
    "A bug in the scanner (never bad input)."
);

/// A Python binary file object (`read(n) -> bytes`) as a Rust reader.
struct PyReader(Py<PyAny>);

impl Read for PyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Python::attach(|py| {
            let data = self
                .0
                .bind(py)
                .call_method1("read", (buf.len(),))
                .map_err(io::Error::other)?;
            let bytes = data
                .cast::<PyBytes>()
                .map_err(|e| io::Error::other(e.to_string()))?
                .as_bytes();
            let n = bytes.len().min(buf.len());
            buf[..n].copy_from_slice(&bytes[..n]);
            Ok(n)
        })
    }
}

impl Seek for PyReader {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let (offset, whence) = match pos {
            SeekFrom::Start(n) => (i64::try_from(n).map_err(io::Error::other)?, 0),
            SeekFrom::Current(n) => (n, 1),
            SeekFrom::End(n) => (n, 2),
        };
        Python::attach(|py| {
            self.0
                .bind(py)
                .call_method1("seek", (offset, whence))
                .and_then(|p| p.extract::<u64>())
                .map_err(io::Error::other)
        })
    }
}

/// What a scan reads: a local file, or a Python file object that can seek (byte ranges).
trait ReadSeek: Read + Seek {}
impl<T: Read + Seek> ReadSeek for T {}

type Source = Box<dyn ReadSeek + Send>;

enum State {
    /// Header read; waiting for the layout.
    Opened {
        reader: Source,
        rest: Vec<u8>,
        header_bytes: u64,
    },
    Scanning(Box<Scanner<Source>>),
    Done,
}

fn scan_error(e: ScanError) -> PyErr {
    match e {
        ScanError::Io(e) => e.into(),
        ScanError::Format(m) => FormatError::new_err(m),
        ScanError::Arrow(e) => InternalError::new_err(e.to_string()),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// One input file being scanned: `Scan(source, kind, delimiter=",", chunk_bytes=0, threads=0)`.
///
/// `source` is a local path or a binary file object. The header is read at once (`names`);
/// `start(positions)` sets which field feeds each contract column, then iteration yields
/// `Batch` objects in file order.
#[pyclass(module = "fastclv._native")]
struct Scan {
    kind: Kind,
    dialect: Dialect,
    tuning: Tuning,
    names: Vec<String>,
    state: Mutex<State>,
    bytes_read: u64,
    rows: i64,
    /// Data start (the header's length in bytes).
    data_start: u64,
    first_record: Option<u64>,
    next_record: Option<u64>,
}

#[pymethods]
impl Scan {
    #[new]
    #[pyo3(signature = (source, kind, delimiter = ",", chunk_bytes = 0, threads = 0))]
    fn new(
        py: Python<'_>,
        source: &Bound<'_, PyAny>,
        kind: &str,
        delimiter: &str,
        chunk_bytes: usize,
        threads: usize,
    ) -> PyResult<Self> {
        let kind = Kind::from_name(kind)
            .ok_or_else(|| PyValueError::new_err(format!("unknown file kind {kind:?}")))?;
        let delimiter =
            match delimiter.as_bytes() {
                [d] if !matches!(d, b'"' | b'\r' | b'\n') => *d,
                _ => return Err(PyValueError::new_err(
                    "the delimiter must be one ASCII character other than a quote or a line end",
                )),
            };
        let dialect = Dialect::new(delimiter);
        let mut tuning = Tuning::default();
        if chunk_bytes > 0 {
            tuning.chunk_bytes = chunk_bytes;
        }
        if threads > 0 {
            tuning.threads = threads;
        }
        let mut reader: Source = if let Ok(path) = source.extract::<std::path::PathBuf>() {
            Box::new(File::open(&path)?)
        } else {
            Box::new(PyReader(source.clone().unbind()))
        };
        let (names, rest, header_bytes) = py
            .detach(|| {
                catch_unwind(AssertUnwindSafe(|| {
                    let mut counted = CountBytes {
                        inner: &mut reader,
                        n: 0,
                    };
                    let (names, rest) = read_header(&mut counted, &dialect)?;
                    let header_bytes = counted.n - rest.len() as u64;
                    Ok::<_, ScanError>((names, rest, header_bytes))
                }))
            })
            .map_err(|p| InternalError::new_err(panic_message(p.as_ref())))?
            .map_err(scan_error)?;
        Ok(Scan {
            kind,
            dialect,
            tuning,
            names,
            state: Mutex::new(State::Opened {
                reader,
                rest,
                header_bytes,
            }),
            bytes_read: header_bytes,
            rows: 0,
            data_start: header_bytes,
            first_record: None,
            next_record: None,
        })
    }

    /// The header's field names (unquoted, trimmed), in file order.
    #[getter]
    fn names(&self) -> Vec<String> {
        self.names.clone()
    }

    /// Bytes of the file read so far.
    #[getter]
    fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Data rows numbered so far.
    #[getter]
    fn rows(&self) -> i64 {
        self.rows
    }

    /// File offset of the first data byte (the header's length, BOM and line end included).
    #[getter]
    fn data_start(&self) -> u64 {
        self.data_start
    }

    /// File offset of the first record framed (None: none so far, or none at all).
    #[getter]
    fn first_record(&self) -> Option<u64> {
        self.first_record
    }

    /// Once the scan is over: the file offset of the first record at or after the range's
    /// end (or the end of the file).
    #[getter]
    fn next_record(&self) -> Option<u64> {
        self.next_record
    }

    /// Start scanning: `positions[slot]` is the field index of each contract column of the
    /// kind (required first, then optional), or None for an absent optional column.
    ///
    /// With `buckets` (a power of two), the rows are split by key hash as they are checked:
    /// the ones that pass into buckets `0 .. buckets`, the rejected ones into bucket `buckets`
    /// (each `Batch` says its `bucket`); 0 yields the batches as scanned.
    ///
    /// `start` and `end` scan one byte range (the sharded plan): the records that start in
    /// `[start, end)`, rows numbered from 1 in the range. With `align` the scan skips to the
    /// first line start at or after `start` (a guess, checked by the caller against the
    /// previous range's `next_record`); without it, `start` must be a record start.
    #[pyo3(signature = (positions, buckets = 0, start = None, end = None, align = true))]
    fn start(
        &mut self,
        py: Python<'_>,
        positions: Vec<Option<usize>>,
        buckets: usize,
        start: Option<u64>,
        end: Option<u64>,
        align: bool,
    ) -> PyResult<()> {
        if buckets > 0 && !buckets.is_power_of_two() {
            return Err(PyValueError::new_err(format!(
                "buckets must be a power of two, not {buckets}"
            )));
        }
        let columns = self.kind.columns();
        if positions.len() != columns.len()
            || positions
                .iter()
                .take(self.kind.n_required())
                .any(Option::is_none)
            || positions.iter().flatten().any(|p| *p >= self.names.len())
        {
            return Err(PyValueError::new_err(format!(
                "positions must name a header field for each of {columns:?}"
            )));
        }
        let mut state = self
            .state
            .lock()
            .map_err(|_| InternalError::new_err("scanner state poisoned"))?;
        let State::Opened {
            reader,
            rest,
            header_bytes,
        } = std::mem::replace(&mut *state, State::Done)
        else {
            return Err(PyValueError::new_err("the scan has already started"));
        };
        let layout = Layout {
            kind: self.kind,
            n_fields: self.names.len(),
            positions,
        };
        let scanner = match start {
            Some(at) if at > header_bytes => {
                // A range after the first: seek there (one byte early to see a line start).
                let base = if align { at - 1 } else { at };
                let mut reader = reader;
                py.detach(|| reader.seek(SeekFrom::Start(base)))?;
                Scanner::range(reader, layout, self.dialect, self.tuning, base, align, end)
            }
            // The first range starts at the data, right after the header.
            _ => Scanner::new(
                reader,
                layout,
                self.dialect,
                self.tuning,
                rest,
                header_bytes,
            )
            .limited(end),
        };
        *state = State::Scanning(Box::new(scanner.split(buckets)));
        Ok(())
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// The next batches (a list, in file order); StopIteration at the end.
    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Vec<Batch>>> {
        let state = &self.state;
        let outcome = py.detach(|| {
            catch_unwind(AssertUnwindSafe(|| {
                let mut guard = state
                    .lock()
                    .map_err(|_| ScanError::Format("scanner state poisoned".into()))?;
                match &mut *guard {
                    State::Scanning(scanner) => {
                        let batches = scanner.next_parts()?;
                        let counts = (
                            scanner.bytes_read,
                            scanner.rows(),
                            scanner.first_record(),
                            scanner.next_record(),
                        );
                        if batches.is_none() {
                            *guard = State::Done;
                        }
                        Ok((batches, counts))
                    }
                    State::Done => Ok((None, (0, 0, None, None))),
                    State::Opened { .. } => Err(ScanError::Format(
                        "call start(positions) before iterating".into(),
                    )),
                }
            }))
        });
        let (batches, (bytes, rows, first, next)) = match outcome {
            Err(p) => {
                *self.state.lock().unwrap_or_else(|e| e.into_inner()) = State::Done;
                return Err(InternalError::new_err(format!(
                    "the scanner failed after row {}: {}",
                    self.rows,
                    panic_message(p.as_ref())
                )));
            }
            Ok(result) => result.map_err(scan_error)?,
        };
        if first.is_some() {
            self.first_record = first;
        }
        if next.is_some() {
            self.next_record = next;
        }
        match batches {
            None => Ok(None),
            Some(batches) => {
                self.bytes_read = bytes;
                self.rows = rows;
                Ok(Some(
                    batches
                        .into_iter()
                        .map(|(bucket, b)| Batch {
                            batch: Some(b),
                            bucket,
                        })
                        .collect(),
                ))
            }
        }
    }
}

struct CountBytes<'a, R> {
    inner: &'a mut R,
    n: u64,
}

impl<R: Read> Read for CountBytes<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// One Arrow record batch, exported once through `__arrow_c_array__`.
#[pyclass(module = "fastclv._native")]
struct Batch {
    batch: Option<RecordBatch>,
    bucket: Option<usize>,
}

#[pymethods]
impl Batch {
    /// Rows in the batch (0 once exported).
    #[getter]
    fn num_rows(&self) -> usize {
        self.batch.as_ref().map_or(0, RecordBatch::num_rows)
    }

    /// The key-hash bucket of its rows, when the scan splits by bucket (else None).
    #[getter]
    fn bucket(&self) -> Option<usize> {
        self.bucket
    }

    #[pyo3(signature = (requested_schema = None))]
    fn __arrow_c_array__<'py>(
        &mut self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let _ = requested_schema; // the batch has one schema; consumers cast if they need to
        let batch = self
            .batch
            .take()
            .ok_or_else(|| PyValueError::new_err("this batch was already exported"))?;
        let data = StructArray::from(batch).into_data();
        let (array, schema) = to_ffi(&data).map_err(|e| InternalError::new_err(e.to_string()))?;
        let schema = PyCapsule::new_with_value(py, schema, c"arrow_schema")?;
        let array = PyCapsule::new_with_value(py, array, c"arrow_array")?;
        PyTuple::new(py, [schema.into_any(), array.into_any()])
    }
}

/// A batch with no rows: the schema of a kind's batches.
#[pyfunction]
fn empty_batch(kind: &str) -> PyResult<Batch> {
    let kind = Kind::from_name(kind)
        .ok_or_else(|| PyValueError::new_err(format!("unknown file kind {kind:?}")))?;
    let batch = Columns::new(kind, 0)
        .finish(1)
        .map_err(|e| InternalError::new_err(e.to_string()))?;
    Ok(Batch {
        batch: Some(batch),
        bucket: None,
    })
}

/// A reject's raw text from its bytes, as the scanner writes it (invalid UTF-8 as `\xNN`,
/// cut at 64 KiB with a note).
#[pyfunction]
fn escape_raw(raw: &[u8]) -> String {
    fastclv_core::check::escape_raw(raw)
}

/// Parquet files of one schema written as one file, their encoded column chunks copied as
/// they are (see `fastclv_core::concat`): `(rows, row_groups)` of the output. With
/// `rows_key`, the inputs' row counts are written under that key of its metadata.
#[pyfunction]
#[pyo3(signature = (inputs, output, rows_key=None))]
fn concat_parquet(
    py: Python<'_>,
    inputs: Vec<std::path::PathBuf>,
    output: std::path::PathBuf,
    rows_key: Option<String>,
) -> PyResult<(i64, usize)> {
    let done = py
        .detach(|| {
            catch_unwind(AssertUnwindSafe(|| {
                concat::concat_recording(&inputs, &output, rows_key.as_deref())
            }))
        })
        .map_err(|p| InternalError::new_err(panic_message(p.as_ref())))?;
    match done {
        Ok(c) => Ok((c.rows, c.row_groups)),
        Err(ConcatError::Io(e)) => Err(e.into()),
        Err(ConcatError::Format(m)) => Err(PyValueError::new_err(m)),
    }
}

/// The crate's version, for diagnostics.
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Scan>()?;
    m.add_class::<Batch>()?;
    m.add("FormatError", m.py().get_type::<FormatError>())?;
    m.add("InternalError", m.py().get_type::<InternalError>())?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    m.add_function(wrap_pyfunction!(empty_batch, m)?)?;
    m.add_function(wrap_pyfunction!(escape_raw, m)?)?;
    m.add_function(wrap_pyfunction!(concat_parquet, m)?)?;
    Ok(())
}
