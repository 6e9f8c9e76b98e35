"""The native scanner against the pure-Python oracle, on hostile bytes.

Hypothesis writes CSV files from tokens that break naive readers (quotes, delimiters, CR,
LF, CRLF, BOM, invalid UTF-8, unicode, padding, very long fields); the pipeline's extract
(native scan + Polars resolve) and ``tests/reference.py`` must agree on every reject's file,
row and reason, the counts and the output. Tiny chunks and several threads put chunk
boundaries everywhere, multi-line records across them included.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from reference import reference_run

from fastclv import native
from fastclv.errors import InputError
from fastclv.extract import extract
from fastclv.transform import customer_ltv

AS_OF = date(2024, 1, 31)

TOKENS = [
    "c1",
    "c2",
    "007",
    "7",
    "o1",
    "o2",
    "2024-01-05",
    "2024-01-05T10:00:00Z",
    "2024-02-30",
    "completed",
    "PENDING",
    "refunded",
    "1",
    "2",
    "0",
    "2.50",
    "10",
    "1.234",
    "-1",
    "",
    ",",
    ",",
    ",",
    '"',
    '""',
    '"a,b"',
    '"x\ny"',
    "\n",
    "\n",
    "\r\n",
    "\r",
    " ",
    "\t",
    "é",
    "\u2028",
    "\udcff",  # stands for an invalid byte (written as 0xFF)
    "\udcc3",  # a truncated two-byte sequence (0xC3)
]

HEADERS = {
    "customers": "customer_id,signup_date,country",
    "orders": "order_id,customer_id,order_ts,status",
    "order_items": "order_id,sku,quantity,unit_price,discount",
}


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


body = st.lists(st.sampled_from(TOKENS), max_size=60).map("".join)
#: Whole rows that are usually valid, so that keys, duplicates and foreign keys get exercised.
good_rows = {
    "customers": st.sampled_from(
        ["c1,2024-01-01,FR", "c2,2024-01-02,", "007,2023-12-31,DE", "c1,2024-01-01,FR"]
    ),
    "orders": st.sampled_from(
        [
            "o1,c1,2024-01-05T10:00:00Z,completed",
            "o2,007,2024-01-20,completed",
            "o3,7,2024-01-06,pending",
            "o1,c1,2024-01-05T10:00:00Z,completed",
            '"o4",c2,"2024-01-07 08:00",COMPLETED',
        ]
    ),
    "order_items": st.sampled_from(
        ["o1,s,2,2.50,", "o2,s,1,10,1", "o4,t,1,3,", "o9,s,1,1,", '"o1","a ""b""",1,1.5,0.5']
    ),
}


@st.composite
def csv_file(draw: st.DrawFn, name: str) -> bytes:
    parts = [HEADERS[name]]
    for _ in range(draw(st.integers(0, 8))):
        parts.append(draw(st.one_of(good_rows[name], body)))
    text = "\n".join(parts) + draw(st.sampled_from(["", "\n", "\r\n"]))
    bom = "\ufeff" if draw(st.booleans()) else ""
    return encode(bom + text)


def shaped(input_dir: Path, **tuning: int) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, dict[str, object]]]:
    run_dir = input_dir / "_staging"
    extracted = extract(str(input_dir), run_dir, AS_OF, **tuning)
    output = customer_ltv(
        *(pl.scan_parquet(extracted.valid[n]) for n in ("customers", "orders", "order_items")), AS_OF
    ).collect(engine="streaming")
    rejects = pl.read_parquet(extracted.rejects).select("file", "row", "reason").sort("file", "row")
    counts = {n: {k: v for k, v in c.as_dict().items() if k != "file"} for n, c in extracted.counts.items()}
    return output.sort("customer_id"), rejects, counts


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    customers=csv_file("customers"),
    orders=csv_file("orders"),
    items=csv_file("order_items"),
    chunk=st.sampled_from([1, 7, 64, 0]),
    threads=st.sampled_from([1, 3]),
    buckets=st.sampled_from([0, 1, 2, 8]),
    customer_buckets=st.sampled_from([0, 2, 4]),
)
def test_native_scan_agrees_with_the_oracle_on_hostile_bytes(
    customers: bytes,
    orders: bytes,
    items: bytes,
    chunk: int,
    threads: int,
    buckets: int,
    customer_buckets: int,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for file_name, data in (
            ("customers.csv", customers),
            ("orders.csv", orders),
            ("order_items.csv", items),
        ):
            (folder / file_name).write_bytes(data)
        expected = reference_run(folder, AS_OF)
        output, rejects, counts = shaped(
            folder, chunk_bytes=chunk, threads=threads, buckets=buckets, customer_buckets=customer_buckets
        )
        assert_frame_equal(rejects, expected.rejects)
        assert counts == expected.counts
        predictive = ["p_alive", "expected_purchases", "predicted_clv"]
        assert_frame_equal(output.drop(predictive), expected.output.drop(predictive))


def write(folder: Path, customers: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "customers.csv").write_bytes(customers)
    (folder / "orders.csv").write_bytes(HEADERS["orders"].encode() + b"\n")
    (folder / "order_items.csv").write_bytes(HEADERS["order_items"].encode() + b"\n")
    return folder


def test_a_row_that_is_not_utf8_is_a_malformed_row_with_its_bytes_escaped(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "in", b"customer_id,signup_date,country\nc1,2024-01-01,\xff\xfeFR\nc2,2024-01-01,\n"
    )
    extracted = extract(str(folder), tmp_path / "run", AS_OF)
    rejects = pl.read_parquet(extracted.rejects)
    assert rejects.select("file", "row", "reason", "raw").rows() == [
        ("customers.csv", 1, "malformed_row", "c1,2024-01-01,\\xff\\xfeFR")
    ]
    assert extracted.counts["customers"].valid == 1


def test_a_nul_character_in_a_rejected_row_is_escaped_in_its_raw_text(tmp_path: Path) -> None:
    folder = write(tmp_path / "in", b"customer_id,signup_date,country\nc1,2024-01-01,U\x00S\n")
    extracted = extract(str(folder), tmp_path / "run", AS_OF)
    rejects = pl.read_parquet(extracted.rejects)
    assert rejects.select("row", "reason", "raw").rows() == [(1, "malformed_row", "c1,2024-01-01,U\\x00S")]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xfec\x00u\x00", "UTF-16"),
        (b"customer_id,signup_date\rc1,2024-01-01\r", "bare CR"),
        (b"customer_id,sign\xffup_date\nc1,2024-01-01\n", "not valid UTF-8"),
        (b"", "empty"),
        (b'customer_id,"signup_date\n', "not valid CSV"),
    ],
)
def test_files_that_are_not_utf8_csv_fail_with_the_cause(tmp_path: Path, data: bytes, message: str) -> None:
    folder = write(tmp_path / "in", data)
    with pytest.raises(InputError, match=message) as error:
        extract(str(folder), tmp_path / "run", AS_OF)
    assert "customers.csv" in str(error.value)


def test_a_header_of_ten_thousand_columns_is_read_by_name(tmp_path: Path) -> None:
    names = [f"extra_{i}" for i in range(10_000)]
    names[5_000], names[9_999], names[17] = "signup_date", "customer_id", "country"
    row = ["x"] * 10_000
    row[5_000], row[9_999], row[17] = "2024-01-02", "wide", "NL"
    data = (",".join(names) + "\n" + ",".join(row) + "\n").encode()
    extracted = extract(str(write(tmp_path / "in", data)), tmp_path / "run", AS_OF)
    assert pl.read_parquet(extracted.valid["customers"]).select("customer_id", "country").rows() == [
        ("wide", "NL")
    ]


def test_an_unclosed_quote_swallows_the_rest_of_the_file_as_one_malformed_row(tmp_path: Path) -> None:
    lines = [b"customer_id,signup_date,country", b'c1,2024-01-01,"FR'] + [
        b"c%d,2024-01-01," % i for i in range(5000)
    ]
    folder = write(tmp_path / "in", b"\n".join(lines) + b"\n")
    extracted = extract(str(folder), tmp_path / "run", AS_OF, chunk_bytes=4096, threads=2)
    rejects = pl.read_parquet(extracted.rejects)
    assert rejects.select("row", "reason").rows() == [(1, "malformed_row")]
    assert extracted.counts["customers"].read == 1


def test_scan_reports_progress_and_batches_in_file_order(tmp_path: Path) -> None:
    data = b"customer_id,signup_date\n" + b"".join(b"c%d,2024-01-01\n" % i for i in range(20_000))
    path = tmp_path / "customers.csv"
    path.write_bytes(data)
    scan = native.Scan(str(path), "customers", chunk_bytes=1000, threads=2)
    rows = [batch.column("row").to_pylist() for batch in scan.batches([0, 1, None])]
    assert [r for batch in rows for r in batch] == list(range(1, 20_001))
    assert scan.rows == 20_000
    assert scan.bytes_read == len(data)


# --------------------------------------------------------------------------- joining Parquet parts


def _part(rows: range) -> pl.DataFrame:
    """A part of a staged-orders-like file: every type the staged inputs carry."""
    return pl.DataFrame(
        {
            "row": list(rows),
            "order_id": [f"o{i}" if i % 7 else None for i in rows],
            "order_ts": [datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=i) for i in rows],
            "amount": [Decimal(i) / 100 for i in rows],
            "status": [("completed", "cancelled")[i % 2] for i in rows],
        },
        schema={
            "row": pl.Int64,
            "order_id": pl.String,
            "order_ts": pl.Datetime("us", "UTC"),
            "amount": pl.Decimal(18, 2),
            "status": pl.Enum(["completed", "cancelled"]),
        },
    )


def test_joined_parquet_parts_read_back_as_the_parts_one_after_the_other(tmp_path: Path) -> None:
    from fastclv import stage

    frames = [_part(range(0, 70_000)), _part(range(0)), _part(range(70_000, 70_005)), _part(range(9, 30_000))]
    paths = []
    for k, frame in enumerate(frames):
        paths.append(tmp_path / f"p{k}.parquet")
        # As the buckets write them: streamed, the staged codec, several row groups for the large one.
        stage.sink_parquet(frame.lazy(), paths[-1], compression=stage.STAGED_INPUT_CODEC)
    out = tmp_path / "joined.parquet"
    stage.join_parquet(paths, out)

    want = pl.concat(frames)
    got = pl.read_parquet(out)
    assert got.schema == want.schema  # the Arrow schema travels: Enum, UTC, Decimal(18,2)
    assert_frame_equal(got, want)
    groups = [pq.ParquetFile(p).metadata.num_row_groups for p in paths]
    meta = pq.ParquetFile(out).metadata
    assert meta.num_row_groups == sum(groups)
    assert meta.num_rows == want.height
    # Each row group keeps its statistics (the last one: rows 9 .. 29999 of the last part).
    last = meta.row_group(meta.num_row_groups - 1).column(0).statistics
    assert last.has_min_max
    assert last.max == 29_999
    con = duckdb.connect()
    total = con.execute(f"SELECT count(*), sum(row), count(order_id) FROM read_parquet('{out}')").fetchone()
    assert total == (want.height, want["row"].sum(), want["order_id"].count())


def test_a_part_of_another_schema_or_missing_fails_and_leaves_the_target_as_it_was(tmp_path: Path) -> None:
    from fastclv import stage

    good, other = tmp_path / "good.parquet", tmp_path / "other.parquet"
    _part(range(10)).write_parquet(good)
    _part(range(10)).drop("status").write_parquet(other)
    out = tmp_path / "out.parquet"
    out.write_bytes(b"before")
    with pytest.raises(ValueError, match=r"other\.parquet does not have the Parquet schema of .*good"):
        stage.join_parquet([good, other], out)
    with pytest.raises(FileNotFoundError):
        stage.join_parquet([good, tmp_path / "missing.parquet"], out)
    not_parquet = tmp_path / "text.parquet"
    not_parquet.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"text\.parquet"):
        stage.join_parquet([not_parquet], out)
    assert out.read_bytes() == b"before"
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["good.parquet", "other.parquet", "out.parquet", "text.parquet"]  # no temporary file
