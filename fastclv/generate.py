"""Deterministic generator of realistic (and optionally dirty) input CSVs, with exact expected counts.

Customers sign up over the six years before the as-of date; purchases follow a BG/NBD process
and order values a Gamma-Gamma spend model, so a fit on the generated data should recover the
parameters recorded in ``expected.json``. Generation streams chunks of customers to disk with
vectorised numpy/Polars code, so memory does not grow with the number of customers.

With ``dirty_rows=K`` every reject reason of every file gets at least K injected rows, plus exact
duplicates (dropped, not rejected) and valid edge cases. Each injected row has exactly one fault;
its fate (and the fate of everything that depends on it) is recorded as it is written, so
``expected.json`` holds the exact counts the pipeline must report.

Example:
    >>> generate(Path("data/small"), customers=1_000, seed=1, dirty_rows=3)  # doctest: +SKIP

"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, BinaryIO, TypeVar

import numpy as np
import numpy.typing as npt
import polars as pl

from fastclv.contract import (
    COUNTED_STATUS,
    CUSTOMERS,
    INPUT_FILES,
    ORDER_ITEMS,
    ORDERS,
    REASONS_BY_FILE,
    STATUSES,
    Reason,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

__all__ = [
    "BGNBD",
    "EXPECTED_FILE_NAME",
    "GAMMA_GAMMA",
    "BgNbdParams",
    "GammaGammaParams",
    "GenerateResult",
    "generate",
]

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
_T = TypeVar("_T")


@dataclass(frozen=True)
class BgNbdParams:
    """BG/NBD purchase process: rate lambda ~ Gamma(r, rate=alpha) per day, dropout p ~ Beta(a, b)."""

    r: float = 0.75
    alpha: float = 20.0
    a: float = 0.8
    b: float = 5.0


@dataclass(frozen=True)
class GammaGammaParams:
    """Gamma-Gamma spend: nu ~ Gamma(q, rate=v) per customer, order value ~ Gamma(p, rate=nu)."""

    p: float = 6.0
    q: float = 4.0
    v: float = 15.0


#: The parameters the generator draws from (recorded in expected.json).
BGNBD = BgNbdParams()
GAMMA_GAMMA = GammaGammaParams()

EXPECTED_FILE_NAME = "expected.json"


@dataclass(frozen=True)
class GenerateResult:
    """What :func:`generate` wrote: paths (keyed by file short name), data rows per file, wall time."""

    out_dir: Path
    files: dict[str, Path]
    expected_path: Path
    rows: dict[str, int]
    seconds: float


_US_PER_SECOND = 1_000_000
_US_PER_MINUTE = 60 * _US_PER_SECOND
_US_PER_DAY = 86_400 * _US_PER_SECOND
#: Customers sign up uniformly over this many days before as_of.
_HISTORY_DAYS = 6 * 365
#: The first purchase comes an exponential delay (mean in days) after signup.
_FIRST_PURCHASE_MEAN_DAYS = 21.0
#: Share of orders whose timestamp is a date alone (00:00 UTC).
_DATE_ONLY_SHARE = 0.03
#: Share of customers who never buy.
_NO_PURCHASE_SHARE = 0.15
#: The purchase process runs until this many days after as_of (orders outside the run).
_AFTER_AS_OF_DAYS = 10
#: Injected rows reference orders and customers from this window before as_of.
_DIRTY_WINDOW_DAYS = 700

_CLEAN_STREAM = 1
_DIRTY_STREAM = 2
_PLAN_STREAM = 3

_COUNTRIES: tuple[str, ...] = (
    "US", "FR", "DE", "GB", "ES", "IT", "NL", "CA", "BR", "JP", "IN", "AU",
    "Paris, FR", "Korea, Republic of", "Côte d'Ivoire", "México", "日本", "us", "", "  ",
)  # fmt: skip
_COUNTRY_WEIGHTS = np.array(
    [30, 12, 10, 9, 5, 5, 4, 4, 4, 3, 3, 3, 1.5, 1, 0.5, 0.5, 0.5, 0.5, 6, 0.5], dtype=np.float64
)
#: UTC offsets (minutes) used in timestamps; many move the UTC day across midnight.
_OFFSETS: tuple[int, ...] = (
    60, 120, 180, 330, 345, 480, 540, 600, 780, 840, 0, -180, -240, -300, -360, -420, -480, -570, -600,
)  # fmt: skip
#: Each purchase (a completed order) brings a cancelled, refunded or pending order with this probability.
_NOT_COMPLETED_SHARE = 0.16
#: Statuses with the counted one first; weights of the others (cancelled, refunded, pending).
_STATUS_ORDER: tuple[str, ...] = (COUNTED_STATUS, *(s for s in STATUSES if s != COUNTED_STATUS))
_NOT_COMPLETED_WEIGHTS = np.array([0.40, 0.35, 0.25], dtype=np.float64)
_CASE_WEIGHTS = np.array([0.75, 0.15, 0.10], dtype=np.float64)
_ITEMS_PER_ORDER_WEIGHTS = np.array([0.30, 0.25, 0.20, 0.15, 0.10], dtype=np.float64)
_QUANTITIES: tuple[str, ...] = ("1", "2", "3", "4", "5", "6", "01", "02")
_QUANTITY_WEIGHTS = np.array([0.70, 0.17, 0.07, 0.03, 0.015, 0.01, 0.003, 0.002], dtype=np.float64)
_QUANTITY_VALUES = np.array([1, 2, 3, 4, 5, 6, 1, 2], dtype=np.int64)
_PADS: tuple[str, ...] = ("", " ", "  ", "\t", " \t ")


def _case_variants(word: str) -> tuple[str, str, str]:
    return word, word.capitalize(), word.upper()


_STATUS_TABLE = pl.Series([v for s in _STATUS_ORDER for v in _case_variants(s)], dtype=pl.String)
_QUOTE_TABLE = pl.Series(["", '"'], dtype=pl.String)
_PAD_TABLE = pl.Series(_PADS, dtype=pl.String)
_SEP_TABLE = pl.Series(["T", " ", ""], dtype=pl.String)
_SECONDS_TABLE = pl.Series([f":{s:02d}" for s in range(60)] + [""], dtype=pl.String)
_HHMM_TABLE = pl.Series([f"{m // 60:02d}:{m % 60:02d}" for m in range(1440)] + [""], dtype=pl.String)
_COUNTRY_TABLE = pl.Series(_COUNTRIES, dtype=pl.String)
_QUANTITY_TABLE = pl.Series(_QUANTITIES, dtype=pl.String)
#: Money fractions: ".00".".99", then "" (written as "12"), then ".0".".9" (written as "12.5").
_CENTS_TABLE = pl.Series(
    [f".{c:02d}" for c in range(100)] + [""] + [f".{d}" for d in range(10)], dtype=pl.String
)


def _offset_text(minutes: int) -> str:
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


#: Time zone suffixes: "" (no offset), "Z", then one per entry of _OFFSETS.
_TZ_TABLE = pl.Series(["", "Z"] + [_offset_text(m) for m in _OFFSETS], dtype=pl.String)


@dataclass(frozen=True)
class _Context:
    """Settings shared by every chunk."""

    seed: int
    as_of_day: int  # days since 1970-01-01
    customer_width: int
    order_width: int
    day_table_start: int
    day_table: pl.Series  # "YYYY-MM-DD" for days day_table_start.

    @property
    def cutoff_us(self) -> int:
        """First instant outside the run: as_of + 1 day at 00:00 UTC."""
        return (self.as_of_day + 1) * _US_PER_DAY

    def customer_id(self, index: int) -> str:
        return f"C{index:0{self.customer_width}d}"

    def order_id(self, index: int) -> str:
        return f"O{index:0{self.order_width}d}"


class _Ids:
    """Global id counters: clean and injected customers/orders draw from the same sequences."""

    def __init__(self, customers: int) -> None:
        self.next_customer = customers  # clean customers are 0..customers-1
        self.next_order = 0

    def customer(self) -> int:
        self.next_customer += 1
        return self.next_customer - 1

    def orders(self, n: int) -> int:
        self.next_order += n
        return self.next_order - n


#: Keys of the per-file fate counters besides the reason codes.
_VALID = "valid"
_AFTER = "after_as_of"
_DUP = "duplicates_dropped"
_FILE_NAMES: tuple[str, ...] = tuple(f.name for f in INPUT_FILES)


def _new_counts() -> dict[str, Counter[str]]:
    return {name: Counter() for name in _FILE_NAMES}


# --------------------------------------------------------------------------------------------
# Vectorised clean data
# --------------------------------------------------------------------------------------------


def _gather(table: pl.Series, codes: npt.NDArray[np.integer]) -> pl.Series:
    return table.gather(codes.astype(np.int64, copy=False))


def _zero_padded(prefix: str, numbers: IntArray, width: int) -> pl.Series:
    digits = pl.Series(numbers, dtype=pl.Int64).cast(pl.String).str.zfill(width)
    return (prefix + digits).rename("id")


def _field(
    rng: np.random.Generator,
    value: pl.Series,
    *,
    quote: float,
    pad: float,
    force_quote: BoolArray | None = None,
) -> pl.Series:
    """Decorate a share of a column's values: quote them, pad them (inside the quotes)."""
    n = len(value)
    quoted = rng.random(n) < quote
    if force_quote is not None:
        quoted |= force_quote
    padded = rng.random(n) < pad
    rows = np.flatnonzero(quoted | padded)  # few: decorate only those, then scatter them back
    if not len(rows):
        return value
    m = len(rows)
    padded = padded[rows]
    left = np.where(padded & (rng.random(m) < 0.7), rng.integers(1, len(_PADS), m), 0)
    right = np.where(padded & (left == 0), rng.integers(1, len(_PADS), m), 0)
    right = np.where(padded & (rng.random(m) < 0.5), rng.integers(1, len(_PADS), m), right)
    q = _gather(_QUOTE_TABLE, quoted[rows].astype(np.int64))
    pieces = pl.DataFrame(
        {
            "q": q,
            "l": _gather(_PAD_TABLE, left),
            "v": value.gather(rows),
            "r": _gather(_PAD_TABLE, right),
            "e": q,
        }
    )
    decorated = pieces.select(pl.concat_str(pl.all())).to_series()
    return value.clone().scatter(rows, decorated)


def _join_fields(fields: Sequence[pl.Series]) -> pl.Series:
    """Concatenate fields into CSV lines (no line terminator)."""
    frame = pl.DataFrame({f"f{i}": field for i, field in enumerate(fields)})
    return frame.select(pl.concat_str(pl.all(), separator=",").alias("line")).to_series()


def _money(cents: IntArray, rng: np.random.Generator) -> pl.Series:
    """Money text: usually 2 decimals, sometimes 0 or 1 decimal when exact (`12`, `12.5`)."""
    n = len(cents)
    rem = cents % 100
    short = rng.random(n)
    code = np.where((short < 0.15) & (rem == 0), 100, rem)
    code = np.where((short >= 0.15) & (short < 0.30) & (rem % 10 == 0), 101 + rem // 10, code)
    whole = pl.Series(cents // 100, dtype=pl.Int64).cast(pl.String)
    return (
        pl.DataFrame({"w": whole, "f": _gather(_CENTS_TABLE, code)})
        .select(pl.concat_str("w", "f"))
        .to_series()
    )


def _segment_starts(counts: IntArray) -> IntArray:
    return np.cumsum(counts) - counts


@dataclass
class _CleanChunk:
    customer_lines: pl.Series
    order_lines: pl.Series
    item_lines: pl.Series
    counts: dict[str, Counter[str]]
    customer_ids: list[str]  # a sample of the chunk's (valid) customers
    order_ids: list[str]  # a sample of the chunk's valid orders inside the run


def _purchase_times(ctx: _Context, rng: np.random.Generator, signup: IntArray) -> tuple[IntArray, IntArray]:
    """Draw BG/NBD purchases: each purchase's customer (index in the chunk) and instant (us).

    A first purchase, then repeats at Poisson rate lambda until the customer drops out
    (probability p after each repeat purchase) or the window ends a few days after as_of.
    """
    bg = BGNBD
    n = len(signup)
    first_us = signup * _US_PER_DAY + (rng.exponential(_FIRST_PURCHASE_MEAN_DAYS, n) * _US_PER_DAY).astype(
        np.int64
    )
    end_us = (ctx.as_of_day + 1 + _AFTER_AS_OF_DAYS) * _US_PER_DAY
    buys = (rng.random(n) >= _NO_PURCHASE_SHARE) & (first_us < end_us)
    lam = rng.gamma(bg.r, 1.0 / bg.alpha, n)
    dropout = rng.beta(bg.a, bg.b, n)
    window_us = np.where(buys, end_us - first_us, 0)
    in_window = rng.poisson(lam * (window_us / _US_PER_DAY))
    repeats = np.where(buys, np.minimum(in_window, rng.geometric(dropout)), 0).astype(np.int64)
    # The first m of N uniform arrival times without drawing all N: exponential spacings
    # normalised by their sum plus a Gamma(N - m + 1) tail.
    rep_owner = np.repeat(np.arange(n, dtype=np.int64), repeats)
    cumulative = np.concatenate([[0.0], np.cumsum(rng.exponential(1.0, int(repeats.sum())))])
    before = cumulative[_segment_starts(repeats)]
    within = cumulative[1:] - before[rep_owner]
    total = (
        cumulative[np.cumsum(repeats)] - before + rng.gamma((in_window - repeats + 1).astype(np.float64), 1.0)
    )
    rep_us = first_us[rep_owner] + (window_us[rep_owner] * (within / total[rep_owner])).astype(np.int64)
    owner = np.concatenate([np.flatnonzero(buys), rep_owner])
    true_us = np.concatenate([first_us[buys], rep_us])
    return owner, true_us


_MINUTES, _SECONDS, _FRACTION = 0, 1, 2
_NO_ZONE, _ZULU, _OFFSET = 0, 1, 2


def _timestamp_text(ctx: _Context, rng: np.random.Generator, true_us: IntArray) -> tuple[pl.Series, IntArray]:
    """Write instants in random contract formats; return the text and the instant it denotes."""
    n = len(true_us)
    date_only = rng.random(n) < _DATE_ONLY_SHARE
    precision = rng.choice(3, n, p=[0.15, 0.45, 0.40])
    digits = rng.integers(1, 7, n)
    zone = np.where(date_only, _NO_ZONE, rng.choice(3, n, p=[0.3, 0.2, 0.5]))
    offset_index = rng.integers(0, len(_OFFSETS), n)
    offset_us = (
        np.where(zone == _OFFSET, np.asarray(_OFFSETS, dtype=np.int64)[offset_index], 0) * _US_PER_MINUTE
    )
    unit = np.where(
        date_only,
        _US_PER_DAY,
        np.where(
            precision == _MINUTES,
            _US_PER_MINUTE,
            np.where(precision == _SECONDS, _US_PER_SECOND, 10 ** (6 - digits)),
        ),
    )
    local_us = true_us + offset_us
    local_us -= local_us % unit  # the text truncates; the instant is what the text says
    time_of_day = local_us % _US_PER_DAY
    fraction_digits = np.where(~date_only & (precision == _FRACTION), digits, 0)
    fraction = (
        pl.DataFrame(
            {
                "f": pl.Series(time_of_day % _US_PER_SECOND, dtype=pl.Int64).cast(pl.String).str.zfill(6),
                "d": pl.Series(fraction_digits, dtype=pl.Int64),
            }
        )
        .select(pl.when(pl.col("d") > 0).then("." + pl.col("f").str.head(pl.col("d"))).otherwise(pl.lit("")))
        .to_series()
    )
    pieces = {
        "date": _gather(ctx.day_table, local_us // _US_PER_DAY - ctx.day_table_start),
        "sep": _gather(_SEP_TABLE, np.where(date_only, 2, rng.choice(2, n, p=[0.6, 0.4]))),
        "hhmm": _gather(_HHMM_TABLE, np.where(date_only, 1440, time_of_day // _US_PER_MINUTE)),
        "ss": _gather(
            _SECONDS_TABLE,
            np.where(date_only | (precision == _MINUTES), 60, (time_of_day // _US_PER_SECOND) % 60),
        ),
        "frac": fraction,
        "tz": _gather(_TZ_TABLE, np.where(zone == _OFFSET, 2 + offset_index, zone)),
    }
    text = pl.DataFrame(pieces).select(pl.concat_str(pl.all())).to_series()
    return text, local_us - offset_us


_NO_DISCOUNT, _ZERO_DISCOUNT, _SOME_DISCOUNT, _BLANK_DISCOUNT = 0, 1, 2, 3


def _item_lines(
    rng: np.random.Generator, order_ids: pl.Series, order_customer: IntArray, n_customers: int
) -> tuple[pl.Series, IntArray]:
    """Split each order's Gamma-Gamma value over 1-5 item lines; return the lines and their order."""
    gg = GAMMA_GAMMA
    n_orders = len(order_customer)
    nu = rng.gamma(gg.q, 1.0 / gg.v, n_customers)
    value = rng.gamma(gg.p, 1.0 / nu[order_customer])
    item_order = np.repeat(
        np.arange(n_orders, dtype=np.int64), rng.choice(5, n_orders, p=_ITEMS_PER_ORDER_WEIGHTS) + 1
    )
    n_items = len(item_order)
    weight = rng.exponential(1.0, n_items)
    share = weight / np.bincount(item_order, weights=weight, minlength=n_orders)[item_order]
    qty_code = rng.choice(len(_QUANTITIES), n_items, p=_QUANTITY_WEIGHTS)
    qty = _QUANTITY_VALUES[qty_code]
    net = np.floor(value[item_order] * share * 100.0 + 0.5)  # cents
    kind = rng.choice(4, n_items, p=[0.72, 0.05, 0.22, 0.01])
    rate = np.where(kind == _SOME_DISCOUNT, rng.uniform(0.05, 0.30, n_items), 0.0)
    price = np.floor(net / (1.0 - rate) / qty + 0.5).astype(np.int64)
    # The discount brings the line back to its share of the order value (to the cent).
    discount = np.maximum(qty * price - net.astype(np.int64), 0)
    discount_text = (
        pl.DataFrame({"k": kind, "m": _money(np.where(kind == _SOME_DISCOUNT, discount, 0), rng)})
        .select(
            pl.when(pl.col("k") == _NO_DISCOUNT)
            .then(pl.lit(""))
            .when(pl.col("k") == _BLANK_DISCOUNT)
            .then(pl.lit("  "))
            .otherwise(pl.col("m"))
        )
        .to_series()
    )
    sku_number = np.floor(50_000 * rng.random(n_items) ** 3).astype(np.int64)
    lines = _join_fields(
        [
            _field(rng, order_ids.gather(item_order), quote=0.005, pad=0.005),
            _field(rng, _zero_padded("SKU-", sku_number, 5), quote=0.01, pad=0.005),
            _field(rng, _gather(_QUANTITY_TABLE, qty_code), quote=0.005, pad=0.005),
            _field(rng, _money(price, rng), quote=0.005, pad=0.01),
            _field(rng, discount_text, quote=0.005, pad=0.005),
        ]
    )
    return lines, item_order


def _clean_chunk(ctx: _Context, ids: _Ids, chunk: int, start: int, n: int) -> _CleanChunk:
    """Generate customers start..start+n-1 with their orders and items, all valid."""
    rng = np.random.default_rng([ctx.seed, chunk, _CLEAN_STREAM])
    signup = ctx.as_of_day - rng.integers(1, _HISTORY_DAYS, n)
    customer_ids = _zero_padded("C", np.arange(start, start + n, dtype=np.int64), ctx.customer_width)
    country = _gather(
        _COUNTRY_TABLE, rng.choice(len(_COUNTRIES), n, p=_COUNTRY_WEIGHTS / _COUNTRY_WEIGHTS.sum())
    )
    customer_lines = _join_fields(
        [
            _field(rng, customer_ids, quote=0.01, pad=0.01),
            _field(rng, _gather(ctx.day_table, signup - ctx.day_table_start), quote=0.005, pad=0.01),
            _field(
                rng,
                country,
                quote=0.02,
                pad=0.01,
                force_quote=country.str.contains(",", literal=True).to_numpy(),
            ),
        ]
    )

    owner, true_us = _purchase_times(ctx, rng, signup)
    # The BG/NBD purchases are the completed orders; other orders come on top (within a day
    # after a purchase), so the counted purchases keep the model's distribution.
    extra = np.flatnonzero(rng.random(len(owner)) < _NOT_COMPLETED_SHARE)
    status = np.concatenate(
        [np.zeros(len(owner), dtype=np.int64), 1 + rng.choice(3, len(extra), p=_NOT_COMPLETED_WEIGHTS)]
    )
    owner = np.concatenate([owner, owner[extra]])
    true_us = np.concatenate([true_us, true_us[extra] + rng.integers(0, _US_PER_DAY, len(extra))])
    by_time = np.argsort(true_us, kind="stable")
    owner, true_us, status = owner[by_time], true_us[by_time], status[by_time]
    n_orders = len(owner)
    first_order = ids.orders(n_orders)
    order_ids = _zero_padded(
        "O", np.arange(first_order, first_order + n_orders, dtype=np.int64), ctx.order_width
    )
    order_ts, instant_us = _timestamp_text(ctx, rng, true_us)
    status = status * 3 + rng.choice(3, n_orders, p=_CASE_WEIGHTS)
    order_lines = _join_fields(
        [
            _field(rng, order_ids, quote=0.01, pad=0.01),
            _field(rng, customer_ids.gather(owner), quote=0.01, pad=0.01),
            _field(rng, order_ts, quote=0.01, pad=0.01),
            _field(rng, _gather(_STATUS_TABLE, status), quote=0.01, pad=0.02),
        ]
    )
    item_lines, item_order = _item_lines(rng, order_ids, owner, n)

    after = instant_us >= ctx.cutoff_us
    counts = _new_counts()
    counts[CUSTOMERS.name][_VALID] = n
    counts[ORDERS.name][_VALID] = n_orders
    counts[ORDERS.name][_AFTER] = int(after.sum())
    counts[ORDER_ITEMS.name][_VALID] = len(item_order)
    counts[ORDER_ITEMS.name][_AFTER] = int(after[item_order].sum())
    in_run = np.flatnonzero(~after)
    sample = rng.choice(in_run, min(64, len(in_run)), replace=False) if len(in_run) else in_run
    return _CleanChunk(
        customer_lines=customer_lines,
        order_lines=order_lines,
        item_lines=item_lines,
        counts=counts,
        customer_ids=customer_ids.gather(rng.integers(0, n, min(n, 64))).to_list(),
        order_ids=order_ids.gather(np.sort(sample)).to_list(),
    )


# --------------------------------------------------------------------------------------------
# Dirty rows: a few per chunk, written line by line with their exact fates
# --------------------------------------------------------------------------------------------


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def _csv_field(value: str) -> str:
    return _quote(value) if any(c in value for c in ',"') else value


def _fmt_ts(
    instant_us: int, *, sep: str = "T", prec: str = "s", digits: int = 6, tz: str | int | None = None
) -> str:
    """Timestamp text; ``prec`` is d(ate), m(inutes), s(econds) or f(raction); ``tz`` None, "Z" or minutes.

    The instant must be representable exactly at the chosen precision.
    """
    offset = tz if isinstance(tz, int) else 0
    local = datetime(1970, 1, 1) + timedelta(microseconds=instant_us + offset * _US_PER_MINUTE)
    suffix = "" if tz is None else ("Z" if tz == "Z" else _offset_text(offset))
    unit = {"d": _US_PER_DAY, "m": _US_PER_MINUTE, "s": _US_PER_SECOND, "f": 10 ** (6 - digits)}[prec]
    if (instant_us + offset * _US_PER_MINUTE) % unit:
        raise AssertionError(f"{instant_us} is not exact at precision {prec}")
    if prec == "d":
        if tz is not None:
            raise AssertionError("a date alone takes no offset")
        return local.strftime("%Y-%m-%d")
    text = local.strftime(f"%Y-%m-%d{sep}%H:%M")
    if prec in "sf":
        text += local.strftime(":%S")
    if prec == "f":
        text += "." + f"{local.microsecond:06d}"[:digits]
    return text + suffix


_BAD_DATES: tuple[str, ...] = (
    "2024-02-30", "2024-13-01", "24-01-01", "2023-02-29", "2024-1-05", "2024/01/05",
    "20240105", "2024-01-05T00:00", "2024-00-10", "05/01/2024", "2024-01-32", "yesterday",
)  # fmt: skip
_BAD_TIMESTAMPS: tuple[str, ...] = (
    "2024-01-01T24:00", "2024-01-01T10", "2024-01-01T10:00+0100", "2024-01-01T10:00:00.1234567",
    "2024-02-30T10:00", "2024-13-01", "24-01-01", "2024-01-01T10:00:00+24:00", "2024-01-01T10:60",
    "2024-01-01T10:00:60", "2024/01/01 10:00", "2024-01-01  10:00", "2024-01-01t10:00",
    "2024-01-01T10:00:00 Z", "2024-01-01T10:00:00.", "2023-02-29", "2024-01-01T10:00:00+01",
    "1704103200", "2024-01-01T10:00z", "2024-01-01T9:00",
)  # fmt: skip
_BAD_STATUSES: tuple[str, ...] = (
    "complete", "shipped", "canceled", "done", "Completed.", "paid", "completed completed", "1", "n/a",
)  # fmt: skip
_BAD_QUANTITIES: tuple[str, ...] = (
    "0", "-1", "1.5", "abc", "2147483648", "+1", "1e2", "99999999999999999999", "1 000", "0x10", "00",
)  # fmt: skip
_BAD_MONEY: tuple[str, ...] = (
    "12.", ".5", "+1", "-0", "1e3", "1,000", "1.234", "-5.00", "abc", "12345678901234567", "$12.00",
    "NaN", "12,50", "1 000", "0.001",
)  # fmt: skip
_BAD_DISCOUNTS: tuple[str, ...] = ("-1", "0.001", ".5", "1e1", "-0.00", "1,5")


class _Dirty:
    """Injected rows of one chunk, with the exact fate of each row."""

    def __init__(
        self,
        ctx: _Context,
        ids: _Ids,
        rng: np.random.Generator,
        customer_ids: list[str],
        order_ids: list[str],
    ) -> None:
        self.ctx = ctx
        self.ids = ids
        self.rng = rng
        self.customer_ids = customer_ids
        self.order_ids = order_ids
        self.lines: dict[str, list[str]] = {name: [] for name in _FILE_NAMES}
        self.counts = _new_counts()

    # Plumbing ---------------------------------------------------------------------------------

    def _row(self, file: str, line: str, fate: str) -> None:
        self.lines[file].append(line)
        self.counts[file][fate] += 1

    def _pick(self, options: Sequence[_T]) -> _T:
        return options[int(self.rng.integers(0, len(options)))]

    def _day(self, low: int, high: int) -> int:
        return low + int(self.rng.integers(0, max(1, high - low)))

    def _date(self, day: int) -> str:
        return (date(1970, 1, 1) + timedelta(days=day)).isoformat()

    def _instant(self, after_day: int | None = None) -> int:
        """Draw a whole-second instant before as_of (inside every run), after ``after_day``."""
        low = self.ctx.as_of_day - _DIRTY_WINDOW_DAYS if after_day is None else after_day + 1
        day = self._day(low, self.ctx.as_of_day - 1)
        return day * _US_PER_DAY + int(self.rng.integers(0, 86_400)) * _US_PER_SECOND

    def _any_ts(self, instant: int) -> str:
        """``instant`` (whole seconds) in a random valid format that keeps it exact."""
        tz = self._pick((None, "Z", 60, -300, 330, -480))
        return _fmt_ts(instant, sep=self._pick(["T", " "]), prec="s", tz=tz)

    def customer_key(self) -> str:
        return self.ctx.customer_id(self.ids.customer())

    def order_key(self) -> str:
        return self.ctx.order_id(self.ids.orders(1))

    def clean_customer(self) -> str:
        return self._pick(self.customer_ids)

    def valid_order(self) -> str:
        """Pick a valid order inside the run: a clean one when the chunk has some, else a new one."""
        if self.order_ids:
            return self._pick(self.order_ids)
        oid = self.order_key()
        self.order(oid, self.clean_customer(), fate=_VALID, item_fate=_VALID)
        self.order_ids.append(oid)
        return oid

    def signup(self) -> int:
        return self.ctx.as_of_day - 30 - int(self.rng.integers(0, _HISTORY_DAYS - 30))

    def item_line(
        self, oid: str, *, qty: str = "", price: str = "", discount: str = "", sku: str = ""
    ) -> str:
        sku = sku or f"SKU-{int(self.rng.integers(0, 50_000)):05d}"
        qty = qty or str(int(self.rng.integers(1, 4)))
        price = price or f"{int(self.rng.integers(100, 10_000)) / 100:.2f}"
        return ",".join([oid, sku, qty, _csv_field(price), _csv_field(discount)])

    def items(self, oid: str, fate: str, n: int = 0) -> None:
        for _ in range(n or int(self.rng.integers(1, 3))):
            self._row(ORDER_ITEMS.name, self.item_line(oid), fate)

    def order(self, oid: str, cid: str, *, fate: str, item_fate: str, signup: int | None = None) -> None:
        """One order (whole-second instant inside the run) with 1-2 items."""
        line = ",".join([oid, cid, self._any_ts(self._instant(signup)), "completed"])
        self._row(ORDERS.name, line, fate)
        self.items(oid, item_fate)

    def orders_of(self, cid: str, signup: int, fate: str, item_fate: str, n: int = 0) -> None:
        for _ in range(n or int(self.rng.integers(1, 4))):
            self.order(self.order_key(), cid, fate=fate, item_fate=item_fate, signup=signup)

    def customer(self, cid: str = "", orders: int = -1) -> tuple[str, int, str]:
        """Add a valid customer with ``orders`` valid orders (random 1-3 when negative)."""
        cid = cid or self.customer_key()
        signup = self.signup()
        country = self._pick(_COUNTRIES[:14])
        self._row(CUSTOMERS.name, f"{cid},{self._date(signup)},{_csv_field(country)}", _VALID)
        if orders:
            self.orders_of(cid, signup, _VALID, _VALID, max(orders, 0))
        return cid, signup, country

    # Customers ------------------------------------------------------------------------------------

    def customer_malformed(self, j: int) -> None:
        cid, signup = self.customer_key(), self.signup()
        day = self._date(signup)
        variants = [
            f"{cid},{day}",  # too few fields
            f"{cid},{day},FR,VIP",  # too many fields
            f"{cid},{day},Paris, FR",  # unquoted comma
            f'{cid},{day},"Paris, FR"x',  # text after the closing quote
            f'{cid[:3]}"{cid[3:5]}"{cid[5:]},{day},FR',  # quotes inside an unquoted field
            f"{cid};{day};FR",  # wrong delimiter: one field
        ]
        v = j % len(variants)
        self._row(CUSTOMERS.name, variants[v], Reason.MALFORMED_ROW)
        if v in (0, 1, 2):  # orders naming the unparseable customer cascade
            self.orders_of(cid, signup, Reason.UNKNOWN_CUSTOMER, Reason.UNKNOWN_ORDER)

    def customer_missing(self, j: int) -> None:
        cid, signup = self.customer_key(), self.signup()
        day = self._date(signup)
        v = j % 6
        if v == 5:  # a missing-value row sharing the key of a valid customer: no duplicate
            cid = self.customer()[0]
        variants = [f",{day},FR", f"{cid},,FR", f"   ,{day},DE", f"{cid},\t ,US", f'"",{day},GB', f"{cid},,"]
        self._row(CUSTOMERS.name, variants[v], Reason.MISSING_VALUE)
        if v in (1, 3):
            self.orders_of(cid, signup, Reason.UNKNOWN_CUSTOMER, Reason.UNKNOWN_ORDER)

    def customer_bad_date(self, j: int) -> None:
        cid, signup = self.customer_key(), self.signup()
        if j % 3 == 2:  # shares the key of a valid customer, who stays valid
            cid, signup, _ = self.customer()
        self._row(CUSTOMERS.name, f"{cid},{_BAD_DATES[j % len(_BAD_DATES)]},FR", Reason.BAD_DATE)
        if j % 3 == 0:
            self.orders_of(cid, signup, Reason.UNKNOWN_CUSTOMER, Reason.UNKNOWN_ORDER)

    def customer_conflict(self, j: int) -> None:
        cid, signup = self.customer_key(), self.signup()
        day, other_day = self._date(signup), self._date(signup + 1)
        a = f"{cid},{day},FR"
        variants = [
            [a, f"{cid},{other_day},FR"],  # another signup date
            [a, f"{cid},{day},DE"],  # another country
            [a, f' {cid} ,"{day}", FR', f"{cid},{other_day},FR"],  # A, A (same values), B: 3 rejects
            [a, f"{cid},{day},"],  # country missing on one row
            [a, f"{cid},{day},fr"],  # text compares case-sensitively
        ]
        for line in variants[j % len(variants)]:
            self._row(CUSTOMERS.name, line, Reason.CONFLICTING_DUPLICATE)
        self.orders_of(cid, signup, Reason.UNKNOWN_CUSTOMER, Reason.UNKNOWN_ORDER)

    def customer_exact_duplicate(self, j: int) -> None:
        cid, signup = self.customer_key(), self.signup()
        day = self._date(signup)
        variants = [
            [f"{cid},{day},FR", f"{cid},{day},FR"],  # the same line twice
            [f"{cid},{day},FR", f"  {cid}\t,{day} , FR "],  # padding
            [f"{cid},{day},FR", f'"{cid}","{day}","FR"'],  # needless quotes
            [f"{cid},{day},", f"{cid},{day},   "],  # missing country both times
            [f'{cid},{day},"Paris, FR"', f'{cid}, {day},"Paris, FR"', f'"{cid}",{day},"  Paris, FR"'],
        ]
        rows = variants[j % len(variants)]
        self._row(CUSTOMERS.name, rows[0], _VALID)
        for line in rows[1:]:
            self._row(CUSTOMERS.name, line, _DUP)
        self.orders_of(cid, signup, _VALID, _VALID)

    # Orders ---------------------------------------------------------------------------------------

    def order_malformed(self, j: int) -> None:
        oid, cid = self.order_key(), self.clean_customer()
        ts = self._any_ts(self._instant())
        variants = [
            f"{oid},{cid},{ts}",  # too few fields
            f"{oid},{cid},{ts},completed,web",  # too many fields
            f"{oid},{cid},{ts},completed,",  # trailing comma
            f'{oid},"{cid}"x,{ts},completed',  # text after the closing quote
            f'{oid},{cid},{ts},comp"le"ted',  # quotes inside an unquoted field
            f"{oid};{cid};{ts};completed",  # wrong delimiter
        ]
        v = j % len(variants)
        self._row(ORDERS.name, variants[v], Reason.MALFORMED_ROW)
        if v in (0, 1, 2):
            self.items(oid, Reason.UNKNOWN_ORDER)

    def order_missing(self, j: int) -> None:
        oid, cid = self.order_key(), self.clean_customer()
        if j % 4 == 3:  # shares the key of a valid order, which stays valid
            oid = self.valid_order()
        fields = [oid, cid, self._any_ts(self._instant()), "completed"]
        column = j % 8
        fields[column % 4] = "" if column < 4 else " \t "
        self._row(ORDERS.name, ",".join(fields), Reason.MISSING_VALUE)
        if column % 4 != 0 and j % 4 != 3:
            self.items(oid, Reason.UNKNOWN_ORDER)

    def _bad_order(self, j: int, ts: str, status: str, reason: Reason) -> None:
        oid, cid = self.order_key(), self.clean_customer()
        if j % 3 == 2:
            oid = self.valid_order()
        self._row(ORDERS.name, f"{oid},{cid},{ts},{status}", reason)
        if j % 3 == 0:
            self.items(oid, Reason.UNKNOWN_ORDER)

    def order_bad_timestamp(self, j: int) -> None:
        self._bad_order(j, _BAD_TIMESTAMPS[j % len(_BAD_TIMESTAMPS)], "completed", Reason.BAD_TIMESTAMP)

    def order_bad_status(self, j: int) -> None:
        ts = self._any_ts(self._instant())
        self._bad_order(j, ts, _BAD_STATUSES[j % len(_BAD_STATUSES)], Reason.BAD_STATUS)

    def order_conflict(self, j: int) -> None:
        oid, cid = self.order_key(), self.clean_customer()
        instant = self._instant()
        ts = _fmt_ts(instant, tz="Z")
        a = f"{oid},{cid},{ts},completed"
        v = j % 5
        if v == 0:
            rows = [a, f"{oid},{cid},{ts},cancelled"]
        elif v == 1:
            rows = [a, f"{oid},{self.customer(orders=0)[0]},{ts},completed"]  # another (valid) customer
        elif v == 2:
            rows = [a, f"{oid},{cid},{_fmt_ts(instant + _US_PER_SECOND, tz='Z')},completed"]
        elif v == 3:  # the same wall-clock time in another zone is another instant
            rows = [a, f"{oid},{cid},{_fmt_ts(instant - 60 * _US_PER_MINUTE, tz=60)},completed"]
        else:  # A, A (another format, same instant), B
            same = _fmt_ts(instant, sep=" ", prec="f", digits=3, tz=-300)
            rows = [a, f"{oid},{cid},{same},Completed", f"{oid},{cid},{ts},refunded"]
        for line in rows:
            self._row(ORDERS.name, line, Reason.CONFLICTING_DUPLICATE)
        self.items(oid, Reason.UNKNOWN_ORDER)

    def order_unknown_customer(self, j: int) -> None:
        width = self.ctx.customer_width
        known = self.clean_customer()
        variants = [
            f"C{10**width - 1 - j:0{width}d}",  # never issued
            "C" + str(int(known[1:])),  # the same number without leading zeros
            "c" + known[1:],  # ids are case-sensitive
            "C " + known[1:],  # inner space is not trimmed
            "0007",  # neither 007 nor 7
        ]
        oid = self.order_key()
        line = f"{oid},{variants[j % len(variants)]},{self._any_ts(self._instant())},completed"
        self._row(ORDERS.name, line, Reason.UNKNOWN_CUSTOMER)
        if j % 2 == 0:
            self.items(oid, Reason.UNKNOWN_ORDER)

    def order_exact_duplicate(self, j: int) -> None:
        oid, cid = self.order_key(), self.clean_customer()
        # 02:30 UTC: written at -05:00 it is the previous local day.
        day = self._day(self.ctx.as_of_day - _DIRTY_WINDOW_DAYS, self.ctx.as_of_day - 1)
        instant = day * _US_PER_DAY + 150 * _US_PER_MINUTE
        v = j % 6
        rows: list[str]
        if v == 0:
            rows = [f"{oid},{cid},{_fmt_ts(instant, tz='Z')},completed"] * 2
        elif v == 1:
            rows = [
                f"{oid},{cid},{_fmt_ts(instant, tz='Z')},completed",
                f"{oid},{cid},{_fmt_ts(instant, sep=' ', prec='m', tz=-300)},completed",
            ]
        elif v == 2:
            rows = [
                f"{oid},{cid},{_fmt_ts(instant)},cancelled",
                f" {oid} ,{cid}, {_fmt_ts(instant)} ,CANCELLED ",
            ]
        elif v == 3:  # a date alone is 00:00 UTC
            midnight = day * _US_PER_DAY
            rows = [
                f"{oid},{cid},{_fmt_ts(midnight, prec='d')},completed",
                f"{oid},{cid},{_fmt_ts(midnight, prec='f', digits=1, tz='Z')},completed",
                f"{oid},{cid},{_fmt_ts(midnight, sep=' ', prec='m', tz=-420)},Completed",
            ]
        elif v == 4:
            half = instant + 500_000
            rows = [
                f"{oid},{cid},{_fmt_ts(half, prec='f', digits=1)},refunded",
                f"{oid},{cid},{_fmt_ts(half, prec='f', digits=6, tz=0)},refunded",
            ]
        else:
            rows = [
                f"{oid},{cid},{_fmt_ts(instant, tz='Z')},pending",
                f'"{oid}","{cid}","{_fmt_ts(instant, tz=0)}","Pending"',
                f"{oid},{cid},{_fmt_ts(instant, sep=' ', tz=330)},pending",
            ]
        self._row(ORDERS.name, rows[0], _VALID)
        for line in rows[1:]:
            self._row(ORDERS.name, line, _DUP)
        self.items(oid, _VALID)

    # Items ----------------------------------------------------------------------------------------

    def item_malformed(self, j: int) -> None:
        oid = self.valid_order()
        variants = [
            f"{oid},SKU-00001,2",  # too few fields
            f"{oid},SKU-00001,1,9.99,,gift",  # too many fields
            f"{oid},SKU-00001,1,1,000.00,",  # unquoted thousands separator
            f'{oid},SKU-00001,1,"9.99"9,',  # text after the closing quote
            f'{oid},SK"U-"00001,1,9.99,',  # quotes inside an unquoted field
            f"{oid};SKU-00001;1;9.99;",  # wrong delimiter
        ]
        self._row(ORDER_ITEMS.name, variants[j % len(variants)], Reason.MALFORMED_ROW)

    def item_missing(self, j: int) -> None:
        oid = self.valid_order()
        fields = [oid, "SKU-00002", "1", "4.50", ""]
        column = j % 8
        fields[column % 4] = "" if column < 4 else "   "
        if j % 9 == 8:
            fields[3] = '""'
        self._row(ORDER_ITEMS.name, ",".join(fields), Reason.MISSING_VALUE)

    def item_bad_quantity(self, j: int) -> None:
        line = self.item_line(self.valid_order(), qty=_BAD_QUANTITIES[j % len(_BAD_QUANTITIES)])
        self._row(ORDER_ITEMS.name, line, Reason.BAD_QUANTITY)

    def item_bad_money(self, j: int) -> None:
        oid = self.valid_order()
        if j % 3 == 2:
            line = self.item_line(oid, price="50.00", discount=_BAD_DISCOUNTS[j % len(_BAD_DISCOUNTS)])
        else:
            line = self.item_line(oid, price=_BAD_MONEY[j % len(_BAD_MONEY)])
        self._row(ORDER_ITEMS.name, line, Reason.BAD_MONEY)

    def item_discount_exceeds(self, j: int) -> None:
        qty, price, discount = [
            ("2", "5.00", "10.01"),
            ("1", "0", "0.01"),
            ("1", "9.99", "100"),
            ("3", "3.3", "9.91"),
        ][j % 4]
        line = self.item_line(self.valid_order(), qty=qty, price=price, discount=discount)
        self._row(ORDER_ITEMS.name, line, Reason.DISCOUNT_EXCEEDS_AMOUNT)

    def item_unknown_order(self, j: int) -> None:
        width = self.ctx.order_width
        known = self.valid_order()
        variants = [
            f"O{10**width - 1 - j:0{width}d}",  # never issued
            "O" + str(int(known[1:])),  # leading zeros matter
            "o" + known[1:],  # case matters
        ]
        self._row(ORDER_ITEMS.name, self.item_line(variants[j % len(variants)]), Reason.UNKNOWN_ORDER)

    # Valid edge cases (once per file) -------------------------------------------------------------

    def edge_cases(self) -> None:
        """Add valid rows that naive parsers get wrong: `007` vs `7`, exact decimals, odd offsets."""
        for cid in ("007", "7"):
            self.customer(cid, orders=2)
        cid = self.customer(orders=0)[0]
        self._row(CUSTOMERS.name, f"{self.customer_key()},2024-02-29,\t", _VALID)
        leap = (date(2024, 2, 29) - date(1970, 1, 1)).days
        base = min(leap, self.ctx.as_of_day - 2) * _US_PER_DAY
        for ts in (
            _fmt_ts(base + 43_200 * _US_PER_SECOND, tz=840),
            _fmt_ts(base + 43_200 * _US_PER_SECOND, tz=0).replace("+00:00", "-00:00"),
            _fmt_ts(base + _US_PER_DAY - 1, prec="f", digits=6),
            _fmt_ts(base, prec="d"),
        ):
            oid = self.order_key()
            self._row(ORDERS.name, f"{oid},{cid},{ts},COMPLETED", _VALID)
            self.items(oid, _VALID, 1)
        oid = self.valid_order()
        exact = [
            ("01", "2.50", ""),
            ("2", "2.50", "5"),
            ("1", "0", ""),
            ("1", "0.0", "0"),
            ("3", "3.3", "9.9"),
        ]
        for qty, price, discount in [*exact, ("2147483647", "0", "")]:
            self._row(ORDER_ITEMS.name, self.item_line(oid, qty=qty, price=price, discount=discount), _VALID)


#: Injection kinds in the order they run inside a chunk.
_KINDS: tuple[Callable[[_Dirty, int], None], ...] = (
    _Dirty.customer_malformed,
    _Dirty.customer_missing,
    _Dirty.customer_bad_date,
    _Dirty.customer_conflict,
    _Dirty.customer_exact_duplicate,
    _Dirty.order_malformed,
    _Dirty.order_missing,
    _Dirty.order_bad_timestamp,
    _Dirty.order_bad_status,
    _Dirty.order_conflict,
    _Dirty.order_unknown_customer,
    _Dirty.order_exact_duplicate,
    _Dirty.item_malformed,
    _Dirty.item_missing,
    _Dirty.item_bad_quantity,
    _Dirty.item_bad_money,
    _Dirty.item_discount_exceeds,
    _Dirty.item_unknown_order,
)


def _interleave(clean: pl.Series, dirty: list[str], rng: np.random.Generator) -> pl.Series:
    """Insert the dirty lines at random positions among the clean ones."""
    if not dirty:
        return clean
    positions = np.sort(rng.integers(0, len(clean) + 1, len(dirty)))
    parts: list[pl.Series] = []
    previous = 0
    for position, line in zip(positions.tolist(), dirty, strict=True):
        parts.append(clean.slice(previous, position - previous))
        parts.append(pl.Series([line], dtype=pl.String))
        previous = position
    parts.append(clean.slice(previous))
    return pl.concat(parts, rechunk=True)


# --------------------------------------------------------------------------------------------
# The public entry point
# --------------------------------------------------------------------------------------------


def _day_table(start: int, end: int) -> pl.Series:
    return pl.Series(np.arange(start, end + 1, dtype=np.int64)).cast(pl.Date).dt.to_string("%Y-%m-%d")


def _file_summary(name: str, counts: Counter[str], read: int) -> dict[str, object]:
    by_reason = {reason.value: counts[reason.value] for reason in REASONS_BY_FILE[name]}
    unexpected = set(counts) - set(by_reason) - {_VALID, _AFTER, _DUP}
    rejected = sum(by_reason.values())
    if unexpected or read != counts[_VALID] + rejected + counts[_DUP]:
        raise AssertionError(f"{name}: inconsistent counts {dict(counts)} for {read} rows")
    return {
        "read": read,
        "valid": counts[_VALID],
        "rejected": rejected,
        "rejected_by_reason": by_reason,
        "duplicates_dropped": counts[_DUP],
        "after_as_of": counts[_AFTER],
    }


class _Writer:
    """The three CSV files, written as ``.partial`` files and renamed into place on commit."""

    def __init__(self, out_dir: Path, *, dirty: bool) -> None:
        self.paths = {f.name: out_dir / f.file_name for f in INPUT_FILES}
        self.partial = {name: path.with_name(path.name + ".partial") for name, path in self.paths.items()}
        # Dirty data also exercises a UTF-8 BOM and CRLF line ends.
        self.terminator = {name: "\r\n" if dirty and name == ORDERS.name else "\n" for name in self.paths}
        self.rows = dict.fromkeys(self.paths, 0)
        self.handles: dict[str, BinaryIO] = {}
        for f in INPUT_FILES:
            self.handles[f.name] = handle = self.partial[f.name].open("wb")
            bom = b"\xef\xbb\xbf" if dirty and f.name == CUSTOMERS.name else b""
            handle.write(bom + (",".join(f.columns) + self.terminator[f.name]).encode())

    def write(self, name: str, lines: pl.Series) -> None:
        """Append lines to a file and flush them (so progress reflects what is on disk)."""
        handle = self.handles[name]
        lines.to_frame("line").write_csv(
            handle, include_header=False, quote_style="never", line_terminator=self.terminator[name]
        )
        handle.flush()
        self.rows[name] += len(lines)

    def close(self, *, commit: bool) -> None:
        """Rename the files into place (commit) or remove them."""
        for handle in self.handles.values():
            handle.close()
        for name, path in self.partial.items():
            if commit:
                os.replace(path, self.paths[name])
            else:
                path.unlink(missing_ok=True)


def _chunk(
    ctx: _Context, ids: _Ids, plan: list[IntArray], chunk: int, start: int, n: int
) -> tuple[dict[str, pl.Series], dict[str, Counter[str]]]:
    """Generate one chunk: clean lines with this chunk's dirty rows interleaved, and their fates."""
    clean = _clean_chunk(ctx, ids, chunk, start, n)
    rng = np.random.default_rng([ctx.seed, chunk, _DIRTY_STREAM])
    dirty = _Dirty(ctx, ids, rng, clean.customer_ids, clean.order_ids)
    if chunk == 0 and any(len(instances) for instances in plan):
        dirty.edge_cases()
    for kind, chunks in zip(_KINDS, plan, strict=True):
        for j in np.flatnonzero(chunks == chunk).tolist():
            kind(dirty, j)
    clean_lines = {
        CUSTOMERS.name: clean.customer_lines,
        ORDERS.name: clean.order_lines,
        ORDER_ITEMS.name: clean.item_lines,
    }
    lines = {name: _interleave(clean_lines[name], dirty.lines[name], rng) for name in _FILE_NAMES}
    counts = {name: clean.counts[name] + dirty.counts[name] for name in _FILE_NAMES}
    return lines, counts


def generate(
    out_dir: Path,
    *,
    customers: int,
    seed: int = 0,
    dirty_rows: int = 0,
    as_of: date = date(2025, 12, 31),
    chunk_customers: int = 50_000,
    progress: Callable[[int], None] | None = None,
) -> GenerateResult:
    """Write customers.csv, orders.csv, order_items.csv and expected.json into ``out_dir``.

    The files are a pure function of all the arguments except ``progress`` (byte-identical on
    re-runs). ``dirty_rows`` = K injects at least K rows of every reject reason of every file,
    plus exact duplicates and valid edge cases; expected.json holds the exact counts.
    ``progress`` is called with the number of customers done after each chunk. A failed run
    leaves the previous files of ``out_dir`` as they were.
    """
    if customers < 1 or seed < 0 or dirty_rows < 0 or chunk_customers < 1:
        raise ValueError(
            f"generate needs customers >= 1, seed >= 0, dirty_rows >= 0 and chunk_customers >= 1, got "
            f"{customers=}, {seed=}, {dirty_rows=}, {chunk_customers=}"
        )
    started = time.perf_counter()
    as_of_day = (as_of - date(1970, 1, 1)).days
    table_start = as_of_day - _HISTORY_DAYS - 2
    ctx = _Context(
        seed=seed,
        as_of_day=as_of_day,
        customer_width=max(8, len(str(customers + 64 * dirty_rows + 64)) + 1),
        order_width=max(10, len(str(customers)) + 5),
        day_table_start=table_start,
        day_table=_day_table(table_start, as_of_day + _AFTER_AS_OF_DAYS + 2),
    )
    ids = _Ids(customers)
    n_chunks = -(-customers // chunk_customers)
    plan_rng = np.random.default_rng([seed, 0, _PLAN_STREAM])
    plan = [plan_rng.integers(0, n_chunks, dirty_rows) for _ in _KINDS]  # the chunk of each injection

    out_dir.mkdir(parents=True, exist_ok=True)
    expected_path = out_dir / EXPECTED_FILE_NAME
    expected_partial = expected_path.with_name(expected_path.name + ".partial")
    writer = _Writer(out_dir, dirty=dirty_rows > 0)
    try:
        totals = _new_counts()
        for chunk in range(n_chunks):
            start = chunk * chunk_customers
            n = min(chunk_customers, customers - start)
            lines, counts = _chunk(ctx, ids, plan, chunk, start, n)
            for name in _FILE_NAMES:
                writer.write(name, lines[name])
                totals[name].update(counts[name])
            del lines
            if progress is not None:
                progress(start + n)
        if ids.next_order >= 10**ctx.order_width // 2:
            raise AssertionError("order ids overflowed their width")
        expected = {
            "seed": seed,
            "customers": customers,
            "dirty_rows": dirty_rows,
            "as_of": as_of.isoformat(),
            "params": {"bgnbd": asdict(BGNBD), "gamma_gamma": asdict(GAMMA_GAMMA)},
            "files": {name: _file_summary(name, totals[name], writer.rows[name]) for name in _FILE_NAMES},
            "output_rows": totals[CUSTOMERS.name][_VALID],
        }
        expected_partial.write_text(json.dumps(expected, indent=2) + "\n", encoding="utf-8")
    except BaseException:
        writer.close(commit=False)
        expected_partial.unlink(missing_ok=True)
        raise
    writer.close(commit=True)
    os.replace(expected_partial, expected_path)
    return GenerateResult(
        out_dir=out_dir,
        files=writer.paths,
        expected_path=expected_path,
        rows=writer.rows,
        seconds=time.perf_counter() - started,
    )
