"""What the generator's parts share: the true model parameters, units, ids and row fates."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from fastclv.contract import INPUT_FILES

__all__ = [
    "AFTER",
    "AFTER_AS_OF_DAYS",
    "BGNBD",
    "CLEAN_STREAM",
    "COUNTRIES",
    "COUNTRY_WEIGHTS",
    "DIRTY_STREAM",
    "DUP",
    "FILE_NAMES",
    "GAMMA_GAMMA",
    "HISTORY_DAYS",
    "PLAN_STREAM",
    "US_PER_DAY",
    "US_PER_MINUTE",
    "US_PER_SECOND",
    "VALID",
    "BgNbdParams",
    "Context",
    "GammaGammaParams",
    "Ids",
    "IntArray",
    "new_counts",
    "offset_text",
]

IntArray = npt.NDArray[np.int64]


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

US_PER_SECOND = 1_000_000
US_PER_MINUTE = 60 * US_PER_SECOND
US_PER_DAY = 86_400 * US_PER_SECOND
#: Customers sign up uniformly over this many days before as_of.
HISTORY_DAYS = 6 * 365
#: The purchase process runs until this many days after as_of (orders outside the run).
AFTER_AS_OF_DAYS = 10

#: Random streams: each chunk draws its clean rows, its dirty rows and the run its plan of
#: injections from separate seeds, so one part never shifts another's numbers.
CLEAN_STREAM = 1
DIRTY_STREAM = 2
PLAN_STREAM = 3

#: Countries (written as they are: commas, accents, blanks) and their weights, one for one.
COUNTRIES: tuple[str, ...] = (
    "US", "FR", "DE", "GB", "ES", "IT", "NL", "CA", "BR", "JP", "IN", "AU",
    "Paris, FR", "Korea, Republic of", "Côte d'Ivoire", "México", "日本", "us", "", "  ",
)  # fmt: skip
COUNTRY_WEIGHTS = np.array(
    [30, 12, 10, 9, 5, 5, 4, 4, 4, 3, 3, 3, 1.5, 1, 0.5, 0.5, 0.5, 0.5, 6, 0.5], dtype=np.float64
)


def offset_text(minutes: int) -> str:
    """``+HH:MM`` or ``-HH:MM`` for an offset in minutes."""
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


@dataclass(frozen=True)
class Context:
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
        return (self.as_of_day + 1) * US_PER_DAY

    def customer_id(self, index: int) -> str:
        """The id of customer number ``index``, zero-padded (``C00000042``)."""
        return f"C{index:0{self.customer_width}d}"

    def order_id(self, index: int) -> str:
        """The id of order number ``index``, zero-padded."""
        return f"O{index:0{self.order_width}d}"


class Ids:
    """Global id counters: clean and injected customers/orders draw from the same sequences."""

    def __init__(self, customers: int) -> None:
        self.next_customer = customers  # clean customers are 0..customers-1
        self.next_order = 0

    def customer(self) -> int:
        """The next customer number."""
        self.next_customer += 1
        return self.next_customer - 1

    def orders(self, n: int) -> int:
        """The first of ``n`` new consecutive order numbers."""
        self.next_order += n
        return self.next_order - n


#: Keys of the per-file fate counters besides the reason codes.
VALID = "valid"
AFTER = "after_as_of"
DUP = "duplicates_dropped"
FILE_NAMES: tuple[str, ...] = tuple(f.name for f in INPUT_FILES)


def new_counts() -> dict[str, Counter[str]]:
    """Empty fate counters, one per input file."""
    return {name: Counter() for name in FILE_NAMES}
