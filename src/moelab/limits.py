"""Documented upper bounds for every number a user gives moelab, in flags and in files.

Every number must be finite and at most its bound here; the bounds sit far above any real use (the largest
clusters, batches, contexts and training runs of today) and far below where arithmetic stops being exact or
fast (2**53 for floats holding integers, Python ints that grow without limit, loops over a count). The CLI's
options and the validation models of user files import them from here, so that one bound holds everywhere.
"""

from __future__ import annotations

import math

from moelab.errors import MoelabError
from moelab.validation import show_value

# --- the serving / cost model: `estimate`, `compare`, workloads ---
MAX_GPUS = 1_048_576  # 2**20 GPUs: ten times the largest clusters built so far
MAX_BATCH = 1_048_576  # concurrent sequences in one decode step
MAX_TOKENS = 16_777_216  # 2**24 prompt or generated tokens per sequence (the longest contexts are ~10M)
MAX_TRAIN_TOKENS = 1e17  # tokens to price; the largest published runs are ~4e13
MAX_SKEW = 10.0  # Zipf exponent of expert load: at 10 the top expert already takes >99.9% of the load
MAX_EXPERTS = 65_536  # experts per layer, for --as-moe and --fine-grained
MAX_SWEEP = 64  # batch sizes in one sweep (--batches, a workload's batches): each a full evaluation per model

# --- model configs (config.json, moelab specs): real models sit orders of magnitude below each ---
MAX_VOCAB = 16_777_216  # 2**24 tokens (the largest vocabularies are ~256K)
MAX_WIDTH = 1_048_576  # d_model, head_dim, LoRA ranks (the widest models are ~18K)
MAX_FFN = 67_108_864  # FFN / expert width (the widest real ones ~53K; dense equivalents of 1T MoEs ~8M)
MAX_HEADS = 65_536  # attention or KV heads (the most are 128)
MAX_LAYERS = 16_384  # layers (the deepest are ~126)
MAX_POSITIONS = 1_073_741_824  # 2**30 max positions / sliding window (the longest contexts are ~10M)
MAX_ROPE_THETA = 1e12  # RoPE base (the largest are ~1e8)
MAX_ROPE_FACTOR = 1e4  # RoPE scaling factor (YaRN uses up to ~40)
MAX_NORM_EPS = 1.0  # RMSNorm epsilon, in (0, 1]
MAX_ROUTER_SCALE = 1e3  # routed_scaling_factor (DeepSeek-V3 uses 2.5)
MAX_SOFTCAP = 1e6  # soft caps, softmax scales, clips and multipliers (Gemma 2 caps logits at 30, Granite ~1/64..12)

# --- measurement on this machine: `bench`, `calibrate` ---
MAX_BENCH_BATCH = 65_536  # sequences per bench batch (the memory guard refuses most of these anyway)
MAX_BENCH_TOKENS = 1_048_576  # prompt or generated tokens per bench sequence (also bounded by the model)
MAX_REPEATS = 10_000  # rounds of prefill + decode per batch size

# --- training: `train`, `train-compare` ---
MAX_SEED = 2**32 - 1  # an unsigned 32-bit seed: what torch, numpy and random all take, with room to mix
MAX_STEPS = 100_000_000
MAX_SEQ_LEN = 1_048_576
MAX_TRAIN_BATCH = 1_048_576


def _bound(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def number_problem(value: object, low: float | None = None, high: float | None = None,
                   low_open: bool = False) -> str | None:
    """Why `value` is not a finite number in [low, high] ((low, high] when `low_open`), or None if it is: the
    one rule behind check_finite, the spec's own checks and the config.json reader (spec.hf)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number, got {show_value(value)}"
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and value > high
    if not (below or above or (isinstance(value, float) and not math.isfinite(value))):
        return None
    got = f", got {show_value(value)}"
    if low is not None and high is not None:
        return f"must be a finite number in {'(' if low_open else '['}{_bound(low)}, {_bound(high)}]{got}"
    if below:
        return f"must be {'above' if low_open else 'at least'} {_bound(low)}{got}"
    if above:
        return f"must be at most {_bound(high)}{got}"
    return f"must be a finite number{got}"


def check_finite(name: str, value: float, low: float | None = None, high: float | None = None) -> float:
    """`value` if it is a finite number within [low, high], else a one-line MoelabError naming `name`."""
    problem = number_problem(value, low, high)
    if problem:
        raise MoelabError(f"{name} {problem}")
    return value
