"""Gemma 3 (text; the multimodal gemma3 config is read through its text_config): Gemma 2's layout with per-head
q/k norms (x * (1 + w)), no attention soft cap, five sliding layers to one global (sliding_window_pattern 6),
and two RoPEs: the sliding layers rotate with rope_local_base_freq (10k), the global ones with rope_theta (1M)
and rope_scaling (linear x8 on 4b and up). transformers 5 spells both in rope_parameters keyed by layer type.
Source: transformers models/gemma3/configuration_gemma3.py (Gemma3TextConfig.convert_rope_params_to_dict),
modeling_gemma3.py (Gemma3Attention, Gemma3RotaryEmbedding)."""

from __future__ import annotations

from dataclasses import replace

from moelab.spec.families.base import Family, need, register
from moelab.spec.families.common import SLIDING, finish, rope_scaling, windowed
from moelab.spec.families.gemma2 import (
    ACTIVATIONS,
    REFUSED,
    check_gemma,
    gemma_activation,
    gemma_attention,
    gemma_config,
    gemma_fields,
    gemma_types,
    softcap,
)
from moelab.validation import show_value

GLOBAL_THETA, LOCAL_THETA = 1_000_000.0, 10_000.0  # Gemma3TextConfig.default_theta
_KEYS = (SLIDING, "full_attention")
_PLACEHOLDER = ({"rope_theta": GLOBAL_THETA}, {"rope_theta": LOCAL_THETA})  # after an error: reading goes on


def _ropes(c) -> tuple[dict, dict]:
    """(full_attention, sliding_attention) rope dicts as transformers 5 builds them: rope_parameters keyed by
    layer type, a legacy rope_scaling merged into the full one, rope_theta / rope_local_base_freq as defaults."""
    params = c.raw.get("rope_parameters")
    if params is None:
        params = {}
    elif not isinstance(params, dict) or not set(params) <= set(_KEYS):
        return c.bad(f"field 'rope_parameters' must be an object keyed by {', '.join(_KEYS)} (gemma3), got "
                     f"{show_value(params)}", _PLACEHOLDER)
    ropes = []
    for key in ("full_attention", SLIDING):
        rope = params.get(key)
        if rope is not None and not isinstance(rope, dict):
            return c.bad(f"field 'rope_parameters.{key}' must be an object, got {show_value(rope)}", _PLACEHOLDER)
        ropes.append(dict(rope or {"rope_type": "default"}))
    full, sliding = ropes
    legacy = c.raw.get("rope_scaling")
    if legacy is not None:
        if not isinstance(legacy, dict):
            return c.bad(f"field 'rope_scaling' must be an object or null, got {show_value(legacy)}", _PLACEHOLDER)
        full.update(legacy)
    full.setdefault("rope_theta", c.raw.get("rope_theta", GLOBAL_THETA))
    sliding.setdefault("rope_theta", c.raw.get("rope_local_base_freq", LOCAL_THETA))
    return full, sliding


@register
class Gemma3(Family):
    model_types = ("gemma3_text", "gemma3")
    architecture = "Gemma3ForCausalLM"
    activations = ACTIVATIONS
    activation_key = "hidden_activation"
    text_config = True
    refused = REFUSED

    def read(self, c, name):
        gemma_activation(c)
        # Gemma3Attention keeps attn_logit_softcapping but never passes it to the attention: no score cap.
        attention = gemma_attention(c, "head", None)
        full, sliding = _ropes(c)
        theta = c.check_number("rope_theta", full.get("rope_theta"), "rope_parameters.full_attention.rope_theta")
        local = c.check_number("rope_theta", sliding.get("rope_theta"), "rope_parameters.sliding_attention.rope_theta")
        scaling = rope_scaling(c, full, "rope_parameters.full_attention")
        local_scaling = rope_scaling(c, sliding, "rope_parameters.sliding_attention")
        layers = windowed(attention, gemma_types(c, c.count("sliding_window_pattern", 6)),
                          c.int("sliding_window", 4096, optional=True))
        for a in layers:  # a sliding layer's own RoPE, where it differs from the global layers'
            if a["sliding_window"] is not None:
                a.update(rope_theta=None if local == theta else local,
                         rope_scaling=None if local_scaling == scaling else local_scaling)
        notes = ("attn_logit_softcapping is ignored, as transformers' Gemma3Attention ignores it",) \
            if c.raw.get("attn_logit_softcapping") is not None else ()
        return finish(c, name, layers, rope_theta=theta, rope_scaling=scaling, notes=notes,
                      logits_softcap=softcap(c, "final_logit_softcapping", None), **gemma_fields(c))

    def check_loadable(self, raw, spec):
        if raw.get("model_type") == "gemma3":
            return ("a multimodal gemma3 checkpoint (Gemma3ForConditionalGeneration: vision tower, weights under "
                    "model.language_model); moelab.nn builds its text model as gemma3_text")
        return None

    def write(self, spec, dtype):
        check_gemma(spec, "head")
        plain = {replace(layer.attention, sliding_window=None, rope_theta=None, rope_scaling=None)
                 for layer in spec.layers}
        need(len(plain) == 1, "attention that differs between layers beyond its window and RoPE")
        need(all(layer.attention.rope_theta is None and layer.attention.rope_scaling is None
                 for layer in spec.layers if layer.attention.sliding_window is None),
             "a global layer with its own RoPE")
        need(not spec.attention.softcap, "an attention soft cap (transformers' Gemma 3 ignores it)")
        local = {spec.layer_rope(layer.attention) for layer in spec.layers if layer.attention.sliding_window}
        need(len(local) <= 1, "sliding layers with different RoPEs")
        local_theta, local_scaling = local.pop() if local else (spec.rope_theta, spec.rope_scaling)
        cfg = gemma_config(spec, "gemma3_text", self.architecture, dtype)

        def rope(theta, scaling):
            return {"rope_type": "default", "rope_theta": theta,
                    **{k: list(v) if isinstance(v, tuple) else v for k, v in scaling}}

        cfg.update(rope_parameters={"full_attention": rope(spec.rope_theta, spec.rope_scaling),
                                    SLIDING: rope(local_theta, local_scaling)},
                   attn_logit_softcapping=None, final_logit_softcapping=spec.logits_softcap)
        return cfg
