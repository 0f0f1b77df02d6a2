"""The engine side of the claims table: the seeds' models and test setups as moelab specs, hardware presets and
workloads, and the few engine calls the checkers share. What a seed states is parsed from its text (the setup
quotes are checked against the seed by the tests); what it leaves out is assumed here, once, and said so.

- The seeds' "Dense 7B" is Mistral-7B (preset mistral-7b, 7.24B parameters, fp16 14.5 GB).
- The seeds' "MoE 56B (8 experts × 7B each), K=2" is Mistral-7B with its FFN made 8 experts, top-2
  (spec.transform.as_moe, `--as-moe 8x2`): the shape of Mixtral-8x7B, with the same 46.7B total and 12.9B active
  parameters. An MoE of 7B models' FFNs shares their attention and embeddings, so it is not 8 x 7B.
- Lengths the seed never gives: a 512-token prompt and 256 generated tokens (mean decode context 640).
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache

from moelab.claims.registry import setup_quote
from moelab.claims.rules import quoted
from moelab.cost.estimate import resolve_gpus
from moelab.cost.parallel import PlanResult, best_plan, evaluate, plans
from moelab.cost.plan import Plan
from moelab.cost.roofline import Workload
from moelab.spec import load_hardware, load_model
from moelab.spec.hardware import HardwareSpec
from moelab.spec.model import ModelSpec
from moelab.spec.transform import as_moe

PROMPT, GEN = 512, 256  # assumed: neither seed states its lengths
LENGTHS = f"{PROMPT} + {GEN} tokens"

# Seed 001's test setups (Inference Performance, Training Performance).
MOE_SETUP = setup_quote("001", "MoE model: 56B total parameters (8 experts × 7B each), K=2 active")
LATENCY_SETUP = setup_quote("001", "Single GPU (A100 80GB)")
LATENCY_BATCH = quoted("1", setup_quote("001", "Batch size: 1 (latency-optimized)"))
THROUGHPUT_BATCH = quoted("32", setup_quote("001", "Batch size: 32 (throughput-optimized)"))
THROUGHPUT_GPUS = quoted("4", setup_quote("001", "Multiple GPUs: 4x A100"))
TRAIN_GPUS = quoted("64", setup_quote("001", "Same hardware (64x A100)"))
TRAIN_TOKENS_B = quoted("100B", setup_quote("001", "Same dataset (C4, 100B tokens)"))
A100 = "A100-80GB"  # the seeds' A100 80GB
H100 = "H100-SXM"  # seed 000 names no GPU: the study's default deployment GPU
SEEDS_DTYPE = "fp16"  # seed 001's tables hold 16-bit weights (14 GB for 7B)


@cache
def model(name: str) -> ModelSpec:
    return load_model(name)


@cache
def hardware(name: str) -> HardwareSpec:
    return load_hardware(name)


def seeds_dense() -> ModelSpec:
    """The seeds' Dense 7B."""
    return model("mistral-7b")


@cache
def seeds_moe() -> ModelSpec:
    """The seeds' MoE 56B (K=2): Mistral-7B's FFN as E experts, top-K, E and K read from the setup quote."""
    experts = quoted("8 experts", MOE_SETUP)
    top_k = quoted("K=2", MOE_SETUP)
    return as_moe(seeds_dense(), int(experts), int(top_k))


def workload(batch: int, plan: str = "tp1", dtype: str = SEEDS_DTYPE, prompt: int = PROMPT,
             gen: int = GEN) -> Workload:
    return Workload(batch=batch, prompt=prompt, gen=gen, dtype=dtype, kv_dtype=dtype, gpus=Plan.parse(plan).gpus,
                    plan=plan)


def on_plan(spec: ModelSpec, hw: HardwareSpec, batch: int, plan: str, dtype: str = SEEDS_DTYPE) -> PlanResult:
    """The engine's figures of one plan (cost.parallel.evaluate)."""
    return evaluate(spec, hw, workload(batch, plan, dtype), Plan.parse(plan))


def fewest(spec: ModelSpec, hw: HardwareSpec, batch: int, dtype: str = SEEDS_DTYPE) -> PlanResult:
    """The best plan on the fewest GPUs (a power of two) that hold the model and the batch (cost.estimate)."""
    wl = resolve_gpus(spec, hw, replace(workload(batch, "tp1", dtype), plan="tp"), None)
    return evaluate(spec, hw, wl, wl.parallel)


def best_on(spec: ModelSpec, hw: HardwareSpec, gpus: int, batch: int, dtype: str = SEEDS_DTYPE) -> PlanResult:
    """The best plan that fits on exactly `gpus` GPUs (cost.parallel.plans)."""
    wl = replace(workload(batch, "tp1", dtype), gpus=gpus, plan="tp")
    return best_plan(plans(spec, hw, wl))
