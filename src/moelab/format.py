"""Human-readable numbers for terminal output: parameters, bytes, seconds, rates."""

from __future__ import annotations


def count(n: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def nbytes(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


def seconds(s: float) -> str:
    if s >= 3600 * 24:
        return f"{s / 86400:.1f} d"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def rate(x: float) -> str:
    return f"{count(x)}/s" if x >= 1e3 else f"{x:.1f}/s" if x >= 1 else f"{x:.3g}/s"
