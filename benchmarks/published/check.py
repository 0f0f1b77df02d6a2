"""The engine against published GPU measurements: predicted vs measured per case, median |error| by group.

    .venv/bin/python benchmarks/published/check.py [--split fit|holdout|holdout2|all] [--file PATH]
                                                   [--hardware-dir DIR] [--cases] [--json]

Cases are benchmarks/published/cases.json (sources in SOURCES.md; the fit/holdout split was fixed by source
before any fitting) and holdout2.json (a second holdout from other sources, gathered blind after the first was
looked at during development; never fitted). Each case is priced by moelab.cost.measurement.predict on its
hardware preset (or, with --hardware-dir, on DIR/<preset>.yaml where such a file exists: e.g. the output of
`moelab fit`). The error is (predicted - measured) / measured in the case's own metric: for a throughput,
positive means the engine is too optimistic; for a latency, too pessimistic. Groups: phase (prefill = TTFT,
decode = TPOT/ITL, throughput) x kind (dense / MoE). Prints JSON when --json, else a table.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from moelab.cost.measurement import Measurement, predict
from moelab.errors import MoelabError
from moelab.spec.hardware import load_hardware
from moelab.spec.presets import load_model

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FIELDS = ("model", "hardware", "plan", "dtype", "kv_dtype", "input", "output", "mode", "metric", "value",
          "concurrency", "batch", "num_prompts", "statistic", "phase")


def load_cases(path: Path = HERE / "cases.json") -> list[dict]:
    return json.loads(path.read_text())


def measurement(case: dict) -> Measurement:
    return Measurement(**{k: case.get(k) for k in FIELDS if case.get(k) is not None}, name=case["id"])


def _model_ref(name: str) -> str:
    """A preset name, or a config path relative to the repository root."""
    return str(ROOT / name) if name.endswith(".json") else name


def evaluate(cases: list[dict], hardware_dir: Path | None = None) -> list[dict]:
    """One row per case: predicted, measured, relative error (None and the reason when it cannot be priced)."""
    specs, hws, rows = {}, {}, []
    for case in cases:
        ref = case["model"]
        if ref not in specs:
            specs[ref] = load_model(_model_ref(ref))
        name = case["hardware"]
        if name not in hws:
            file = hardware_dir / f"{name}.yaml" if hardware_dir else None
            hws[name] = load_hardware(str(file) if file and file.exists() else name)
        row = {k: case[k] for k in ("id", "source_id", "split", "phase", "kind", "model", "hardware", "plan",
                                    "metric", "value")}
        try:
            predicted = predict(measurement(case), specs[ref], hws[name])
            row.update(predicted=predicted, rel_error=(predicted - case["value"]) / case["value"], error=None)
        except MoelabError as e:
            row.update(predicted=None, rel_error=None, error=str(e))
        rows.append(row)
    return rows


def summarise(rows: list[dict]) -> dict:
    """Median |error| overall, by phase, by kind and by phase x kind; geometric mean of predicted / measured."""
    def block(subset: list[dict]) -> dict:
        errs = [abs(r["rel_error"]) for r in subset if r["rel_error"] is not None]
        ratios = [r["predicted"] / r["value"] for r in subset if r["predicted"]]
        return {"n": len(errs), "median_abs_error": statistics.median(errs) if errs else None,
                "geomean_ratio": math.exp(statistics.fmean(math.log(x) for x in ratios)) if ratios else None,
                "unpriced": sum(r["rel_error"] is None for r in subset)}

    out = {"all": block(rows)}
    for key in ("phase", "kind"):
        for value in sorted({r[key] for r in rows}):
            out[f"{key}={value}"] = block([r for r in rows if r[key] == value])
    for phase in ("prefill", "decode", "throughput"):
        for kind in ("dense", "moe"):
            out[f"{phase}/{kind}"] = block([r for r in rows if r["phase"] == phase and r["kind"] == kind])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("fit", "holdout", "holdout2", "all"), default="all")
    parser.add_argument("--file", type=Path, default=None, help="another cases file of the same schema")
    parser.add_argument("--hardware-dir", type=Path, default=None)
    parser.add_argument("--cases", action="store_true", help="print every case, not only the summary")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cases = load_cases(args.file) if args.file else load_cases() + load_cases(HERE / "holdout2.json")
    splits = sorted({c["split"] for c in cases}) if args.split == "all" else (args.split,)
    result = {}
    rows_all = evaluate([c for c in cases if c["split"] in splits], args.hardware_dir)
    for split in splits:
        rows = [r for r in rows_all if r["split"] == split]
        result[split] = {"summary": summarise(rows), **({"cases": rows} if args.cases or args.json else {})}
    if args.json:
        json.dump(result, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    for split, block in result.items():
        print(f"== {split} ==")
        if args.cases:
            for r in block["cases"]:
                err = f"{r['rel_error']:+.0%}" if r["rel_error"] is not None else r["error"]
                pred = f"{r['predicted']:.4g}" if r["predicted"] else "-"
                print(f"  {r['id'][:58]:58} {r['metric'][:20]:20} meas {r['value']:<10.4g} pred {pred:<10} {err}")
        for group, s in block["summary"].items():
            if s["n"] or s["unpriced"]:
                med = f"{s['median_abs_error']:.1%}" if s["median_abs_error"] is not None else "-"
                geo = f"{s['geomean_ratio']:.2f}x" if s["geomean_ratio"] else "-"
                print(f"  {group:22} n={s['n']:<3} median |error| {med:>6}  geomean pred/meas {geo}"
                      + (f"  unpriced {s['unpriced']}" if s["unpriced"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
