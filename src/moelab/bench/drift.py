"""How much faster or slower this machine runs now than when it was calibrated: two reference probes, timed by
`calibrate` and again during every `moelab bench`, and the calibration scaled by their ratio.

On a shared virtual machine the CPU a process gets changes within minutes (steal time, frequency): measured here,
the same calibration predicted a bench within 10% one minute and 2x too fast two minutes later, every row by the
same factor. A calibration is a snapshot; the bench re-times two small fixed workloads in every round,
interleaved with the models, and compares their medians with the calibration's:

- compute: a 256 x 1024 x 1024 fp32 matmul (matmul rates, bandwidths: divided by the ratio);
- overhead: one decode step of a one-layer d=16 model (per-step, per-layer, per-expert and per-head fixed
  costs: multiplied by the ratio).

The bench reports both ratios and the predictions before scaling (`predicted_at_calibration_s`), and warns when
the machine moved by more than DRIFT_WARNING.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace

import torch

from moelab.spec.hardware import HardwareSpec

DRIFT_WARNING = 0.10  # a ratio further than this from 1 is reported as a warning
REPS = 5  # timings of each probe per round


def probes(device: str = "cpu") -> dict:
    """The two reference workloads as closures (built once; the same shapes in calibrate and bench)."""
    from moelab.bench.probes import _decode_step_fn, _tiny_spec

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(256, 1024, generator=gen).to(device)
    b = torch.randn(1024, 1024, generator=gen).to(device)
    step = _decode_step_fn(_tiny_spec(1, False), device, torch.float32)

    def gemm() -> None:
        torch.mm(a, b)

    return {"compute": gemm, "overhead": step}


def time_probes(fns: dict, device: str = "cpu", reps: int = REPS) -> dict[str, list[float]]:
    """`reps` timings of each probe (after one warm-up call)."""
    from moelab.bench.timing import timed

    out = {}
    for name, fn in fns.items():
        fn()
        out[name] = [timed(fn, device) for _ in range(reps)]
    return out


@dataclass(frozen=True)
class Drift:
    """now / at calibration, of each reference probe's median (above 1: slower now)."""

    compute: float
    overhead: float

    @property
    def largest(self) -> float:
        return max(abs(self.compute - 1), abs(self.overhead - 1))

    def to_dict(self) -> dict:
        return {"compute": self.compute, "overhead": self.overhead}


def drift(calibrated: dict | None, now: dict[str, list[float]]) -> Drift | None:
    """The ratio of each probe's median now to its calibrated median (None: the calibration has no reference)."""
    if not calibrated or not all(calibrated.get(k) for k in ("compute_s", "overhead_s")):
        return None
    return Drift(statistics.median(now["compute"]) / calibrated["compute_s"],
                 statistics.median(now["overhead"]) / calibrated["overhead_s"])


def reference(fns: dict, device: str = "cpu", rounds: int = 5) -> dict[str, float]:
    """The calibration's reference: each probe's median over `rounds` rounds of REPS timings."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, values in time_probes(fns, device).items():
            times[name].extend(values)
    return {"compute_s": statistics.median(times["compute"]), "overhead_s": statistics.median(times["overhead"])}


def scaled(hw: HardwareSpec, d: Drift) -> HardwareSpec:
    """The calibrated hardware as it runs now: rates divided by the compute ratio, fixed costs times the
    overhead ratio."""
    c, o = d.compute, d.overhead
    return replace(
        hw,
        peak_flops={k: v / c for k, v in hw.peak_flops.items()},
        memory_bandwidth=hw.memory_bandwidth / c,
        cache_bandwidth=hw.cache_bandwidth / c,
        elementwise_bandwidth=hw.elementwise_bandwidth / c,
        attention_flops=hw.attention_flops / c,
        attention_bandwidth=hw.attention_bandwidth / c,
        gemv_bandwidth=hw.gemv_bandwidth / c,
        fresh_page_bandwidth=hw.fresh_page_bandwidth / c,
        step_overhead_s=hw.step_overhead_s * o,
        layer_overhead_s=hw.layer_overhead_s * o,
        moe_layer_overhead_s=hw.moe_layer_overhead_s * o,
        expert_overhead_s=hw.expert_overhead_s * o,
        attention_head_overhead_s=hw.attention_head_overhead_s * o,
    )
