"""The study's measurement stage, run in a fresh process: calibrate this machine, then bench the trained models
against that calibration.

Why a separate process: after minutes of training, the study's own process runs the same decode steps 30-50%
slower than a fresh one (a fragmented heap: millions of page faults), which is the state of no serving process.
Measured on the 2-core machine: median prediction errors of 32-36% in-process, 10-19% in a fresh process.

    python -m moelab.study.measure OUT_DIR PLAN_JSON   # writes OUT_DIR/hardware.json and OUT_DIR/bench.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from moelab.data.cache import atomic_write_json
from moelab.study.plan import PAIRS, StudyPlan


def measure(out: Path, plan: StudyPlan) -> tuple[dict, dict]:
    """(calibrated hardware dict, bench result) for the dense and iso-active MoE runs in out/runs."""
    from moelab.bench.calibrate import cache_path, calibrate, write_hardware
    from moelab.bench.run import bench

    hw = calibrate("cpu", quick=plan.quick, progress="lines")
    path = write_hardware(hw, out / "hardware.json")
    write_hardware(hw, cache_path("cpu", quick=plan.quick))  # also this machine's cached calibration
    models = [str(out / "runs" / PAIRS["dense"]), str(out / "runs" / PAIRS["moe"])]
    result = bench(models, device="cpu", dtype="fp32", batches=plan.bench_batches, prompt=plan.bench_prompt,
                   gen=plan.bench_gen, hardware=str(path), quick=plan.quick, progress="lines")
    atomic_write_json(out / "bench.json", result)
    return {**hw, "path": str(path)}, result


def main(argv: list[str]) -> int:
    """Run the stage; progress lines on stderr (the parent relays them), errors as one `moelab: error:` line."""
    from moelab.errors import MoelabError

    try:
        out, plan = Path(argv[0]), StudyPlan.from_dict(json.loads(argv[1]))
        measure(out, plan)
    except KeyboardInterrupt:
        sys.stderr.write("moelab: interrupted\n")
        return 130
    except MoelabError as e:
        sys.stderr.write(f"moelab: error: {' '.join(str(e).split())}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
