"""`torchrun --nproc-per-node N -m moelab bench MODEL --ep N`: the layout's checks, the sharded model, the
slowest rank's times.

World == ep (dp = 1). Every rank builds the same model (the same seed, or the same weights file), keeps its E/N
routed experts (TransformerLM.apply_ep: rank r holds experts r*E/N ..) and runs batch/N of each batch's
sequences (bench.measure.Runner's part), so attention runs data-parallel beside expert-parallel experts: the
engine's epN plan ("each GPU: a replica of the non-expert weights, 1/g of sequences and experts",
cost.eager.phase). A timed region starts at a barrier and ends when its slowest rank ends (all_reduce MAX of
each region's seconds); its all-to-all seconds (parallel.clock: the calls' wall time, waits for a peer
included) are reduced the same way.

The calibration is not measured inside the job: its probes would time the ranks against each other, it starts
its own two-process all-to-all probe, and it can outlast the group's timeout while the other ranks wait. Under
--ep the bench takes --hardware or this machine's cached calibration (`moelab calibrate` first), and says so
in one line, before the group starts, when there is none.
"""

from __future__ import annotations

import torch

from moelab.bench.measure import Samples
from moelab.bench.models import Loaded, Resolved, build
from moelab.errors import MoelabError
from moelab.parallel import layout as parallel
from moelab.parallel.gradients import collective_device
from moelab.parallel.layout import Layout, Mesh

PHASES = ("prefill", "decode", "prefill_alltoall", "decode_alltoall")


def default_batches(batches: tuple[int, ...], ep: int) -> tuple[int, ...]:
    """The default sweep's batch sizes that `ep` processes split evenly (at least `ep` itself)."""
    return tuple(b for b in batches if b % ep == 0) or (ep,)


def check(ep: int | None, models: list[Resolved], batches: tuple[int, ...]) -> Layout:
    """The layout of this process for `--ep` (None: not given), refused in one line before any group starts."""
    from moelab.cost.plan import expert_counts

    launched = parallel.launched()
    if ep is not None and ep > 1 and len(models) > 1:
        raise MoelabError(f"--ep {ep} benchmarks one model; compare two models in one process (without --ep)")
    quantized = next((r for r in models if r.quantization), None)
    if ep is not None and ep > 1 and quantized is not None:  # MoELayer.apply_ep refuses a layer behind a store
        raise MoelabError(f"--ep {ep}: {quantized.ref} is a quantized run, whose experts sit behind an expert store "
                          "that expert parallelism does not shard; bench it in one process (without --ep)")
    spec = models[0].spec
    layout = parallel.check(ep, expert_counts(spec) if spec.is_moe else set(), "bench")
    if launched is not None and layout.world != layout.ep:
        raise MoelabError(f"bench under torchrun runs one copy of the model across all {layout.world} processes: "
                          f"give --ep {layout.world} (got {'no --ep' if ep is None else f'--ep {ep}'})")
    uneven = [b for b in batches if b % layout.ep]
    if uneven:
        raise MoelabError(f"--ep {layout.ep} splits every batch's sequences over {layout.ep} processes: batch "
                          f"{uneven[0]} does not divide; use --batches that are multiples of {layout.ep}")
    return layout


def cached_hardware(device: str, quick: bool) -> str:
    """This machine's cached calibration (a full one, else a quick one if `quick`), never measured here."""
    from moelab.bench.calibrate import cache_path, cached_calibration

    path = cached_calibration(device)
    if path is not None and (quick or path == cache_path(device)):
        return str(path)
    raise MoelabError(f"--ep: this machine has no {device} calibration yet (in $MOELAB_HOME/hardware), and none is "
                      "measured inside a multi-process job; run `moelab calibrate"
                      f"{' --device cuda' if device == 'cuda' else ''}` first, or give --hardware FILE")


def build_sharded(r: Resolved, device: str, dtype: torch.dtype, mesh: Mesh | None) -> Loaded:
    """The resolved model as bench builds it (bench.models.build), then its experts sharded over the mesh's ep
    group (one process: unchanged)."""
    m = build(r, device, dtype)
    if mesh is not None:
        m.model.apply_ep(mesh.ep_group)
    return m


def slowest(samples: list[Samples], group) -> None:
    """Every sample (seconds of one region) replaced in place by its maximum over the ranks of `group`: one
    all_reduce for all of them. Every rank holds the same regions in the same order."""
    import torch.distributed as dist

    flat = [x for s in samples for phase in PHASES for x in getattr(s, phase)]
    t = torch.tensor(flat, dtype=torch.float64, device=collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    values = iter(t.tolist())
    for s in samples:
        for phase in PHASES:
            setattr(s, phase, [next(values) for _ in getattr(s, phase)])
