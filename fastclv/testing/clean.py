"""Valid rows, vectorised: a chunk of customers with their BG/NBD orders and Gamma-Gamma items.

Everything is drawn with numpy and written to CSV text with Polars string expressions (no
loop over rows); a small share of values is quoted or padded, as real exports are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import polars as pl

from fastclv.contract import COUNTED_STATUS, CUSTOMERS, ORDER_ITEMS, ORDERS, STATUSES
from fastclv.testing.common import (
    AFTER,
    AFTER_AS_OF_DAYS,
    BGNBD,
    CLEAN_STREAM,
    COUNTRIES,
    COUNTRY_WEIGHTS,
    GAMMA_GAMMA,
    HISTORY_DAYS,
    US_PER_DAY,
    US_PER_MINUTE,
    US_PER_SECOND,
    VALID,
    Context,
    Ids,
    IntArray,
    new_counts,
    offset_text,
)

if TYPE_CHECKING:
    from collections import Counter
    from collections.abc import Sequence

__all__ = ["CleanChunk", "clean_chunk"]

BoolArray = npt.NDArray[np.bool_]

#: The first purchase comes an exponential delay (mean in days) after signup.
_FIRST_PURCHASE_MEAN_DAYS = 21.0
#: Share of orders whose timestamp is a date alone (00:00 UTC).
_DATE_ONLY_SHARE = 0.03
#: Share of customers who never buy.
_NO_PURCHASE_SHARE = 0.15
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
_COUNTRY_TABLE = pl.Series(COUNTRIES, dtype=pl.String)
_QUANTITY_TABLE = pl.Series(_QUANTITIES, dtype=pl.String)
#: Money fractions: ".00".".99", then "" (written as "12"), then ".0".".9" (written as "12.5").
_CENTS_TABLE = pl.Series(
    [f".{c:02d}" for c in range(100)] + [""] + [f".{d}" for d in range(10)], dtype=pl.String
)
#: Time zone suffixes: "" (no offset), "Z", then one per entry of _OFFSETS.
_TZ_TABLE = pl.Series(["", "Z"] + [offset_text(m) for m in _OFFSETS], dtype=pl.String)


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
class CleanChunk:
    """One chunk's valid CSV lines and their fates, with samples of its ids for dirty rows."""

    customer_lines: pl.Series
    order_lines: pl.Series
    item_lines: pl.Series
    counts: dict[str, Counter[str]]
    customer_ids: list[str]  # a sample of the chunk's (valid) customers
    order_ids: list[str]  # a sample of the chunk's valid orders inside the run


def _purchase_times(ctx: Context, rng: np.random.Generator, signup: IntArray) -> tuple[IntArray, IntArray]:
    """Draw BG/NBD purchases: each purchase's customer (index in the chunk) and instant (us).

    A first purchase, then repeats at Poisson rate lambda until the customer drops out
    (probability p after each repeat purchase) or the window ends a few days after as_of.
    """
    bg = BGNBD
    n = len(signup)
    first_us = signup * US_PER_DAY + (rng.exponential(_FIRST_PURCHASE_MEAN_DAYS, n) * US_PER_DAY).astype(
        np.int64
    )
    end_us = (ctx.as_of_day + 1 + AFTER_AS_OF_DAYS) * US_PER_DAY
    buys = (rng.random(n) >= _NO_PURCHASE_SHARE) & (first_us < end_us)
    lam = rng.gamma(bg.r, 1.0 / bg.alpha, n)
    dropout = rng.beta(bg.a, bg.b, n)
    window_us = np.where(buys, end_us - first_us, 0)
    in_window = rng.poisson(lam * (window_us / US_PER_DAY))
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


def _timestamp_text(ctx: Context, rng: np.random.Generator, true_us: IntArray) -> tuple[pl.Series, IntArray]:
    """Write instants in random contract formats; return the text and the instant it denotes."""
    n = len(true_us)
    date_only = rng.random(n) < _DATE_ONLY_SHARE
    precision = rng.choice(3, n, p=[0.15, 0.45, 0.40])
    digits = rng.integers(1, 7, n)
    zone = np.where(date_only, _NO_ZONE, rng.choice(3, n, p=[0.3, 0.2, 0.5]))
    offset_index = rng.integers(0, len(_OFFSETS), n)
    offset_us = (
        np.where(zone == _OFFSET, np.asarray(_OFFSETS, dtype=np.int64)[offset_index], 0) * US_PER_MINUTE
    )
    unit = np.where(
        date_only,
        US_PER_DAY,
        np.where(
            precision == _MINUTES,
            US_PER_MINUTE,
            np.where(precision == _SECONDS, US_PER_SECOND, 10 ** (6 - digits)),
        ),
    )
    local_us = true_us + offset_us
    local_us -= local_us % unit  # the text truncates; the instant is what the text says
    time_of_day = local_us % US_PER_DAY
    fraction_digits = np.where(~date_only & (precision == _FRACTION), digits, 0)
    fraction = (
        pl.DataFrame(
            {
                "f": pl.Series(time_of_day % US_PER_SECOND, dtype=pl.Int64).cast(pl.String).str.zfill(6),
                "d": pl.Series(fraction_digits, dtype=pl.Int64),
            }
        )
        .select(pl.when(pl.col("d") > 0).then("." + pl.col("f").str.head(pl.col("d"))).otherwise(pl.lit("")))
        .to_series()
    )
    pieces = {
        "date": _gather(ctx.day_table, local_us // US_PER_DAY - ctx.day_table_start),
        "sep": _gather(_SEP_TABLE, np.where(date_only, 2, rng.choice(2, n, p=[0.6, 0.4]))),
        "hhmm": _gather(_HHMM_TABLE, np.where(date_only, 1440, time_of_day // US_PER_MINUTE)),
        "ss": _gather(
            _SECONDS_TABLE,
            np.where(date_only | (precision == _MINUTES), 60, (time_of_day // US_PER_SECOND) % 60),
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


def clean_chunk(ctx: Context, ids: Ids, chunk: int, start: int, n: int) -> CleanChunk:
    """Generate customers start..start+n-1 with their orders and items, all valid."""
    rng = np.random.default_rng([ctx.seed, chunk, CLEAN_STREAM])
    signup = ctx.as_of_day - rng.integers(1, HISTORY_DAYS, n)
    customer_ids = _zero_padded("C", np.arange(start, start + n, dtype=np.int64), ctx.customer_width)
    country = _gather(
        _COUNTRY_TABLE, rng.choice(len(COUNTRIES), n, p=COUNTRY_WEIGHTS / COUNTRY_WEIGHTS.sum())
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
    true_us = np.concatenate([true_us, true_us[extra] + rng.integers(0, US_PER_DAY, len(extra))])
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
    counts = new_counts()
    counts[CUSTOMERS.name][VALID] = n
    counts[ORDERS.name][VALID] = n_orders
    counts[ORDERS.name][AFTER] = int(after.sum())
    counts[ORDER_ITEMS.name][VALID] = len(item_order)
    counts[ORDER_ITEMS.name][AFTER] = int(after[item_order].sum())
    in_run = np.flatnonzero(~after)
    sample = rng.choice(in_run, min(64, len(in_run)), replace=False) if len(in_run) else in_run
    return CleanChunk(
        customer_lines=customer_lines,
        order_lines=order_lines,
        item_lines=item_lines,
        counts=counts,
        customer_ids=customer_ids.gather(rng.integers(0, n, min(n, 64))).to_list(),
        order_ids=order_ids.gather(np.sort(sample)).to_list(),
    )
