"""Checkpoints: DIR/ckpt-STEP/ with model and optimizer as safetensors and the run state as JSON.

A checkpoint is written into a temporary sibling folder, every file fsynced, then renamed into place, so a
run killed at any moment leaves either the complete checkpoint or none. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from moelab.data.cache import atomic_write_json
from moelab.errors import MoelabError

PREFIX = "ckpt-"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors = {f"state.{index}.{key}": value.detach().clone().contiguous()
               for index, slots in state["state"].items() for key, value in slots.items()
               if isinstance(value, torch.Tensor)}
    return tensors, {"param_groups": state["param_groups"]}


def save_checkpoint(out: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict[str, Any], keep_last: int) -> Path:
    """Write DIR/ckpt-STEP atomically, then delete all but the newest `keep_last` checkpoints."""
    final = out / f"{PREFIX}{step}"
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=f".{PREFIX}{step}."))
    save_model(model, str(tmp / "model.safetensors"))
    tensors, groups = _optimizer_tensors(optimizer)
    tensors["rng.torch"] = torch.get_rng_state()
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    atomic_write_json(tmp / "state.json", {**state, "step": step, "optimizer": groups})
    for file in tmp.iterdir():
        _fsync(file)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync(out)
    for old in checkpoints(out)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints in `out`, oldest first."""
    found = [p for p in out.glob(f"{PREFIX}*") if p.is_dir() and p.name[len(PREFIX):].isdigit()
             and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model, optimizer and the torch RNG from `path`; return the saved run state."""
    try:
        state = json.loads((path / "state.json").read_text())
        load_model(model, str(path / "model.safetensors"), strict=True)
        tensors = load_file(str(path / "optimizer.safetensors"))
    except (OSError, json.JSONDecodeError, RuntimeError) as e:
        raise MoelabError(f"{path}: unreadable checkpoint ({str(e).splitlines()[0]})") from None
    torch.set_rng_state(tensors.pop("rng.torch"))
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        slots.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": slots, "param_groups": state["optimizer"]["param_groups"]})
    return state


def save_final(out: Path, model: torch.nn.Module, meta: dict[str, Any]) -> Path:
    """DIR/final/model.safetensors and spec/config JSON, written atomically."""
    final = out / "final"
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".final."))
    save_model(model, str(tmp / "model.safetensors"))
    atomic_write_json(tmp / "meta.json", meta)
    for file in tmp.iterdir():
        _fsync(file)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync(out)
    return final
