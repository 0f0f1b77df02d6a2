"""Every router design against a float64 per-token reference written from the papers' definitions."""

import math

import pytest
import torch

from moelab.nn.routers import Router
from moelab.spec.model import MoESpec

D = 16


def reference(x_D, w_ED, moe: MoESpec, bias):
    """One token, float64, plain Python: (chosen experts as a set, {expert: weight})."""
    logits = [sum(float(w_ED[e, i]) * float(x_D[i]) for i in range(D)) for e in range(moe.n_experts)]
    if moe.router == "sigmoid":
        scores = [1 / (1 + math.exp(-v)) for v in logits]
    else:
        top = max(logits)
        exps = [math.exp(v - top) for v in logits]
        scores = [v / sum(exps) for v in exps]
    choice = [s + float(b) for s, b in zip(scores, bias, strict=True)]
    if moe.n_group > 1:
        size = moe.n_experts // moe.n_group
        groups = [choice[g * size:(g + 1) * size] for g in range(moe.n_group)]
        group_score = [sum(sorted(g, reverse=True)[:2]) for g in groups]
        kept = sorted(range(moe.n_group), key=lambda g: -group_score[g])[:moe.topk_group]
        choice = [c if e // size in kept else -math.inf for e, c in enumerate(choice)]
    chosen = sorted(range(moe.n_experts), key=lambda e: -choice[e])[:moe.top_k]
    weights = {e: scores[e] for e in chosen}
    if moe.router == "topk_softmax" or moe.norm_topk_prob:
        total = sum(weights.values()) + (1e-20 if moe.router == "sigmoid" else 0.0)
        weights = {e: v / total for e, v in weights.items()}
    return set(chosen), {e: v * moe.routed_scaling_factor for e, v in weights.items()}


CASES = {
    "mixtral": MoESpec(n_experts=8, top_k=2, expert_ffn=4, router="topk_softmax"),
    "qwen-norm": MoESpec(n_experts=16, top_k=4, expert_ffn=4, router="softmax_topk", norm_topk_prob=True),
    "olmoe-raw": MoESpec(n_experts=16, top_k=4, expert_ffn=4, router="softmax_topk", norm_topk_prob=False),
    "deepseek-v3": MoESpec(n_experts=32, top_k=4, expert_ffn=4, router="sigmoid", norm_topk_prob=True, n_group=8,
                           topk_group=3, routed_scaling_factor=2.5, selection_bias=True),
    "sigmoid-flat": MoESpec(n_experts=12, top_k=3, expert_ffn=4, router="sigmoid", norm_topk_prob=False),
}


@pytest.mark.parametrize("name", CASES)
def test_router_matches_float64_per_token_reference(name):
    torch.manual_seed(0)
    moe = CASES[name]
    router = Router(D, moe).double().requires_grad_(False)
    with torch.no_grad():
        router.weight.normal_(0, 1.0)
        if moe.router == "sigmoid":
            router.bias.copy_(torch.randn(moe.n_experts) * 0.3)  # signed: exercises the -inf group mask
    x = torch.randn(64, D, dtype=torch.float64)
    out = router(x)
    for t in range(x.shape[0]):
        chosen, weights = reference(x[t], router.weight, moe, router.bias)
        got = out.indices_TK[t].tolist()
        assert set(got) == chosen, f"token {t}"
        for slot, e in enumerate(got):
            assert out.weights_TK[t, slot].item() == pytest.approx(weights[e], rel=1e-6)


def test_selection_bias_changes_choice_not_weights():
    torch.manual_seed(1)
    moe = CASES["sigmoid-flat"]
    router = Router(D, moe)
    x = torch.randn(32, D)
    plain = router(x)
    router.bias[0] = 10.0  # expert 0 always selected, but its weight is still its unbiased score
    biased = router(x)
    assert (biased.indices_TK == 0).any(-1).all()
    slot = (biased.indices_TK == 0).float().argmax(-1)
    score0 = torch.sigmoid(x @ router.weight[0])
    assert torch.allclose(biased.weights_TK.gather(1, slot[:, None])[:, 0], score0)
    assert not torch.equal(plain.indices_TK, biased.indices_TK)


def test_jitter_only_in_training():
    torch.manual_seed(2)
    router = Router(D, CASES["mixtral"], jitter=0.5)
    x = torch.randn(256, D)
    router.eval()
    assert torch.equal(router(x).logits_TE, router(x).logits_TE)
    router.train()
    assert not torch.equal(router(x).logits_TE, router(x).logits_TE)
