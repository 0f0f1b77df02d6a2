"""What `moelab hybrid` is given, checked before any work: the two runs (a dense one, then a MoE, one tokenizer),
the thresholds, the engine, the probe size and the output folder. Every refusal is one line (MoelabError)."""

from __future__ import annotations

import math
from pathlib import Path

from moelab.errors import MoelabError

ENGINES = ("auto", "moelab", "vllm")
MAX_PER_LEVEL = 1000
MAX_THRESHOLDS = 101


def parse_thresholds(text: str | list[float] | tuple[float, ...]) -> list[float]:
    """"0.1,0.2,..." (or numbers) as sorted distinct floats in [0, 1]; anything else one line."""
    parts = [p.strip() for p in text.split(",")] if isinstance(text, str) else list(text)
    if not parts or any(p == "" for p in parts):
        raise MoelabError(f"--thresholds {text!r}: give comma-separated numbers in [0, 1], e.g. 0.1,0.2,0.5")
    values = []
    for p in parts:
        try:
            value = float(p)
        except (TypeError, ValueError):
            raise MoelabError(f"--thresholds: {p!r} is not a number") from None
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise MoelabError(f"--thresholds: {p!r} is outside [0, 1] (a confidence and a probability are in [0, 1])")
        values.append(value)
    values = sorted(set(values))
    if len(values) > MAX_THRESHOLDS:
        raise MoelabError(f"--thresholds: at most {MAX_THRESHOLDS} distinct values, got {len(values)}")
    return values


def check_per_level(per_level: int) -> int:
    if isinstance(per_level, bool) or not isinstance(per_level, int) or not 1 <= per_level <= MAX_PER_LEVEL:
        raise MoelabError(f"--per-level must be an integer in 1..{MAX_PER_LEVEL}, got {per_level!r}")
    return per_level


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise MoelabError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    return engine


def _kind(spec) -> str:
    return f"a MoE ({spec.moe.n_experts} experts, top-{spec.moe.top_k})" if spec.is_moe else "a dense model"


def _same_tokenizer(a: str, b: str) -> bool:
    """Two tokenizers JSON texts describe one tokenizer (equal as JSON, whatever their whitespace)."""
    import json

    try:
        return json.loads(a) == json.loads(b)
    except ValueError:
        return a == b


def read_pair(dense_ref: str | Path, moe_ref: str | Path):
    """(dense SourceRun, MoE SourceRun): RUN_DENSE must be dense, RUN_MOE a MoE, both with one tokenizer."""
    from moelab.mitigate.runs import read_run

    dense = read_run(dense_ref, "RUN_DENSE")
    moe = read_run(moe_ref, "RUN_MOE")
    if dense.spec.is_moe:
        raise MoelabError(f"RUN_DENSE {dense_ref}: is {_kind(dense.spec)} ({dense.spec.name}); give the dense run "
                          "first and the MoE second")
    if not moe.spec.is_moe:
        raise MoelabError(f"RUN_MOE {moe_ref}: is {_kind(moe.spec)} ({moe.spec.name}), not a MoE; give the dense run "
                          "first and the MoE second")
    if not _same_tokenizer(dense.tokenizer_json(), moe.tokenizer_json()):
        raise MoelabError(f"RUN_DENSE {dense_ref} and RUN_MOE {moe_ref} have different tokenizers: a router or "
                          "cascade between them would not see one prompt as the same tokens (train both on one "
                          "corpus and vocabulary)")
    return dense, moe


def check_out(out: str | Path, runs) -> Path:
    """`out` as a folder to write hybrid.json (and a served model's export and log) into: not a file, not a run
    folder or inside one, writable. Nothing is created here."""
    from moelab.mitigate.runs import check_creatable

    if not str(out).strip():
        raise MoelabError("--out must name a folder")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise MoelabError(f"--out {out}: exists and is not a folder")
    resolved = path.resolve()
    for run in runs:
        folder = run.run_folder.resolve()
        if resolved == folder or resolved.is_relative_to(folder):
            raise MoelabError(f"--out {out}: is the run {folder} or inside it; write to a folder outside the runs")
    check_creatable(out)
    return path
