"""Fit the GPU presets' efficiency curves and overheads on the published suite's FIT split, per GPU generation.

    .venv/bin/python benchmarks/published/fit_defaults.py [--params a,b,...] [--loss soft_l1] [--hardware-dir DIR]

Reads benchmarks/published/cases.json and fits (moelab.cost.fit: least squares on log predicted / measured) on
the cases whose split is "fit" only; the holdout is never read into a fit (check.py reports it). Cases are
grouped by GPU generation (GENERATIONS: Ampere A100*, Hopper H100* and H200, Blackwell B200); each group's
parameters are fitted together, every case priced on its own preset (its datasheet peaks, memory and links) with
the group's fitted values put in. A group with fewer than --min-points-per-param points per parameter takes
the shared fit over every fit case instead, and says so. Cases whose statistic the engine cannot compare (a p99)
are listed as skipped. Prints one JSON object: per generation the fitted values (hardware-file keys and units),
the points and the fit-set median |error| before and after, and the shared fit. It does not touch
spec/presets/hardware.json (the values go there by hand, with their sources); --hardware-dir DIR writes
DIR/<preset>.yaml hardware files for `check.py --split holdout --hardware-dir DIR`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from check import _model_ref, load_cases, measurement  # noqa: E402 - the suite's own case reader

from moelab.cost.fit import (  # noqa: E402
    dump_hardware_file,
    fit,
    fitted_hardware_file,
    median_abs,
    write_file_atomically,
)
from moelab.errors import MoelabError  # noqa: E402
from moelab.jsonout import dumps  # noqa: E402
from moelab.spec.hardware import load_hardware  # noqa: E402
from moelab.spec.presets import load_model  # noqa: E402

GENERATIONS = {"Ampere": ("A100-40GB", "A100-80GB"), "Hopper": ("H100-SXM", "H100-PCIe", "H200"),
               "Blackwell": ("B200",)}


def generation(hardware: str) -> str:
    for name, presets in GENERATIONS.items():
        if hardware in presets:
            return name
    return "other"


def _fit_block(ms, params, specs, loss):
    bases = {m.hardware: load_hardware(m.hardware) for m in ms}
    result = fit(ms, bases, params, specs, loss=loss)
    out = result.to_dict()
    out["hardware"] = sorted(bases)
    out["failed"] = [{"name": p.name, "reason": p.failed} for p in result.failed]
    return out, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", help="parameters to fit, comma-separated (default: those the points inform)")
    parser.add_argument("--loss", choices=("squared", "soft_l1"), default="squared",
                        help="squared (least squares on log ratio) or soft_l1 (robust to a few outliers)")
    parser.add_argument("--hardware-dir", type=Path,
                        help="also write DIR/<preset>.yaml per fitted preset (for check.py --hardware-dir)")
    parser.add_argument("--min-points-per-param", type=float, default=2.0,
                        help="a generation with fewer points per parameter takes the shared fit (default 2)")
    args = parser.parse_args(argv)
    params = None if not args.params else [p.strip() for p in args.params.split(",") if p.strip()]

    cases = [c for c in load_cases() if c["split"] == "fit"]
    ms, skipped, specs = [], [], {}
    for case in cases:
        try:
            m = measurement(case)
        except MoelabError as e:
            skipped.append({"id": case["id"], "reason": " ".join(str(e).split())})
            continue
        ref = _model_ref(case["model"])
        if m.model not in specs:
            specs[m.model] = load_model(ref)
        ms.append(m)

    try:
        shared_out, shared = _fit_block(ms, params, specs, args.loss)
    except MoelabError as e:
        sys.stderr.write(f"fit_defaults: {e}\n")
        return 2
    report = {"split": "fit", "loss": args.loss, "cases": len(cases), "skipped": skipped, "shared": shared_out,
              "by_generation": {}}
    results = {}
    for gen in dict.fromkeys(generation(m.hardware) for m in ms):
        group = [m for m in ms if generation(m.hardware) == gen]
        entry = {"points": len(group)}
        try:
            block, result = _fit_block(group, params, specs, args.loss)
            if len(result.fitted) < args.min_points_per_param * len(result.params):
                raise MoelabError(f"{len(result.fitted)} points for {len(result.params)} parameters")
            entry.update(block, fallback=None)
            results[gen] = result
        except MoelabError as e:
            ids = {m.name for m in group}
            mine = [p for p in shared.points if p.name in ids]
            entry.update({"fallback": f"shared fit ({' '.join(str(e).split())})", "params": shared_out["params"],
                          "hardware": sorted({m.hardware for m in group}),
                          "median_abs_error_before": median_abs([p.error_before for p in mine]),
                          "median_abs_error_after": median_abs([p.error_after for p in mine]),
                          "per_point": [p.to_dict() for p in mine]})
        report["by_generation"][gen] = entry
    if args.hardware_dir:
        args.hardware_dir.mkdir(parents=True, exist_ok=True)
        for name in sorted({m.hardware for m in ms}):
            result = results.get(generation(name), shared)
            raw = fitted_hardware_file(result, name, f"benchmarks/published/cases.json (fit split, {args.loss})")
            path = args.hardware_dir / f"{name}.yaml"
            write_file_atomically(path, dump_hardware_file(raw, path))
        report["hardware_dir"] = str(args.hardware_dir)
    sys.stdout.write(dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
