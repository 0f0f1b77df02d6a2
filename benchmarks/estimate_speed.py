"""How fast `moelab estimate` answers, against `python -c "import torch"` on the same machine.

Runs both as fresh processes, interleaved, several times, and prints one JSON object with the medians and
their ratio (the engine must beat importing torch: ratio < 1), and whether `moelab frontier` of two models
answers within 2 s.

    python benchmarks/estimate_speed.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "estimate": [sys.executable, "-m", "moelab.cli", "estimate", "mixtral-8x7b", "--hardware", "H100-SXM",
                 "--batch", "8", "--json"],
    "estimate_deepseek_v3": [sys.executable, "-m", "moelab.cli", "estimate", "deepseek-v3", "--json"],
    # the interactivity-throughput frontier of two models (every plan on 8 GPUs, a concurrency ladder): within 2 s
    "frontier": [sys.executable, "-m", "moelab.cli", "frontier", "mixtral-8x7b", "llama-3-70b", "--hardware",
                 "H100-SXM", "--gpus", "8", "--json"],
    "import_torch": [sys.executable, "-c", "import torch"],
}


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    for cmd in COMMANDS.values():  # warm the page cache once
        wall(cmd)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, cmd in COMMANDS.items():
            times[name].append(wall(cmd))
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(json.dumps({
        "repeats": args.repeats,
        "median_seconds": medians,
        "ratio_estimate_over_import_torch": medians["estimate"] / medians["import_torch"],
        "ratio_deepseek_v3_over_import_torch": medians["estimate_deepseek_v3"] / medians["import_torch"],
        "frontier_within_2_s": medians["frontier"] <= 2.0,
        "all_seconds": times,
    }, indent=2))


if __name__ == "__main__":
    main()
