"""Extract's handling of inputs that are not readable regular files, and of hostile headers.

Regression tests for the hardening issue (items 6 and 8): each case used to be reported as
"file not found", with an encoding hint, or with raw control characters in the message.
"""

from __future__ import annotations

import os
import re
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from fastclv import extract as extract_module
from fastclv.errors import InputError
from fastclv.extract import extract

AS_OF = date(2024, 1, 31)
HEADERS = {
    "customers.csv": b"customer_id,signup_date,country\n",
    "orders.csv": b"order_id,customer_id,order_ts,status\n",
    "order_items.csv": b"order_id,sku,quantity,unit_price,discount\n",
}


def inputs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, header in HEADERS.items():
        (folder / name).write_bytes(header)
    return folder


def replace_customers(folder: Path, make: str) -> None:
    path = folder / "customers.csv"
    path.unlink()
    if make == "directory":
        path.mkdir()
    elif make == "fifo":
        os.mkfifo(path)
    elif make == "device":
        path.symlink_to("/dev/zero")
    elif make == "loop":
        path.symlink_to(folder / "customers.csv")
    elif make == "dangling":
        path.symlink_to(folder / "nowhere.csv")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        ("directory", "is a directory, not a file"),
        ("fifo", "is a FIFO (named pipe), not a regular file"),
        ("device", "is a device or socket, not a regular file"),
        ("loop", "cannot look at"),
        ("dangling", "file not found"),
    ],
)
def test_inputs_that_are_not_regular_files_say_what_they_are(tmp_path: Path, make: str, message: str) -> None:
    folder = inputs(tmp_path / "in")
    replace_customers(folder, make)
    with pytest.raises(InputError, match=re.escape(message)) as error:
        extract(str(folder), tmp_path / "run", AS_OF)
    assert "customers.csv" in str(error.value)
    assert "encoding" not in str(error.value)
    assert not (tmp_path / "run" / "customers.parquet").exists()


def test_control_characters_of_a_header_are_escaped_in_the_message(tmp_path: Path) -> None:
    folder = inputs(tmp_path / "in")
    (folder / "customers.csv").write_bytes(b"customer_id,\x1b[2J\x1b]0;PWNED\x07,country\n")
    with pytest.raises(InputError, match="signup_date") as error:
        extract(str(folder), tmp_path / "run", AS_OF)
    text = str(error.value)
    assert "\\x1b[2J" in text
    assert not any(ord(c) < 32 for c in text)


def test_rows_rejected_after_the_scan_keep_their_raw_text(tmp_path: Path) -> None:
    """Duplicates and unknown keys are decided in Polars: their raw text comes from byte ranges."""
    folder = inputs(tmp_path / "in")
    (folder / "customers.csv").write_bytes(
        b'customer_id,signup_date,country\r\nc1,2024-01-01,"F\r\nR"\r\nc1,2024-01-02,FR\r\nc2,2024-01-01,\r\n'
    )
    (folder / "orders.csv").write_bytes(b"order_id,customer_id,order_ts,status\no1,c2,2024-01-05,completed\n")
    (folder / "order_items.csv").write_bytes(
        b"order_id,sku,quantity,unit_price,discount\no1,s,1,2,\n  o9 ,\xc3\xa9,1,2,\n"
    )
    extracted = extract(str(folder), tmp_path / "run", AS_OF)
    rejects = pl.read_parquet(extracted.rejects).select("file", "row", "reason", "raw").rows()
    assert rejects == [
        ("customers.csv", 1, "conflicting_duplicate", 'c1,2024-01-01,"F\r\nR"'),
        ("customers.csv", 2, "conflicting_duplicate", "c1,2024-01-02,FR"),
        ("order_items.csv", 2, "unknown_order", "  o9 ,é,1,2,"),
    ]


def test_the_raw_text_of_late_rejects_is_read_in_windows_in_row_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Seven unknown orders, read back two records a window (the kernel is told of each window's
    # ranges before they are read): every text comes back, in row order, none from a neighbour.
    monkeypatch.setattr(extract_module, "PREFETCH_RECORDS", 2)
    folder = inputs(tmp_path / "in")
    (folder / "orders.csv").write_bytes(b"order_id,customer_id,order_ts,status\n")
    lines = [f"x{i},sku-{i},{i + 1},{i}.25,".encode() for i in range(7)]
    (folder / "order_items.csv").write_bytes(
        b"order_id,sku,quantity,unit_price,discount\r\n" + b"\r\n".join(lines)
    )
    extracted = extract(str(folder), tmp_path / "run", AS_OF)
    rejects = pl.read_parquet(extracted.rejects).filter(pl.col("file") == "order_items.csv")
    assert rejects.select("row", "reason", "raw").rows() == [
        (i + 1, "unknown_order", line.decode()) for i, line in enumerate(lines)
    ]


def test_foreign_keys_fall_back_to_text_keys_when_parent_hashes_collide(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The text join (taken when two parents share a 64-bit hash) gives the same result."""
    folder = inputs(tmp_path / "in")
    (folder / "customers.csv").write_bytes(b"customer_id,signup_date\nc1,2024-01-01\n007,2024-01-01\n")
    (folder / "orders.csv").write_bytes(
        b"order_id,customer_id,order_ts,status\no1,c1,2024-01-05,completed\no2,7,2024-01-05,completed\n"
    )
    (folder / "order_items.csv").write_bytes(
        b"order_id,sku,quantity,unit_price\no1,s,1,2\no2,s,1,2\nO1,s,1,2\n"
    )
    expected = [
        ("order_items.csv", 2, "unknown_order"),
        ("order_items.csv", 3, "unknown_order"),
        ("orders.csv", 2, "unknown_customer"),
    ]
    for unique in (True, False):
        monkeypatch.setattr(extract_module, "_unique_hashes", lambda _parents, unique=unique: unique)
        extracted = extract(str(folder), tmp_path / f"run-{unique}", AS_OF)
        assert pl.read_parquet(extracted.rejects).select("file", "row", "reason").rows() == expected
        orders = pl.read_parquet(extracted.valid["orders"]).select("order_id", "customer_row").rows()
        assert orders == [("o1", 1)]
        items = pl.read_parquet(extracted.valid["order_items"]).select("order_id", "order_row").rows()
        assert items == [("o1", 1)]
