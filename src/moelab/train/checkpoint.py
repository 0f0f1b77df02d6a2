"""Checkpoints: DIR/ckpt-STEP/ with model and optimizer as safetensors and the run state as JSON.

A checkpoint is written into a temporary sibling folder, every file fsynced, then renamed into place, so a
run killed at any moment leaves either the complete checkpoint or none; an old one is renamed aside before
it is deleted. A checkpoint damaged afterwards (truncated tensors, a state file missing a key) is "not
intact": `resume` falls back to the newest intact one. Nothing is ever unpickled.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

from moelab.data.cache import atomic_write_json
from moelab.errors import MoelabError
from moelab.outfile import FILE_MODE
from moelab.train.faults import fault_point

PREFIX = "ckpt-"
_UMASK = 0o666 & ~FILE_MODE  # this process's umask (its write bits; read once by moelab.outfile)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _new_folder(out: Path, prefix: str) -> Path:
    """A temporary folder in `out` with the permissions a plain mkdir gives (mkdtemp makes it 0700)."""
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=prefix))
    tmp.chmod(0o777 & ~_UMASK)
    return tmp


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors = {f"state.{index}.{key}": value.detach().clone().contiguous()
               for index, slots in state["state"].items() for key, value in slots.items()
               if isinstance(value, torch.Tensor)}
    return tensors, {"param_groups": state["param_groups"]}


def _written(save, *args) -> None:
    """A safetensors write; its I/O failures (a full disk) surface as OSError, like every other write."""
    try:
        save(*args)
    except SafetensorError as e:
        found = re.search(r"os error (\d+)", str(e))
        if "I/O error" not in str(e) and not found:
            raise
        code = int(found.group(1)) if found else errno.EIO
        raise OSError(code, os.strerror(code), str(args[-1])) from None


def save_checkpoint(out: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict[str, Any], keep_last: int) -> Path:
    """Write DIR/ckpt-STEP atomically, then delete all but the newest `keep_last` checkpoints."""

    def write(tmp: Path) -> None:
        _written(save_model, model, str(tmp / "model.safetensors"))
        tensors, groups = _optimizer_tensors(optimizer)
        tensors["rng.torch"] = torch.get_rng_state()
        _written(save_file, tensors, str(tmp / "optimizer.safetensors"))
        fault_point("ckpt-tensors")
        atomic_write_json(tmp / "state.json", {**state, "step": step, "optimizer": groups})

    final = _publish(out, f"{PREFIX}{step}", write, "ckpt-rename")
    fault_point("ckpt-renamed")
    for old in checkpoints(out)[:-keep_last] if keep_last > 0 else []:
        _remove(old)
    return final


def _publish(out: Path, name: str, write, point: str) -> Path:
    """write(tmp) into a fresh hidden folder of `out`, fsync its files, then rename it onto out/name (an older
    one moved aside first): readers see a whole folder or none. `point` is the fault point before the rename."""
    final = out / name
    tmp = _new_folder(out, f".{name}.")
    try:
        write(tmp)
        for file in tmp.iterdir():
            _fsync(file)
        fault_point(point)
        if final.exists():
            _remove(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync(out)
    return final


def _remove(folder: Path) -> None:
    """Delete a checkpoint folder: first renamed aside (a kill mid-deletion leaves no half checkpoint under its
    name; the next run removes the hidden remains), then deleted."""
    aside = folder.with_name(f".{folder.name}.deleting")
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(folder, aside)
    fault_point("ckpt-prune")
    shutil.rmtree(aside, ignore_errors=True)


def checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints in `out`, oldest first."""
    found = [p for p in out.glob(f"{PREFIX}*") if p.is_dir() and p.name[len(PREFIX):].isdigit()
             and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


class NotIntact(MoelabError):
    """A checkpoint that cannot be read back whole (truncated, corrupt, or missing a part)."""


# What reading a damaged checkpoint raises: I/O, bad JSON or UTF-8, truncated safetensors, missing keys,
# tensors of the wrong shape for the model or the optimizer.
_DAMAGE = (OSError, ValueError, KeyError, TypeError, IndexError, RuntimeError, AttributeError, SafetensorError)


def _why(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def read_state(path: Path) -> dict[str, Any]:
    """The run state of checkpoint `path` (state.json), checked for the keys resuming needs."""
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        if not isinstance(state, dict):
            raise TypeError("state.json is not an object")
        for key in ("step", "config", "spec", "optimizer"):
            if key not in state:
                raise KeyError(f"state.json has no {key!r}")
        if not isinstance(state["step"], int) or not isinstance(state["optimizer"].get("param_groups"), list):
            raise TypeError("state.json: bad step or optimizer param_groups")
        if path.name.startswith(PREFIX) and path.name[len(PREFIX):] != str(state["step"]):
            raise ValueError(f"state.json is of step {state['step']}")
    except _DAMAGE as e:
        raise NotIntact(f"{path}: not intact ({_why(e)})") from None
    return state


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model, optimizer and the torch RNG from `path`; return the saved run state. Raises NotIntact
    (model and optimizer then hold an unspecified mix: load another checkpoint into them or discard them)."""
    state = read_state(path)
    try:
        tensors = load_file(str(path / "optimizer.safetensors"))
        rng = tensors.pop("rng.torch")
        slots: dict[int, dict[str, torch.Tensor]] = {}
        for name, value in tensors.items():
            _, index, key = name.split(".", 2)
            slots.setdefault(int(index), {})[key] = value
        load_model(model, str(path / "model.safetensors"), strict=True)
        optimizer.load_state_dict({"state": slots, "param_groups": state["optimizer"]["param_groups"]})
        torch.set_rng_state(rng)
    except _DAMAGE as e:
        raise NotIntact(f"{path}: not intact ({_why(e)})") from None
    return state


def save_final(out: Path, model: torch.nn.Module, meta: dict[str, Any], tokenizer_json: str | None = None) -> Path:
    """DIR/final/model.safetensors, spec/config JSON and the run's tokenizer (tokenizers JSON, what `moelab
    export` hands to a serving engine), written atomically."""

    def write(tmp: Path) -> None:
        _written(save_model, model, str(tmp / "model.safetensors"))
        atomic_write_json(tmp / "meta.json", meta)
        if tokenizer_json is not None:
            (tmp / "tokenizer.json").write_text(tokenizer_json)

    return _publish(out, "final", write, "final-rename")
