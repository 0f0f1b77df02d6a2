"""The `moelab fit` manifest's model: which result files to fit, and the setting each was measured in.

Result files do not say what they ran (a `vllm bench serve` JSON names the model id, not its plan or dtype), so
each entry says it. A manifest is a YAML or JSON mapping with one key, `entries`:

    entries:
      - file: runs/llama70b-tp4-c64.json   # relative to the manifest's folder
        format: vllm                       # `vllm bench serve --save-result` JSON (bench.results.read_vllm_serve)
        model: llama-3-70b                 # preset, config.json path (relative to the manifest) or HF id
        plan: tp4
        dtype: fp8
        kv_dtype: fp8                      # default: dtype
        input: 1000                        # tokens per request (default: the file's mean)
        output: 1000
        concurrency: 64                    # default: the file's max_concurrency
        mode: serving                      # vllm default: serving (offline when the file had no concurrency cap)
      - file: bench.json
        format: moelab                     # `moelab bench --json` output: static batches, plan tp1
        model: tiny-moe

Unknown keys are errors naming the closest known one (schema.base).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from moelab.cost.dtypes import KV_BYTES, WEIGHT_BYTES
from moelab.cost.measurement import METRICS, MODES
from moelab.limits import MAX_BATCH, MAX_TOKENS
from moelab.schema.base import StrictModel

MAX_ENTRIES = 10_000
MAX_PATH_CHARS = 4096

WeightDtype = Literal[tuple(WEIGHT_BYTES)]  # type: ignore[valid-type]
KvDtype = Literal[tuple(KV_BYTES)]  # type: ignore[valid-type]
Metric = Literal[METRICS]  # type: ignore[valid-type]
Mode = Literal[MODES]  # type: ignore[valid-type]
Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PATH_CHARS)]
Tokens = Annotated[int, Field(ge=1, le=MAX_TOKENS)]


class ManifestEntry(StrictModel):
    """One result file and the setting it was measured in."""

    file: Text = Field(description="The result file, relative to the manifest's folder.")
    format: Literal["vllm", "moelab"] = Field(
        description="vllm: `vllm bench serve --save-result` JSON (one run, or one per line with --append-result); "
                    "moelab: `moelab bench --json` output.")
    model: Text = Field(description="Preset name, config.json path (relative to the manifest) or HF id.")
    plan: Text | None = Field(None, description="Parallel plan, e.g. tp4, ep8, tp2x4 (vllm: required; moelab: tp1).")
    dtype: WeightDtype | None = Field(None, description="Weight dtype (vllm: required; moelab: the file's).")
    kv_dtype: KvDtype | None = Field(None, description="KV cache dtype (default: dtype).")
    input: Tokens | None = Field(None, description="Prompt tokens per request (default: the file's).")
    output: Tokens | None = Field(None, description="Output tokens per request (default: the file's).")
    concurrency: Annotated[int, Field(ge=1, le=MAX_BATCH)] | None = Field(
        None, description="vllm: requests in flight (default: the file's max_concurrency).")
    mode: Mode | None = Field(None, description="static, serving or offline (vllm default: serving; moelab: "
                                                "static).")
    metrics: list[Metric] | None = Field(None, min_length=1, description="Figures to fit (vllm default: ttft_ms, "
                                                                       "tpot_ms, output_tokens_per_second).")
    statistic: Literal["mean", "median"] | None = Field(None, description="vllm: mean (default) or median.")
    bench_model: Text | None = Field(None, description="moelab: whose rows, in a file of several models (its "
                                                       "name in the rows).")

    @model_validator(mode="after")
    def _by_format(self) -> ManifestEntry:
        if self.format == "vllm":
            missing = [k for k in ("plan", "dtype") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"a vllm result file does not say its {' or '.join(missing)}: give "
                                 f"{' and '.join(missing)}")
            if self.bench_model is not None:
                raise ValueError("bench_model names rows of a moelab bench file, not of a vllm result")
        else:
            for key in ("concurrency", "statistic"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key} does not apply to a moelab bench file (static batches, medians)")
            if self.mode not in (None, "static"):
                raise ValueError("a moelab bench file holds static batches: mode must be static")
            if self.metrics and set(self.metrics) - {"ttft_ms", "tpot_ms"}:
                raise ValueError("a moelab bench file has ttft_ms (prefill) and tpot_ms (decode) only")
        return self


class Manifest(StrictModel):
    """The result files `moelab fit` fits, each with its setting."""

    entries: list[ManifestEntry] = Field(min_length=1, max_length=MAX_ENTRIES,
                                         description="Result files and their settings.")
