"""Figures in units people read."""

from __future__ import annotations


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1e-3:
        return f"{value * 1e6:.0f} µs"
    if value < 1:
        return f"{value * 1e3:.1f} ms"
    return f"{value:.2f} s"


def mebibytes(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1024:.0f} KiB"
    if value < 1024:
        return f"{value:.1f} MiB"
    return f"{value / 1024:.2f} GiB"


def mebibyte_seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g} MiB·s"


FORMAT = {"time_s": seconds, "cpu_s": seconds, "peak_mb": mebibytes, "tmu_mbs": mebibyte_seconds}
LABEL = {"time_s": "time", "cpu_s": "cpu", "peak_mb": "peak", "tmu_mbs": "TMU"}


def figure(metric: str, value: float | None) -> str:
    return FORMAT[metric](value)


def ratio(value: float | None) -> str:
    """Two decimals, but a ratio under 0.1 (a revision hundreds of times faster) keeps two significant digits."""
    if value is None:
        return "-"
    return f"{value:.2f}×" if value >= 0.1 or value == 0 else f"{value:.2g}×"
