"""Resolve what `moelab bench` was given into a spec and a runnable torch model.

Accepted: a training preset (tiny-dense, ...), a model preset or config.json (random weights; too large ones
need --shrink-to), a moelab training run folder or its final/ (weights from model.safetensors, spec from
meta.json), or a Hugging Face folder (config.json + safetensors, through load_pretrained). With a shrink
target the spec is shrunk and built with random weights (timing does not depend on the values).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from moelab.bench.shrink import parse_size, shrink
from moelab.cost.memory import weight_bytes
from moelab.cost.params import count_params
from moelab.errors import MoelabError
from moelab.spec.model import ModelSpec, spec_from_dict

MAX_BYTES_SHARE = 0.5  # refuse to build models whose weights exceed this share of the machine's memory


@dataclass
class Loaded:
    name: str
    spec: ModelSpec
    model: torch.nn.Module
    source: str  # "preset", "config", "run", "hf"
    shrunk_from: str | None = None
    weights_file: str | None = None


def _run_final(path: Path) -> Path | None:
    for folder in (path, path / "final"):
        if (folder / "meta.json").is_file() and (folder / "model.safetensors").is_file():
            return folder
    return None


def resolve_spec(ref: str) -> tuple[ModelSpec, str, Path | None]:
    """(spec, source kind, folder holding the weights or None for random weights)."""
    from moelab.train.presets import TRAIN_PRESETS

    if ref in TRAIN_PRESETS:
        return TRAIN_PRESETS[ref](), "preset", None
    path = Path(ref)
    if path.is_dir():
        final = _run_final(path)
        if final is not None:
            try:
                meta = json.loads((final / "meta.json").read_text())
                return spec_from_dict(meta["spec"]), "run", final
            except (KeyError, TypeError, json.JSONDecodeError) as e:
                raise MoelabError(f"{final / 'meta.json'}: not a moelab run ({e})") from None
        if (path / "config.json").is_file() and any(path.glob("*.safetensors")):
            from moelab.spec.hf import spec_from_file

            return spec_from_file(str(path / "config.json")), "hf", path
    from moelab.spec.presets import load_model

    try:
        return load_model(ref), "config", None
    except MoelabError:
        raise MoelabError(f"unknown model {ref!r} (a training preset: {', '.join(TRAIN_PRESETS)}; a model preset, "
                          "a config.json, a moelab run folder or a Hugging Face folder)") from None


def _check_fits(spec: ModelSpec, dtype: str, memory_bytes: float, ref: str) -> None:
    need = weight_bytes(count_params(spec), dtype).total
    if need > MAX_BYTES_SHARE * memory_bytes:
        raise MoelabError(f"{ref}: {need / 1e9:.1f} GB of {dtype} weights is too large for this machine "
                          f"({memory_bytes / 1e9:.0f} GB); shrink it, keeping its expert structure: --shrink-to 50M")


def load(ref: str, device: str, dtype: torch.dtype, dtype_name: str, memory_bytes: float,
         shrink_to: float | str | None = None, seed: int = 0) -> Loaded:
    """Build (or load) the model `ref` on `device` in `dtype`, in eval mode."""
    from moelab.nn.model import build_model

    spec, source, folder = resolve_spec(ref)
    shrunk_from = None
    if shrink_to is not None:
        target = parse_size(shrink_to)
        shrunk_from, spec, folder = spec.name, shrink(spec, target), None
    _check_fits(spec, dtype_name, memory_bytes, ref)
    torch.manual_seed(seed)
    weights_file = None
    if folder is not None and source == "hf":
        from moelab.nn.hf import load_pretrained

        model = load_pretrained(folder, dtype=dtype)
        weights_file = str(folder)
    else:
        model = build_model(spec)
        if folder is not None:
            from safetensors.torch import load_model

            try:
                load_model(model, str(folder / "model.safetensors"), strict=True)
            except (OSError, RuntimeError) as e:
                raise MoelabError(f"{folder}: cannot load weights ({str(e).splitlines()[0]})") from None
            weights_file = str(folder / "model.safetensors")
        model = model.to(dtype)
        for layer in model.moe_layers():
            layer.gate.bias = layer.gate.bias.float()
    model = model.to(device).eval()
    return Loaded(name=spec.name, spec=spec, model=model, source=source, shrunk_from=shrunk_from,
                  weights_file=weights_file)
