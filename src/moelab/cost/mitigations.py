"""The engine's frontier-model version of the MoE mitigations, for the study report: quantized experts, offloaded
experts and pruned experts priced on GPU presets, one typed row per variant (every row basis "modelled").

- Mixtral-8x7B on one 48 GB GPU (L40S): bf16 throughout vs int4 routed experts (W4A16, per-group scales) with
  the rest bf16: does it fit, and the decode step at batch 1 and 16.
- DeepSeek-V3 (fp8, its native checkpoint dtype) on one 8-GPU H100 node: the weights do not fit 8 x 80 GB, so the
  experts that do stay resident (cost.offload.max_resident, ep8) and the rest come over each GPU's PCIe Gen5 link
  on a miss (cost.offload.offloaded_decode); beside it the all-resident plan on the fewest GPUs that hold it, and
  the per-miss time beside the seeds' "+10-50 ms per swap".
- Pruning: keep 75% of the routed experts per layer (the spec only: which experts and at what quality loss is
  moelab prune's measurement) and what it saves, for both models.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from moelab.cost.estimate import resolve_gpus
from moelab.cost.memory import model_weight_bytes
from moelab.cost.offload import max_resident, offloaded_decode
from moelab.cost.parallel import evaluate
from moelab.cost.plan import Plan
from moelab.cost.roofline import Workload
from moelab.spec.hardware import HardwareSpec, load_hardware
from moelab.spec.model import ModelSpec, map_moe

# The seeds' claimed cost (../shared/seeds/001_054ffe56a0c424e4.txt, "Memory Optimization Techniques"):
SEEDS_SWAP_MS = (10.0, 50.0)
SEEDS_SWAP_SOURCE = "seeds 001_054ffe56a0c424e4.txt: 'Expert offloading: Swap experts to CPU/disk; +10-50ms per swap'"
BATCHES = (1, 16)
PROMPT, GEN = 512, 256


@dataclass(frozen=True)
class MitigationRow:
    """One variant of one model on one hardware preset at one decode batch."""

    scenario: str  # quantize, offload, prune
    model: str
    variant: str
    hardware: str
    gpus: int
    plan: str
    batch: int
    weights_bytes: float  # the whole model at the variant's dtypes (all experts, resident or not)
    memory_per_gpu_bytes: float  # what one GPU holds (offload: the resident part)
    usable_per_gpu_bytes: float
    fits: bool
    decode_step_seconds: float
    tokens_per_second: float
    resident_experts: int | None = None  # offload: routed experts per MoE layer in GPU memory
    n_experts: int | None = None
    hit_rate: float | None = None
    miss_ms: float | None = None  # one expert over one GPU's host link
    seeds_swap_ms: tuple[float, float] | None = None
    note: str = ""
    basis: str = "modelled"

    def to_dict(self) -> dict:
        out = asdict(self)
        out["seeds_swap_ms"] = list(self.seeds_swap_ms) if self.seeds_swap_ms else None
        return out


def _row(scenario: str, spec: ModelSpec, variant: str, hw: HardwareSpec, wl: Workload, note: str = "",
         **extra) -> MitigationRow:
    r = evaluate(spec, hw, wl, wl.parallel)
    return MitigationRow(scenario=scenario, model=spec.name, variant=variant, hardware=hw.name, gpus=wl.gpus,
                         plan=r.plan, batch=wl.batch, weights_bytes=model_weight_bytes(spec, wl.dtype,
                                                                                         wl.components).total,
                         memory_per_gpu_bytes=r.memory_per_gpu_bytes,
                         usable_per_gpu_bytes=hw.memory_bytes * hw.memory_utilization, fits=r.fits,
                         decode_step_seconds=r.decode.seconds, tokens_per_second=r.tokens_per_second, note=note,
                         **extra)


def _fewest(spec: ModelSpec, hw: HardwareSpec, wl: Workload) -> Workload:
    """The workload on the fewest GPUs (a power of two) where a plan fits, with its best plan."""
    return resolve_gpus(spec, hw, wl, None)


def pruned(spec: ModelSpec, keep: float) -> ModelSpec:
    """The spec with `keep` of each MoE layer's routed experts (rounded down to whole routing groups)."""
    def change(m):
        n = max(m.top_k, int(m.n_experts * keep) // m.n_group * m.n_group)
        return replace(m, n_experts=n)
    return replace(map_moe(spec, change), name=f"{spec.name}-keep{keep:.0%}")


def mixtral_int4(hw: HardwareSpec | None = None) -> list[MitigationRow]:
    """Mixtral-8x7B bf16 vs int4 routed experts on one L40S (48 GB), batch 1 and 16."""
    from moelab.spec import load_model

    spec, hw = load_model("mixtral-8x7b"), hw or load_hardware("L40S")
    rows = []
    for variant, comps in (("bf16", ()), ("int4 experts, bf16 rest", (("routed_experts", "int4"),))):
        for b in BATCHES:
            wl = Workload(batch=b, prompt=PROMPT, gen=GEN, dtype="bf16", kv_dtype="bf16", gpus=1, plan="tp1",
                          components=comps)
            rows.append(_row("quantize", spec, variant, hw, wl, "one GPU"))
            if not comps:
                fewest = _fewest(spec, hw, replace(wl, plan="tp"))
                rows.append(_row("quantize", spec, variant, hw, fewest, "the fewest GPUs that hold it"))
    return rows


def deepseek_offload(hw: HardwareSpec | None = None, node: int = 8) -> list[MitigationRow]:
    """DeepSeek-V3 (fp8) on one node of `node` H100s: resident experts that fit on ep{node} and the rest offloaded,
    beside the all-resident plan on the fewest GPUs that hold it (batch 1 and 16)."""
    from moelab.spec import load_model

    spec, hw = load_model("deepseek-v3"), hw or load_hardware("H100-SXM")
    rows = []
    for b in BATCHES:
        wl = Workload(batch=b, prompt=PROMPT, gen=GEN, dtype="fp8", kv_dtype="fp8", gpus=node, plan=f"ep{node}")
        rows.append(_row("offload", spec, "all resident", hw, wl, f"one node of {node}"))
        rows.append(_row("offload", spec, "all resident", hw, _fewest(spec, hw, replace(wl, plan="tp")),
                         "the fewest GPUs that hold it"))
        plan = Plan(ep=node)
        resident = max_resident(spec, hw, b, PROMPT + GEN, "fp8", plan)
        off = offloaded_decode(spec, hw, b, wl.decode_context, "fp8", resident, plan=plan)
        base = evaluate(spec, hw, wl, plan)
        held = base.memory_per_gpu_bytes - off.host_bytes / node  # each GPU keeps its resident share only
        rows.append(MitigationRow(
            scenario="offload", model=spec.name, variant=f"{resident} of {spec.moe.n_experts} experts resident",
            hardware=hw.name, gpus=node, plan=plan.name, batch=b, weights_bytes=base_weights(spec, "fp8"),
            memory_per_gpu_bytes=held, usable_per_gpu_bytes=hw.memory_bytes * hw.memory_utilization,
            fits=resident > 0 and bool(off.fits_host) and held <= hw.memory_bytes * hw.memory_utilization,
            decode_step_seconds=off.step_seconds,
            tokens_per_second=b / off.step_seconds, resident_experts=resident, n_experts=spec.moe.n_experts,
            hit_rate=off.hit_rate, miss_ms=off.miss_seconds * 1e3, seeds_swap_ms=SEEDS_SWAP_MS,
            note=(f"{off.misses_per_gpu:.1f} misses per GPU per step over PCIe Gen5 x16 "
                  f"({off.link_bandwidth / 1e9:.1f} GB/s achieved), serialised; resident step "
                  f"{off.resident_step_seconds * 1e3:.1f} ms")))
    return rows


def base_weights(spec: ModelSpec, dtype: str) -> float:
    return model_weight_bytes(spec, dtype).total


def prune_rows(keep: float = 0.75) -> list[MitigationRow]:
    """Keep `keep` of the routed experts: Mixtral-8x7B bf16 on L40S and DeepSeek-V3 fp8 on H100 (batch 1), the
    full model and the pruned one each on the fewest GPUs that hold it."""
    from moelab.spec import load_model

    rows = []
    for name, hw_name, dtype in (("mixtral-8x7b", "L40S", "bf16"), ("deepseek-v3", "H100-SXM", "fp8")):
        spec, hw = load_model(name), load_hardware(hw_name)
        wl = Workload(batch=1, prompt=PROMPT, gen=GEN, dtype=dtype, kv_dtype=dtype)
        for variant, s in (("all experts", spec), (f"keep {keep:.0%} of experts", pruned(spec, keep))):
            saved = 1.0 - base_weights(s, dtype) / base_weights(spec, dtype)
            rows.append(_row("prune", s, variant, hw, _fewest(s, hw, wl),
                             f"the fewest GPUs that hold it; weights {saved:.1%} smaller (quality: moelab prune "
                             "measures the loss per domain)"))
    return rows


def frontier_mitigations() -> list[MitigationRow]:
    """Every row: Mixtral int4 on one L40S, DeepSeek-V3 offloaded on one 8 x H100 node, pruning to 75%."""
    return mixtral_int4() + deepseek_offload() + prune_rows()
