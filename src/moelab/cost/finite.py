"""The engine's own guarantee for `estimate`, `compare` and `decide`: every modelled figure is a finite number.

Inputs are bounded (moelab.limits, the hardware schema's minimums and maximums), so a NaN or an infinity in a
result is a bug in the model, not a property of the input: `require_finite` refuses to let one through as the
`null` that moelab.jsonout would print, and names the key instead. `null` in these results means only "absent",
a Python None set on purpose: `decode.crossover_batch` in `estimate` (no batch up to 2**20 turns the step
compute-bound; with derived=False also `dense_equivalent.workload`: not computed), `gpus` in `compare` (no
--gpus: each row carries its own count), and in `decide` the flip batches, thresholds and directions of a factor
whose change never flips the choice.
"""

from __future__ import annotations

import math
from typing import Any

from moelab.errors import MoelabError


def non_finite_keys(obj: Any, path: str = "") -> list[str]:
    """The dotted paths of every NaN or ±inf float in `obj` (dicts and lists, at any depth)."""
    if isinstance(obj, float):
        return [] if math.isfinite(obj) else [path or "result"]
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in non_finite_keys(v, f"{path}.{k}" if path else str(k))]
    if isinstance(obj, list | tuple):
        return [p for i, v in enumerate(obj) for p in non_finite_keys(v, f"{path}[{i}]")]
    return []


def require_finite(result: dict, command: str) -> dict:
    """`result` unchanged if every figure in it is finite, else one MoelabError naming the first bad keys."""
    bad = non_finite_keys(result)
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise MoelabError(f"{command}: internal error: modelled figure{'s' if len(bad) > 1 else ''} {shown} not "
                          "finite for valid inputs (a moelab bug; please report it with the command line)")
    return result
