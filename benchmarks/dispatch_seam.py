"""Does the dispatcher seam slow the local path? The pre-seam dispatch and MoE layer against today's, interleaved.

Loads src/moelab/nn/dispatch.py and moe.py as they were at a commit before the seam (default 29883cf) from git
into temporary modules (the old moe imports the old dispatch; router, SwiGLU and spec are today's for both), then
times old and new in alternating rounds (common.interleaved_medians) on the same weights and routing:
- the free function dispatch(backend, x, idx, w, gate_up, down) for each backend, over the T grid and dtypes of
  benchmarks/moe_layer.py (inference mode);
- a whole MoELayer forward (eval, inference mode, backend "auto");
- a MoELayer training forward + backward (train mode, backend "auto"), on a shorter T grid.
Old and new outputs are checked equal first. Prints one JSON object: every row's new/old ratio, the median and
max ratio per contender, within_1_03 (the issue's bar for benchmarks/moe_layer.py: for every row, and for each
contender's median), and fixed_overhead: the microseconds per call old and new take at tiny sizes (d=64, f=128,
one thread, best of alternating rounds), where the GEMMs cost next to nothing and the seam's own cost shows.

    python benchmarks/dispatch_seam.py [--quick] [--commit 29883cf]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from common import add_moe_shape, interleaved_medians

from moelab.nn import moe as new_moe
from moelab.nn.dispatch import BACKENDS
from moelab.nn.dispatch import dispatch as new_dispatch
from moelab.spec.model import MoESpec

ROOT = Path(__file__).resolve().parents[1]
OLD_IMPORT = "from moelab.nn.dispatch import dispatch"


def load_old(commit: str, where: Path):
    """(old dispatch module, old moe module) from `commit`, the moe one importing the old dispatch."""
    def show(path: str) -> str:
        return subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, check=True, capture_output=True,
                              text=True).stdout

    moe_src = show("src/moelab/nn/moe.py")
    if OLD_IMPORT not in moe_src:
        sys.exit(f"{commit}'s moe.py does not import dispatch as expected ({OLD_IMPORT!r})")
    sources = {"old_dispatch": show("src/moelab/nn/dispatch.py"),
               "old_moe": moe_src.replace(OLD_IMPORT, "from old_dispatch import dispatch")}
    modules = []
    for name, text in sources.items():
        path = where / f"{name}.py"
        path.write_text(text)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before exec: old_moe imports old_dispatch by name
        spec.loader.exec_module(module)
        modules.append(module)
    return modules


def train_step(layer, x_BTD: torch.Tensor) -> None:
    layer.zero_grad(set_to_none=True)
    x_BTD.grad = None
    y = layer(x_BTD)
    (y.float().square().mean() + 0.01 * layer.aux_loss).backward()


def min_pair(old, new, calls: int = 100, rounds: int = 40) -> tuple[float, float]:
    """(old, new) microseconds per call: the best mean of `calls` calls over alternating rounds (fixed costs)."""
    best = {"old": float("inf"), "new": float("inf")}
    for _ in range(rounds):
        for name, fn in (("old", old), ("new", new)):
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / calls * 1e6)
    return best["old"], best["new"]


def fixed_overhead(old_dispatch, old_moe, e: int, k: int) -> list[dict]:
    """Per-call cost of old and new where the GEMMs cost next to nothing (d=64, f=128, one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    d, f = 64, 128
    g = torch.Generator().manual_seed(2)
    gate_up, down = torch.randn(e, 2 * f, d, generator=g), torch.randn(e, d, f, generator=g)
    moe = MoESpec(n_experts=e, top_k=k, expert_ffn=f)
    new_layer = new_moe.MoELayer(d, moe).eval()
    old_layer = old_moe.MoELayer(d, moe).eval()
    old_layer.load_state_dict(new_layer.state_dict())
    out = []
    with torch.inference_mode():
        for t in (1, 16):
            x = torch.randn(t, d, generator=g)
            idx = torch.stack([torch.randperm(e, generator=g)[:k] for _ in range(t)])
            a = (x, idx, torch.rand(t, k, generator=g), gate_up, down)
            pairs = {f"dispatch_{b}": (partial(old_dispatch.dispatch, b, *a), partial(new_dispatch, b, *a))
                     for b in BACKENDS}
            pairs["layer_forward"] = (partial(old_layer, x[None]), partial(new_layer, x[None]))
            for name, (old, new) in pairs.items():
                old_us, new_us = min_pair(old, new)
                out.append({"contender": name, "tokens": t, "old_us": round(old_us, 1), "new_us": round(new_us, 1),
                            "new_minus_old_us": round(new_us - old_us, 1)})
    torch.set_num_threads(threads)
    return out


def _summary(rows: list[dict]) -> dict:
    by: dict[str, list[float]] = {}
    for row in rows:
        by.setdefault(row["contender"], []).append(row["new_over_old"])
    return {name: {"median": statistics.median(r), "max": max(r), "rows": len(r)} for name, r in by.items()}


def run(args) -> dict:
    torch.manual_seed(0)
    d, f, e, k = args.d, args.f, args.experts, args.top_k
    sizes = [1, 4, 16, 64, 256, 1024] + ([] if args.quick else [4096])
    train_sizes = [1, 16, 256] + ([] if args.quick else [1024])
    if args.tokens:  # a re-measurement of chosen rows
        sizes = train_sizes = [int(t) for t in args.tokens.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        old_dispatch, old_moe = load_old(args.commit, Path(tmp))
    moe = MoESpec(n_experts=e, top_k=k, expert_ffn=f, router="softmax_topk", norm_topk_prob=True)
    rows = []

    def record(contender: str, dtype, t: int, old, new) -> None:
        pair = {"new": new, "old": old} if args.new_first else {"old": old, "new": new}
        times = interleaved_medians(pair, rounds=args.rounds)
        row = {"contender": contender, "dtype": str(dtype).removeprefix("torch."), "tokens": t,
               "old_s": times["old"], "new_s": times["new"], "new_over_old": times["new"] / times["old"]}
        rows.append(row)
        print(json.dumps({a: (round(b, 6) if isinstance(b, float) else b) for a, b in row.items()}),
              file=sys.stderr, flush=True)

    for dtype in (torch.float32, torch.bfloat16):
        gate_up = (torch.randn(e, 2 * f, d) * d ** -0.5).to(dtype)
        down = (torch.randn(e, d, f) * f ** -0.5).to(dtype)
        torch.manual_seed(1)
        new_layer = new_moe.MoELayer(d, moe).to(dtype)
        old_layer = old_moe.MoELayer(d, moe).to(dtype)
        old_layer.load_state_dict(new_layer.state_dict())
        for t in sizes:
            x = torch.randn(t, d, dtype=dtype)
            logits = torch.randn(t, e)
            weights, idx = logits.softmax(-1).topk(k, dim=-1)
            weights = weights / weights.sum(-1, keepdim=True)
            a = (x, idx, weights, gate_up, down)
            with torch.inference_mode():
                for backend in BACKENDS:
                    if not torch.equal(new_dispatch(backend, *a), old_dispatch.dispatch(backend, *a)):
                        sys.exit(f"old and new {backend} differ at T={t} {dtype}")
                    record(f"dispatch_{backend}", dtype, t, partial(old_dispatch.dispatch, backend, *a),
                           partial(new_dispatch, backend, *a))
                new_layer.eval(), old_layer.eval()
                x_BTD = x[None]
                if not torch.equal(new_layer(x_BTD), old_layer(x_BTD)):
                    sys.exit(f"old and new MoELayer forwards differ at T={t} {dtype}")
                record("layer_forward", dtype, t, partial(old_layer, x_BTD), partial(new_layer, x_BTD))
            if t in train_sizes:
                new_layer.train(), old_layer.train()
                x_grad = x[None].clone().requires_grad_()
                record("layer_train_step", dtype, t, partial(train_step, old_layer, x_grad),
                       partial(train_step, new_layer, x_grad))
    summary = _summary(rows)
    worst = max(r["new_over_old"] for r in rows)
    return {
        "machine": {"processor": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__},
        "shape": {"d": d, "f": f, "experts": e, "top_k": k},
        "old_commit": args.commit,
        "rows": [{a: (round(b, 7) if isinstance(b, float) else b) for a, b in r.items()} for r in rows],
        "summary": {name: {a: (round(b, 4) if isinstance(b, float) else b) for a, b in s.items()}
                    for name, s in summary.items()},
        "max_ratio": round(worst, 4),
        # every row (sensitive to run-to-run noise on the 1-2 ms memory-bound rows at small T), and each median
        "within_1_03": {"every_row": {name: s["max"] <= 1.03 for name, s in summary.items()} | {"all": worst <= 1.03},
                        "median": {name: s["median"] <= 1.03 for name, s in summary.items()}},
        "fixed_overhead": fixed_overhead(old_dispatch, old_moe, e, k) if not args.tokens else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_moe_shape(parser)
    parser.add_argument("--quick", action="store_true", help="stop at T=1024 (training steps at T=256)")
    parser.add_argument("--rounds", type=int, default=7, help="alternating timing rounds per pair")
    parser.add_argument("--commit", default="29883cf", help="a commit before the seam")
    parser.add_argument("--tokens", help="comma-separated T to measure instead of the grid (forward and training)")
    parser.add_argument("--new-first", action="store_true", help="time new before old in each round (order check)")
    print(json.dumps(run(parser.parse_args()), indent=2))


if __name__ == "__main__":
    main()
