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
prompt: 1024                    # typical prompt tokens
gen: 256                        # typical generated tokens
task_mix: {reasoning: 0.3, knowledge: 0.3, multilingual: 0.2, code: 0.2}   # non-negative, normalised
training: fine-tune             # "scratch" or "fine-tune"
train_tokens: 2.0e9             # optional; default 1e12 from scratch, 2e9 fine-tuning
quality_floor_b: 25             # optional; smallest acceptable dense-equivalent size, billions of parameters
candidates: [mixtral-8x7b, llama-3-70b, mistral-7b]   # presets or config.json paths; >= 1
dtype: bf16                     # optional; weight dtype
```

Unknown keys are errors (a typo must not silently fall back to a default); every error names its field.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from moelab.errors import MoelabError

TASKS = ("reasoning", "knowledge", "multilingual", "code")
TRAINING = ("scratch", "fine-tune")
DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
DEFAULT_TRAIN_TOKENS = {"scratch": 1e12, "fine-tune": 2e9}
FIELDS = ("name", "hardware", "gpus", "memory_budget_gb", "latency_p99_ms", "throughput_tokens_per_s", "batch",
          "batches", "prompt", "gen", "task_mix", "training", "train_tokens", "quality_floor_b", "candidates",
          "dtype")
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
    name: str = "workload"
    source: str = field(default="<default>", compare=False)

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
    path = Path(path)
    if not path.is_file():
        raise MoelabError(f"workload file {str(path)!r} not found")
    try:
        import yaml

        raw = yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise MoelabError(f"{path}: not a text file") from None
    except Exception as e:  # noqa: BLE001 - any parse failure is the user's file
        raise MoelabError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    return workload_from_dict(raw, path.name, base=path.parent)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def workload_from_dict(raw: Any, source: str = "workload", base: Path | None = None) -> Workload:
    """Validate a parsed workload mapping. `base` resolves relative hardware and candidate paths."""
    if not isinstance(raw, dict):
        raise MoelabError(f"{source}: expected a mapping of fields ({', '.join(REQUIRED)}), got {type(raw).__name__}")

    def fail(key: str, what: str, value: Any) -> MoelabError:
        return MoelabError(f"{source}: {key} must be {what}, got {value!r}")

    unknown = [str(k) for k in raw if k not in FIELDS]
    if unknown:
        raise MoelabError(f"{source}: unknown field(s) {', '.join(sorted(unknown))} (fields: {', '.join(FIELDS)})")
    missing = [k for k in REQUIRED if raw.get(k) is None]
    if missing:
        raise MoelabError(f"{source}: missing field(s) {', '.join(missing)}")

    def integer(key: str, minimum: int = 1) -> int:
        value = raw[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise fail(key, f"an integer >= {minimum}", value)
        return value

    def number(key: str, positive: bool = True) -> float:
        value = raw[key]
        if not _is_number(value) or value < 0 or (positive and value == 0):
            raise fail(key, "a positive number" if positive else "a non-negative number", value)
        return float(value)

    from moelab.spec.hardware import load_hardware

    hw_name = raw["hardware"]
    if not isinstance(hw_name, str) or not hw_name:
        raise fail("hardware", "a hardware preset name or file path", hw_name)
    if base is not None and (base / hw_name).is_file():
        hw_name = str(base / hw_name)
    try:
        hw = load_hardware(hw_name)
    except MoelabError as e:
        raise MoelabError(f"{source}: hardware: {e}") from None
    gpus = integer("gpus")
    budget = number("memory_budget_gb") if raw.get("memory_budget_gb") is not None else gpus * hw.memory_bytes / 1e9

    mix_raw = raw["task_mix"]
    if not isinstance(mix_raw, dict) or not mix_raw:
        raise fail("task_mix", f"a mapping of {', '.join(TASKS)} to shares", mix_raw)
    for key, value in mix_raw.items():
        if key not in TASKS:
            raise MoelabError(f"{source}: task_mix.{key} is not a task (tasks: {', '.join(TASKS)})")
        if not _is_number(value) or value < 0:
            raise fail(f"task_mix.{key}", "a non-negative number", value)
    total = sum(float(v) for v in mix_raw.values())
    if total <= 0:
        raise fail("task_mix", "shares with a positive sum", mix_raw)
    mix = {t: float(mix_raw.get(t, 0.0)) / total for t in TASKS}

    training = raw["training"]
    if training not in TRAINING:
        raise fail("training", f"one of {', '.join(TRAINING)}", training)

    cands = raw["candidates"]
    if isinstance(cands, str):
        cands = [cands]
    if not isinstance(cands, list) or not cands:
        raise fail("candidates", "a non-empty list of model presets or config.json paths", cands)
    from moelab.spec.presets import load_model

    resolved = []
    for i, c in enumerate(cands):
        if not isinstance(c, str) or not c:
            raise fail(f"candidates[{i}]", "a model preset name or config.json path", c)
        if base is not None and (base / c).exists():
            c = str(base / c)
        try:
            load_model(c)
        except MoelabError as e:
            raise MoelabError(f"{source}: candidates[{i}]: {e}") from None
        resolved.append(c)
    if len(set(resolved)) != len(resolved):
        raise fail("candidates", "a list without repeats", cands)

    batches = DEFAULT_BATCHES
    if raw.get("batches") is not None:
        b = raw["batches"]
        if not isinstance(b, list) or not b or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1
                                                       for x in b):
            raise fail("batches", "a non-empty list of positive integers", b)
        batches = tuple(sorted(set(b)))

    from moelab.cost.dtypes import WEIGHT_BYTES

    dtype = raw.get("dtype", "bf16")
    if dtype not in WEIGHT_BYTES:
        raise fail("dtype", f"one of {', '.join(WEIGHT_BYTES)}", dtype)
    name = raw.get("name", Path(source).stem if source else "workload")
    if not isinstance(name, str):
        raise fail("name", "a string", name)
    return Workload(
        hardware=hw_name,
        gpus=gpus,
        memory_budget_gb=budget,
        latency_p99_ms=number("latency_p99_ms"),
        batch=integer("batch"),
        prompt=integer("prompt"),
        gen=integer("gen"),
        task_mix=mix,
        training=training,
        candidates=tuple(resolved),
        throughput_tokens_per_s=number("throughput_tokens_per_s", positive=False)
        if raw.get("throughput_tokens_per_s") is not None else None,
        batches=batches,
        train_tokens=number("train_tokens") if raw.get("train_tokens") is not None
        else DEFAULT_TRAIN_TOKENS[training],
        quality_floor_b=number("quality_floor_b", positive=False) if raw.get("quality_floor_b") is not None else 0.0,
        dtype=dtype,
        name=name,
        source=source,
    )
