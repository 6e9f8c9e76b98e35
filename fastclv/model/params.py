"""The fitted parameters' types and the model's time conventions, shared with the cross-check.

:mod:`fastclv.verify` re-evaluates the predictions from the parameters in the run summary with
formulas of its own; it takes the parameter types and the month length from here, so that the
two cannot disagree on what a parameter is called or how long a month is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IndexArray = NDArray[np.intp]

#: Days per month in the CLV sum (contract section 5, lifetimes' ``freq="D"``).
DAYS_PER_MONTH = 30


@dataclass(frozen=True)
class BgNbdParams:
    """BG/NBD parameters: purchase rate ~ Gamma(r, alpha), dropout ~ Beta(a, b).

    ``alpha`` is in the time unit of the data the model was fitted on (days in fastclv).
    """

    r: float
    alpha: float
    a: float
    b: float


@dataclass(frozen=True)
class GammaGammaParams:
    """Gamma-Gamma spend parameters: shape ``p``, and ``nu ~ Gamma(q, v)`` (v in money)."""

    p: float
    q: float
    v: float
