"""The claims table for people: a figure shown compactly (`moelab claims --evidence` reads its study.json with
moelab.decide.evidence.load_study, the one study.json reader)."""

from __future__ import annotations

import math
from typing import Any


def show(value: Any) -> str:
    """A figure as the table prints it: exact integers with separators (C(256,8) in full), 3 significant digits
    otherwise, a range as low–high, None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, (list, tuple)):
        return "–".join(show(v) for v in value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 1e6 or (value != 0 and abs(value) < 1e-3):
        return f"{value:.3g}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"
