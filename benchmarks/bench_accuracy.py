"""Accuracy of the engine against the stopwatch on this machine: `moelab bench` over models, summary as JSON.

    .venv/bin/python benchmarks/bench_accuracy.py [MODEL ...] [--shrink MODEL=SIZE ...] [--quick]

Default: tiny-dense tiny-moe tiny-moe-fine, and mixtral-8x7b shrunk to 50M, each over the default sweep on
this machine's calibration (measured first if missing). Prints per model and phase the median |relative
error| and the worst row.
"""

from __future__ import annotations

import argparse
import json
import sys

from moelab.bench.run import bench


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["tiny-dense", "tiny-moe", "tiny-moe-fine"])
    parser.add_argument("--shrink", action="append", default=None, help="MODEL=SIZE, e.g. mixtral-8x7b=50M")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    runs = [([m], None) for m in args.models]
    for item in args.shrink if args.shrink is not None else ["mixtral-8x7b=50M"]:
        name, size = item.split("=", 1)
        runs.append(([name], size))
    out = {}
    for models, size in runs:
        r = bench(models, shrink_to=size, quick=args.quick)
        for name, phases in r["summary"]["by_model"].items():
            worst = {ph: max((row for row in r["rows"] if row["model"] == name and row["phase"] == ph),
                             key=lambda row: abs(row["rel_error"])) for ph in ("prefill", "decode")}
            out[name] = {ph: {"median_abs_rel_error": phases[ph]["median_abs_rel_error"], "n": phases[ph]["n"],
                              "worst_batch": worst[ph]["batch"], "worst_rel_error": worst[ph]["rel_error"]}
                         for ph in ("prefill", "decode")}
        out.setdefault("_hardware", r["hardware"]["ref"])
        out.setdefault("_load_average", []).append(r["load_average"])
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
