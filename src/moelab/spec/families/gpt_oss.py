"""gpt-oss (openai/gpt-oss-20b, gpt-oss-120b): every FFN a MoE with biased experts and a biased router, top-k
on the router logits then a softmax over the kept ones, a clamped SwiGLU, attention with q/k/v/o biases and one
learned sink logit per head, sliding (128) and full layers alternating, YaRN RoPE. The routed experts of the
released checkpoints are stored in MXFP4. Sources: transformers 5.24 models/gpt_oss/configuration_gpt_oss.py,
modeling_gpt_oss.py (GptOssExperts, GptOssTopKRouter, GptOssAttention), integrations/mxfp4.py.

Active parameters (moelab's rule, DESIGN.md): everything but the routed experts a token does not use. OpenAI's
model card (arXiv 2508.10925, Table 1: 3.61B for 20b, 5.13B for 120b) counts the unembedding towards active but
not the embedding table; moelab's active is that plus the embedding (579,133,440): 4.19B and 5.71B.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from moelab.spec.families.base import Family, need, register
from moelab.spec.families.common import (
    FULL,
    SLIDING,
    base_config,
    check_gqa,
    check_moe,
    finish,
    gqa,
    layer_types,
    rope_scaling,
    rope_theta,
    window_types,
    windowed,
)
from moelab.spec.model import map_attention, map_moe
from moelab.validation import show_value

# GptOssConfig's rope_parameters when a config gives none (configuration_gpt_oss.py, __post_init__).
DEFAULT_YARN = {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
                "original_max_position_embeddings": 4096}
# What transformers' mxfp4 quantizer converts: each MoE layer's experts module (integrations/mxfp4.py,
# replace_with_mxfp4_linear checks f"{module_name}.experts" against modules_to_not_convert).
_EXPERTS = "model.layers.{layer}.mlp.experts"


def _converted(name: str, patterns: list[str]) -> bool:
    """transformers' quantizers_utils.should_convert_module: a pattern skips `name` when it matches from the
    start up to a module boundary (as a regex), or as a suffix."""
    boundary = r"(?:(?<=\.)|(?=\.|$))"
    for key in patterns:
        try:
            if re.match(rf"(?:{key}){boundary}", name) or name.endswith(key):
                return False
        except re.error:
            if name.endswith(key):
                return False
    return True


def expert_storage(c, n_layers: int) -> str | None:
    """"mxfp4" when quantization_config stores the routed experts in MXFP4 (quant_method "mxfp4", the experts
    not in modules_to_not_convert), None without a quantization_config. transformers' MXFP4 converts only the
    experts (attention, router, embeddings and lm_head stay 16-bit), so an MXFP4 config that excludes every
    experts module changes nothing moelab counts. Any other quant_method is refused by name: moelab cannot say
    what it stores."""
    q = c.raw.get("quantization_config")
    if q is None:
        return None
    if not isinstance(q, dict):
        return c.bad(f"field 'quantization_config' must be an object, got {show_value(q)}", None)
    method = q.get("quant_method")
    if method != "mxfp4":
        return c.bad(f"field 'quantization_config.quant_method' {show_value(method)} is not modelled by moelab "
                     "for gpt_oss (known: 'mxfp4')", None)
    patterns = q.get("modules_to_not_convert") or []
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        return c.bad("field 'quantization_config.modules_to_not_convert' must be a list of strings", None)
    kept = [i for i in range(n_layers) if _converted(_EXPERTS.format(layer=i), patterns)]
    if kept and len(kept) != n_layers:
        return c.bad("field 'quantization_config.modules_to_not_convert' keeps the experts of some layers only "
                     "out of MXFP4; moelab stores every MoE layer's experts alike", None)
    return "mxfp4" if kept else None


@register
class GptOss(Family):
    model_types = ("gpt_oss",)
    architecture = "GptOssForCausalLM"
    # GptOssExperts ignores hidden_act: it always applies the clamped SwiGLU (alpha 1.702, limit 7)
    activations = {"silu": "clamped_swiglu", "swish": "clamped_swiglu"}
    # moelab.nn's clamped SwiGLU has transformers' default constants (nn/layers.py CLAMP_LIMIT, CLAMP_ALPHA); the
    # cost does not depend on them
    nn_refused = {"swiglu_limit": (7.0, 7), "swiglu_alpha": (1.702,)}
    weights = (
        # transformers keeps every expert in one tensor: gate_up_proj (E, d, 2f), gate and up columns
        # interleaved; down_proj (E, f, d); codecs in moelab/nn/gpt_oss.py
        ("layers.{layer}.mlp.gate_up_proj", "model.layers.{layer}.mlp.experts.gate_up_proj", "gpt_oss_gate_up"),
        ("layers.{layer}.mlp.gate_up_proj_bias", "model.layers.{layer}.mlp.experts.gate_up_proj_bias",
         "gpt_oss_gate_up_bias"),
        ("layers.{layer}.mlp.down_proj", "model.layers.{layer}.mlp.experts.down_proj", "gpt_oss_down"),
        ("layers.{layer}.mlp.down_proj_bias", "model.layers.{layer}.mlp.experts.down_proj_bias"),
        ("layers.{layer}.mlp.gate.weight", "model.layers.{layer}.mlp.router.weight"),
        ("layers.{layer}.mlp.gate.linear_bias", "model.layers.{layer}.mlp.router.bias"),
    )

    def read(self, c, name):
        n_layers = c.int("num_hidden_layers")
        bias = c.bool("attention_bias", True)
        # GptOssConfig's defaults: head_dim 64 (not hidden / heads), sliding_window 128, layer_types alternating
        # sliding (even layers) and full (odd layers)
        attention = gqa(c, bias, bias, head_size=c.int("head_dim", 64), sinks=True)
        types = layer_types(c, [SLIDING if (i + 1) % 2 else FULL for i in range(n_layers)])
        window = c.int("sliding_window", 128, optional=True)
        if window is None and SLIDING in types:  # transformers' create_sliding_window_causal_mask raises
            c.errors.append("field 'sliding_window' is null but layer_types has sliding layers")
        moe = dict(n_experts=c.int("num_local_experts", 128), top_k=c.int("num_experts_per_tok", 4),
                   expert_ffn=c.int("intermediate_size"), router="topk_softmax", router_bias=True, expert_bias=True)
        given = c.raw.get("rope_scaling") or c.raw.get("rope_parameters")
        scaling = rope_scaling(c) if given else rope_scaling(c, DEFAULT_YARN, "rope_parameters")
        return finish(c, name, windowed(attention, types, window), moe, range(n_layers), ffn_dim=0,
                      rope_theta=rope_theta(c, 150000.0), rope_scaling=scaling,
                      norm_eps=c.float("rms_norm_eps", 1e-5), expert_storage=expert_storage(c, n_layers))

    def write(self, spec, dtype):
        a, m = spec.attention, spec.moe
        need(spec.activation == "clamped_swiglu", f"activation {spec.activation}")
        need(all(layer.attention.sinks for layer in spec.layers), "attention without sinks")
        need(a.qkv_bias == a.o_bias, "different q/k/v and output biases")
        # the shared checks, once what gpt-oss always has (sinks, clamped SwiGLU, biased experts) is set aside
        plain = map_attention(replace(spec, activation="silu"), lambda x: replace(x, sinks=False))
        check_gqa(plain, None, None, "none", window=True, per_layer_window=True)
        need(m is not None and m.router_bias and m.expert_bias, "experts or a router without biases")
        check_moe(map_moe(plain, lambda x: replace(x, router_bias=False, expert_bias=False)), "topk_softmax",
                  all_layers=True)
        window, types = window_types(spec)
        cfg: dict[str, Any] = base_config(spec, "gpt_oss", self.architecture, dtype)
        cfg.update(attention_bias=a.qkv_bias, num_local_experts=m.n_experts, num_experts_per_tok=m.top_k,
                   intermediate_size=m.expert_ffn, sliding_window=window or 128, layer_types=types,
                   swiglu_limit=7.0, swiglu_alpha=1.702, router_aux_loss_coef=0.9, output_router_logits=False)
        return cfg
