"""Injected rows: a few per chunk, each with exactly one fault, written with their exact fates.

Every reject reason of every file, exact duplicates (dropped, not rejected) and valid edge
cases that naive parsers get wrong. The fate of each row, and of every row that depends on
it (the orders of a rejected customer, the items of a rejected order), is counted as it is
written.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import polars as pl

from fastclv.contract import CUSTOMERS, ORDER_ITEMS, ORDERS, Reason
from fastclv.testing.common import (
    COUNTRIES,
    DUP,
    FILE_NAMES,
    HISTORY_DAYS,
    US_PER_DAY,
    US_PER_MINUTE,
    US_PER_SECOND,
    VALID,
    Context,
    Ids,
    new_counts,
    offset_text,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["KINDS", "Dirty", "interleave"]

_T = TypeVar("_T")

#: Injected rows reference orders and customers from this window before as_of.
_DIRTY_WINDOW_DAYS = 700


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
    local = datetime(1970, 1, 1) + timedelta(microseconds=instant_us + offset * US_PER_MINUTE)
    suffix = "" if tz is None else ("Z" if tz == "Z" else offset_text(offset))
    unit = {"d": US_PER_DAY, "m": US_PER_MINUTE, "s": US_PER_SECOND, "f": 10 ** (6 - digits)}[prec]
    if (instant_us + offset * US_PER_MINUTE) % unit:
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


class Dirty:
    """Injected rows of one chunk, with the exact fate of each row."""

    def __init__(
        self,
        ctx: Context,
        ids: Ids,
        rng: np.random.Generator,
        customer_ids: list[str],
        order_ids: list[str],
    ) -> None:
        self.ctx = ctx
        self.ids = ids
        self.rng = rng
        self.customer_ids = customer_ids
        self.order_ids = order_ids
        self.lines: dict[str, list[str]] = {name: [] for name in FILE_NAMES}
        self.counts = new_counts()

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
        return day * US_PER_DAY + int(self.rng.integers(0, 86_400)) * US_PER_SECOND

    def _any_ts(self, instant: int) -> str:
        """``instant`` (whole seconds) in a random valid format that keeps it exact."""
        tz = self._pick((None, "Z", 60, -300, 330, -480))
        return _fmt_ts(instant, sep=self._pick(["T", " "]), prec="s", tz=tz)

    def customer_key(self) -> str:
        """A customer id never used before."""
        return self.ctx.customer_id(self.ids.customer())

    def order_key(self) -> str:
        """An order id never used before."""
        return self.ctx.order_id(self.ids.orders(1))

    def clean_customer(self) -> str:
        """A valid customer of this chunk's clean rows."""
        return self._pick(self.customer_ids)

    def valid_order(self) -> str:
        """Pick a valid order inside the run: a clean one when the chunk has some, else a new one."""
        if self.order_ids:
            return self._pick(self.order_ids)
        oid = self.order_key()
        self.order(oid, self.clean_customer(), fate=VALID, item_fate=VALID)
        self.order_ids.append(oid)
        return oid

    def signup(self) -> int:
        """A signup day at least 30 days before as_of."""
        return self.ctx.as_of_day - 30 - int(self.rng.integers(0, HISTORY_DAYS - 30))

    def item_line(
        self, oid: str, *, qty: str = "", price: str = "", discount: str = "", sku: str = ""
    ) -> str:
        """An item line of order ``oid``; the fields not given are drawn valid at random."""
        sku = sku or f"SKU-{int(self.rng.integers(0, 50_000)):05d}"
        qty = qty or str(int(self.rng.integers(1, 4)))
        price = price or f"{int(self.rng.integers(100, 10_000)) / 100:.2f}"
        return ",".join([oid, sku, qty, _csv_field(price), _csv_field(discount)])

    def items(self, oid: str, fate: str, n: int = 0) -> None:
        """``n`` (else 1-2) valid item lines of order ``oid``, all with fate ``fate``."""
        for _ in range(n or int(self.rng.integers(1, 3))):
            self._row(ORDER_ITEMS.name, self.item_line(oid), fate)

    def order(self, oid: str, cid: str, *, fate: str, item_fate: str, signup: int | None = None) -> None:
        """One order (whole-second instant inside the run) with 1-2 items."""
        line = ",".join([oid, cid, self._any_ts(self._instant(signup)), "completed"])
        self._row(ORDERS.name, line, fate)
        self.items(oid, item_fate)

    def orders_of(self, cid: str, signup: int, fate: str, item_fate: str, n: int = 0) -> None:
        """``n`` (else 1-3) orders of customer ``cid`` after its signup, with 1-2 items each."""
        for _ in range(n or int(self.rng.integers(1, 4))):
            self.order(self.order_key(), cid, fate=fate, item_fate=item_fate, signup=signup)

    def customer(self, cid: str = "", orders: int = -1) -> tuple[str, int, str]:
        """Add a valid customer with ``orders`` valid orders (random 1-3 when negative)."""
        cid = cid or self.customer_key()
        signup = self.signup()
        country = self._pick(COUNTRIES[:14])
        self._row(CUSTOMERS.name, f"{cid},{self._date(signup)},{_csv_field(country)}", VALID)
        if orders:
            self.orders_of(cid, signup, VALID, VALID, max(orders, 0))
        return cid, signup, country

    # Customers ------------------------------------------------------------------------------------

    def customer_malformed(self, j: int) -> None:
        """``malformed_row``: field count, unquoted comma, stray quotes, delimiter; orders cascade."""
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
        """``missing_value``: an empty or blank id or signup date; one shares a valid customer's id."""
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
        """``bad_date``: near-miss dates; some share a valid customer's id, some have orders."""
        cid, signup = self.customer_key(), self.signup()
        if j % 3 == 2:  # shares the key of a valid customer, who stays valid
            cid, signup, _ = self.customer()
        self._row(CUSTOMERS.name, f"{cid},{_BAD_DATES[j % len(_BAD_DATES)]},FR", Reason.BAD_DATE)
        if j % 3 == 0:
            self.orders_of(cid, signup, Reason.UNKNOWN_CUSTOMER, Reason.UNKNOWN_ORDER)

    def customer_conflict(self, j: int) -> None:
        """``conflicting_duplicate``: rows of one id that differ (A, A, B: all three); orders cascade."""
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
        """Rows of one id, equal once trimmed and unquoted: the first valid, the rest dropped."""
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
        self._row(CUSTOMERS.name, rows[0], VALID)
        for line in rows[1:]:
            self._row(CUSTOMERS.name, line, DUP)
        self.orders_of(cid, signup, VALID, VALID)

    # Orders ---------------------------------------------------------------------------------------

    def order_malformed(self, j: int) -> None:
        """``malformed_row`` orders; the items of the first three variants cascade."""
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
        """``missing_value``: one required field empty or blank; some share a valid order's id."""
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
        """``bad_timestamp``: texts just outside the contract's timestamp formats."""
        self._bad_order(j, _BAD_TIMESTAMPS[j % len(_BAD_TIMESTAMPS)], "completed", Reason.BAD_TIMESTAMP)

    def order_bad_status(self, j: int) -> None:
        """``bad_status``: near misses of the four statuses."""
        ts = self._any_ts(self._instant())
        self._bad_order(j, ts, _BAD_STATUSES[j % len(_BAD_STATUSES)], Reason.BAD_STATUS)

    def order_conflict(self, j: int) -> None:
        """``conflicting_duplicate``: one order id, another status, customer or instant; items cascade."""
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
            rows = [a, f"{oid},{cid},{_fmt_ts(instant + US_PER_SECOND, tz='Z')},completed"]
        elif v == 3:  # the same wall-clock time in another zone is another instant
            rows = [a, f"{oid},{cid},{_fmt_ts(instant - 60 * US_PER_MINUTE, tz=60)},completed"]
        else:  # A, A (another format, same instant), B
            same = _fmt_ts(instant, sep=" ", prec="f", digits=3, tz=-300)
            rows = [a, f"{oid},{cid},{same},Completed", f"{oid},{cid},{ts},refunded"]
        for line in rows:
            self._row(ORDERS.name, line, Reason.CONFLICTING_DUPLICATE)
        self.items(oid, Reason.UNKNOWN_ORDER)

    def order_unknown_customer(self, j: int) -> None:
        """``unknown_customer``: ids that look like a valid one (zeros, case, inner space)."""
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
        """Rows of one order, equal once normalised (the instant, the status's case): one kept."""
        oid, cid = self.order_key(), self.clean_customer()
        # 02:30 UTC: written at -05:00 it is the previous local day.
        day = self._day(self.ctx.as_of_day - _DIRTY_WINDOW_DAYS, self.ctx.as_of_day - 1)
        instant = day * US_PER_DAY + 150 * US_PER_MINUTE
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
            midnight = day * US_PER_DAY
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
        self._row(ORDERS.name, rows[0], VALID)
        for line in rows[1:]:
            self._row(ORDERS.name, line, DUP)
        self.items(oid, VALID)

    # Items ----------------------------------------------------------------------------------------

    def item_malformed(self, j: int) -> None:
        """``malformed_row`` item lines."""
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
        """``missing_value``: one required field empty, blank or an empty quoted field."""
        oid = self.valid_order()
        fields = [oid, "SKU-00002", "1", "4.50", ""]
        column = j % 8
        fields[column % 4] = "" if column < 4 else "   "
        if j % 9 == 8:
            fields[3] = '""'
        self._row(ORDER_ITEMS.name, ",".join(fields), Reason.MISSING_VALUE)

    def item_bad_quantity(self, j: int) -> None:
        """``bad_quantity``: zero, negative, fractional, too large or not plain digits."""
        line = self.item_line(self.valid_order(), qty=_BAD_QUANTITIES[j % len(_BAD_QUANTITIES)])
        self._row(ORDER_ITEMS.name, line, Reason.BAD_QUANTITY)

    def item_bad_money(self, j: int) -> None:
        """``bad_money``: a unit price or a discount outside the contract's money format."""
        oid = self.valid_order()
        if j % 3 == 2:
            line = self.item_line(oid, price="50.00", discount=_BAD_DISCOUNTS[j % len(_BAD_DISCOUNTS)])
        else:
            line = self.item_line(oid, price=_BAD_MONEY[j % len(_BAD_MONEY)])
        self._row(ORDER_ITEMS.name, line, Reason.BAD_MONEY)

    def item_discount_exceeds(self, j: int) -> None:
        """``discount_exceeds_amount``: a discount above quantity * unit_price (by a cent or more)."""
        qty, price, discount = [
            ("2", "5.00", "10.01"),
            ("1", "0", "0.01"),
            ("1", "9.99", "100"),
            ("3", "3.3", "9.91"),
        ][j % 4]
        line = self.item_line(self.valid_order(), qty=qty, price=price, discount=discount)
        self._row(ORDER_ITEMS.name, line, Reason.DISCOUNT_EXCEEDS_AMOUNT)

    def item_unknown_order(self, j: int) -> None:
        """``unknown_order``: ids that look like a valid order's (zeros, case)."""
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
        self._row(CUSTOMERS.name, f"{self.customer_key()},2024-02-29,\t", VALID)
        leap = (date(2024, 2, 29) - date(1970, 1, 1)).days
        base = min(leap, self.ctx.as_of_day - 2) * US_PER_DAY
        for ts in (
            _fmt_ts(base + 43_200 * US_PER_SECOND, tz=840),
            _fmt_ts(base + 43_200 * US_PER_SECOND, tz=0).replace("+00:00", "-00:00"),
            _fmt_ts(base + US_PER_DAY - 1, prec="f", digits=6),
            _fmt_ts(base, prec="d"),
        ):
            oid = self.order_key()
            self._row(ORDERS.name, f"{oid},{cid},{ts},COMPLETED", VALID)
            self.items(oid, VALID, 1)
        oid = self.valid_order()
        exact = [
            ("01", "2.50", ""),
            ("2", "2.50", "5"),
            ("1", "0", ""),
            ("1", "0.0", "0"),
            ("3", "3.3", "9.9"),
        ]
        for qty, price, discount in [*exact, ("2147483647", "0", "")]:
            self._row(ORDER_ITEMS.name, self.item_line(oid, qty=qty, price=price, discount=discount), VALID)


#: Injection kinds in the order they run inside a chunk.
KINDS: tuple[Callable[[Dirty, int], None], ...] = (
    Dirty.customer_malformed,
    Dirty.customer_missing,
    Dirty.customer_bad_date,
    Dirty.customer_conflict,
    Dirty.customer_exact_duplicate,
    Dirty.order_malformed,
    Dirty.order_missing,
    Dirty.order_bad_timestamp,
    Dirty.order_bad_status,
    Dirty.order_conflict,
    Dirty.order_unknown_customer,
    Dirty.order_exact_duplicate,
    Dirty.item_malformed,
    Dirty.item_missing,
    Dirty.item_bad_quantity,
    Dirty.item_bad_money,
    Dirty.item_discount_exceeds,
    Dirty.item_unknown_order,
)


def interleave(clean: pl.Series, dirty: list[str], rng: np.random.Generator) -> pl.Series:
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
