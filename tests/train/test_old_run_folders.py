"""Run folders written before per-layer specs (their state.json and final/meta.json hold the uniform spec
format, 1) still load and still resume: the resumed run ends bit-identical to an uninterrupted one."""

import json
import shutil

import torch
from safetensors.torch import load_file

from moelab.bench.models import resolve_spec
from moelab.cli import main
from moelab.spec.model import spec_from_dict, spec_to_dict
from moelab.train.presets import tiny_moe


def uniform_format(new: dict) -> dict:
    """The same spec as moelab wrote it before (format 1): one attention, moe, moe_layers, ffn_dim, n_layers."""
    spec = spec_from_dict(new)
    old = {k: v for k, v in new.items() if k not in ("format", "attentions", "ffns", "layers", "norm",
                                                      "norm_placement", "lm_head_bias", "expert_storage",
                                                      "activation", "embedding_scale", "residual_scale",
                                                      "logits_scale", "logits_softcap")}
    old.update(n_layers=spec.n_layers, attention=new["attentions"][0], ffn_dim=spec.ffn_dim,
               moe=next((f["moe"] for f in new["ffns"] if "moe" in f), None), moe_layers=list(spec.moe_layers))
    return old


def _train(out, corpus, *extra):
    return main(["train", "--model", "tiny-moe", "--out", str(out), "--steps", "4", "--ckpt-every", "2",
                 "--eval-every", "4", "--batch-size", "2", "--seq-len", "32", "--data", str(corpus),
                 "--no-progress", *extra])


def test_an_old_run_folder_loads_and_resumes_bit_identical(tmp_path, corpus_dir):
    whole = tmp_path / "whole"
    assert _train(whole, corpus_dir) == 0
    old = tmp_path / "old"  # the same run as an older moelab left it after its step-2 checkpoint
    shutil.copytree(whole, old, ignore=shutil.ignore_patterns("final", "ckpt-4", ".lock"))
    state_file = old / "ckpt-2" / "state.json"
    state = json.loads(state_file.read_text())
    assert state["spec"]["format"] == 2
    state["spec"] = uniform_format(state["spec"])
    state_file.write_text(json.dumps(state))
    assert spec_from_dict(state["spec"]) == tiny_moe()

    assert _train(old, corpus_dir, "--resume") == 0
    a, b = load_file(whole / "final" / "model.safetensors"), load_file(old / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    meta_file = old / "final" / "meta.json"  # a finished old run: bench reads its spec
    meta = json.loads(meta_file.read_text())
    meta["spec"] = uniform_format(meta["spec"])
    meta_file.write_text(json.dumps(meta))
    spec, source, _ = resolve_spec(str(old))
    assert source == "run" and spec == tiny_moe() and spec_to_dict(spec)["format"] == 2
