"""The spec JSON that run folders and checkpoints store: the per-layer format round-trips every real config,
the uniform format older runs wrote still loads to the same spec, and malformed files are refused."""

import json
from pathlib import Path

import pytest

from moelab.errors import MoelabError
from moelab.spec.hf import spec_from_config
from moelab.spec.model import spec_from_dict, spec_to_dict
from moelab.spec.presets import load_model

CONFIGS = Path(__file__).parent / "configs"
REAL = sorted(p.stem for p in CONFIGS.glob("*.json") if p.stem.upper() != p.stem and p.stem != "expected_counts")


@pytest.mark.parametrize("name", REAL)
def test_every_real_config_round_trips_through_the_json(name):
    spec = spec_from_config(json.loads((CONFIGS / f"{name}.json").read_text()), name)
    text = json.dumps(spec_to_dict(spec))  # strict JSON: what a run folder holds
    assert spec_from_dict(json.loads(text)) == spec


def _uniform_format(name: str) -> dict:
    """The dict moelab wrote before per-layer specs (format 1: one attention, moe, moe_layers, ffn_dim)."""
    spec = load_model(name)
    new = spec_to_dict(spec)
    old = {k: v for k, v in new.items() if k not in ("format", "attentions", "ffns", "layers")}
    old.update(n_layers=spec.n_layers, attention=new["attentions"][0], ffn_dim=spec.ffn_dim,
               moe=next((f["moe"] for f in new["ffns"] if "moe" in f), None), moe_layers=list(spec.moe_layers))
    for key in ("norm", "norm_placement", "lm_head_bias", "expert_storage", "activation", "embedding_scale",
                "residual_scale", "logits_scale", "logits_softcap"):  # fields the old format did not have
        old.pop(key)
    return old


@pytest.mark.parametrize("name", ["mixtral-8x7b", "deepseek-v3", "qwen3-30b-a3b", "llama-3-8b"])
def test_the_uniform_format_of_older_runs_loads_to_the_same_spec(name):
    assert spec_from_dict(_uniform_format(name)) == load_model(name)


@pytest.mark.parametrize("change, words", [
    ({"format": 3}, "unknown format 3"),
    ({"format": "2"}, "unknown format '2'"),
    ({"format": True}, "unknown format true"),
    ({"layers": [[-1, -1]]}, "index -1"),
    ({"layers": [[True, 0]]}, "index true"),
    ({"layers": [[0]]}, "not a moelab model spec"),
    ({"attentions": [{"n_heads": 4}]}, "not a moelab model spec"),
    ({"ffns": [{"dense": {"width": 8}, "moe": {}}]}, "not a moelab model spec"),
])
def test_a_malformed_spec_json_is_refused_in_one_line(change, words):
    with pytest.raises(MoelabError, match=words) as e:
        spec_from_dict({**spec_to_dict(load_model("mistral-7b")), **change})
    assert "\n" not in str(e.value)
