"""The workload file's model (fields as decide.workload documents them): types, bounds and unknown keys.

Whether `hardware` and each of `candidates` name something that loads is checked by decide.workload, which
reports those failures in the same one-line list as the errors found here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator, model_validator

from moelab.cost.dtypes import WEIGHT_BYTES
from moelab.limits import MAX_BATCH, MAX_GPUS, MAX_SWEEP, MAX_TOKENS, MAX_TRAIN_TOKENS
from moelab.schema.base import StrictModel
from moelab.schema.hardware import MAX_MEMORY_GB, MAX_NAME_CHARS

# Upper bounds, each far above a real deployment.
MAX_LATENCY_MS = 3.6e6  # one hour per output token
MAX_THROUGHPUT = 1e12  # generated tokens/s for a whole deployment (today's largest services: ~1e8)
MAX_BUDGET_GB = MAX_MEMORY_GB * MAX_GPUS  # every GPU at the largest memory
MAX_QUALITY_FLOOR_B = 1e6  # a dense-equivalent of a quadrillion parameters
MAX_TASK_SHARE = 1e6  # shares are normalised; the bound keeps their sum finite
MAX_CANDIDATES = 64  # models compared in one decision (each one loaded and priced)
MAX_PATH_CHARS = 4096  # PATH_MAX on Linux

NameOrPath = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PATH_CHARS)]
Share = Annotated[float, Field(ge=0, le=MAX_TASK_SHARE)]
SweepBatch = Annotated[int, Field(ge=1, le=MAX_BATCH)]
WeightDtype = Literal[tuple(WEIGHT_BYTES)]  # type: ignore[valid-type]  # the dtypes the cost model prices


class TaskMix(StrictModel):
    """Shares of the four task types; non-negative, at least one above 0, normalised to sum to 1."""

    reasoning: Share | None = Field(None, description="Maths and multi-step reasoning.")
    knowledge: Share | None = Field(None, description="Factual question answering.")
    multilingual: Share | None = Field(None, description="Languages other than English.")
    code: Share | None = Field(None, description="Writing and reading code.")

    @model_validator(mode="after")
    def _some_share(self) -> TaskMix:
        if not any(getattr(self, task) for task in TaskMix.model_fields):
            raise ValueError("task_mix must give at least one share above 0")
        return self


class WorkloadFile(StrictModel):
    """What a team needs served or trained: the input of `moelab decide` and `moelab study`."""

    name: str | None = Field(None, max_length=MAX_NAME_CHARS, description="Free text (default: the file's name).")
    hardware: NameOrPath = Field(description="A hardware preset, or a YAML/JSON hardware file (relative to the "
                                             "workload file).")
    gpus: int = Field(ge=1, le=MAX_GPUS, description="GPUs available to the deployment.")
    memory_budget_gb: float | None = Field(None, gt=0, le=MAX_BUDGET_GB,
                                    description="Memory the deployment may use, GB (default: gpus x GPU memory).")
    latency_p99_ms: float = Field(gt=0, le=MAX_LATENCY_MS, description="p99 latency per output token, ms.")
    throughput_tokens_per_s: float | None = Field(None, ge=0, le=MAX_THROUGHPUT,
                                           description="Generated tokens/s the whole deployment must sustain.")
    batch: int = Field(ge=1, le=MAX_BATCH, description="Typical concurrent sequences per decode step.")
    concurrency: int | None = Field(None, ge=1, le=MAX_BATCH,
                                    description="Requests in flight over the deployment's GPUs (continuous "
                                                "batching): the serving load ttft_ms and tpot_ms are checked at "
                                                "(default: batch).")
    ttft_ms: float | None = Field(None, gt=0, le=MAX_LATENCY_MS,
                                  description="Limit on the modelled mean time to first token at `concurrency`, ms.")
    tpot_ms: float | None = Field(None, gt=0, le=MAX_LATENCY_MS,
                                  description="Limit on the modelled mean time per output token (inter-token "
                                              "latency) at `concurrency`, ms.")
    batches: list[SweepBatch] | None = Field(None, min_length=1, max_length=MAX_SWEEP,
                                      description="The batch sweep for crossover questions.")
    prompt: int = Field(ge=1, le=MAX_TOKENS, description="Typical prompt tokens.")
    gen: int = Field(ge=1, le=MAX_TOKENS, description="Typical generated tokens.")
    task_mix: TaskMix = Field(description="Shares of reasoning, knowledge, multilingual and code.")
    training: Literal["scratch", "fine-tune"] = Field(description="Pretrained here, or fine-tuned from a "
                                                                  "checkpoint.")
    train_tokens: float | None = Field(None, gt=0, le=MAX_TRAIN_TOKENS,
                                description="Training tokens (default 1e12 from scratch, 2e9 fine-tuning).")
    quality_floor_b: float | None = Field(None, ge=0, le=MAX_QUALITY_FLOOR_B,
                                   description="Smallest acceptable dense-equivalent size, billions of parameters.")
    candidates: list[NameOrPath] = Field(min_length=1, max_length=MAX_CANDIDATES,
                                         description="Model presets or config.json paths (a single name is a "
                                                     "list of one).")
    dtype: WeightDtype | None = Field(None, description="Weight dtype (default bf16).")

    @field_validator("candidates", mode="before")
    @classmethod
    def _one_name_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("candidates")
    @classmethod
    def _no_repeats(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("must not repeat a model")
        return value
