"""Transformed runs: read the run a transform starts from, and write its result as a run folder.

A transform's output is a run folder like `moelab train`'s: DIR/final/{model.safetensors, meta.json,
tokenizer.json} (atomic, as train.checkpoint.save_final writes it) and DIR/summary.json, so that `bench`,
`serve-bench`, `export` and `train --init-from` take it. meta.json keeps the source run's config (its corpus and
vocabulary) and gains:
- "lineage": the source's lineage plus one entry for this transform ({"transform", "from", ...its parameters});
- "quantization": where the weights are quantized (moelab.mitigate.quantize), absent otherwise.

Everything is checked before anything is written: `check_out` refuses a folder that already holds a run, lies
inside the source run (or holds it) or cannot be written, and nothing is created until the caller writes
(`write_run`). `read_run` validates what the transforms rely on: the spec and the "quantization" layout.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moelab.errors import MoelabError
from moelab.spec.model import ModelSpec, spec_from_dict, spec_to_dict


@dataclass(frozen=True)
class SourceRun:
    """A moelab run a transform reads: its final/ folder, spec and meta.json."""

    folder: Path  # the run's final/ folder (model.safetensors, meta.json, tokenizer.json)
    spec: ModelSpec
    meta: dict[str, Any] = field(repr=False)

    @property
    def lineage(self) -> list[dict]:
        return list(self.meta.get("lineage") or [])

    @property
    def quantization(self) -> dict | None:
        """The run's quantization layout (validated by read_run: check_quantization), None for a float run."""
        return self.meta.get("quantization") or None

    @property
    def quantized(self) -> str:
        """The quantized components as "name=dtype, ..." ("" for a float run), for a refusal's line."""
        parts = (self.quantization or {}).get("components") or {}
        return ", ".join(f"{k}={v}" for k, v in sorted(parts.items()))

    @property
    def run_folder(self) -> Path:
        """The run folder itself (the folder holding final/, or `folder` when the run is a bare final/)."""
        return self.folder.parent if self.folder.name == "final" else self.folder

    @property
    def config(self) -> dict:
        config = self.meta.get("config")
        return config if isinstance(config, dict) else {}

    def tokenizer_json(self) -> str:
        """The run's tokenizer (its own file, else rebuilt from its corpus config, as export does)."""
        from moelab.serve.export import run_tokenizer_json

        return run_tokenizer_json(self.folder, self.meta)

    def load_model(self, dtype=None):
        """The run's model (moelab.nn, eval mode, float32 unless `dtype`), its weights loaded strictly; a quantized
        run comes back with its quantized experts (dequantized on the fly)."""
        from moelab.bench.models import load_run_weights
        from moelab.nn.model import build_model

        model = build_model(self.spec)
        if self.quantization:
            from moelab.mitigate.quantize import apply_layout

            apply_layout(model, self.quantization)
        load_run_weights(model, self.folder)
        return (model if dtype is None else model.to(dtype)).eval()


def read_run(ref: str | Path, what: str = "RUN") -> SourceRun:
    """The moelab run folder (or its final/) `ref` names; one line for anything else."""
    from moelab.userfile import load_user_file

    path = Path(ref)
    if not path.exists():
        raise MoelabError(f"{what} {ref}: no such run folder")
    for folder in (path / "final", path):
        if (folder / "meta.json").is_file() and (folder / "model.safetensors").is_file():
            break
    else:
        raise MoelabError(f"{what} {ref}: not a moelab run (no final/meta.json and final/model.safetensors; "
                          "train one with moelab train --out)")
    meta = load_user_file(folder / "meta.json", "moelab run metadata")
    try:
        if not isinstance(meta, dict):
            raise TypeError("meta.json is not an object")
        spec = spec_from_dict(meta["spec"])
    except (KeyError, TypeError) as e:
        raise MoelabError(f"{folder / 'meta.json'}: not a moelab run ({e})") from None
    check_quantization(meta.get("quantization"), folder / "meta.json")
    return SourceRun(folder=folder, spec=spec, meta=meta)


def train_config(source: SourceRun, what: str = "RUN"):
    """The source run's training config (train.config.TrainConfig, validated: its corpus, vocabulary, lengths);
    one line for a run without one or with one moelab cannot read."""
    from moelab.train.config import TrainConfig

    raw = source.meta.get("config")
    if not isinstance(raw, dict) or not raw:
        raise MoelabError(f"{what} {source.run_folder}: its meta.json has no training config (no corpus, "
                          "vocabulary or sequence length to measure it on)")
    try:
        return TrainConfig.from_dict(raw)
    except (MoelabError, TypeError) as e:
        raise MoelabError(f"{what} {source.run_folder}: its training config cannot be read ({e})") from None


def check_tokenizer(source: SourceRun, tokenizer_json: str, refusal: str) -> None:
    """The tokenizer rebuilt here (`tokenizer_json`) is the run's own (its tokenizer.json): else one line,
    `refusal` followed by what was compared. The one check both train --init-from and a transform's corpus use."""
    own = source.tokenizer_json()
    if own is not None and own != tokenizer_json:
        config = source.config
        raise MoelabError(f"{refusal}: the run's tokenizer.json differs from the one rebuilt from its config "
                          f"(data {config.get('data') or 'default'}, vocabulary {config.get('vocab_size')}, max "
                          f"bytes per domain {config.get('max_bytes_per_domain')})")


def check_quantization(quantization: Any, where: str | Path) -> dict | None:
    """A run's meta "quantization" checked (None, absent: a float run): {"components": {component: int8|int4},
    "group_size": positive int, "scheme": text}; anything else one line naming `where` (its meta.json)."""
    if quantization is None:
        return None
    from moelab.cost.dtypes import COMPONENTS

    def bad(problem: str) -> MoelabError:
        return MoelabError(f"{where}: not a moelab run (quantization: {problem})")

    if not isinstance(quantization, dict):
        raise bad(f"{quantization!r} is not an object")
    components = quantization.get("components")
    if not isinstance(components, dict) or not components:
        raise bad(f"components {components!r} is not an object naming at least one component")
    for name, dtype in components.items():
        if name not in COMPONENTS:
            raise bad(f"unknown component {name!r} (known: {', '.join(COMPONENTS)})")
        if dtype not in ("int8", "int4"):
            raise bad(f"{name} dtype {dtype!r} is not int8 or int4")
    group = quantization.get("group_size")
    if isinstance(group, bool) or not isinstance(group, int) or group < 1:
        raise bad(f"group_size {group!r} is not a positive integer")
    if not isinstance(quantization.get("scheme", ""), str):
        raise bad(f"scheme {quantization['scheme']!r} is not text")
    return quantization


def check_apart(out: str | Path, run: Path, option: str = "--out", what: str = "the source run") -> None:
    """`out` is neither the run folder `run` nor inside it, and does not hold it (a run written there would
    overwrite, or be mixed with, the run it reads). Paths only: nothing is read or created."""
    path, run = Path(out).resolve(), run.resolve()
    if path == run or path.is_relative_to(run):
        raise MoelabError(f"{option} {out}: is {what} ({run}) or inside it; write to a folder outside it")
    if run.is_relative_to(path):
        raise MoelabError(f"{option} {out}: holds {what} ({run}); write to a folder outside it")


def check_creatable(out: str | Path, option: str = "--out") -> None:
    """`out` (or, when missing, its nearest existing ancestor) is a folder this process can write into."""
    path = Path(out).resolve()
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise MoelabError(f"{option} {out}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise MoelabError(f"{option} {out}: {existing} is not writable by this user; choose another --out")


def check_out(out: str | Path, source: Path | None = None) -> Path:
    """`out` as a folder a transform may write (missing or empty; neither inside the source run nor holding it;
    writable), checked before any work. `source`: the source's final/ folder (or the folder it was read from).
    Nothing is created here."""
    if not str(out).strip():
        raise MoelabError("--out must name a folder")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise MoelabError(f"--out {out}: exists and is not a folder")
    if path.is_dir() and any(path.iterdir()):
        raise MoelabError(f"--out {out}: is not empty; a transform writes a new run folder (choose another --out)")
    if source is not None:  # (a folder holding the source run is not empty: refused above)
        check_apart(out, source.parent if source.name == "final" else source)
    check_creatable(out)
    return path


def lineage_entry(transform: str, source: SourceRun, **params: Any) -> dict:
    """One lineage step: the transform, the run it read (the run folder, not its final/) and its parameters."""
    return {"transform": transform, "from": str(source.run_folder.resolve()), "from_model": source.spec.name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **params}


def write_run(out: str | Path, model, spec: ModelSpec, source: SourceRun, entry: dict,
              summary: dict[str, Any] | None = None, quantization: dict | None = None) -> Path:
    """Write `model` (its state dict, as safetensors) as the run DIR=out: final/ atomically, then summary.json
    (entry, spec name and whatever `summary` adds). Returns DIR/final. Call check_out(out) before any work."""
    from moelab.data.cache import atomic_write_json, check_writable_dir
    from moelab.train.checkpoint import save_final

    folder = check_writable_dir(out, "--out")
    meta = {"spec": spec_to_dict(spec), "config": source.config, "lineage": [*source.lineage, entry],
            "summary": {"model": spec.name, "transform": entry["transform"], **(summary or {})}}
    if quantization:
        meta["quantization"] = quantization
    final = save_final(folder, model, meta, source.tokenizer_json())
    atomic_write_json(folder / "summary.json", meta["summary"] | {"lineage": meta["lineage"]})
    return final
