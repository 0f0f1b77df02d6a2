"""Read a Hugging Face config.json into a ModelSpec: the generic driver over the families registry.

The readers form one validation layer: keys moelab does not read are ignored, but every field it reads is
type-checked and bounded (moelab.limits), and switches a family lists as refused (another activation, router
scoring or top-k method) are refused by name. Field errors are collected and reported together on one line.
Each family's own knowledge lives in its module under spec/families/.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from moelab.errors import MoelabError
from moelab.spec.families import family_of
from moelab.spec.families.base import Family
from moelab.spec.families.config import ConfigReader
from moelab.spec.model import ModelSpec
from moelab.userfile import parse_json, read_user_text
from moelab.validation import show_value


def text_fields(raw: dict[str, Any], family: Family, source: str) -> dict[str, Any]:
    """The config of the text model: a multimodal config's text_config (its own fields first, then the
    outer ones it lacks, such as tie_word_embeddings), else the config itself."""
    if not family.text_config or "text_config" not in raw:
        return raw
    inner = raw["text_config"]
    if not isinstance(inner, dict):
        raise MoelabError(f"{source}: field 'text_config' must be an object")
    outer = {k: v for k, v in raw.items() if k not in ("text_config", "vision_config", "model_type")}
    return {**outer, **inner, "model_type": raw["model_type"]}


def refused_switches(raw: dict[str, Any], table: dict[str, tuple[Any, ...]]) -> list[str]:
    """One message per switch of `table` (field -> accepted values; absent is the first) set otherwise."""
    out = []
    for key, accepted in table.items():
        value = raw.get(key, accepted[0])
        if not any(value is a or (type(value) is type(a) and value == a) for a in accepted):
            out.append(f"field '{key}' {show_value(value)} is not modelled by moelab (accepted: "
                       f"{', '.join(show_value(a) for a in accepted)})")
    return out


def spec_from_config(raw: Any, name: str = "model", source: str = "config.json") -> ModelSpec:
    """Build a ModelSpec from a parsed config.json dict; `source` names it in errors.

    Every field error is reported, on one line; a cross-field error (heads that do not divide the width,
    top-k above the expert count) only when the fields themselves are sound."""
    if not isinstance(raw, dict):
        raise MoelabError(f"{source}: the top level must be a JSON object")
    model_type = raw.get("model_type")
    if model_type is None:
        raise MoelabError(f"{source}: missing field 'model_type'")
    family = family_of(model_type, source)
    raw = text_fields(raw, family, source)
    c = ConfigReader(raw, model_type, where=f"{source} ({model_type})")
    act = raw.get(family.activation_key, "silu")
    if not isinstance(act, str) or act not in family.activations:
        c.errors.append(f"{family.activation_key} {show_value(act)} is not modelled by moelab for {model_type} "
                        f"(known: {', '.join(family.activations)})")
    else:
        c.activation = family.activations[act]
    c.errors += refused_switches(raw, family.refused)
    spec = family.read(c, name)
    why = family.check_buildable(raw, spec)
    unbuilt = refused_switches(raw, family.nn_refused) + ([why] if why else [])
    return replace(spec, unbuilt=tuple(unbuilt)) if unbuilt else spec


def read_config(path: str | Path) -> dict[str, Any]:
    """The parsed config.json at `path`: a regular file of at most userfile.MAX_FILE_BYTES, strict JSON,
    a JSON object at the top."""
    path = Path(path)
    if not os.path.lexists(path):
        raise MoelabError(f"no such file: {show_value(str(path))}")
    raw = parse_json(read_user_text(path, "config.json"), str(path))
    if not isinstance(raw, dict):
        raise MoelabError(f"{path}: the top level must be a JSON object")
    return raw


def spec_from_file(path: str | Path) -> ModelSpec:
    """Read a config.json (or a folder holding one)."""
    path = Path(path)
    if os.path.isdir(path):
        path = path / "config.json"
    name = path.parent.name if path.name == "config.json" else path.stem
    return spec_from_config(read_config(path), name=name, source=str(path))
