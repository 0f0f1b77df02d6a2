"""JSON that is always JSON: the rule for non-finite numbers in every `--json` result.

RFC 8259 has no NaN or Infinity, and Python's json module writes them by default. moelab's rule: a float
that is NaN or infinite stands for a quantity that is undefined (a ratio over zero time, a loss that
diverged, a percentile of no samples), so it is written as `null`, like every other absent value. The
writer then runs with allow_nan=False, so a non-finite number that slipped past this rule is a bug that
fails loudly instead of printing invalid JSON.
"""

from __future__ import annotations

import json
import math
from pathlib import PurePath
from typing import Any


def finite_or_null(obj: Any) -> Any:
    """`obj` with every NaN/±inf float (in dicts, lists and tuples, at any depth) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_null(v) for v in obj]
    if isinstance(obj, PurePath):
        return str(obj)
    return obj


def dumps(obj: Any, indent: int | None = 2, default=None) -> str:
    """Strict JSON text of `obj` under the rule above (`default` as json.dumps takes it)."""
    return json.dumps(finite_or_null(obj), indent=indent, allow_nan=False, default=default)
