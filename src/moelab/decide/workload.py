"""The workload file: what a team needs served or trained, validated field by field into one frozen dataclass.

```yaml
name: chat-assistant            # optional, free text
hardware: H100-SXM              # a hardware preset, or a YAML/JSON hardware file (relative to this file)
gpus: 8                         # GPUs available to the deployment
memory_budget_gb: 640           # optional; default gpus x the GPU's memory
latency_p99_ms: 50              # per output token, p99
throughput_tokens_per_s: 3000   # optional; generated tokens/s the whole deployment must sustain
batch: 32                       # typical concurrent sequences per decode step (per serving replica)
batches: [1, 8, 32, 128, 512]   # optional; the batch sweep for crossover questions
concurrency: 64                 # optional; requests in flight over all the GPUs (continuous batching), default batch
ttft_ms: 500                    # optional; limit on the modelled mean time to first token at that concurrency
tpot_ms: 40                     # optional; limit on the modelled mean time per output token at that concurrency
prompt: 1024                    # typical prompt tokens
gen: 256                        # typical generated tokens
task_mix: {reasoning: 0.3, knowledge: 0.3, multilingual: 0.2, code: 0.2}   # non-negative, normalised
training: fine-tune             # "scratch" or "fine-tune"
train_tokens: 2.0e9             # optional; default 1e12 from scratch, 2e9 fine-tuning
quality_floor_b: 25             # optional; smallest acceptable dense-equivalent size, billions of parameters
candidates: [mixtral-8x7b, llama-3-70b, mistral-7b]   # presets or config.json paths; >= 1
dtype: bf16                     # optional; weight dtype
```

Unknown keys are errors, with the closest known key suggested (a typo must not silently fall back to a
default); numbers are finite and bounded; every error names its field, and all of a file's errors (the
hardware and candidates that do not load among them) come on one line. The checks are the pydantic model
moelab.schema.workload.WorkloadFile; `moelab schema workload` prints its JSON Schema for editors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from moelab.errors import MoelabError

TASKS = ("reasoning", "knowledge", "multilingual", "code")
TRAINING = ("scratch", "fine-tune")
DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
DEFAULT_TRAIN_TOKENS = {"scratch": 1e12, "fine-tune": 2e9}
FIELDS = ("name", "hardware", "gpus", "memory_budget_gb", "latency_p99_ms", "throughput_tokens_per_s", "batch",
          "batches", "concurrency", "ttft_ms", "tpot_ms", "prompt", "gen", "task_mix", "training", "train_tokens",
          "quality_floor_b", "candidates", "dtype")
REQUIRED = ("hardware", "gpus", "latency_p99_ms", "batch", "prompt", "gen", "task_mix", "training", "candidates")


@dataclass(frozen=True)
class Workload:
    """A validated workload. `task_mix` is normalised to sum to 1; `memory_budget_gb` is resolved."""

    hardware: str
    gpus: int
    memory_budget_gb: float
    latency_p99_ms: float
    batch: int
    prompt: int
    gen: int
    task_mix: dict[str, float]
    training: str
    candidates: tuple[str, ...]
    throughput_tokens_per_s: float | None = None
    batches: tuple[int, ...] = DEFAULT_BATCHES
    train_tokens: float = 2e9
    quality_floor_b: float = 0.0
    dtype: str = "bf16"
    concurrency: int | None = None  # serving load for the ttft_ms / tpot_ms limits (None: batch, when a limit is set)
    ttft_ms: float | None = None  # limit on the modelled mean TTFT at that concurrency
    tpot_ms: float | None = None  # limit on the modelled mean TPOT (inter-token latency) at that concurrency
    name: str = "workload"
    source: str = field(default="<default>", compare=False)

    @property
    def serving_concurrency(self) -> int | None:
        """The concurrency the serving limits are checked at: `concurrency`, else `batch` when only a latency
        limit is given; None when the file has none of concurrency, ttft_ms, tpot_ms (decide as before)."""
        if self.concurrency is None and self.ttft_ms is None and self.tpot_ms is None:
            return None
        return self.concurrency or self.batch

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["candidates"] = list(self.candidates)
        out["batches"] = list(self.batches)
        return out


# The default: an interactive chat assistant on one 8 x H100-SXM node.
# - batch 32, prompt 1024, gen 256: a busy chat replica with retrieval-sized prompts and paragraph answers;
# - p99 50 ms per output token: 20 tokens/s per user, faster than people read;
# - 3000 tokens/s for the node: about 100 concurrent users at 30 tokens/s each;
# - mixed tasks leaning on knowledge (assistants answer questions more than they prove theorems);
# - fine-tuned from a pretrained checkpoint on 2B tokens (instruction data), never pretrained here;
# - quality floor 25B dense-equivalent: the class of Llama-3-70B / Mixtral-8x7B, not a 7B model;
# - the candidates the seeds discuss: Mixtral-8x7B vs Mistral-7B and Llama-3-70B, Qwen3-235B-A22B and
#   DeepSeek-V3 vs Llama-3-70B.
DEFAULT = {
    "name": "chat-assistant (default)",
    "hardware": "H100-SXM",
    "gpus": 8,
    "latency_p99_ms": 50,
    "throughput_tokens_per_s": 3000,
    "batch": 32,
    "prompt": 1024,
    "gen": 256,
    "task_mix": {"reasoning": 0.25, "knowledge": 0.35, "multilingual": 0.15, "code": 0.25},
    "training": "fine-tune",
    "train_tokens": 2e9,
    "quality_floor_b": 25,
    "candidates": ["mixtral-8x7b", "llama-3-70b", "mistral-7b", "qwen3-235b-a22b", "deepseek-v3"],
    "dtype": "bf16",
}


def default_workload() -> Workload:
    """The embedded default workload (see DEFAULT for what each value stands for)."""
    return workload_from_dict(DEFAULT, "<default workload>")


def load_workload(path: str | Path) -> Workload:
    """Read and validate a YAML (or JSON) workload file; any problem is one MoelabError line."""
    from moelab.userfile import load_user_file

    path = Path(path)
    raw = load_user_file(path, "workload file")
    return workload_from_dict(raw, path.name, base=path.parent)


def workload_from_dict(raw: Any, source: str = "workload", base: Path | None = None) -> Workload:
    """Validate a parsed workload mapping. `base` resolves relative hardware and candidate paths.

    The fields are checked by moelab.schema.workload; the hardware and each candidate are then loaded, and
    every failure of either kind is reported together, on one line."""
    if not isinstance(raw, dict):
        got = "an empty file" if raw is None else type(raw).__name__
        raise MoelabError(f"{source}: expected a mapping of fields ({', '.join(REQUIRED)}), got {got}")
    from moelab.schema.base import check
    from moelab.schema.workload import WorkloadFile
    from moelab.validation import format_errors

    model, errors = check(WorkloadFile, raw)
    hw_name, hw = _hardware(raw.get("hardware"), base, errors)
    candidates = _candidates(raw.get("candidates"), base, errors)
    if errors or model is None:
        raise MoelabError(format_errors(source, errors))
    shares = {task: getattr(model.task_mix, task) or 0.0 for task in TASKS}
    total = sum(shares.values())
    budget = model.memory_budget_gb if model.memory_budget_gb is not None else model.gpus * hw.memory_bytes / 1e9
    return Workload(
        hardware=hw_name,
        gpus=model.gpus,
        memory_budget_gb=float(budget),
        latency_p99_ms=float(model.latency_p99_ms),
        batch=model.batch,
        prompt=model.prompt,
        gen=model.gen,
        task_mix={task: share / total for task, share in shares.items()},
        training=model.training,
        candidates=tuple(candidates),
        throughput_tokens_per_s=None if model.throughput_tokens_per_s is None
        else float(model.throughput_tokens_per_s),
        batches=DEFAULT_BATCHES if model.batches is None else tuple(sorted(set(model.batches))),
        train_tokens=DEFAULT_TRAIN_TOKENS[model.training] if model.train_tokens is None
        else float(model.train_tokens),
        quality_floor_b=float(model.quality_floor_b or 0.0),
        dtype=model.dtype or "bf16",
        concurrency=model.concurrency,
        ttft_ms=None if model.ttft_ms is None else float(model.ttft_ms),
        tpot_ms=None if model.tpot_ms is None else float(model.tpot_ms),
        name=model.name if model.name is not None else (Path(source).stem if source else "workload"),
        source=source,
    )


def _loadable_name(value: Any) -> bool:
    """A value worth trying as a preset name or path (the model reports every other kind)."""
    from moelab.schema.workload import MAX_PATH_CHARS

    return isinstance(value, str) and 0 < len(value) <= MAX_PATH_CHARS


def _beside(name: str, base: Path | None, exists=Path.is_file) -> str:
    """`name` resolved from the workload file's folder when a file of that name is there."""
    return str(base / name) if base is not None and exists(base / name) else name


def _hardware(name: Any, base: Path | None, errors: list[str]) -> tuple[str, Any]:
    """(resolved name, HardwareSpec) of the workload's hardware; a failure is appended to `errors`."""
    from moelab.spec.hardware import load_hardware

    if not _loadable_name(name):
        return "", None
    name = _beside(name, base)
    try:
        return name, load_hardware(name)
    except MoelabError as e:
        errors.append(f"hardware ({e})")
        return name, None


def _candidates(names: Any, base: Path | None, errors: list[str]) -> list[str]:
    """The candidates, resolved from the workload's folder; each one that does not load is appended to `errors`."""
    from moelab.schema.workload import MAX_CANDIDATES
    from moelab.spec.presets import load_model

    names = [names] if isinstance(names, str) else names
    if not isinstance(names, list) or len(names) > MAX_CANDIDATES:
        return []
    resolved = []
    for i, name in enumerate(names):
        if not _loadable_name(name):
            continue
        name = _beside(name, base, Path.exists)
        try:
            load_model(name)
        except MoelabError as e:
            errors.append(f"candidates[{i}] ({e})")
        resolved.append(name)
    return resolved
