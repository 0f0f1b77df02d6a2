"""Phi-3 / Phi-3.5 / Phi-4-mini (model_type phi3): Llama's block with q/k/v fused into one qkv_proj and gate/up
into one gate_up_proj, no biases, LongRoPE, partial rotary, a sliding window on every layer when set.

What transformers 5.24 does, and so what moelab reads (models/phi3/configuration_phi3.py, modeling_phi3.py,
modeling_rope_utils.py):
- head_dim is hidden_size / num_attention_heads (a head_dim field is honoured by getattr); q, k, v, o and the
  MLP never have biases (attention_bias, mlp_bias, lm_head_bias are not read by Phi3Attention / Phi3MLP).
- rope_scaling types "su" and "yarn" are old names of "longrope" (Phi3Config.convert_rope_params_to_dict);
  any type other than default/longrope is refused (Phi3Config.validate_rope raises).
- LongRoPE's original_max_position_embeddings is the top-level field (default 4096, Phi3Config's), which
  standardize_rope_params writes over any value inside rope_scaling.
- partial_rotary_factor (rope_parameters' own, else the top-level field) rotates int(head_dim * factor) dims.
- sliding_window: Phi3Model masks with create_sliding_window_causal_mask whenever it is set (every layer).
"""

from __future__ import annotations

from dataclasses import replace

from moelab.spec.families.base import Family, need, register
from moelab.spec.families.common import base_config, check_gqa, finish, gqa
from moelab.spec.model import map_attention
from moelab.validation import show_value

_OLD_NAMES = {"su": "longrope", "yarn": "longrope"}  # Phi3Config's renames
_ORIGINAL_DEFAULT = 4096  # Phi3Config.original_max_position_embeddings


def _normalise_rope(c) -> float:
    """Rewrite c.raw's rope dict as transformers' Phi3Config settles it (a copy: the user's dict is untouched);
    return partial_rotary_factor."""
    key = "rope_scaling" if c.raw.get("rope_scaling") else "rope_parameters"
    scaling = c.raw.get(key)
    fraction = c.raw.get("partial_rotary_factor", 1.0)
    if isinstance(scaling, dict):
        scaling = dict(scaling)
        if "partial_rotary_factor" in scaling:  # transformers 5 writes it into rope_parameters, and prefers it
            fraction = scaling.pop("partial_rotary_factor")
        kind = scaling.get("rope_type", scaling.get("type", "default"))
        if isinstance(kind, str) and kind in _OLD_NAMES:
            scaling.pop("type", None)
            scaling["rope_type"] = kind = _OLD_NAMES[kind]
        if isinstance(kind, str) and kind not in ("default", "longrope"):
            c.errors.append(f"field '{key}' type {show_value(kind)} is not one phi3 takes (transformers' "
                            "Phi3Config accepts default and longrope)")
            scaling = None
        elif kind == "longrope":
            scaling["original_max_position_embeddings"] = c.int("original_max_position_embeddings",
                                                                _ORIGINAL_DEFAULT)
        c.raw = {**c.raw, key: scaling}
    return c.check_number("partial_rotary_factor", 1.0 if fraction is None else fraction)


@register
class Phi3(Family):
    model_types = ("phi3",)
    architecture = "Phi3ForCausalLM"
    weights = (
        ("layers.{layer}.self_attn.q_proj.weight+layers.{layer}.self_attn.k_proj.weight"
         "+layers.{layer}.self_attn.v_proj.weight", "model.layers.{layer}.self_attn.qkv_proj.weight"),
        ("layers.{layer}.mlp.gate_proj.weight+layers.{layer}.mlp.up_proj.weight",
         "model.layers.{layer}.mlp.gate_up_proj.weight"),
    )

    def read(self, c, name):
        fraction = _normalise_rope(c)
        window = c.int("sliding_window", None, optional=True)
        return finish(c, name, gqa(c, False, False, window=window, rotary_fraction=fraction))

    def write(self, spec, dtype):
        need(not spec.is_moe, "MoE layers")
        need(not spec.mlp_bias, "FFN biases")
        a = spec.attention
        fractions = {layer.attention.rotary_fraction for layer in spec.layers}
        need(len(fractions) == 1, "partial rotary that differs between layers")
        check_gqa(map_attention(spec, lambda x: replace(x, rotary_fraction=1.0)), False, False, "none", window=True)
        # Phi3Config.validate_rope sizes LongRoPE's factor lists from hidden_size / num_attention_heads
        need(a.head_dim * a.n_heads == spec.d_model, "head_dim * heads != hidden_size")
        scaling = dict(spec.rope_scaling)
        need(scaling.get("rope_type", "default") in ("default", "longrope"), "a rope type other than longrope")
        cfg = base_config(spec, "phi3", self.architecture, dtype)
        cfg["rope_parameters"]["partial_rotary_factor"] = a.rotary_fraction
        cfg.update(partial_rotary_factor=a.rotary_fraction, sliding_window=a.sliding_window,
                   original_max_position_embeddings=scaling.get("original_max_position_embeddings",
                                                                _ORIGINAL_DEFAULT),
                   resid_pdrop=0.0, embd_pdrop=0.0)
        return cfg
