"""Distinct rows with their counts: the fits and predictions work once per distinct history.

Customers share histories (days and counts are small whole numbers), so a million customers
have a few hundred thousand distinct ``(frequency, recency, T)`` rows; the likelihoods are
weighted sums over those, and the hypergeometric predictions are evaluated per distinct
``(frequency, T)``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fastclv.model.params import FloatArray, IndexArray


def distinct_rows(
    *columns: FloatArray, weights: FloatArray | None = None
) -> tuple[list[FloatArray], IndexArray, FloatArray]:
    """Distinct rows of the given columns, the row of each input, and their counts.

    With ``weights`` (one per input row: how many customers the row stands for, e.g. the
    merged histograms of a sharded run), a distinct row's count is the sum of its rows' weights.
    The distinct rows come out in one order (sorted) whatever the input order, so the rows of
    several histograms merge into exactly the distinct rows of their customers.

    Same result as ``np.unique(np.column_stack(columns), axis=0, return_inverse=True,
    return_counts=True)``, 3-20x faster: small whole numbers (days, counts) are packed
    into one int64 key and sorted as such; anything else is lexsorted and compared with
    its neighbour, instead of sorted as opaque byte strings.
    """
    n = columns[0].shape[0]
    if n == 0:
        return [c.copy() for c in columns], np.zeros(0, dtype=np.intp), np.zeros(0)
    key = _packed_key(columns)
    new = np.zeros(n, dtype=bool)
    new[0] = True
    if key is not None:
        # Unstable sort is fine: rows with equal keys are equal. For int64 numpy uses
        # its SIMD sort, several times faster than lexsort.
        order = np.argsort(key)
        s_key = key[order]
        new[1:] = s_key[1:] != s_key[:-1]
    else:
        order = _lexsort(columns)
        for col in columns:
            s = col[order]
            new[1:] |= s[1:] != s[:-1]
    group = np.cumsum(new) - 1
    inverse = np.empty(n, dtype=np.intp)
    inverse[order] = group
    first = order[new]
    counts = np.bincount(group) if weights is None else np.bincount(group, weights=weights[order])
    return [col[first] for col in columns], inverse, counts.astype(np.float64)


def _lexsort(columns: tuple[FloatArray, ...]) -> IndexArray:
    """``np.lexsort(columns[::-1])``, 4x faster when all but the last column pack.

    Sorts by the last column (e.g. a float spend) with numpy's SIMD sort, then stably
    by the packed leading columns (e.g. frequency), which for 16-bit keys is a radix
    sort: (frequency, monetary_value) rows dedupe in 70 ms per million, not 280.
    """
    prefix = _packed_key(columns[:-1]) if len(columns) > 1 else None
    if prefix is None:
        return np.lexsort(columns[::-1])
    order = np.argsort(columns[-1])
    leading = prefix[order]
    if int(prefix.max()) < 2**16:
        leading = leading.astype(np.uint16)
    return np.asarray(order[np.argsort(leading, kind="stable")], dtype=np.intp)


def _packed_key(columns: tuple[FloatArray, ...]) -> NDArray[np.int64] | None:
    """One int64 per row that sorts like the rows, or None if the values do not fit."""
    span = 1
    for col in columns:
        low, high = float(col.min()), float(col.max())
        if low < 0 or high >= 2**31 or not np.array_equal(col, np.floor(col)):
            return None
        span *= int(high) + 1
    if span >= 2**62:
        return None
    key = np.zeros(columns[0].shape[0], dtype=np.int64)
    for col in columns:
        key = key * (int(col.max()) + 1) + col.astype(np.int64)
    return key
