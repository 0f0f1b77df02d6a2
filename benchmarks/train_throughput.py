"""Training throughput of the lab presets on this machine, and where a MoE step spends its time.

Times full training steps (forward, backward, AdamW) of tiny-dense, tiny-moe, tiny-moe-fine and tiny-dense-wide
in alternating rounds, then profiles one tiny-moe and one tiny-moe-fine step with torch.profiler and splits its
CPU time into routing, dispatch overhead and expert GEMMs (forward and backward), the rest being attention,
dense layers, embeddings, the loss and the optimizer. Prints JSON.

    python benchmarks/train_throughput.py [--batch 16 --seq 128 --rounds 5]
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from common import interleaved_medians

from moelab.nn import build_model
from moelab.train.presets import TRAIN_PRESETS

GEMMS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::_grouped_mm", "aten::matmul", "aten::linear")


def make_step(model, ids):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step():
        optimizer.zero_grad(set_to_none=True)
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
        aux, z = model.router_losses()
        (loss + 0.01 * aux + 0.001 * z).backward()
        optimizer.step()

    return step


def _label(event) -> str | None:
    """The moelab.nn profiler range ("moe.route" or "moe.dispatch") a forward op ran in, if any."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name in ("moe.route", "moe.dispatch"):
            return parent.name
        parent = parent.cpu_parent
    return None


def profile_step(step) -> dict:
    """Split one step's CPU time: routing (router, top-k, capacity, stats), dispatch overhead (sort, gather,
    scatter), expert GEMMs, each forward and backward (backward ops matched to forward ops by sequence number),
    and everything else."""
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = list(prof.events())
    kinds: dict[int, str] = {}  # forward sequence number -> kind
    totals = {"routing": 0.0, "dispatch_overhead": 0.0, "expert_gemm": 0.0}
    for e in events:
        label = _label(e) if e.name.startswith("aten::") else None
        if label is None:
            continue
        kind = "routing" if label == "moe.route" else ("expert_gemm" if e.name in GEMMS else "dispatch_overhead")
        totals[kind] += e.self_cpu_time_total
        if e.sequence_nr >= 0:
            kinds.setdefault(e.sequence_nr, kind)
    for e in events:  # autograd nodes: "XBackward0" carries its forward op's sequence number
        if (e.name.endswith(("Backward0", "Backward1")) and not e.name.startswith("autograd::")
                and e.sequence_nr in kinds):
            totals[kinds[e.sequence_nr]] += e.cpu_time_total
    step_total = sum(e.self_cpu_time_total for e in events)
    return {"step_cpu_ms": round(step_total / 1e3, 1),
            **{f"{k}_share": round(v / step_total, 4) for k, v in totals.items()},
            "routing_plus_dispatch_share": round((totals["routing"] + totals["dispatch_overhead"]) / step_total, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    ids = torch.randint(0, 2048, (args.batch, args.seq + 1))
    models = {name: build_model(build()).train() for name, build in TRAIN_PRESETS.items()}
    steps = {name: make_step(model, ids) for name, model in models.items()}
    seconds = interleaved_medians(steps, rounds=args.rounds, round_time=0.0, warmup=1)
    tokens = args.batch * args.seq
    rate = {name: tokens / s for name, s in seconds.items()}
    print(json.dumps({
        "tokens_per_step": tokens,
        "threads": torch.get_num_threads(),
        "tokens_per_second": {k: round(v, 1) for k, v in rate.items()},
        "moe_over_dense_iso_active": rate["tiny-moe"] / rate["tiny-dense"],
        "fine_over_dense_iso_active": rate["tiny-moe-fine"] / rate["tiny-dense"],
        "moe_over_dense_iso_total": rate["tiny-moe"] / rate["tiny-dense-wide"],
        "profile_tiny_moe": profile_step(steps["tiny-moe"]),
        "profile_tiny_moe_fine": profile_step(steps["tiny-moe-fine"]),
    }, indent=2))


if __name__ == "__main__":
    main()
