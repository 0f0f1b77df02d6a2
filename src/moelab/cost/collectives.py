"""Collective communication time between GPUs (placeholder: alpha-beta; rewritten as NCCL runs them)."""

from __future__ import annotations

from moelab.spec.hardware import HardwareSpec


def allreduce_seconds(hw: HardwareSpec, ranks: int, nbytes: float) -> float:
    """All-reduce of `nbytes` (per rank) across `ranks` GPUs."""
    if ranks <= 1 or nbytes <= 0:
        return 0.0
    bw, lat = hw.link(ranks)
    return lat + 2 * (ranks - 1) / ranks * nbytes / bw


def allreduce_algorithm(hw: HardwareSpec, ranks: int, nbytes: float) -> str:
    """The algorithm allreduce_seconds prices."""
    return "ring"


def allgather_seconds(hw: HardwareSpec, ranks: int, nbytes: float) -> float:
    """All-gather: every rank ends with `nbytes` in all, 1 / ranks of it its own."""
    if ranks <= 1 or nbytes <= 0:
        return 0.0
    bw, lat = hw.link(ranks)
    return lat + (ranks - 1) / ranks * nbytes / bw


def alltoall_seconds(hw: HardwareSpec, ranks: int, nbytes: float) -> float:
    """All-to-all of `nbytes` per rank, spread evenly over `ranks` GPUs ((ranks - 1) / ranks of it leaves)."""
    if ranks <= 1 or nbytes <= 0:
        return 0.0
    bw, lat = hw.link(ranks)
    return lat + (ranks - 1) / ranks * nbytes / bw


def p2p_seconds(hw: HardwareSpec, nbytes: float, across_nodes: bool) -> float:
    """One point-to-point send of `nbytes` (a pipeline stage boundary)."""
    if nbytes <= 0:
        return 0.0
    bw, lat = hw.link(hw.gpus_per_node + 1 if across_nodes else 2)
    return lat + nbytes / bw
