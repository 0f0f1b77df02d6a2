"""Build each real config in this folder with transformers (meta device) and record its parameter totals.

Run by hand (no network, no weights):  .venv/bin/python tests/spec/configs/make_expected.py
Writes expected_counts.json beside this file; families whose real config was not found are in NOT_FOUND.json.
`total` is sum(p.numel()) over model.parameters(),
so tied weights count once. Sources of the configs are in SOURCES.json.

Which class is built (see `built_class` / `note` in the output):
- plain causal LMs: AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **cfg));
- multimodal configs with a text_config (llama4, gemma3): the text-only causal LM built from
  text_config (Llama4ForCausalLM / Gemma3ForCausalLM); the vision tower and projector are not counted;
- kimi_k2 is not a transformers model_type: built as DeepseekV3ForCausalLM from the same fields.
- dbrx (DbrxForCausalLM) keeps its nested attn_config / ffn_config dicts; DbrxConfig reads them;
  its decoder stack is model.transformer.blocks, not model.model.layers (see _layers).
  transformers does not build the MTP layers (num_nextn_predict_layers); the total is what it builds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM

HERE = Path(__file__).resolve().parent

# Keys that only steer loading/quantisation; dropped before building so that
# from_config does not try to set up a quantiser on the meta device.
# "quantization" is the block mlx-lm writes into re-serialised configs (dbrx_instruct).
_DROP = ("quantization_config", "quantization", "auto_map")


def _clean(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in _DROP}


def build(name: str, raw: dict):
    """Return (model, built_class_name, note) for one config."""
    model_type = raw["model_type"]
    note = ""
    if "text_config" in raw and model_type in ("llama4", "gemma3"):
        text = _clean(raw["text_config"])
        text_type = text.pop("model_type", {"llama4": "llama4_text", "gemma3": "gemma3_text"}[model_type])
        # The outer config's tie_word_embeddings governs the composite model; carry it over
        # where the text_config does not set it (transformers' composite models tie through it).
        if "tie_word_embeddings" not in text and "tie_word_embeddings" in raw:
            text["tie_word_embeddings"] = raw["tie_word_embeddings"]
        cfg = AutoConfig.for_model(text_type, **text)
        note = f"text-only causal LM from text_config ({text_type}); vision tower and projector not counted"
    elif model_type == "kimi_k2":
        fields = _clean(raw)
        fields.pop("model_type")
        cfg = AutoConfig.for_model("deepseek_v3", **fields)
        note = "kimi_k2 not registered in transformers: built as DeepseekV3ForCausalLM from the same fields"
    elif model_type == "dbrx":
        fields = _clean(raw)
        fields.pop("model_type")
        # transformers 5.24's strict DbrxFFNConfig types moe_normalize_expert_weights as float|None
        # and rejects the JSON integer 1 that transformers 4.39 wrote; same value as a float.
        ffn = dict(fields.get("ffn_config") or {})
        if isinstance(ffn.get("moe_normalize_expert_weights"), int):
            ffn["moe_normalize_expert_weights"] = float(ffn["moe_normalize_expert_weights"])
            note = "ffn_config.moe_normalize_expert_weights 1 -> 1.0 (5.24's strict float typing)"
        fields["ffn_config"] = ffn
        cfg = AutoConfig.for_model(model_type, **fields)
    else:
        fields = _clean(raw)
        fields.pop("model_type")
        cfg = AutoConfig.for_model(model_type, **fields)
    if raw.get("num_nextn_predict_layers"):
        note = (note + "; " if note else "") + "MTP layers (num_nextn_predict_layers) not built by transformers"
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    return model, type(model).__name__, note


def _layers(model):
    """The decoder-layer ModuleList: model.model.layers, or model.transformer.blocks (dbrx)."""
    inner = getattr(model, "model", None) or model.transformer
    return getattr(inner, "layers", None) or inner.blocks


def counts(model) -> dict:
    total = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    tied = out is not None and out.weight is emb
    lm_head = 0 if (out is None or tied) else sum(p.numel() for p in out.parameters())
    layers = _layers(model)
    per_layer = sum(p.numel() for p in layers.parameters())
    return {
        "total": total,
        "embedding": emb.numel(),
        "lm_head": lm_head,
        "tied_embeddings": tied,
        "decoder_layers": per_layer,
        "other": total - emb.numel() - lm_head - per_layer,
        "num_layers_built": len(layers),
    }


def main() -> int:
    results = {}
    for path in sorted(HERE.glob("*.json")):
        if path.name in ("SOURCES.json", "NOT_FOUND.json", "expected_counts.json"):
            continue
        name = path.stem
        raw = json.loads(path.read_text())
        try:
            model, cls, note = build(name, raw)
        except Exception as exc:  # record, do not hide: a config transformers cannot build
            results[name] = {"model_type": raw.get("model_type"), "error": f"{type(exc).__name__}: {exc}"}
            print(f"{name}: FAILED {exc}", file=sys.stderr)
            continue
        entry = {
            "model_type": raw["model_type"],
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
            "built_class": cls,
            **counts(model),
        }
        if note:
            entry["note"] = note
        results[name] = entry
        print(f"{name}: {cls} total={entry['total']:,}")
        del model
    (HERE / "expected_counts.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
