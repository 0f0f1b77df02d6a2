"""Bundled model presets (verbatim HF config.json files) and the published counts they are checked against."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from functools import cache
from importlib import resources

from moelab.errors import MoelabError
from moelab.spec import hub
from moelab.spec.hf import spec_from_config, spec_from_file
from moelab.spec.model import ModelSpec
from moelab.validation import show_value


def _models_dir():
    return resources.files("moelab.spec").joinpath("presets/models")


@cache
def model_presets() -> dict[str, dict]:
    """Preset name -> raw config.json dict."""
    return {
        f.name.removesuffix(".json"): json.loads(f.read_text())
        for f in sorted(_models_dir().iterdir(), key=lambda f: f.name)
        if f.name.endswith(".json")
    }


@cache
def published_counts() -> dict[str, dict]:
    """Preset name -> {hf_id, published_total, published_active} as the model cards state them."""
    rows = json.loads(resources.files("moelab.spec").joinpath("presets/published.json").read_text())
    return {row["name"]: row for row in rows}


def path_exists(name: str) -> bool:
    """Whether `name` names something on disk (a FIFO or device too: the reader refuses those by name).
    A name the OS cannot take (too long, a NUL byte) is no path."""
    try:
        return os.path.lexists(name)
    except (OSError, ValueError):
        return False


def load_model(name_or_path: str) -> ModelSpec:
    """A preset name, a config.json path, a folder holding one, or a Hugging Face id (`owner/name`): its
    config.json in the local Hugging Face cache (moelab.spec.hub), else the preset of that id."""
    presets = model_presets()
    if name_or_path.lower() in presets:
        return spec_from_config(presets[name_or_path.lower()], name=name_or_path.lower())
    if path_exists(name_or_path):
        return spec_from_file(name_or_path)
    if hub.is_hub_id(name_or_path):
        config = hub.cached_config(name_or_path)
        if config is not None:  # named by its id, not by the snapshot's commit hash
            return replace(spec_from_file(config), name=name_or_path)
        by_id = {row["hf_id"].lower(): name for name, row in published_counts().items() if row.get("hf_id")}
        if by_id.get(name_or_path.lower()) in presets:
            name = by_id[name_or_path.lower()]
            return spec_from_config(presets[name], name=name)
        raise hub.not_cached(name_or_path)
    raise MoelabError(
        f"unknown model {show_value(name_or_path)} (presets: {', '.join(presets)}; or a config.json path or folder)"
    )
