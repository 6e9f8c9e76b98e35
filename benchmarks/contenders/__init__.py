"""Contenders doing fastclv's job another way; each runs as ``python -m benchmarks.contenders.<name>``."""
