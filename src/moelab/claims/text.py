"""The claims table for people: a figure shown compactly, and the study.json a user points `--evidence` at, read
under moelab.userfile's rules (one line on any failure)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from moelab.errors import MoelabError
from moelab.userfile import load_user_file

STUDY_MAX_BYTES = 64 * 2**20  # a study.json with its training curves is ~0.5 MB; room for long sweeps


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


def read_study(where: str | Path) -> dict:
    """The study dict of a study folder (its study.json) or of a study.json path; MoelabError in one line when it
    is missing, unreadable, not strict JSON or not a JSON object."""
    path = Path(where)
    try:
        is_dir = path.is_dir()
    except ValueError:  # a NUL byte in the name
        raise MoelabError(f"--evidence {str(where)!r}: not a valid path") from None
    if is_dir:
        path = path / "study.json"
    elif path.suffix.lower() != ".json":
        raise MoelabError(f"--evidence {str(where)!r}: give a study folder (moelab study --out DIR) or its study.json")
    study = load_user_file(path, "study file", STUDY_MAX_BYTES)
    if not isinstance(study, dict):
        raise MoelabError(f"{path}: a study.json holds one JSON object, got {type(study).__name__}")
    return study
