"""Hugging Face checkpoints in and out: safetensors folders <-> TransformerLM, in the per-expert HF layout.

`load_pretrained(folder)` reads config.json and model.safetensors (or the shards named by
model.safetensors.index.json), memory-mapped and never through pickle, and maps HF tensor names onto the
moelab model. HF checkpoints store one tensor per expert and projection (Mixtral: `block_sparse_moe.experts.I.
w1/w2/w3` = gate/down/up); moelab stacks them into `gate_up_proj` (E, 2f, d: gate rows, then up rows) and
`down_proj` (E, d, f). The fused layout transformers >= 5 keeps in memory (`mlp.experts.gate_up_proj`,
`mlp.experts.down_proj`) is accepted too. Anything missing, unexpected or of the wrong shape is a MoelabError
that names the tensor.

`save_pretrained(model, folder)` writes config.json and model.safetensors in the layout transformers saves
itself, each file atomically (temp file in the folder, fsync, rename), so that
`AutoModelForCausalLM.from_pretrained(folder)` rebuilds exactly this model.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from moelab.data.cache import atomic_write
from moelab.errors import MoelabError
from moelab.nn.model import TransformerLM, build_model, check_buildable
from moelab.nn.moe import MoEOptions
from moelab.spec.families import REGISTRY, families
from moelab.spec.families.base import Family, Inexpressible
from moelab.spec.hf import read_config, spec_from_config
from moelab.spec.model import ModelSpec
from moelab.userfile import parse_json, read_user_text
from moelab.validation import show_value

_DTYPES = {"F64": torch.float64, "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
_WEIGHTS, _INDEX, _CONFIG = "model.safetensors", "model.safetensors.index.json", "config.json"
# A shard index names every tensor once (~100 bytes each): DeepSeek-V3's 91k tensors take ~9 MB.
MAX_INDEX_BYTES = 64 * 2**20
# Families tried first for a spec its own family cannot state: those every serving engine (vLLM, SGLang,
# TensorRT-LLM) runs, so that an exported model loads wherever it is served.
SERVED_FIRST = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen2_moe", "qwen3_moe", "olmoe")
# Tensor codecs a weight table may name: (file -> moelab, moelab -> file), for layouts beyond row slices.
CODECS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]] = {}


def building_families() -> tuple[str, ...]:
    """The model_types moelab.nn builds, loads and saves."""
    return tuple(t for t, f in REGISTRY.items() if f.builds)


# --------------------------------------------------------------------------------------------- name layout


@dataclass(frozen=True)
class _Slot:
    """One HF tensor: the concatenation along rows of `parts`, each `state[ours][index]`, through `codec`."""

    hf: str
    parts: tuple[tuple[str, tuple], ...]
    codec: str | None = None


@dataclass
class _Layout:
    slots: list[_Slot]  # the canonical HF tensors, in state_dict order
    fused: dict[str, tuple[_Slot, list[str]]]  # fused HF name -> (its slot, the per-expert names it replaces)
    aliases: dict[str, str]  # other spellings of a canonical HF name
    unstored: list[str]  # moelab tensors the family's checkpoints do not carry (must be zero to save)


_PLACEHOLDERS = {"{layer}": r"(?P<layer>\d+)", "{expert}": r"(?P<expert>\d+)", "{rest}": r"(?P<rest>.+)"}


def _regex(pattern: str) -> re.Pattern:
    out = re.escape(pattern)
    for key, group in _PLACEHOLDERS.items():
        out = out.replace(re.escape(key), group)
    return re.compile(out + "$")


def _fill(pattern: str, **values: Any) -> str:
    for key, value in values.items():
        pattern = pattern.replace("{" + key + "}", str(value))
    return pattern


def _rule(table, ours: str):
    """The first table rule whose moelab side names `ours`: (moelab pattern, HF pattern, codec, match, place)."""
    for rule in table:
        mine, theirs = rule[0], rule[1]
        codec = rule[2] if len(rule) > 2 else None
        for place, part in enumerate(mine.split("+")):
            name, _, half = part.partition("[")
            match = _regex(name).match(ours)
            if match:
                yield mine, theirs, codec, match, place, half.rstrip("]")


def _layout(model: TransformerLM, family: Family) -> _Layout:
    spec, table = model.spec, family.weight_table()
    slots: list[_Slot] = []
    fused: dict[str, tuple[_Slot, list[str]]] = {}
    unstored: list[str] = []
    for ours in model.state_dict():
        if ours == "lm_head.weight" and spec.tie_embeddings:
            continue
        halves: set[str] = set()  # gate_up_proj's halves already placed (each by its first rule)
        for mine, theirs, codec, match, place, half in _rule(table, ours):
            if half in halves:
                continue
            if theirs is None:
                unstored.append(ours)
                break
            groups = match.groupdict()
            if place > 0:  # a later part of a concatenation: placed with the first part
                break
            parts = []
            for part in mine.split("+"):
                name, _, h = part.partition("[")
                parts.append((_fill(name, **{k: v for k, v in groups.items() if k != "expert"}), h.rstrip("]")))
            layer = int(groups["layer"]) if groups.get("layer") else None
            moe = spec.layers[layer].moe if layer is not None else None
            if "{expert}" in theirs:
                names = []
                for i in range(moe.n_experts):
                    f = moe.expert_ffn
                    index = (i,) if not half else (i, slice(0, f) if half == "gate" else slice(f, 2 * f))
                    names.append(_fill(theirs, expert=i, **{k: v for k, v in groups.items() if k != "expert"}))
                    slots.append(_Slot(names[-1], ((parts[0][0], index),), codec))
                # the fused layout transformers >= 5 keeps in memory, whatever the family's per-expert names
                whole = f"model.layers.{layer}.mlp.experts.{ours.rsplit('.', 1)[-1]}"
                previous = fused.get(whole)
                fused[whole] = (_Slot(whole, ((ours, ()),)), (previous[1] if previous else []) + names)
                if half:
                    halves.add(half)
                    if halves == {"gate", "up"}:
                        break
                    continue
            else:
                hf = _fill(theirs, **groups)
                slots.append(_Slot(hf, tuple((name, ()) for name, _ in parts), codec))
            break
        else:
            if not halves:
                raise MoelabError(f"{family.name}: no Hugging Face name for moelab tensor {ours}")
    aliases = {}
    for other, canonical in family.aliases:
        for slot in slots:
            match = _regex(canonical).match(slot.hf)
            if match:
                aliases[_fill(other, **match.groupdict())] = slot.hf
    return _Layout(slots, fused, aliases, unstored)


# --------------------------------------------------------------------------------------------- loading


def _read_config(folder: Path) -> dict[str, Any]:
    if not os.path.lexists(folder / _CONFIG):
        raise MoelabError(f"{folder}: no {_CONFIG} (not a Hugging Face model folder)")
    return read_config(folder / _CONFIG)


def _shard_name(name: Any, index: Path) -> str:
    """A shard named by the index, if it is a plain relative path that stays inside the folder.

    Checked on the name itself, not its resolved target: Hugging Face's cache links each file of a snapshot
    to a blob two folders up, so resolving would refuse every cached model."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise MoelabError(f"{index}: a shard name must be a file name, got {show_value(name)}")
    parts = PurePosixPath(name).parts
    if PurePosixPath(name).is_absolute() or ".." in parts or not name.endswith(".safetensors"):
        raise MoelabError(f"{index}: shard {show_value(name)} is not a .safetensors file inside {index.parent}")
    return name


def _weight_files(folder: Path) -> list[Path]:
    """model.safetensors, else the shards model.safetensors.index.json names (transformers' own order)."""
    if (folder / _WEIGHTS).is_file():
        return [folder / _WEIGHTS]
    index = folder / _INDEX
    if not os.path.lexists(index):
        found = sorted(p.name for p in folder.glob("*.safetensors"))
        hint = f" (found {', '.join(found)})" if found else ""
        raise MoelabError(f"{folder}: no {_WEIGHTS} or {_INDEX}{hint}")
    raw = parse_json(read_user_text(index, "safetensors index", MAX_INDEX_BYTES), str(index))
    weight_map = raw.get("weight_map") if isinstance(raw, dict) else None
    if not isinstance(weight_map, dict):
        raise MoelabError(f"{index}: not a safetensors index (no \"weight_map\" object)")
    shards = sorted({_shard_name(name, index) for name in weight_map.values()})
    for shard in shards:
        try:
            mode = os.stat(folder / shard).st_mode
        except OSError:
            raise MoelabError(f"{index}: shard {shard} is missing") from None
        if not stat.S_ISREG(mode):
            raise MoelabError(f"{index}: shard {shard} is not a regular file")
    return [folder / s for s in shards]


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[Any]:
    """safe_open(path), with a truncated or corrupt file as one line naming it."""
    try:
        handle = safe_open(path, framework="pt")
    except (SafetensorError, OSError) as e:
        raise MoelabError(f"{path}: not a readable safetensors file ({_first_line(e)})") from None
    with handle as f:
        yield f


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:160] if text else type(e).__name__


def _check_supported(raw: dict, spec: ModelSpec, where: Path) -> Family:
    """The family of the config, when moelab.nn builds it as configured; else one line saying why not."""
    family = REGISTRY.get(spec.family)
    if family is None or not family.builds:
        raise MoelabError(f"{where}: model_type {spec.family!r} has no weight loader; the engine estimates it "
                          f"(moelab.nn builds: {', '.join(building_families())})")
    check_buildable(spec, str(where))
    why = family.check_loadable(raw, spec)
    if why:
        raise MoelabError(f"{where}: {why} (moelab.nn does not load it; the engine still estimates it)")
    return family


def _resolve_dtype(dtype: Any, files: list[Path]) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":  # the dtype the file stores the embeddings in
        for path in files:
            with _opened(path) as f:
                if "model.embed_tokens.weight" in f.keys():
                    return _DTYPES.get(f.get_slice("model.embed_tokens.weight").get_dtype(), torch.float32)
        return torch.float32
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise MoelabError(f"dtype must be a torch floating dtype, 'auto' or None, got {dtype!r}")
    return value


def _ignored(name: str, spec: ModelSpec, raw: dict, family: Family) -> bool:
    """File tensors that carry nothing moelab uses."""
    if name.endswith("rotary_emb.inv_freq") or name.endswith(".rotary_emb.original_inv_freq"):
        return True
    if name == "lm_head.weight" and spec.tie_embeddings:  # transformers ties it to the embeddings too
        return True
    return family.ignored(name, spec, raw)


def _mxfp4_pairs(handles: dict[str, tuple]) -> dict[str, tuple]:
    """MXFP4 checkpoints (gpt-oss) store a tensor NAME as NAME_blocks and NAME_scales: those pairs, by NAME,
    taken out of `handles`."""
    pairs = {}
    for name in [n for n in handles if n.endswith("_blocks")]:
        base = name.removesuffix("_blocks")
        if base + "_scales" in handles:
            pairs[base] = (handles.pop(name), handles.pop(base + "_scales"))
    return pairs


def _names(items: list[str], limit: int = 5) -> str:
    more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def load_pretrained(path: str | Path, dtype: torch.dtype | str | None = None,
                    options: MoEOptions = MoEOptions()) -> TransformerLM:
    """A TransformerLM with the weights of the HF folder `path`.

    dtype: None -> float32 (the dtype moelab builds in); "auto" -> the dtype the file stores; or a torch dtype.
    Router selection biases stay float32, as transformers keeps them. The raw config dict is kept on the
    model as `model.hf_config`, so that `save_pretrained` writes it back.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise MoelabError(f"{folder}: not a folder")
    raw = _read_config(folder)
    spec = spec_from_config(raw, name=folder.resolve().name)
    family = _check_supported(raw, spec, folder / _CONFIG)
    files = _weight_files(folder)
    model = build_model(spec, options)
    target_dtype = _resolve_dtype(dtype, files)
    if target_dtype != torch.float32:
        model.to(target_dtype)
        for layer in model.moe_layers():
            layer.gate.bias = layer.gate.bias.float()
    layout = _layout(model, family)

    with contextlib.ExitStack() as stack:
        handles = {}  # HF name -> the open file that holds it
        for file in files:
            f = stack.enter_context(_opened(file))
            for name in f.keys():
                canonical = layout.aliases.get(name, name)
                if canonical in handles:
                    raise MoelabError(f"{folder}: tensor {name} appears twice")
                handles[canonical] = (f, name)
        packed = _mxfp4_pairs(handles) if spec.expert_storage == "mxfp4" else {}
        names = {n for n in [*handles, *packed] if not _ignored(n, spec, raw, family)}
        expected_anywhere = {s.hf for s in layout.slots} | set(layout.fused)
        names -= {n for n in names - expected_anywhere - set(packed)
                  if 0 in handles[n][0].get_slice(handles[n][1]).get_shape()}

        slots = list(layout.slots)
        for fused_name, (slot, replaced) in layout.fused.items():
            if fused_name in names:
                both = [n for n in replaced if n in names]
                if both:
                    raise MoelabError(f"{folder}: both {fused_name} and per-expert tensors such as {both[0]}")
                slots.append(slot)
                gone = set(replaced)
                slots = [s for s in slots if s.hf not in gone]
        expected = {s.hf for s in slots}
        missing = [s.hf for s in slots if s.hf not in names]
        if missing:
            raise MoelabError(f"{folder}: missing tensor {_names(missing)}")
        unexpected = sorted(names - expected)
        if unexpected:
            raise MoelabError(f"{folder}: unexpected tensor {_names(unexpected)} for {spec.family} "
                              f"as configured in {_CONFIG}")

        state = model.state_dict()
        with torch.no_grad():
            for slot in slots:
                name = slot.hf
                try:
                    if name in packed:  # MXFP4 blocks and scales: the tensor transformers would dequantize
                        from moelab.nn.gpt_oss import dequantize_mxfp4

                        (fb, blocks), (fs, scales) = packed[name]
                        tensor = dequantize_mxfp4(fb.get_tensor(blocks), fs.get_tensor(scales))
                    else:
                        f, name = handles[name]
                        tensor = f.get_tensor(name)
                except (SafetensorError, OSError, RuntimeError, ValueError) as e:
                    raise MoelabError(f"{folder}: tensor {name} cannot be read ({_first_line(e)})") from None
                if slot.codec:
                    tensor = CODECS[slot.codec][0](tensor)
                targets = [state[ours][index] for ours, index in slot.parts]
                want = (sum(t.shape[0] for t in targets), *targets[0].shape[1:]) if len(targets) > 1 else \
                    tuple(targets[0].shape)
                if tuple(tensor.shape) != tuple(want):
                    raise MoelabError(f"{folder}: tensor {name} has shape {tuple(tensor.shape)}, "
                                      f"{_CONFIG} implies {tuple(want)}")
                for target, piece in zip(targets, tensor.split([t.shape[0] for t in targets]), strict=True):
                    target.copy_(piece)
    model.hf_config = raw
    return model.eval()


# --------------------------------------------------------------------------------------------- configs


def _architecture(spec: ModelSpec) -> ModelSpec:
    """The spec with what does not change the computation blanked out, for comparison."""
    spec = replace(spec, name="", family="", notes=(), expert_storage=None)  # saved experts are dequantized
    if not spec.rope_scaling:
        spec = replace(spec, max_position=None)
    return spec


def _describes(raw: dict, spec: ModelSpec) -> bool:
    try:
        return _architecture(spec_from_config(raw, spec.name)) == _architecture(spec)
    except MoelabError:
        return False


def hf_config(model: TransformerLM) -> dict[str, Any]:
    """The config.json for `model`: the one it was loaded with if it still describes it, else a new one.

    A new one is written for the spec's own family when that family can state the architecture, else for
    the first family that can, SERVED_FIRST before the rest (a Mixtral-style MoE made from a Llama spec is
    saved as Mixtral, which every serving engine runs, not as GraniteMoE).
    """
    spec = model.spec
    dtype = str(model.embed_tokens.weight.dtype).removeprefix("torch.")
    raw = getattr(model, "hf_config", None)
    if isinstance(raw, dict) and _describes(raw, spec):
        raw = dict(raw)
        raw["dtype"] = dtype
        raw.pop("torch_dtype", None)
        raw.pop("quantization_config", None)  # moelab saves the weights it holds: dequantized
        return raw
    reasons = []
    own = REGISTRY.get(spec.family)
    served = [REGISTRY[t] for t in SERVED_FIRST if t in REGISTRY]
    for family in dict.fromkeys([own, *served, *families()]):
        if family is None or not family.builds:
            continue
        try:
            cfg = family.write(spec, dtype)
        except Inexpressible as e:
            reasons.append(f"{family.name}: {e}")
            continue
        if _describes(cfg, spec):
            return cfg
        reasons.append(f"{family.name}: the config does not read back as the same model")
    raise MoelabError(f"{spec.name}: no Hugging Face family can state this architecture "
                      f"({'; '.join(reasons[:3])})")


# --------------------------------------------------------------------------------------------- saving


def _check_unstored(model: TransformerLM, layout: _Layout, family: str) -> None:
    """A tensor the family's checkpoints do not carry (a selection bias outside DeepSeek-V3, GLM-4.5) must be 0."""
    state = model.state_dict()
    for name in layout.unstored:
        if state[name].any():
            raise MoelabError(f"{name}: a nonzero router selection bias cannot be saved as {family} "
                              "(its checkpoints carry none)")


def save_pretrained(model: TransformerLM, path: str | Path) -> None:
    """Write `model` as a Hugging Face folder: config.json and model.safetensors (per-expert layout)."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    config = hf_config(model)
    family = REGISTRY[config["model_type"]]
    layout = _layout(model, family)
    _check_unstored(model, layout, family.name)
    state = model.state_dict()
    tensors = {}
    for slot in layout.slots:
        tensor = torch.cat([state[ours][index] for ours, index in slot.parts]) if len(slot.parts) > 1 else \
            state[slot.parts[0][0]][slot.parts[0][1]]
        if slot.codec:
            tensor = CODECS[slot.codec][1](tensor)
        tensors[slot.hf] = tensor.detach().to("cpu").contiguous().clone()
    dtype = model.embed_tokens.weight.dtype
    for name, shape in family.empty_tensors(model.spec).items():
        tensors[name] = torch.zeros(shape, dtype=dtype)
    atomic_write(folder / _WEIGHTS, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    atomic_write(folder / _CONFIG, lambda tmp: tmp.write_text(text))


# the families' own tensor codecs register themselves in CODECS (imported last: they import this module)
from moelab.nn import (  # noqa: E402,F401
    gpt_oss,
    llama4,
)
