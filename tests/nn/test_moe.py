"""The MoE layer: dispatch backends agree with the loop, balancing losses and bias updates, capacity."""

import math

import pytest
import torch

from moelab.nn.dispatch import BACKENDS, dispatch
from moelab.nn.moe import MoELayer, MoEOptions
from moelab.spec.model import MoESpec


def _inputs(dtype=torch.float32, t=96, d=32, f=48, e=8, k=2):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(t, d, generator=g, dtype=dtype, requires_grad=True)
    gate_up = (torch.randn(e, 2 * f, d, generator=g) * d ** -0.5).to(dtype).requires_grad_()
    down = (torch.randn(e, d, f, generator=g) * f ** -0.5).to(dtype).requires_grad_()
    idx = torch.stack([torch.randperm(e, generator=g)[:k] for _ in range(t)])
    idx[:5] = 0  # an expert with a pile of tokens, and (with t small) possibly empty ones
    idx[:5, 1] = 1
    w = torch.rand(t, k, generator=g)
    return x, idx, w, gate_up, down


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_backends_match_loop_forward_and_backward(backend, dtype):
    x, idx, w, gate_up, down = _inputs(dtype)
    ref = dispatch("loop", x, idx, w, gate_up, down)
    ref_grads = torch.autograd.grad(ref.square().sum(), [x, gate_up, down])
    out = dispatch(backend, x, idx, w, gate_up, down)
    grads = torch.autograd.grad(out.square().sum(), [x, gate_up, down])
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.allclose(out, ref, rtol=tol, atol=tol)
    for g, r in zip(grads, ref_grads, strict=True):
        assert torch.allclose(g, r, rtol=tol, atol=tol * r.abs().max().item())


def test_loop_matches_per_token_reference():
    """The reference backend itself, against a per-token, per-expert float64 loop."""
    x, idx, w, gate_up, down = _inputs(torch.float64, t=12)
    out = dispatch("loop", x, idx, w, gate_up, down)
    f = down.shape[2]
    for t in range(x.shape[0]):
        expect = torch.zeros(x.shape[1], dtype=torch.float64)
        for slot in range(idx.shape[1]):
            e = idx[t, slot].item()
            h = gate_up[e] @ x[t]
            expect += w[t, slot] * (down[e] @ (torch.nn.functional.silu(h[:f]) * h[f:]))
        assert torch.allclose(out[t], expect, atol=1e-12)


def _layer(**options):
    torch.manual_seed(0)
    moe = MoESpec(n_experts=8, top_k=2, expert_ffn=16, router="softmax_topk", norm_topk_prob=True)
    return MoELayer(32, moe, MoEOptions(**options))


def test_aux_loss_is_one_at_perfect_balance_and_higher_when_skewed():
    layer = _layer()
    with torch.no_grad():
        layer.gate.weight.zero_()  # uniform probabilities; ties broken the same way -> experts 0,1 only
    layer(torch.randn(1, 64, 32))
    # f = (1/2, 1/2, 0, ...), P = 1/8 each: E * sum f_i P_i = 8 * (1/8) = 1 ... balanced P, skewed f
    assert layer.aux_loss.item() == pytest.approx(1.0)
    # perfectly balanced f and P: one-hot routing through a permutation of experts, token by token
    layer2 = _layer()
    with torch.no_grad():
        layer2.gate.weight.copy_(torch.eye(8, 32) * 50)
    x = torch.zeros(1, 8, 32)
    x[0, torch.arange(8), torch.arange(8)] = 1.0
    x[0, torch.arange(8), (torch.arange(8) + 1) % 8] = 0.9
    layer2(x)
    counts = layer2.last_counts
    assert torch.all(counts == 2)
    assert layer2.aux_loss.item() == pytest.approx(1.0, abs=1e-3)
    # collapse onto one pair of experts with confident probabilities: the loss rises towards E/k = 4
    layer3 = _layer()
    with torch.no_grad():
        layer3.gate.weight.zero_()
        layer3.gate.weight[0, 0] = layer3.gate.weight[1, 0] = 50
    layer3(torch.ones(1, 16, 32))
    assert layer3.aux_loss.item() == pytest.approx(4.0, rel=1e-3)


def test_z_loss_is_mean_squared_logsumexp():
    layer = _layer()
    x = torch.randn(1, 20, 32)
    layer(x)
    logits = x[0] @ layer.gate.weight.T
    assert layer.z_loss.item() == pytest.approx(torch.logsumexp(logits, -1).square().mean().item(), rel=1e-5)


def test_bias_balancing_pulls_a_biased_router_back():
    layer = _layer(bias_update_rate=0.002)
    layer.train()
    with torch.no_grad():
        layer.gate.weight[0] += 2.0  # expert 0 favoured for every token
    x = torch.randn(1, 512, 32)

    def imbalance(steps: int) -> float:
        """max/mean of the load summed over `steps` steps, updating the bias after each."""
        total = torch.zeros(8)
        for _ in range(steps):
            layer(x)
            total += layer.last_counts
            layer.update_bias()
        return (total.max() / total.mean()).item()

    before = imbalance(1)
    imbalance(400)
    after = imbalance(50)  # sign updates oscillate around balance: judge the load over a window
    assert before > 1.7 and after < 1.35 and after < 0.75 * before
    assert layer.gate.bias[0] < 0  # the favoured expert was pushed down


def test_capacity_drops_the_right_slots():
    moe = MoESpec(n_experts=4, top_k=2, expert_ffn=8, router="softmax_topk", norm_topk_prob=True)
    layer = MoELayer(8, moe, MoEOptions(capacity_factor=1.0))
    with torch.no_grad():
        layer.gate.weight.zero_()
        layer.gate.weight[0, 0] = 10.0
        layer.gate.weight[1, 0] = 5.0
    x = torch.zeros(1, 8, 8)
    x[..., 0] = 1.0  # all 8 tokens choose expert 0 first, expert 1 second
    routing = layer.gate(x[0])
    weights = layer._apply_capacity(routing)
    capacity = math.ceil(1.0 * 8 * 2 / 4)  # 4 slots per expert
    assert layer.dropped == 2 * (8 - capacity)
    kept = weights != 0
    assert kept[:capacity].all() and not kept[capacity:].any()  # earlier tokens served first
    dropless = MoELayer(8, moe)
    dropless.load_state_dict(layer.state_dict())
    dropless(x)
    assert dropless.dropped == 0


def test_rank_priority_before_position():
    """All first choices are served before any second choice (GShard order)."""
    moe = MoESpec(n_experts=2, top_k=2, expert_ffn=8, router="softmax_topk", norm_topk_prob=True)
    layer = MoELayer(4, moe, MoEOptions(capacity_factor=0.5))  # capacity = ceil(0.5*4*2/2) = 2
    with torch.no_grad():
        layer.gate.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
    x = torch.tensor([[0.0, 1, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0]])  # 2 tokens prefer each expert
    weights = layer._apply_capacity(layer.gate(x))
    assert (weights[:, 0] != 0).all()  # every first choice fits
    assert (weights[:, 1] == 0).all()  # no room left for second choices
