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
from moelab.nn.layers import check_rope_buildable
from moelab.nn.model import TransformerLM, build_model
from moelab.nn.moe import MoELayer, MoEOptions
from moelab.spec.hf import read_config, spec_from_config
from moelab.spec.model import ModelSpec
from moelab.userfile import parse_json, read_user_text
from moelab.validation import show_value

ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "mixtral": "MixtralForCausalLM",
    "qwen2_moe": "Qwen2MoeForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM",
    "olmoe": "OlmoeForCausalLM",
    "deepseek_v3": "DeepseekV3ForCausalLM",
}
FAMILIES = tuple(ARCHITECTURES)
_DTYPES = {"F64": torch.float64, "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
_WEIGHTS, _INDEX, _CONFIG = "model.safetensors", "model.safetensors.index.json", "config.json"
# A shard index names every tensor once (~100 bytes each): DeepSeek-V3's 91k tensors take ~9 MB.
MAX_INDEX_BYTES = 64 * 2**20


# --------------------------------------------------------------------------------------------- name layout


@dataclass(frozen=True)
class _Slot:
    """One HF tensor and where it lives in the moelab state: `state[ours][index]`."""

    hf: str
    ours: str
    index: tuple = ()


@dataclass
class _Layout:
    slots: list[_Slot]  # the canonical (per-expert) HF names, in state_dict order
    fused: dict[str, tuple[_Slot, list[str]]]  # fused HF name -> (its slot, the per-expert names it replaces)
    aliases: dict[str, str]  # other spellings of a canonical HF name


def _expert_names(family: str) -> tuple[str, str, str, str]:
    """(block name, gate, up, down) of one HF expert."""
    if family == "mixtral":
        return "block_sparse_moe", "w1", "w3", "w2"
    return "mlp", "gate_proj", "up_proj", "down_proj"


def _layout(model: TransformerLM, family: str) -> _Layout:
    spec = model.spec
    block, gate, up, down = _expert_names(family)
    slots: list[_Slot] = []
    fused: dict[str, tuple[_Slot, list[str]]] = {}
    aliases: dict[str, str] = {}
    moe_prefixes = {f"layers.{i}.mlp." for i in spec.moe_layers}
    for ours in model.state_dict():
        if ours == "lm_head.weight":
            if not spec.tie_embeddings:
                slots.append(_Slot(ours, ours))
            continue
        prefix = ours[:ours.index(".mlp.") + 5] if ".mlp." in ours else ""
        if prefix not in moe_prefixes:
            slots.append(_Slot("model." + ours, ours))
            continue
        layer = "model." + prefix[:-len("mlp.")]  # "model.layers.N."
        rest = ours[len(prefix):]
        e, f = spec.moe.n_experts, spec.moe.expert_ffn
        if rest == "gate_up_proj":
            names = []
            for i in range(e):
                for name, rows in ((gate, slice(0, f)), (up, slice(f, 2 * f))):
                    names.append(f"{layer}{block}.experts.{i}.{name}.weight")
                    slots.append(_Slot(names[-1], ours, (i, rows)))
            fused[f"{layer}mlp.experts.gate_up_proj"] = (_Slot(f"{layer}mlp.experts.gate_up_proj", ours), names)
        elif rest == "down_proj":
            names = []
            for i in range(e):
                names.append(f"{layer}{block}.experts.{i}.{down}.weight")
                slots.append(_Slot(names[-1], ours, (i,)))
            fused[f"{layer}mlp.experts.down_proj"] = (_Slot(f"{layer}mlp.experts.down_proj", ours), names)
        elif rest == "gate.weight":
            slots.append(_Slot(f"{layer}{block}.gate.weight", ours))
            if block != "mlp":
                aliases[f"{layer}mlp.gate.weight"] = slots[-1].hf
        elif rest == "gate.bias":
            if family == "deepseek_v3":  # the selection bias; other families have none (see _check_bias)
                slots.append(_Slot(f"{layer}mlp.gate.e_score_correction_bias", ours))
        elif rest.startswith("shared_experts.") and family == "qwen2_moe":
            slots.append(_Slot(f"{layer}mlp.shared_expert.{rest[len('shared_experts.'):]}", ours))
        else:  # shared experts (DeepSeek), shared_expert_gate (Qwen2-MoE)
            slots.append(_Slot(f"{layer}mlp.{rest}", ours))
    return _Layout(slots, fused, aliases)


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


def _layer_types_expected(raw: dict, family: str, n_layers: int) -> list[str] | None:
    """The per-layer attention kinds transformers will use (None where the family has no such notion)."""
    types = raw.get("layer_types")
    if types is not None:
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            raise MoelabError(f"{_CONFIG} ({family}): field 'layer_types' must be a list of strings")
        return types
    sliding = bool(raw.get("use_sliding_window")) and bool(raw.get("sliding_window"))
    max_window = raw.get("max_window_layers", 28)
    if isinstance(max_window, bool) or not isinstance(max_window, int):
        raise MoelabError(f"{_CONFIG} ({family}): field 'max_window_layers' must be an integer, "
                          f"got {show_value(max_window)}")
    if family in ("qwen2", "qwen3"):
        return ["sliding_attention" if sliding and i >= max_window else "full_attention" for i in range(n_layers)]
    if family == "qwen2_moe":
        return ["sliding_attention" if sliding and (i + 1) % 2 and i < max_window else "full_attention"
                for i in range(n_layers)]
    return None


def _check_supported(raw: dict, spec: ModelSpec, where: Path) -> None:
    """Refuse config switches moelab.nn does not implement, rather than compute something else."""
    family = spec.family
    if family not in FAMILIES:
        raise MoelabError(f"{where}: model_type {family!r} has no weight loader (supported: {', '.join(FAMILIES)})")
    check_rope_buildable(spec.rope_scaling, spec.max_position, where=str(where))
    if family == "olmoe" and raw.get("clip_qkv") is not None:
        raise MoelabError(f"{where}: olmoe clip_qkv is not implemented by moelab.nn")
    if family == "olmoe" and spec.attention.n_heads * spec.attention.head_dim != spec.d_model:
        raise MoelabError(f"{where}: olmoe needs head_dim * num_attention_heads == hidden_size")
    types = _layer_types_expected(raw, family, spec.n_layers)
    if types is not None:
        want = "sliding_attention" if spec.attention.sliding_window else "full_attention"
        if len(types) != spec.n_layers or any(t != want for t in types):
            raise MoelabError(f"{where}: per-layer attention kinds {sorted(set(map(str, types)))} are not "
                              f"implemented by moelab.nn (every layer must be {want})")


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


def _ignored(name: str, spec: ModelSpec, raw: dict) -> bool:
    """File tensors that carry nothing moelab uses."""
    if name.endswith("rotary_emb.inv_freq") or name.endswith(".rotary_emb.original_inv_freq"):
        return True
    if name == "lm_head.weight" and spec.tie_embeddings:  # transformers ties it to the embeddings too
        return True
    if spec.family == "deepseek_v3" and name.startswith("model.layers."):  # multi-token-prediction layers
        layer = int(name.split(".")[2]) if name.split(".")[2].isdigit() else -1
        extra = raw.get("num_nextn_predict_layers") or 0
        return spec.n_layers <= layer < spec.n_layers + extra
    return False


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
    _check_supported(raw, spec, folder / _CONFIG)
    files = _weight_files(folder)
    model = build_model(spec, options)
    target_dtype = _resolve_dtype(dtype, files)
    if target_dtype != torch.float32:
        model.to(target_dtype)
        for layer in model.moe_layers():
            layer.gate.bias = layer.gate.bias.float()
    layout = _layout(model, spec.family)

    with contextlib.ExitStack() as stack:
        handles = {}  # HF name -> the open file that holds it
        for file in files:
            f = stack.enter_context(_opened(file))
            for name in f.keys():
                canonical = layout.aliases.get(name, name)
                if canonical in handles:
                    raise MoelabError(f"{folder}: tensor {name} appears twice")
                handles[canonical] = (f, name)
        names = {n for n in handles if not _ignored(n, spec, raw)}
        expected_anywhere = {s.hf for s in layout.slots} | set(layout.fused)
        names -= {n for n in names - expected_anywhere if 0 in handles[n][0].get_slice(handles[n][1]).get_shape()}

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
                f, name = handles[slot.hf]
                try:
                    tensor = f.get_tensor(name)
                except (SafetensorError, OSError, RuntimeError) as e:
                    raise MoelabError(f"{folder}: tensor {name} cannot be read ({_first_line(e)})") from None
                target = state[slot.ours][slot.index]
                if tuple(tensor.shape) != tuple(target.shape):
                    raise MoelabError(f"{folder}: tensor {name} has shape {tuple(tensor.shape)}, "
                                      f"{_CONFIG} implies {tuple(target.shape)}")
                target.copy_(tensor)
    model.hf_config = raw
    return model.eval()


# --------------------------------------------------------------------------------------------- configs


class _Inexpressible(Exception):
    """The spec has a feature this family's config cannot state."""


def _need(condition: bool, why: str) -> None:
    if not condition:
        raise _Inexpressible(why)


def _common(spec: ModelSpec, family: str, dtype: torch.dtype) -> dict[str, Any]:
    a = spec.attention
    rope = {"rope_type": "default", "rope_theta": spec.rope_theta, **dict(spec.rope_scaling)}
    return {
        "architectures": [ARCHITECTURES[family]],
        "model_type": family,
        "vocab_size": spec.vocab_size,
        "hidden_size": spec.d_model,
        "num_hidden_layers": spec.n_layers,
        "num_attention_heads": a.n_heads,
        "num_key_value_heads": a.n_kv_heads,
        "head_dim": a.head_dim,
        "intermediate_size": spec.ffn_dim,
        "hidden_act": "silu",
        "rms_norm_eps": spec.norm_eps,
        "max_position_embeddings": spec.max_position or 4096,
        "rope_parameters": rope,
        "tie_word_embeddings": spec.tie_embeddings,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": True,
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": None,
        "dtype": str(dtype).removeprefix("torch."),
    }


def _gqa_checks(spec: ModelSpec, qkv_bias: bool | None, o_bias: bool | None, qk_norm: str) -> None:
    a = spec.attention
    _need(a.kind == "gqa", "multi-head latent attention")
    _need(a.qk_norm == qk_norm, f"qk_norm {a.qk_norm!r}")
    _need(qkv_bias is None or a.qkv_bias == qkv_bias, f"qkv_bias={a.qkv_bias}")
    _need(o_bias is None or a.o_bias == o_bias, f"o_bias={a.o_bias}")
    _need(not spec.rope_interleave, "interleaved rotary pairs")


def _window(cfg: dict, spec: ModelSpec, qwen: bool, explicit_types: bool = False) -> None:
    window = spec.attention.sliding_window
    if qwen:
        cfg.update(use_sliding_window=window is not None, sliding_window=window, max_window_layers=0)
        if explicit_types:
            kind = "sliding_attention" if window else "full_attention"
            cfg["layer_types"] = [kind] * spec.n_layers
    else:
        cfg["sliding_window"] = window


def _moe_checks(spec: ModelSpec, router: str, all_layers: bool, shared: bool = False) -> None:
    m = spec.moe
    _need(spec.is_moe, "no MoE layers")
    _need(m.router == router, f"router {m.router!r}")
    _need(not all_layers or spec.moe_layers == tuple(range(spec.n_layers)), "dense layers between MoE layers")
    _need(shared or m.n_shared == 0, "shared experts")
    _need(m.n_group == 1 and m.routed_scaling_factor == 1.0 and not m.selection_bias, "DeepSeek-style routing")
    _need(not spec.mlp_bias, "FFN biases")


def _dense_config(spec: ModelSpec, family: str, dtype: torch.dtype) -> dict[str, Any]:
    _need(not spec.is_moe, "MoE layers")
    a, cfg = spec.attention, _common(spec, family, dtype)
    if family == "llama":
        _gqa_checks(spec, None, None, "none")
        _need(a.qkv_bias == a.o_bias, "different q/k/v and output biases")
        _need(a.sliding_window is None, "a sliding window")
        cfg.update(attention_bias=a.qkv_bias, mlp_bias=spec.mlp_bias)
        return cfg
    _need(not spec.mlp_bias, "FFN biases")
    if family == "mistral":
        _gqa_checks(spec, False, False, "none")
        _window(cfg, spec, qwen=False)
    elif family == "qwen2":
        _gqa_checks(spec, True, False, "none")
        _window(cfg, spec, qwen=True)
    else:  # qwen3
        _gqa_checks(spec, None, None, "head")
        _need(a.qkv_bias == a.o_bias, "different q/k/v and output biases")
        cfg["attention_bias"] = a.qkv_bias
        _window(cfg, spec, qwen=True)
    return cfg


def _mixtral_config(spec: ModelSpec, dtype: torch.dtype) -> dict[str, Any]:
    _gqa_checks(spec, False, False, "none")
    _moe_checks(spec, "topk_softmax", all_layers=True)
    cfg = _common(spec, "mixtral", dtype)
    m = spec.moe
    cfg.update(num_local_experts=m.n_experts, num_experts_per_tok=m.top_k, intermediate_size=m.expert_ffn,
               router_jitter_noise=0.0, router_aux_loss_coef=0.001, output_router_logits=False)
    _window(cfg, spec, qwen=False)
    return cfg


def _qwen_moe_config(spec: ModelSpec, family: str, dtype: torch.dtype) -> dict[str, Any]:
    a, m = spec.attention, spec.moe
    cfg = _common(spec, family, dtype)
    if family == "qwen2_moe":
        _gqa_checks(spec, None, False, "none")
        _moe_checks(spec, "softmax_topk", all_layers=False, shared=True)
        _need(m.n_shared <= 1 and m.shared_gate, "anything but one sigmoid-gated shared expert (or none)")
        cfg.update(qkv_bias=a.qkv_bias, shared_expert_intermediate_size=m.n_shared * m.shared_ffn)
        _window(cfg, spec, qwen=True, explicit_types=True)
    else:
        _gqa_checks(spec, None, None, "head")
        _need(a.qkv_bias == a.o_bias, "different q/k/v and output biases")
        _moe_checks(spec, "softmax_topk", all_layers=False)
        cfg["attention_bias"] = a.qkv_bias
        _window(cfg, spec, qwen=True)
    cfg.update(num_experts=m.n_experts, num_experts_per_tok=m.top_k, moe_intermediate_size=m.expert_ffn,
               norm_topk_prob=m.norm_topk_prob, decoder_sparse_step=1,
               mlp_only_layers=[i for i in range(spec.n_layers) if i not in spec.moe_layers],
               router_aux_loss_coef=0.001, output_router_logits=False)
    return cfg


def _olmoe_config(spec: ModelSpec, dtype: torch.dtype) -> dict[str, Any]:
    a, m = spec.attention, spec.moe
    _gqa_checks(spec, None, None, "full")
    _need(a.qkv_bias == a.o_bias, "different q/k/v and output biases")
    _need(a.n_heads * a.head_dim == spec.d_model, "head_dim * heads != hidden_size")
    _need(a.sliding_window is None, "a sliding window")
    _moe_checks(spec, "softmax_topk", all_layers=True)
    cfg = _common(spec, "olmoe", dtype)
    cfg.update(attention_bias=a.qkv_bias, clip_qkv=None, num_experts=m.n_experts, num_experts_per_tok=m.top_k,
               intermediate_size=m.expert_ffn, norm_topk_prob=m.norm_topk_prob, router_aux_loss_coef=0.01,
               output_router_logits=False)
    return cfg


def _deepseek_config(spec: ModelSpec, dtype: torch.dtype) -> dict[str, Any]:
    a, m = spec.attention, spec.moe
    _need(a.kind == "mla", "grouped-query attention")
    _need(a.qkv_bias == a.o_bias, "different q/k/v and output biases")
    _need(a.sliding_window is None and a.qk_norm == "none", "a sliding window or q/k norms")
    _need(spec.is_moe and m.router == "sigmoid", "no sigmoid-routed MoE layers")
    first = spec.moe_layers[0]
    _need(spec.moe_layers == tuple(range(first, spec.n_layers)), "MoE layers other than the last n")
    _need(m.n_shared >= 1 and m.shared_ffn == m.expert_ffn and not m.shared_gate, "this shared-expert shape")
    _need(not spec.mlp_bias, "FFN biases")
    cfg = _common(spec, "deepseek_v3", dtype)
    method = "noaux_tc" if m.selection_bias else "group_limited_greedy" if m.n_group > 1 else "greedy"
    cfg.update(
        head_dim=a.qk_rope_head_dim, attention_bias=a.qkv_bias, q_lora_rank=a.q_lora_rank,
        kv_lora_rank=a.kv_lora_rank, qk_nope_head_dim=a.qk_nope_head_dim, qk_rope_head_dim=a.qk_rope_head_dim,
        v_head_dim=a.head_dim, rope_interleave=spec.rope_interleave,
        n_routed_experts=m.n_experts, num_experts_per_tok=m.top_k, moe_intermediate_size=m.expert_ffn,
        n_shared_experts=m.n_shared, first_k_dense_replace=first, moe_layer_freq=1, n_group=m.n_group,
        topk_group=m.topk_group, routed_scaling_factor=m.routed_scaling_factor, norm_topk_prob=m.norm_topk_prob,
        scoring_func="sigmoid", topk_method=method, num_nextn_predict_layers=0, mlp_bias=False,
    )
    if spec.ffn_dim == 0:
        cfg["intermediate_size"] = m.expert_ffn
    return cfg


_BUILDERS: dict[str, Callable[[ModelSpec, torch.dtype], dict[str, Any]]] = {
    "llama": lambda s, d: _dense_config(s, "llama", d),
    "mistral": lambda s, d: _dense_config(s, "mistral", d),
    "qwen2": lambda s, d: _dense_config(s, "qwen2", d),
    "qwen3": lambda s, d: _dense_config(s, "qwen3", d),
    "mixtral": _mixtral_config,
    "qwen2_moe": lambda s, d: _qwen_moe_config(s, "qwen2_moe", d),
    "qwen3_moe": lambda s, d: _qwen_moe_config(s, "qwen3_moe", d),
    "olmoe": _olmoe_config,
    "deepseek_v3": _deepseek_config,
}


def _architecture(spec: ModelSpec) -> ModelSpec:
    """The spec with what does not change the computation blanked out, for comparison."""
    spec = replace(spec, name="", family="", notes=())
    if spec.n_dense_layers == 0:
        spec = replace(spec, ffn_dim=0)
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
    the first family that can (a Mixtral-style MoE made from a Llama spec is saved as Mixtral).
    """
    spec = model.spec
    dtype = model.embed_tokens.weight.dtype
    raw = getattr(model, "hf_config", None)
    if isinstance(raw, dict) and _describes(raw, spec):
        raw = dict(raw)
        raw["dtype"] = str(dtype).removeprefix("torch.")
        raw.pop("torch_dtype", None)
        return raw
    reasons = []
    for family in [spec.family] + [f for f in FAMILIES if f != spec.family]:
        if family not in _BUILDERS:
            continue
        try:
            cfg = _BUILDERS[family](spec, dtype)
        except _Inexpressible as e:
            reasons.append(f"{family}: {e}")
            continue
        if _describes(cfg, spec):
            return cfg
        reasons.append(f"{family}: the config does not read back as the same model")
    raise MoelabError(f"{spec.name}: no Hugging Face family can state this architecture "
                      f"({'; '.join(reasons[:3])})")


# --------------------------------------------------------------------------------------------- saving


def _check_bias(model: TransformerLM, family: str) -> None:
    if family == "deepseek_v3":
        return
    for i, layer in enumerate(model.layers):
        if isinstance(layer.mlp, MoELayer) and layer.mlp.gate.bias.any():
            raise MoelabError(f"layer {i}: a nonzero router selection bias cannot be saved as {family} "
                              "(only deepseek_v3 checkpoints carry one)")


def _empty_tensors(model: TransformerLM, family: str) -> dict[str, torch.Tensor]:
    """Width-0 tensors transformers expects: a Qwen2-MoE without a shared expert still has one, of width 0."""
    if family != "qwen2_moe":
        return {}
    out, d = {}, model.spec.d_model
    for i, layer in enumerate(model.layers):
        if isinstance(layer.mlp, MoELayer) and layer.mlp.shared_experts is None:
            dtype, prefix = layer.mlp.gate_up_proj.dtype, f"model.layers.{i}.mlp.shared_expert."
            for name, shape in (("gate_proj", (0, d)), ("up_proj", (0, d)), ("down_proj", (d, 0))):
                out[f"{prefix}{name}.weight"] = torch.zeros(shape, dtype=dtype)
    return out


def save_pretrained(model: TransformerLM, path: str | Path) -> None:
    """Write `model` as a Hugging Face folder: config.json and model.safetensors (per-expert layout)."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    config = hf_config(model)
    family = config["model_type"]
    _check_bias(model, family)
    state = model.state_dict()
    tensors = {slot.hf: state[slot.ours][slot.index].detach().to("cpu").contiguous().clone()
               for slot in _layout(model, family).slots}
    tensors.update(_empty_tensors(model, family))
    atomic_write(folder / _WEIGHTS, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    atomic_write(folder / _CONFIG, lambda tmp: tmp.write_text(text))
