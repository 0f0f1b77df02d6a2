"""One rank of the expert-parallel checks: every case of tests/parallel/test_ep_layer.py, one safetensors per rank.

Run by the test as `torchrun --nproc-per-node=2 tests/parallel/ep_worker.py OUT` (gloo, CPU). The cases and
the builders live here so that the test builds the one-process reference from exactly the same weights and
data. Each rank holds rows r*T/W .. (r+1)*T/W - 1 of the global batch and writes OUT/<case>-r<rank>.safetensors
(then OUT/<case>-r<rank>.done), so that one failing case leaves the others' results readable.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from moelab.nn import build_model
from moelab.nn.dispatch import ExpertWeights, local_dispatcher, run
from moelab.nn.moe import SHARDED, MoELayer, MoEOptions
from moelab.nn.routers import Routing
from moelab.spec.hf import spec_from_config
from moelab.spec.model import MoESpec

WORLD = 2
D, TOKENS = 16, 64  # model width; tokens of the global batch (TOKENS / WORLD per rank)
AUX, Z = 0.1, 0.01  # loss coefficients
DTYPES = {"float64": torch.float64, "float32": torch.float32}


@dataclass(frozen=True)
class LayerCase:
    moe: MoESpec
    options: MoEOptions = MoEOptions()
    activation: str = "silu"
    random_biases: bool = False  # gpt-oss: the expert and router biases are zero at init; make them matter
    selection_bias: bool = False  # DeepSeek-V3: a nonzero e_score_correction_bias (selection only)
    drops: bool = False  # the one-process run must drop slots (capacity cases)
    to_rank0: bool = False  # a selection bias sends every slot to experts 0-1: rank 1 receives no rows


_SOFTMAX = MoESpec(n_experts=4, top_k=2, expert_ffn=8, router="softmax_topk", norm_topk_prob=True)
LAYER_CASES = {
    "topk2": LayerCase(_SOFTMAX),
    "topk2_loop": LayerCase(_SOFTMAX, MoEOptions(backend="loop")),
    "qwen2_shared": LayerCase(MoESpec(n_experts=4, top_k=2, expert_ffn=8, n_shared=1, shared_ffn=12,
                                      shared_gate=True, router="softmax_topk", norm_topk_prob=False)),
    "capacity_1.0": LayerCase(_SOFTMAX, MoEOptions(capacity_factor=1.0), drops=True),
    "capacity_0.5": LayerCase(_SOFTMAX, MoEOptions(capacity_factor=0.5), drops=True),
    "deepseek_groups": LayerCase(MoESpec(n_experts=8, top_k=2, expert_ffn=8, n_shared=1, shared_ffn=8,
                                         router="sigmoid", norm_topk_prob=True, n_group=4, topk_group=2,
                                         routed_scaling_factor=2.5, selection_bias=True), selection_bias=True),
    "gpt_oss_biases": LayerCase(MoESpec(n_experts=4, top_k=2, expert_ffn=8, router="topk_softmax",
                                        router_bias=True, expert_bias=True), activation="clamped_swiglu",
                                random_biases=True),
    "llama4_weighted_input": LayerCase(MoESpec(n_experts=4, top_k=1, expert_ffn=8, n_shared=1, shared_ffn=8,
                                               router="topk_sigmoid", weighted_input=True)),
    "all_to_rank0": LayerCase(_SOFTMAX, to_rank0=True),  # run last: see main
}

_LM_BASE = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=61)
LM_CASES = {  # (config.json dict, options)
    "lm_qwen2_moe": (dict(model_type="qwen2_moe", **_LM_BASE, num_experts=4, num_experts_per_tok=2,
                          moe_intermediate_size=16, shared_expert_intermediate_size=24, decoder_sparse_step=1),
                     MoEOptions()),
    "lm_deepseek_v3_capacity": (dict(model_type="deepseek_v3", **{**_LM_BASE, "num_key_value_heads": 4},
                                     n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=16,
                                     n_shared_experts=1, first_k_dense_replace=1, q_lora_rank=16, kv_lora_rank=8,
                                     qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8, n_group=4,
                                     topk_group=2, routed_scaling_factor=2.5),
                                MoEOptions(capacity_factor=1.0)),
}
LM_BATCH, LM_SEQ = 4, 9  # sequences of the global batch (LM_BATCH / WORLD per rank): 16 predicted tokens a rank


def layer(case: LayerCase, dtype: torch.dtype) -> MoELayer:
    """The case's whole layer (every expert), the same on every process."""
    torch.manual_seed(0)
    m = MoELayer(D, case.moe, case.options, activation=case.activation)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        if case.random_biases:
            for p in (m.gate_up_proj_bias, m.down_proj_bias, m.gate.linear_bias):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        if case.selection_bias:
            m.gate.bias.copy_(torch.randn(m.gate.bias.shape, generator=g) * 0.3)
        if case.to_rank0:
            m.gate.bias.copy_(torch.tensor([5.0, 5.0, -5.0, -5.0]))
        m.gate.weight.mul_(20.0)  # confident routing: aux, z and the router gradients are not near zero
    return m.to(dtype).train()


def layer_data(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, g) of the global batch: the input and the upstream gradient, (TOKENS, D) each."""
    g = torch.Generator().manual_seed(2)
    return torch.randn(TOKENS, D, generator=g).to(dtype), torch.randn(TOKENS, D, generator=g).to(dtype)


def layer_loss(m: MoELayer, x: torch.Tensor, g: torch.Tensor, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, loss) of one process's rows. Every rank's loss is sum(y * g) + (AUX * aux + Z * z) / world:
    the router losses are means over tokens (aux: E * sum_i f_i * P_i with the global f_i and this rank's
    P_i; z: this rank's mean), so the mean of the ranks' router losses is the global one, and with the /world
    the ranks' losses sum to the one-process loss sum(y * g) + AUX * aux + Z * z (world=1). Summed gradients
    (router, shared experts: all-reduced; experts: the all-to-all's backward sums every rank's tokens into the
    shard) then equal the one-process gradients."""
    y = m(x[None])[0]
    return y, (y * g).sum() + (AUX * m.aux_loss + Z * m.z_loss) / world


def lm(config: dict, options: MoEOptions, dtype: torch.dtype):
    torch.manual_seed(0)
    return build_model(spec_from_config(config, "ep-test"), options).to(dtype).train()


def lm_data() -> torch.Tensor:
    return torch.randint(0, _LM_BASE["vocab_size"], (LM_BATCH, LM_SEQ), generator=torch.Generator().manual_seed(3))


def lm_loss(model, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, CE mean + router losses): on every rank, the mean of these is the one-process loss."""
    logits = model(ids[:, :-1])
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    aux, z = model.router_losses()
    return logits, ce + AUX * aux + Z * z


def is_expert_param(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in SHARDED


UNEVEN_CASES = {  # name: (skew, local dispatcher on the owner, dtype)
    "uneven_one_row_sorted": ("one_row", "sorted", "float64"),
    "uneven_rank0_sorted": ("rank0", "sorted", "float64"),
    "uneven_rank0_grouped_mm": ("rank0", "grouped_mm", "float32"),
}


def uneven_inputs(dtype: torch.dtype, skew: str) -> tuple[torch.Tensor, ...]:
    """(x, indices, weights, upstream gradient, gate_up, down) of the global batch, 4 experts (2 per rank).
    `skew` "rank0": every slot on experts 0-1, so rank 1 receives no rows and sends all of its own;
    "one_row": the same but for one slot, of rank 1's last token, on expert 3 (rank 1 receives one row)."""
    g = torch.Generator().manual_seed(4)
    e, f = 4, 8
    x = torch.randn(TOKENS, D, generator=g).to(dtype)
    idx = torch.stack([torch.randperm(2, generator=g) for _ in range(TOKENS)])  # experts 0 and 1
    if skew == "one_row":
        idx[TOKENS - 1, 1] = 3  # rank 1's rows: one slot of one of rank 1's own tokens
    w = torch.rand(TOKENS, 2, generator=g)
    grad = torch.randn(TOKENS, D, generator=g).to(dtype)
    return (x, idx, w, grad, (torch.randn(e, 2 * f, D, generator=g) * D ** -0.5).to(dtype),
            (torch.randn(e, D, f, generator=g) * f ** -0.5).to(dtype))


def uneven_reference(name: str) -> dict[str, torch.Tensor]:
    """One process, the local "loop" dispatcher: output and gradients of sum(y * g)."""
    skew, _, dtype_name = UNEVEN_CASES[name]
    x, idx, w, g, gu, dn = uneven_inputs(DTYPES[dtype_name], skew)
    for t in (x, w, gu, dn):
        t.requires_grad_()
    y = run(local_dispatcher("loop"), x, _routing(idx, w, gu.shape[0]), ExpertWeights(gu, dn))
    (y * g).sum().backward()
    return {"y": y.detach(), "x_grad": x.grad, "w_grad": w.grad, "gate_up_grad": gu.grad, "down_grad": dn.grad}


def _routing(idx: torch.Tensor, w: torch.Tensor, n_experts: int) -> Routing:
    logits = torch.zeros(idx.shape[0], n_experts)
    return Routing(idx, w, logits, logits.softmax(-1))


def _rows(t: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    return t.chunk(world)[rank]


def _sum(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    out = (t if t is not None else torch.zeros_like(like)).detach().clone()
    dist.all_reduce(out)
    return out


def _shard_grad(p: torch.Tensor) -> torch.Tensor:
    return p.grad.clone() if p.grad is not None else torch.zeros_like(p)


def _save(out: Path, name: str, rank: int, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    missing = [k for k, v in tensors.items() if v is None]
    if missing:
        raise RuntimeError(f"{name}: rank {rank} has no gradient for {', '.join(missing)}")
    path = out / f"{name}-r{rank}.safetensors"
    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(path))
    (out / f"{name}-r{rank}.done").write_text("ok")


def run_layer_case(out: Path, name: str, case: LayerCase, dtype_name: str, rank: int, world: int) -> None:
    dtype = DTYPES[dtype_name]
    m = layer(case, dtype)
    m.apply_ep(dist.group.WORLD)
    x, g = layer_data(dtype)
    xs = _rows(x, rank, world).clone().requires_grad_()
    y, loss = layer_loss(m, xs, _rows(g, rank, world), world)
    loss.backward()
    result = {"y": y, "x_grad": xs.grad, "aux": m.aux_loss.reshape(1), "z": m.z_loss.reshape(1),
              "dropped": torch.tensor([m.dropped])}
    for pname, p in m.named_parameters():  # an expert shard that got no rows has no gradient: zeros
        result[f"grad.{pname}"] = _shard_grad(p) if is_expert_param(pname) else _sum(p.grad, p)
    if case.options.capacity_factor is None:  # evaluation: no statistics group, no capacity to differ by
        m.eval()
        with torch.no_grad():
            result["y_eval"] = m(xs.detach()[None])[0]
    _save(out, f"{name}-{dtype_name}", rank, result)


def run_lm_case(out: Path, name: str, dtype_name: str, rank: int, world: int) -> None:
    config, options = LM_CASES[name]
    model = lm(config, options, DTYPES[dtype_name])
    model.apply_ep(dist.group.WORLD)
    ids = _rows(lm_data(), rank, world)
    logits, loss = lm_loss(model, ids)
    loss.backward()
    result = {"logits": logits, "loss": loss.reshape(1)}
    for pname, p in model.named_parameters():
        result[f"grad.{pname}"] = _shard_grad(p) if is_expert_param(pname) else _sum(p.grad, p)
    _save(out, f"{name}-{dtype_name}", rank, result)


def run_uneven_case(out: Path, name: str, rank: int, world: int) -> None:
    """The AllToAllDispatcher alone on a skewed routing, its experts sharded by rank."""
    from moelab.nn.alltoall import AllToAllDispatcher

    skew, local, dtype_name = UNEVEN_CASES[name]
    x, idx, w, g, gate_up, down = uneven_inputs(DTYPES[dtype_name], skew)
    held = gate_up.shape[0] // world
    shard = slice(rank * held, (rank + 1) * held)
    gu = gate_up[shard].clone().requires_grad_()
    dn = down[shard].clone().requires_grad_()
    xs = _rows(x, rank, world).clone().requires_grad_()
    ws = _rows(w, rank, world).clone().requires_grad_()
    y = run(AllToAllDispatcher(dist.group.WORLD, local), xs, _routing(_rows(idx, rank, world), ws, held * world),
            ExpertWeights(gu, dn))
    (y * _rows(g, rank, world)).sum().backward()
    # an expert that got no rows has a zero gradient; x and w always have one (their rows went somewhere)
    _save(out, name, rank, {"y": y, "x_grad": xs.grad, "w_grad": ws.grad,
                            "gate_up_grad": gu.grad if gu.grad is not None else torch.zeros_like(gu),
                            "down_grad": dn.grad if dn.grad is not None else torch.zeros_like(dn)})


def main() -> None:
    out = Path(sys.argv[1])
    # a collective that never completes fails the run within this, instead of hanging it for gloo's 30 min
    dist.init_process_group("gloo", timeout=timedelta(seconds=20))
    rank, world = dist.get_rank(), dist.get_world_size()
    even = {name: case for name, case in LAYER_CASES.items() if not case.to_rank0}
    for name, case in even.items():
        for dtype_name in DTYPES:
            run_layer_case(out, name, case, dtype_name, rank, world)
    for name in LM_CASES:
        for dtype_name in DTYPES:
            run_lm_case(out, name, dtype_name, rank, world)
    # last, the skewed routings: a failure or hang here leaves every other case's results written
    for name in UNEVEN_CASES:
        run_uneven_case(out, name, rank, world)
    for name in LAYER_CASES.keys() - even.keys():
        for dtype_name in DTYPES:
            run_layer_case(out, name, LAYER_CASES[name], dtype_name, rank, world)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
