"""Transformed runs: read the run a transform starts from, and write its result as a run folder.

A transform's output is a run folder like `moelab train`'s: DIR/final/{model.safetensors, meta.json,
tokenizer.json} (atomic, as train.checkpoint.save_final writes it) and DIR/summary.json, so that `bench`,
`serve-bench`, `export` and `train --init-from` take it. meta.json keeps the source run's config (its corpus and
vocabulary) and gains:
- "lineage": the source's lineage plus one entry for this transform ({"transform", "from", ...its parameters});
- "quantization": where the weights are quantized (moelab.mitigate.quantize), absent otherwise.

Everything is checked before anything is written: `check_out` refuses a folder that already holds a run, and
nothing is created until the caller writes (`write_run`).
"""

from __future__ import annotations

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
        return self.meta.get("quantization") or None

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
    return SourceRun(folder=folder, spec=spec, meta=meta)


def check_out(out: str | Path, source: Path | None = None) -> Path:
    """`out` as a folder a transform may write (missing or empty; not the source run), checked before any work.
    Nothing is created here."""
    if not str(out).strip():
        raise MoelabError("--out must name a folder")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise MoelabError(f"--out {out}: exists and is not a folder")
    if path.is_dir() and any(path.iterdir()):
        raise MoelabError(f"--out {out}: is not empty; a transform writes a new run folder (choose another --out)")
    if source is not None and path.resolve() in (source.resolve(), source.resolve().parent):
        raise MoelabError(f"--out {out}: is the source run; a transform writes a new run folder")
    return path


def lineage_entry(transform: str, source: SourceRun, **params: Any) -> dict:
    """One lineage step: the transform, the run it read (the run folder, not its final/) and its parameters."""
    run = source.folder.parent if source.folder.name == "final" else source.folder
    return {"transform": transform, "from": str(run.resolve()), "from_model": source.spec.name,
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
