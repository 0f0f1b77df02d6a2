"""The study's hybrid stage: the trained dense and MoE models (out/runs/tiny-dense, out/runs/tiny-moe) routed and
cascaded on the probe sets, measured per query and composed into a cost-quality curve (moelab.hybrid.run) in
out/hybrid/hybrid.json; the result is study["hybrid"].

The engine: vLLM in the full study where moelab.serve.environment.serving_available() is None (each model served
on 127.0.0.1 in turn), moelab's own generation otherwise and with --quick. A vLLM attempt that fails is recorded
in "failures" and the stage measures with moelab's engine instead; anything else that fails is recorded and the
study goes on ({"skipped": why}): this stage is never fatal.

Time (2-core CPU, measured on tiny-dense and tiny-moe trained 300 steps on the study corpus, 123 scored and 58
extra queries): moelab's engine 7 s for the whole command; vLLM 228 s, of which the two servers' start (vLLM's CPU
compile) took 96 s and 100 s at a load average of 3 (170-220 s each on a busier machine), the queries about 30 ms
each. --quick: 2 items per level, moelab's engine: 5 s.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from moelab.errors import MoelabError

PER_LEVEL = {"full": 16, "quick": 2}
EXPECTED_SECONDS = {"full-moelab": 10.0, "full-vllm": 240.0, "quick": 5.0}
FOLDER = "hybrid"


def _engine(plan) -> tuple[str, str | None]:
    """("vllm" | "moelab", why vLLM is not used, None when it is)."""
    if plan.quick:
        return "moelab", "--quick: moelab's own generation (the full study serves with vLLM where it can)"
    from moelab.serve.environment import serving_available

    reason = serving_available()
    return ("vllm", None) if reason is None else ("moelab", reason)


def hybrid_stage(out: Path, plan, log: Callable[[str], None]) -> dict:
    """study["hybrid"]: moelab.hybrid.run's result plus what the stage ran ("scope", "expected_seconds",
    "failures", "skipped": None), or {"skipped": why, ...} when there is nothing to measure or it failed."""
    from moelab.hybrid.run import run_hybrid
    from moelab.study.plan import PAIRS
    from moelab.train.compare import folder_name

    out = Path(out)
    scope = "quick" if plan.quick else "full"
    per_level = getattr(plan, "hybrid_per_level", None) or PER_LEVEL[scope]
    engine, why = _engine(plan)
    key = "quick" if plan.quick else f"full-{engine}"
    base = {"scope": scope, "per_level": per_level, "expected_seconds": EXPECTED_SECONDS[key], "failures": [],
            "skipped": None, "engine_requested": engine}
    runs = {kind: out / "runs" / folder_name(PAIRS[kind]) for kind in ("dense", "moe")}
    missing = [str(p) for p in runs.values() if not (p / "final" / "meta.json").is_file()]
    if missing:
        log(f"study: hybrid skipped: no trained run at {', '.join(missing)}")
        return {**base, "skipped": f"no trained run at {', '.join(missing)} (the train stage makes them)"}

    def attempt(name: str) -> dict:
        return run_hybrid(runs["dense"], runs["moe"], out / FOLDER, engine=name, per_level=per_level,
                          log=lambda msg: log(f"study: hybrid: {msg}"))

    failures: list[str] = []
    try:
        try:
            result = attempt(engine)
        except Exception as e:  # noqa: BLE001 - a vLLM failure falls back to moelab's engine, never the study
            if engine != "vllm":
                raise
            failures.append(f"vLLM: {' '.join(str(e).split())}")
            log(f"study: hybrid: vLLM failed ({failures[-1]}); measuring with moelab's engine instead")
            result = attempt("moelab")
    except Exception as e:  # noqa: BLE001 - this stage must not take the study down
        kind = "" if isinstance(e, MoelabError) else f"{type(e).__name__}: "
        failures.append(f"{kind}{' '.join(str(e).split())}")
        log(f"study: hybrid skipped: {failures[-1]}")
        return {**base, "failures": failures, "skipped": failures[-1]}
    if result.get("engine") == "moelab" and (why or failures):
        because = why or f"vLLM failed ({failures[0]})"
        result["engine_note"] = f"moelab's own greedy generation (eager torch, float32, batch 1, KV cache): {because}"
    return {**base, **result, "failures": failures, "skipped": None}
