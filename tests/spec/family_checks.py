"""Checks the tests/spec/test_config_*.py files share (a plain module, not a test file): the real configs in
tests/spec/configs, transformers' model built on the meta device (the reference for parameter counts), and a
bad config refused through moelab.cli.main as one stderr line with exit status 2."""

import json
from pathlib import Path

import torch

from moelab.cli import main

CONFIGS = Path(__file__).parent / "configs"


def real(name: str) -> dict:
    """The real config.json tests/spec/configs/<name>.json (its source in SOURCES.json)."""
    return json.loads((CONFIGS / f"{name}.json").read_text())


def meta_model(cfg):
    """transformers' AutoModelForCausalLM for the config object `cfg`, on the meta device: every parameter
    with its shape, no memory."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(cfg)


def total(model) -> int:
    """transformers' count: sum(numel) over the model's parameters."""
    return sum(p.numel() for p in model.parameters())


def unselected(model, experts: int, top_k: int, names: tuple[str, ...]) -> int:
    """Parameters of the routed expert tensors (those whose name ends in `names`) a token does not use: each
    holds `experts` equal slices, a token uses `top_k` of them."""
    held = sum(p.numel() for n, p in model.named_parameters() if n.endswith(names))
    assert held % experts == 0
    return held // experts * (experts - top_k)


def one_line_exit_2(raw: dict, tmp_path, capsys) -> str:
    """`moelab estimate` of `raw` written as tmp_path/config.json exits 2 with one stderr line and no
    traceback; returns that line."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    rc = main(["estimate", str(path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err
