"""Small models sized for a CPU, matched the way the seeds' claims need: iso-active and iso-total.

- tiny-dense: 4 layers, d=128, SwiGLU width 512.
- tiny-moe: the same backbone, 8 experts of width 256, top-2 (Mixtral routing): iso-active with tiny-dense.
- tiny-moe-fine: tiny-moe split DeepSeek-style into 30 routed experts of width 64, top-6, plus 2 shared
  experts of width 64, sigmoid routing: iso-active (and iso-total, up to the router) with tiny-moe.
- tiny-dense-wide: the dense backbone with SwiGLU width 2048: iso-total with tiny-moe (up to the router).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from moelab.errors import MoelabError
from moelab.spec import hub
from moelab.spec.hf import spec_from_config
from moelab.spec.model import ModelSpec, map_moe, spec_from_dict
from moelab.spec.presets import load_model, model_presets, path_exists
from moelab.spec.transform import as_moe, fine_grained
from moelab.userfile import parse_json, read_user_text
from moelab.validation import show_value

VOCAB = 2048


def _backbone(ffn: int) -> dict:
    return {"model_type": "llama", "vocab_size": VOCAB, "hidden_size": 128, "num_hidden_layers": 4,
            "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": ffn,
            "max_position_embeddings": 1024, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": False}


def tiny_dense() -> ModelSpec:
    return spec_from_config(_backbone(512), "tiny-dense")


def tiny_moe() -> ModelSpec:
    return replace(as_moe(spec_from_config(_backbone(256), "tiny"), 8, 2), name="tiny-moe")


def tiny_moe_fine() -> ModelSpec:
    spec = fine_grained(tiny_moe(), 4, 2)
    moe = replace(spec.moe, router="sigmoid", norm_topk_prob=True, selection_bias=True)
    return map_moe(replace(spec, name="tiny-moe-fine"), lambda _: moe)


def tiny_dense_wide() -> ModelSpec:
    return spec_from_config(_backbone(2048), "tiny-dense-wide")


TRAIN_PRESETS = {
    "tiny-dense": tiny_dense,
    "tiny-moe": tiny_moe,
    "tiny-moe-fine": tiny_moe_fine,
    "tiny-dense-wide": tiny_dense_wide,
}


def load_train_spec(name_or_path: str) -> ModelSpec:
    """A training preset, a moelab spec JSON (as checkpoints write it), or anything `load_model` reads.

    Files are read through moelab.userfile (a regular file, a size cap, strict JSON); a spec moelab.nn cannot
    build (a rope type it does not implement) is refused here, before any training work starts."""
    if name_or_path in TRAIN_PRESETS:
        return TRAIN_PRESETS[name_or_path]()
    path = Path(name_or_path)
    if not path_exists(name_or_path):
        if name_or_path.lower() in model_presets() or hub.is_hub_id(name_or_path):
            return _buildable(load_model(name_or_path), name_or_path)
        raise MoelabError(f"unknown model {show_value(name_or_path)} (training presets: "
                          f"{', '.join(TRAIN_PRESETS)}; or a config.json / moelab spec JSON)")
    if path.suffix == ".json" and not path.is_dir():
        raw = parse_json(read_user_text(path, "model file"), str(path))
        if isinstance(raw, dict) and "d_model" in raw and ("attention" in raw or "attentions" in raw):
            try:
                return _buildable(spec_from_dict(raw), name_or_path)
            except MoelabError as e:
                raise MoelabError(f"{path}: {e}") from None
        name = path.parent.name if path.name == "config.json" else path.stem
        return _buildable(spec_from_config(raw, name=name, source=str(path)), name_or_path)
    return _buildable(load_model(name_or_path), name_or_path)


def _buildable(spec: ModelSpec, where: str) -> ModelSpec:
    """`spec`, if moelab.nn builds it (refused here, before any training work starts)."""
    from moelab.nn.model import check_buildable

    check_buildable(spec, where)
    return spec
