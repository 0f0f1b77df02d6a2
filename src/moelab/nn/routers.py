"""Routers: score the experts for every token and choose top-k, in each reference design.

- "topk_softmax" (Mixtral): softmax over all experts, keep top-k, renormalise (= softmax over the kept logits).
- "softmax_topk" (Qwen2/3-MoE, OLMoE): softmax, top-k, renormalise only if `norm_topk_prob`.
- "topk_sigmoid" (Llama 4): top-k on the logits, weights sigmoid(kept logits), never renormalised.
- "sigmoid" (DeepSeek-V3): sigmoid scores; a per-expert bias is added for *selection only*; group-limited
  routing keeps the `topk_group` groups with the best sum of their top-2 biased scores and masks the other
  experts with -inf; weights are the unbiased scores of the chosen experts, renormalised if `norm_topk_prob`,
  times `routed_scaling_factor`.
- "sparsemixer" (Phi-3.5-MoE), as transformers' models/phimoe/modeling_phimoe.py `sparsemixer` computes it in
  eval mode: top_k passes (the reference makes exactly two); each picks the best expert still unpicked, masks
  with -inf every expert whose gap to that best, (best - logit) / max(|logit|, best), exceeds 2 * eps
  (`sparsemixer_eps`, the config's router_jitter_noise), and weights the pick by the softmax over what is left
  unmasked; the weights are not renormalised. In training moelab picks the same way and lets the gradient flow
  through those softmaxes: the reference's Gumbel sampling and Heun's-method gradient estimator are not
  reproduced.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from moelab.spec.model import MoESpec


@dataclass
class Routing:
    """The routing of T tokens: chosen experts, their combine weights, and what the balancing losses need."""

    indices_TK: torch.Tensor  # long
    weights_TK: torch.Tensor  # float32 (float64 in a float64 model), as are the next two
    logits_TE: torch.Tensor  # router logits
    probs_TE: torch.Tensor  # scores the aux loss uses (softmax, or normalised sigmoid)


class Router(nn.Module):
    """Linear d -> E scoring, plus the selection rule of `moe.router`."""

    def __init__(self, d: int, moe: MoESpec, jitter: float = 0.0) -> None:
        super().__init__()
        self.moe, self.jitter = moe, jitter
        self.weight = nn.Parameter(torch.empty(moe.n_experts, d))
        nn.init.normal_(self.weight, std=0.02)
        self.linear_bias = nn.Parameter(torch.zeros(moe.n_experts)) if moe.router_bias else None  # gpt-oss
        # Selection-only bias (DeepSeek-V3 e_score_correction_bias; auxiliary-loss-free balancing moves it).
        self.register_buffer("bias", torch.zeros(moe.n_experts, dtype=torch.float32))

    def forward(self, x_TD: torch.Tensor) -> Routing:
        if self.training and self.jitter > 0:
            x_TD = x_TD * torch.empty_like(x_TD).uniform_(1.0 - self.jitter, 1.0 + self.jitter)
        logits = nn.functional.linear(x_TD, self.weight, self.linear_bias)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # float32 at least
        m = self.moe
        if m.router == "sparsemixer":
            idx, weights = sparsemixer(logits, m.top_k, m.sparsemixer_eps)
            return Routing(idx, weights * m.routed_scaling_factor, logits, logits.softmax(dim=-1))
        if m.router == "topk_sigmoid":
            top = logits.topk(m.top_k, dim=-1)
            probs = logits.sigmoid()
            return Routing(top.indices, top.values.sigmoid() * m.routed_scaling_factor, logits,
                           probs / probs.sum(-1, keepdim=True))
        if m.router == "sigmoid":
            scores = logits.sigmoid()
            choice = self._group_limit(scores + self.bias)
            idx = choice.topk(m.top_k, dim=-1).indices
            weights = scores.gather(-1, idx)
            if m.norm_topk_prob:
                weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
            probs = scores / scores.sum(-1, keepdim=True)
        else:
            probs = logits.softmax(dim=-1)
            choice = self._group_limit(probs + self.bias) if (m.n_group > 1 or self.bias.any()) else probs
            idx = choice.topk(m.top_k, dim=-1).indices
            weights = probs.gather(-1, idx)
            if m.router == "topk_softmax" or m.norm_topk_prob:
                weights = weights / weights.sum(-1, keepdim=True)
        return Routing(idx, weights * m.routed_scaling_factor, logits, probs)

    def _group_limit(self, choice_TE: torch.Tensor) -> torch.Tensor:
        m = self.moe
        if m.n_group <= 1:
            return choice_TE
        t = choice_TE.shape[0]
        grouped = choice_TE.view(t, m.n_group, m.n_experts // m.n_group)
        top = 1 if m.group_score == "max" else min(2, grouped.shape[-1])  # V2: best score; V3: top-2 sum
        group_scores = grouped.topk(top, dim=-1).values.sum(-1)  # (T, G)
        keep = group_scores.topk(m.topk_group, dim=-1).indices
        mask = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, keep, True)
        mask = mask[:, :, None].expand_as(grouped).reshape(t, m.n_experts)
        return choice_TE.masked_fill(~mask, float("-inf"))


def sparsemixer(logits_TE: torch.Tensor, top_k: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Phi-3.5-MoE's eval-mode routing: (indices, weights), each (T, top_k); see the module docstring."""
    picks, weights = [], []
    left_TE = logits_TE  # the logits with the experts picked so far at -inf
    for _ in range(top_k):
        with torch.no_grad():
            best_T1, pick_T1 = left_TE.max(dim=-1, keepdim=True)
            factor_TE = logits_TE.abs().clamp(min=best_T1)
            masked_TE = ((best_T1 - logits_TE) / factor_TE) > 2 * eps
        gates_TE = left_TE.masked_fill(masked_TE, float("-inf")).softmax(dim=-1)
        picks.append(pick_T1)
        weights.append(gates_TE.gather(-1, pick_T1))
        left_TE = left_TE.scatter(-1, pick_T1, float("-inf"))
    return torch.cat(picks, dim=-1), torch.cat(weights, dim=-1)
