"""MoE layer speed on this machine: moelab's backends against transformers, a dense FFN and the streaming floor.

For T tokens (1 .. 4096) and float32 / bfloat16, times the forward pass of:
- moelab's MoE experts through each dispatch backend (loop, sorted, grouped_mm) and the default ("auto");
- transformers' MixtralSparseMoeBlock experts in each of its experts implementations (eager, batched_mm,
  grouped_mm), on the same weights and the same routing;
- a dense SwiGLU FFN with the same active FLOPs (width k*f);
- the weight-streaming floor: bytes of the distinct experts the batch touches / measured read bandwidth.
Routing is computed once per T (the router is the same small GEMV for every contender), so the timings
compare dispatch + expert compute. Prints one JSON object with every row and the target checks:
default <= transformers' best at every T; <= 1.15x dense at T >= 1024; <= 1.5x floor at T <= 16.

    python benchmarks/moe_layer.py [--d 512 --f 1792 --experts 8 --top-k 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform

import torch
import torch.nn.functional as F
from common import add_moe_shape, interleaved_medians, read_bandwidth

from moelab.nn.dispatch import BACKENDS, dispatch
from moelab.nn.moe import default_backend


def dense_ffn(x, up_gate, down):
    gate, up = F.linear(x, up_gate).chunk(2, dim=-1)
    return F.linear(F.silu(gate) * up, down)


def transformers_experts(d: int, f: int, e: int, k: int, gate_up, down, impl: str):
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralExperts

    config = MixtralConfig(hidden_size=d, intermediate_size=f, num_local_experts=e, num_experts_per_tok=k)
    config._experts_implementation = impl
    experts = MixtralExperts(config)
    experts.gate_up_proj.data, experts.down_proj.data = gate_up, down
    return experts


def run(args) -> dict:
    torch.manual_seed(0)
    d, f, e, k = args.d, args.f, args.experts, args.top_k
    bandwidth = read_bandwidth()
    sizes = [1, 4, 16, 64, 256, 1024] + ([] if args.quick else [4096])
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        gate_up = (torch.randn(e, 2 * f, d) * d ** -0.5).to(dtype)
        down = (torch.randn(e, d, f) * f ** -0.5).to(dtype)
        dense_up = (torch.randn(2 * k * f, d) * d ** -0.5).to(dtype)
        dense_down = (torch.randn(d, k * f) * f ** -0.5).to(dtype)
        expert_bytes = (gate_up[0].numel() + down[0].numel()) * gate_up.element_size()
        hf = {}
        for impl in ("eager", "batched_mm", "grouped_mm"):
            try:
                hf[impl] = transformers_experts(d, f, e, k, gate_up, down, impl)
            except Exception as err:  # noqa: BLE001 - an implementation this transformers lacks
                hf[impl] = f"unavailable: {err}"
        for t in sizes:
            x = torch.randn(t, d, dtype=dtype)
            logits = torch.randn(t, e)
            weights, idx = logits.softmax(-1).topk(k, dim=-1)
            weights = weights / weights.sum(-1, keepdim=True)
            row = {"dtype": str(dtype).removeprefix("torch."), "tokens": t}
            args_ = (x, idx, weights, gate_up, down)
            contenders = {f"moelab_{b}_s": (lambda b=b, a=args_: dispatch(b, *a)) for b in BACKENDS}
            for impl, experts in hf.items():
                if isinstance(experts, str) or (impl == "batched_mm" and t > args.batched_mm_max_tokens):
                    row[f"transformers_{impl}_s"] = None  # unavailable, or skipped: far slower on CPU
                else:
                    contenders[f"transformers_{impl}_s"] = lambda m=experts, a=args_: m(*a[:3])
            contenders["dense_ffn_s"] = lambda a=(x, dense_up, dense_down): dense_ffn(*a)
            with torch.inference_mode():
                row.update(interleaved_medians(contenders, rounds=args.rounds))
            row["moelab_default"] = default_backend("cpu", dtype)
            row["moelab_default_s"] = row[f"moelab_{row['moelab_default']}_s"]
            touched = idx.unique().numel()
            row["distinct_experts"] = touched
            row["streaming_floor_s"] = touched * expert_bytes / bandwidth
            hf_times = [v for key, v in row.items() if key.startswith("transformers_") and v]
            row["transformers_best_s"] = min(hf_times) if hf_times else None
            row["default_over_transformers_best"] = (row["moelab_default_s"] / row["transformers_best_s"]
                                                     if hf_times else None)
            row["default_over_dense"] = row["moelab_default_s"] / row["dense_ffn_s"]
            row["default_over_floor"] = row["moelab_default_s"] / row["streaming_floor_s"]
            rows.append(row)
            print(json.dumps({k2: (round(v, 6) if isinstance(v, float) else v) for k2, v in row.items()}),
                  flush=True, file=args.progress)
    checks = {
        "default_never_slower_than_transformers_best": all(
            r["default_over_transformers_best"] is None or r["default_over_transformers_best"] <= 1.0 for r in rows),
        "default_within_1.15x_dense_at_T>=1024": all(r["default_over_dense"] <= 1.15 for r in rows
                                                     if r["tokens"] >= 1024),
        "default_within_1.5x_floor_at_T<=16": all(r["default_over_floor"] <= 1.5 for r in rows if r["tokens"] <= 16),
    }
    return {
        "machine": {"processor": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__},
        "shape": {"d": d, "f": f, "experts": e, "top_k": k},
        "read_bandwidth_gbps": bandwidth / 1e9,
        "rows": rows,
        "checks": checks,
    }


def main() -> None:
    import sys

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_moe_shape(parser)
    parser.add_argument("--quick", action="store_true", help="stop at T=1024")
    parser.add_argument("--rounds", type=int, default=7, help="alternating timing rounds per contender")
    parser.add_argument("--batched-mm-max-tokens", type=int, default=256,
                        help="skip transformers' batched_mm above this T (it computes every expert for every token)")
    args = parser.parse_args()
    args.progress = sys.stderr
    print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
