"""The study's scaling-law stage: a sweep smaller than `moelab sweep`'s default, trained and fitted.

Five non-embedding active sizes of each kind (STAGE_SIZES; MoE at 8 experts top-2) and an expert axis (4, 8 and
16 experts at STAGE_EXPERTS_AT) on one budget and data order: STAGE_STEPS steps at the study's batch and sequence
length on the default corpus (the study's byte cap and validation tokens), into out/laws (out/laws-quick with
--quick); then moelab.laws.fits: L = E + A*C^-alpha per kind fitted on all but the largest size, the pure power
law beside it, the expert axis' E + A*(C*E)^-beta, each held against the seeds' exponents. A rerun skips the
finished runs. A failure (memory, disk, a diverged run, too few scored runs to fit, or any other Exception of the
sweep or the fit: never a KeyboardInterrupt) is recorded in "failures", never raised.

Time on this 2-core CPU (12 runs), estimated for an idle machine: 4.03 s of one-thread CPU per step of all 12 runs
together (measured; two threads' wall times at a load average under 1 were 1.85x below the same runs' one-thread
CPU times on the default grid), so ~220 s
of steps plus ~35 s of evaluation and startup: about 4.5 minutes (EXPECTED_SECONDS). Measured end to end with one
thread while four other jobs shared the cores (load average 4-9): 813 s. --quick (12 runs of 20 steps of 8 x 64
tokens at 10k-160k): 29 s measured under that load with one thread (15 s of CPU); about 15 s idle.
"""

from __future__ import annotations

import time
from pathlib import Path

from moelab.basis import BASIS_TINY
from moelab.errors import MoelabError

STAGE_SIZES = (100_000, 200_000, 400_000, 800_000, 1_600_000)
STAGE_EXPERTS, STAGE_EXPERTS_AT = (4, 8, 16), 400_000
STAGE_STEPS = 100
QUICK_SIZES = (10_000, 20_000, 40_000, 80_000, 160_000)
QUICK_EXPERTS, QUICK_EXPERTS_AT = (4, 8, 16), 40_000
QUICK_STEPS = 20
EXPECTED_SECONDS = {"full": 270, "quick": 15}


def laws_stage(out: Path, plan, log) -> dict:
    """Sweep and fit (see the module docstring); the dict the report renders (study["laws"])."""
    from moelab.laws.fits import SEEDS, fit_sweep
    from moelab.laws.grid import KINDS, build_grid
    from moelab.laws.sweep import run_sweep, sweep_config

    began = time.perf_counter()
    scope = "quick" if plan.quick else "full"
    sizes, experts, at, steps = ((QUICK_SIZES, QUICK_EXPERTS, QUICK_EXPERTS_AT, QUICK_STEPS) if plan.quick else
                                 (STAGE_SIZES, STAGE_EXPERTS, STAGE_EXPERTS_AT, STAGE_STEPS))
    folder = out / ("laws-quick" if plan.quick else "laws")
    base = {"basis": BASIS_TINY, "seeds": dict(SEEDS), "folder": str(folder),
            "expected_seconds": EXPECTED_SECONDS[scope], "fits": {}, "notes": [], "failures": []}

    def finish(result: dict) -> dict:
        result["seconds"] = round(time.perf_counter() - began, 2)
        log(f"study: laws: done in {result['seconds']:.0f} s")
        return result

    try:
        cfg = sweep_config(steps=steps, batch_size=plan.batch_size, seq_len=plan.seq_len,
                           eval_tokens=plan.eval_tokens, max_bytes_per_domain=plan.max_bytes_per_domain)
        points = build_grid(list(sizes), list(KINDS), list(experts), at, vocab=cfg.vocab_size)
        log(f"study: laws: {len(points)} runs of {steps} steps ({cfg.tokens_per_step * steps} tokens each)")
        sweep = run_sweep(points, cfg, folder, progress=False, log=lambda m: log(f"study: laws: {m}"),
                          grid={"sizes": list(sizes), "kinds": list(KINDS), "experts": list(experts),
                                "experts_at": at})
    except Exception as e:  # noqa: BLE001 - the study goes on; an interrupt (BaseException) still stops it
        why = _failure(e)
        log(f"study: laws: skipped: {why}")
        return finish({**base, "sweep": None, "skipped": f"the sweep did not finish: {why}",
                       "failures": [f"sweep: {why}"]})
    try:
        fitted = fit_sweep(sweep)
    except Exception as e:  # noqa: BLE001 - as above
        why = _failure(e)
        log(f"study: laws: no fit: {why}")
        return finish({**base, "sweep": sweep, "skipped": None, "failures": [why]})
    return finish({**base, "sweep": sweep, "skipped": None, "fits": fitted["fits"], "notes": fitted["notes"],
                   "token_budget": fitted["token_budget"], "active": fitted["active"]})


def _failure(e: Exception) -> str:
    """A MoelabError or OSError in its own words; anything else (a bug) with its type, so the report says so."""
    return str(e) if isinstance(e, MoelabError | OSError) else f"{type(e).__name__}: {e}"
