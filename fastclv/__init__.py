"""fastclv: columnar, streaming, verified customer lifetime value."""

from __future__ import annotations

__version__ = "0.1.0"
