"""The study's upcycling stage: does upcycling the study's dense model pay, on one budget after its pretraining?

Runs moelab.mitigate.upcycling.upcycle_compare on out/runs/tiny-dense (trained plan.steps by the train stage)
into out/upcycling: continued dense training, the upcycled MoE and that MoE from scratch, each ending after
plan.steps + N steps of the study's batch. The upcycle defaults to copy 8x1: every expert a copy of the dense
FFN, top-1, so each token's FFN FLOPs equal the dense model's (iso-active; Sparse Upcycling's setting, with
Mixtral routing so the upcycled model starts exactly at the dense one). StudyPlan may name another through
upcycle_mode / upcycle_experts / upcycle_top_k / upcycle_steps (read with these defaults when absent).

Time (2-core CPU, study batch 16 x 128, N = plan.steps // 5 = 60): about 150 s, estimated from step times (tiny-
dense 0.19 s a step idle; the copy 8x1 MoE about 1.3x that), most of it the scratch arm's 360 steps and its 12
evaluations. --quick shrinks it: N = 6 after the quick 30-step pretraining, one evaluation per continued arm and
every 6 steps for the scratch arm's 36; measured 60 s on this machine while three other test runs shared its two
cores (load average 7), so well under 40 s alone.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from moelab.errors import MoelabError

EXPECTED_SECONDS = {"full": 150.0, "quick": 30.0}


def upcycling_stage(out: Path, plan, log: Callable[[str], None]) -> dict:
    """The comparison's result (arms, target, curves) plus what the stage ran: "shrunk" (quick) or "full", its
    expected seconds, and "skipped" with the reason when there is no dense run or the comparison is refused."""
    from moelab.mitigate.upcycling import upcycle_compare
    from moelab.study.plan import PAIRS
    from moelab.train.compare import folder_name

    dense = Path(out) / "runs" / folder_name(PAIRS["dense"])
    mode = getattr(plan, "upcycle_mode", "copy")
    experts, top_k = getattr(plan, "upcycle_experts", 8), getattr(plan, "upcycle_top_k", 1)
    steps = getattr(plan, "upcycle_steps", None) or max(1, plan.steps // 5)
    scope = "quick" if plan.quick else "full"
    base = {"mode": mode, "experts": experts, "top_k": top_k, "steps": steps, "scope": scope,
            "expected_seconds": EXPECTED_SECONDS[scope],
            "shrunk": ("--quick: N = plan.steps // 5 steps after the quick pretraining, the quick batch, evaluations "
                       "every N steps" if plan.quick else None), "skipped": None}
    if not (dense / "final" / "meta.json").is_file():
        log(f"study: upcycling skipped: no dense run at {dense}")
        return {**base, "skipped": f"no dense run at {dense} (the train stage makes it)"}
    try:
        result = upcycle_compare(dense, experts, top_k, steps, Path(out) / "upcycling", mode=mode, progress=False,
                                 eval_every=steps if plan.quick else None,
                                 log=lambda msg: log(f"study: upcycling: {msg}"))
    except MoelabError as e:
        log(f"study: upcycling skipped: {e}")
        return {**base, "skipped": str(e)}
    return {**base, **result}
