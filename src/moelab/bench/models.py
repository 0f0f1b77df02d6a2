"""Resolve what `moelab bench` was given into a spec and a runnable torch model.

Accepted: a training preset (tiny-dense, ...), a model preset or config.json (random weights; too large ones
need --shrink-to), a moelab training run folder or its final/ (weights from model.safetensors, spec from
meta.json), or a Hugging Face folder (config.json + safetensors, through load_pretrained). With a shrink
target the spec is shrunk and built with random weights (timing does not depend on the values).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from moelab.bench.shrink import parse_size, shrink
from moelab.cost.memory import model_weight_bytes
from moelab.errors import MoelabError
from moelab.spec import hub
from moelab.spec.model import ModelSpec, spec_from_dict
from moelab.spec.presets import path_exists

MAX_BYTES_SHARE = 0.5  # refuse to build models whose weights exceed this share of the available memory
MAX_RUN_SHARE = 0.8  # refuse sweeps whose weights + largest run exceed this share of the available memory


@dataclass
class Loaded:
    name: str
    spec: ModelSpec
    model: torch.nn.Module
    source: str  # "preset", "config", "run", "hf"
    shrunk_from: str | None = None
    weights_file: str | None = None
    quantization: dict | None = None  # a quantized run's meta "quantization" (moelab quantize), else None

    @property
    def components(self) -> dict[str, str]:
        """The per-component weight dtypes the engine prices this model at ({}: every weight at bench's dtype)."""
        return components_of(self.quantization)


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
    if not path_exists(ref) and hub.is_hub_id(ref):  # a cached Hugging Face snapshot is an HF folder
        config = hub.cached_config(ref)
        if config is not None and any(config.parent.glob("*.safetensors")):
            from moelab.spec.hf import read_config, spec_from_config

            return spec_from_config(read_config(config), name=ref, source=str(config)), "hf", config.parent
    if path.is_dir():
        final = _run_final(path)
        if final is not None:
            from moelab.userfile import load_user_file

            meta = load_user_file(final / "meta.json", "moelab run metadata")
            try:
                return spec_from_dict(meta["spec"]), "run", final
            except (KeyError, TypeError) as e:
                raise MoelabError(f"{final / 'meta.json'}: not a moelab run ({e})") from None
        if (path / "config.json").is_file() and any(path.glob("*.safetensors")):
            from moelab.spec.hf import spec_from_file

            return spec_from_file(str(path / "config.json")), "hf", path
    from moelab.spec.presets import load_model

    try:
        return load_model(ref), "config", None
    except MoelabError:
        if path_exists(ref) or hub.is_hub_id(ref):  # a config.json that does not load, or an id: its own line
            raise
        raise MoelabError(f"unknown model {ref!r} (a training preset: {', '.join(TRAIN_PRESETS)}; a model preset, "
                          "a config.json, a moelab run folder or a Hugging Face folder)") from None


@dataclass
class Resolved:
    """What a model reference names, before anything is built: the spec (shrunk if asked) and its weights."""

    ref: str
    spec: ModelSpec
    source: str
    folder: Path | None  # weights to load; None = random weights
    shrunk_from: str | None = None
    quantization: dict | None = None  # a quantized run's meta "quantization" (moelab quantize), else None

    @property
    def components(self) -> dict[str, str]:
        """The per-component weight dtypes the engine prices this model at ({}: every weight at bench's dtype)."""
        return components_of(self.quantization)


def components_of(quantization: dict | None) -> dict[str, str]:
    """{component: dtype} of a run's meta "quantization" ({} for a float run)."""
    components = (quantization or {}).get("components") if isinstance(quantization, dict) else None
    return dict(components) if isinstance(components, dict) else {}


def resolve(ref: str, shrink_to: float | str | None = None) -> Resolved:
    """The spec `ref` names (shrunk to `shrink_to` parameters, then with random weights), built nowhere yet."""
    spec, source, folder = resolve_spec(ref)
    shrunk_from = None
    if shrink_to is not None:
        shrunk_from, spec, folder = spec.name, shrink(spec, parse_size(shrink_to)), None
    quantization = run_quantization(folder) if folder is not None and source == "run" else None
    return Resolved(ref, spec, source, folder, shrunk_from, quantization)


def weights_bytes(r: Resolved, dtype: str) -> float:
    return model_weight_bytes(r.spec, dtype).total


def run_bytes(spec: ModelSpec, dtype: str, batch: int, prompt: int, gen: int) -> float:
    """Bytes one prefill + decode run of `batch` sequences adds to the weights: the KV cache as allocated (it
    grows by doubling, so up to twice the positions held), the prefill's activations, and the attention
    scores where a sliding-window mask keeps SDPA off its fused path."""
    from moelab.cost.memory import kv_cache_bytes, prefill_activation_bytes

    kv = kv_cache_bytes(spec, dtype, batch, prompt + gen)
    scores = 0.0
    window = spec.attention.sliding_window
    if window and prompt > window:
        scores = 4.0 * batch * spec.attention.n_heads * prompt * prompt
    return 2 * kv + prefill_activation_bytes(spec, dtype, batch, prompt) + scores


def check_fits(models: list[Resolved], dtype: str, batches, prompt: int, gen: int, available: float,
               where: str) -> None:
    """Refuse, in one line and before anything is built, a sweep this machine cannot hold: weights above
    MAX_BYTES_SHARE of the `available` memory (`where`: "RAM" or "CUDA memory"), or weights plus the largest
    batch's KV cache and activations above MAX_RUN_SHARE of it."""
    for r in models:
        need = weights_bytes(r, dtype)
        if need > MAX_BYTES_SHARE * available:
            raise MoelabError(f"{r.ref}: {need / 1e9:.1f} GB of {dtype} weights is too large for this machine "
                              f"({available / 1e9:.1f} GB of {where} available); shrink it, keeping its expert "
                              "structure: --shrink-to 50M")
    weights = sum(weights_bytes(r, dtype) for r in models)
    batch = max(batches)
    worst = max(models, key=lambda r: run_bytes(r.spec, dtype, batch, prompt, gen))
    need = weights + run_bytes(worst.spec, dtype, batch, prompt, gen)
    if need > MAX_RUN_SHARE * available:
        raise MoelabError(f"batch {batch} x {prompt}+{gen} tokens of {worst.ref} needs about {need / 1e9:.1f} GB "
                          f"(weights, KV cache, activations), more than this machine's {available / 1e9:.1f} GB of "
                          f"{where} available holds; use smaller --batches, --prompt or --gen")


def load_run_weights(model: torch.nn.Module, folder: Path) -> Path:
    """A moelab run's folder/model.safetensors into `model` (strict: every tensor, no other); the file read."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    path = folder / "model.safetensors"
    try:
        load_model(model, str(path), strict=True)
    except (OSError, RuntimeError, SafetensorError) as e:
        raise MoelabError(f"{folder}: cannot load weights ({str(e).splitlines()[0]})") from None
    return path


def run_quantization(folder: Path) -> dict | None:
    """A run's meta "quantization" (moelab quantize's layout), None for a float run."""
    from moelab.mitigate.runs import check_quantization
    from moelab.userfile import load_user_file

    meta = load_user_file(folder / "meta.json", "moelab run metadata")
    return check_quantization(meta.get("quantization"), folder / "meta.json") if isinstance(meta, dict) else None


def build(r: Resolved, device: str, dtype: torch.dtype, seed: int = 0) -> Loaded:
    """Build (or load) the resolved model on `device` in `dtype`, in eval mode."""
    from moelab.nn.model import build_model

    spec, folder = r.spec, r.folder
    torch.manual_seed(seed)
    weights_file = None
    if folder is not None and r.source == "hf":
        from moelab.nn.hf import load_pretrained

        model = load_pretrained(folder, dtype=dtype)
        weights_file = str(folder)
    else:
        model = build_model(spec)
        if folder is not None:
            quantization = r.quantization
            if quantization:  # moelab quantize's layout first, so that the strict load fills it
                from moelab.mitigate.quantize import apply_layout

                apply_layout(model, quantization)
            weights_file = str(load_run_weights(model, folder))
        model = model.to(dtype)
        for layer in model.moe_layers():
            layer.gate.bias = layer.gate.bias.float()
    model = model.to(device).eval()
    return Loaded(name=spec.name, spec=spec, model=model, source=r.source, shrunk_from=r.shrunk_from,
                  weights_file=weights_file, quantization=r.quantization if folder is not None else None)


def load(ref: str, device: str, dtype: torch.dtype, dtype_name: str, memory_bytes: float,
         shrink_to: float | str | None = None, seed: int = 0) -> Loaded:
    """Build (or load) the model `ref` on `device` in `dtype`, in eval mode, if its weights fit in
    `memory_bytes` (see check_fits)."""
    r = resolve(ref, shrink_to)
    check_fits([r], dtype_name, [1], 1, 1, memory_bytes, "memory")
    return build(r, device, dtype, seed)
