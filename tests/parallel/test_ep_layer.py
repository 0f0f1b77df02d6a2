"""Expert parallelism equals one process: MoE layers and a tiny LM over 2 gloo processes, and the local dispatchers.

One torchrun launch (tests/parallel/ep_worker.py) runs every distributed case; the one-process references are
computed here from the same builders, weights and data. Rank r holds rows r*T/2 .. of the global batch and
experts r*E/2 .. (r+1)*E/2 - 1. Tolerances: float64 1e-10, float32 1e-5, relative to max(1, |reference|).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tests.parallel import ep_worker as W

from moelab.nn.dispatch import BACKENDS, ExpertBatch, ExpertWeights, dispatch, local_dispatcher
from moelab.nn.layers import gated
from moelab.nn.moe import MoELayer, MoEOptions
from moelab.nn.routers import Routing
from moelab.parallel.launch import torchrun
from moelab.spec.model import MoESpec

WORKER = Path(W.__file__)
TOL = {"float64": 1e-10, "float32": 1e-5}


@pytest.fixture(scope="module")
def ep_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ep")
    return out, torchrun(W.WORLD, [str(WORKER), str(out)], timeout=150)


def _tail(finished) -> str:
    """torchrun's exit, each rank's error lines (the first cause is often on the other rank), the stderr tail."""
    errors = [line for line in finished.stderr.splitlines() if line.startswith("[rank") and "Error" in line]
    return (f"torchrun returned {finished.returncode} (timed out: {finished.timed_out}); rank errors:\n"
            + "\n".join(errors[-10:]) + f"\nstderr tail:\n{finished.stderr[-3000:]}")


def _ranks(ep_run, name: str) -> list[dict[str, torch.Tensor]]:
    out, finished = ep_run
    if not all((out / f"{name}-r{r}.done").exists() for r in range(W.WORLD)):
        pytest.fail(f"case {name} left no results\n{_tail(finished)}")
    return [load_file(str(out / f"{name}-r{r}.safetensors")) for r in range(W.WORLD)]


def _close(got: torch.Tensor, ref: torch.Tensor, tol: float, what: str) -> None:
    assert got.shape == ref.shape, f"{what}: shape {tuple(got.shape)} != {tuple(ref.shape)}"
    err = (got.double() - ref.double()).abs().max().item() if ref.numel() else 0.0
    scale = max(1.0, ref.abs().max().item() if ref.numel() else 0.0)
    assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol:g} x {scale:.3g}"


def test_workers_exit_cleanly(ep_run):
    _, finished = ep_run
    assert finished.returncode == 0 and not finished.timed_out, _tail(finished)


@pytest.mark.parametrize("dtype", W.DTYPES)
@pytest.mark.parametrize("name", W.LAYER_CASES)
def test_ep_layer_equals_one_process(ep_run, name, dtype):
    """Outputs, input / expert / router / shared-expert gradients, aux and z losses and dropped slots."""
    case, tol = W.LAYER_CASES[name], TOL[dtype]
    ref = W.layer(case, W.DTYPES[dtype])
    x, g = W.layer_data(W.DTYPES[dtype])
    x.requires_grad_()
    y, loss = W.layer_loss(ref, x, g, world=1)
    loss.backward()
    held = case.moe.n_experts // W.WORLD
    # both ranks' experts get tokens, so rows really cross between the processes (all_to_rank0: none for rank 1)
    per_rank = [int(ref.last_counts[r * held:(r + 1) * held].sum()) for r in range(W.WORLD)]
    assert per_rank[1] == 0 if case.to_rank0 else min(per_rank) > 0
    ranks = _ranks(ep_run, f"{name}-{dtype}")
    _close(torch.cat([r["y"] for r in ranks]), y, tol, "output")
    _close(torch.cat([r["x_grad"] for r in ranks]), x.grad, tol, "input gradient")
    for pname, p in ref.named_parameters():
        if W.is_expert_param(pname):  # the shards, in rank order, are the whole tensor
            got = torch.cat([r[f"grad.{pname}"] for r in ranks])
        else:  # replicated: the ranks' gradients, summed in the worker
            got = ranks[0][f"grad.{pname}"]
        _close(got, p.grad, tol, f"gradient of {pname}")
    # aux: each rank's is E * sum_i f_i * P_i with the global f_i and its own P_i, so their mean is the global one
    _close(torch.stack([r["aux"] for r in ranks]).mean(), ref.aux_loss, tol, "aux loss")
    _close(torch.stack([r["z"] for r in ranks]).mean(), ref.z_loss, tol, "z loss")
    dropped = sum(int(r["dropped"]) for r in ranks)
    assert dropped == ref.dropped
    if case.drops:  # capacity bites in the one-process run, and not on everything
        assert 0 < ref.dropped < W.TOKENS * case.moe.top_k
    if "y_eval" in ranks[0]:
        ref.eval()
        with torch.no_grad():
            _close(torch.cat([r["y_eval"] for r in ranks]), ref(x.detach()[None])[0], tol, "evaluation output")


@pytest.mark.parametrize("dtype", W.DTYPES)
@pytest.mark.parametrize("name", W.LM_CASES)
def test_ep_lm_equals_one_process(ep_run, name, dtype):
    """Each rank's logits are the one-process logits of its rows. Each rank's loss L_r (CE mean + router losses
    of its rows) averages to the one-process loss L, so dL/dθ = (1/W) sum_r dL_r/dθ: replicated parameters
    all-reduce and divide by W. An expert shard's gradient already holds sum_r dL_r/d(shard) (the all-to-all's
    backward brings every rank's tokens to the owner), so it only divides by W."""
    config, options = W.LM_CASES[name]
    tol = TOL[dtype]
    ref = W.lm(config, options, W.DTYPES[dtype])
    ids = W.lm_data()
    logits, loss = W.lm_loss(ref, ids)
    loss.backward()
    if options.capacity_factor is not None:
        assert sum(m.dropped for m in ref.moe_layers()) > 0
    ranks = _ranks(ep_run, f"{name}-{dtype}")
    _close(torch.cat([r["logits"] for r in ranks]), logits, tol, "logits")
    _close(torch.stack([r["loss"] for r in ranks]).mean(), loss.detach(), tol, "mean rank loss")
    for pname, p in ref.named_parameters():
        if W.is_expert_param(pname):
            got = torch.cat([r[f"grad.{pname}"] for r in ranks]) / W.WORLD
        else:
            got = ranks[0][f"grad.{pname}"] / W.WORLD
        _close(got, p.grad, tol, f"gradient of {pname}")


@pytest.mark.parametrize("name", W.UNEVEN_CASES)
def test_alltoall_uneven_routing_is_exact(ep_run, name):
    """Every slot on rank 0's experts (rank 1 receives no rows, or one): output and every gradient exact."""
    ref = W.uneven_reference(name)
    tol = TOL[W.UNEVEN_CASES[name][2]]
    ranks = _ranks(ep_run, name)
    for key in ("y", "x_grad", "w_grad", "gate_up_grad", "down_grad"):
        _close(torch.cat([r[key] for r in ranks]), ref[key], tol, key)


# --- the local dispatchers through the seam (tests/nn/test_moe.py covers them without expert biases) ---

def _biased_inputs(dtype, t=40, d=16, f=8, e=4, k=2):
    g = torch.Generator().manual_seed(6)
    x = torch.randn(t, d, generator=g).to(dtype)
    idx = torch.stack([torch.randperm(e - 1, generator=g)[:k] for _ in range(t)])  # expert e-1 has no rows
    w = torch.rand(t, k, generator=g).to(dtype)
    weights = [torch.randn(e, 2 * f, d, generator=g) * d ** -0.5, torch.randn(e, d, f, generator=g) * f ** -0.5,
               torch.randn(e, 2 * f, generator=g), torch.randn(e, d, generator=g)]
    return [x, idx, w, *(p.to(dtype) for p in weights)]


def _with_grads(backend, activation, inputs):
    x, idx, w, gu, dn, gub, dnb = [t.clone().requires_grad_() if t.is_floating_point() else t for t in inputs]
    out = dispatch(backend, x, idx, w, gu, dn, activation=activation, gate_up_bias=gub, down_bias=dnb)
    up = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).to(out.dtype)
    grads = torch.autograd.grad((out * up).sum(), [x, w, gu, dn, gub, dnb])
    return out, grads


@pytest.mark.parametrize("activation", ["silu", "clamped_swiglu"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_local_backends_agree_with_expert_biases(dtype, activation):
    """loop, sorted and grouped_mm with gpt-oss's biases: output and the gradients of x, the combine weights,
    both projections and both biases; "loop" itself against a per-token float64 sum."""
    inputs = _biased_inputs(W.DTYPES[dtype])
    ref, ref_grads = _with_grads("loop", activation, inputs)
    for backend in BACKENDS[1:]:
        out, grads = _with_grads(backend, activation, inputs)
        _close(out, ref, TOL[dtype], f"{backend} output")
        for what, got, want in zip(("x", "w", "gate_up", "down", "gate_up_bias", "down_bias"), grads, ref_grads,
                                   strict=True):
            _close(got, want, TOL[dtype], f"{backend} gradient of {what}")
    if dtype == "float64":
        x, idx, w, gu, dn, gub, dnb = inputs
        f = dn.shape[2]
        for t in range(x.shape[0]):
            expect = torch.zeros(x.shape[1], dtype=torch.float64)
            for slot in range(idx.shape[1]):
                e = int(idx[t, slot])
                h = gu[e] @ x[t] + gub[e]
                expect += w[t, slot] * (dn[e] @ gated(h[:f], h[f:], activation) + dnb[e])
            _close(ref[t], expect, 1e-12, f"loop token {t}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_seam_dispatch_groups_rows_by_expert(backend):
    """dispatch -> ExpertBatch rows grouped by expert (counts = bincount), experts, combine: the free function."""
    x, idx, w, gu, dn, gub, dnb = _biased_inputs(torch.float64)
    d = local_dispatcher(backend)
    batch, meta = d.dispatch(x, Routing(idx, w, torch.zeros(x.shape[0], 4), torch.zeros(x.shape[0], 4)))
    assert isinstance(batch, ExpertBatch)
    assert torch.equal(batch.counts_E, torch.bincount(idx.reshape(-1), minlength=4)) and batch.counts_E[3] == 0
    start = 0
    for e, n in enumerate(batch.counts_E.tolist()):  # each expert's rows are the tokens that chose it
        tokens = torch.where((idx == e).any(1))[0]
        assert torch.equal(batch.x_ND[start:start + n], x[tokens])
        start += n
    y = d.combine(d.experts(batch, ExpertWeights(gu, dn, gub, dnb)), meta)
    assert torch.equal(y, dispatch(backend, x, idx, w, gu, dn, gate_up_bias=gub, down_bias=dnb))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layer_backends_agree_with_gpt_oss_biases(dtype):
    """A gpt-oss MoE layer (router and expert biases, clamped SwiGLU): every backend, forward and backward."""
    moe = MoESpec(n_experts=4, top_k=2, expert_ffn=8, router="topk_softmax", router_bias=True, expert_bias=True)
    results = {}
    for backend in BACKENDS:
        torch.manual_seed(0)
        m = MoELayer(16, moe, MoEOptions(backend=backend), activation="clamped_swiglu").to(W.DTYPES[dtype])
        with torch.no_grad():
            for p in (m.gate_up_proj_bias, m.down_proj_bias, m.gate.linear_bias):
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(8)))
        x = torch.randn(1, 30, 16, generator=torch.Generator().manual_seed(9)).to(W.DTYPES[dtype])
        y = m(x)
        (y.square().sum() + m.aux_loss).backward()
        results[backend] = (y, {n: p.grad for n, p in m.named_parameters()})
    y_ref, grads_ref = results["loop"]
    for backend in BACKENDS[1:]:
        y, grads = results[backend]
        _close(y, y_ref, TOL[dtype], f"{backend} output")
        for n, g in grads.items():
            _close(g, grads_ref[n], TOL[dtype], f"{backend} gradient of {n}")
