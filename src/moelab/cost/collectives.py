"""Collective communication time between GPUs, per call, as vLLM and NCCL run them.

The defaults represent **vLLM serving**: tensor-parallel all-reduces inside one NVLink node go through vLLM's custom
all-reduce (one-shot or two-shot) below its 8 MiB limit, everything else through NCCL (ring, NVLS on NVSwitch parts,
tree/ring across nodes). `nccl_allreduce_seconds` is NCCL alone (what nccl-tests' all_reduce_perf measures).

Each algorithm costs `latency + bytes each rank moves / achieved bandwidth`; the latency is paid once per call (not per
hop of a ring: NCCL's LL protocol hops cost 0.6 us on NVLink, not a full message latency). Of the algorithms open to
a call the cheapest is taken: NCCL's tuner does so (src/graph/tuning.cc picks the lowest modelled time), vLLM's fixed
one-shot/two-shot thresholds approximate it (tests check the model's switch point against them), and vLLM since
PR #24111 / #33839 dispatches among custom all-reduce, symmetric memory and NCCL by size ranges benchmarked per world
size, which is the fastest by construction. Known gap: NCCL between 1 and 64 MiB runs slower than this alpha-beta
form (8x H100, Triton-distributed #57: 4 MiB 59 us measured, 35 us modelled) because it reaches its peak bandwidth
only near 1 GiB (nccl-tests #212); vLLM serving rarely sends those sizes through NCCL below its 8 MiB limit.

Units: seconds, bytes, bytes/s. `nbytes` is the buffer each rank holds (all-reduce), the gathered output each rank
ends with (all-gather), or what each rank sends in all (all-to-all, spread evenly over the ranks, itself included).

Anchors (8x H100 SXM unless said; figures cited again where used):
- NCCL ring busbw ~370 GB/s on 450 GB/s NVLink ("protocol overhead ~20%"), NVLS all-reduce peak busbw ~480 GB/s,
  algbw ~275 GB/s: NVIDIA/nccl-tests issue #212 (sjeaugey); 476 GB/s measured single node: nccl-tests issue #290.
- NDR 400 Gb/s InfiniBand: 46-48 GB/s per NIC: nccl-tests issue #290 (AddyLaddy). Ring all-reduce across nodes
  reaches the node's aggregate NIC bandwidth as busbw: 3 nodes x 8 A100 with 4 HDR NICs each: 96 GB/s peak of
  100 GB/s: nccl-tests issue #119.
- NCCL latencies: NVIDIA/nccl src/graph/tuning.cc `baseLat` (ring LL 6.6 us, tree LL 6.8 us) and `hwLat` (NVLink
  ring/tree LL 0.6 us per step, PCI 1.0, network tree LL 5.0, NVLS 25 us).
- vLLM custom all-reduce: vllm csrc/custom_all_reduce.cuh (`REDUCE_CASE`: one-shot for 2 GPUs, for <=4 GPUs below
  512 KiB, for <=8 GPUs below 256 KiB; two-shot above; world sizes 2, 4, 6, 8; more than 2 GPUs need full NVLink)
  and vllm/distributed/device_communicators/custom_all_reduce.py (`max_size` 8 MiB). Measured under CUDA graphs on
  H100, hidden 8192 bf16: vllm-project/vllm PR #24111 (TP6: one-shot 0.5 MiB 13 us, two-shot 1 MiB 17 us, 4 MiB
  37 us) and PR #24532 (TP4: one-shot 0.5 MiB 10 us, 1 MiB 14 us).
"""

from __future__ import annotations

import math

from moelab.spec.hardware import HardwareSpec

KiB = 1024
MiB = 1024 * KiB

# NVIDIA/nccl src/graph/tuning.cc: baseLat[Ring][LL] and baseLat[Tree][LL] (us), paid once per call.
NCCL_RING_BASE_S = 6.6e-6
NCCL_TREE_BASE_S = 6.8e-6
# NVIDIA/nccl src/graph/tuning.cc hwLat[NVLINK][Ring][LL] = 0.6 us, hwLat[PCI][Ring][LL] = 1.0 us: one ring step.
NVLINK_STEP_S = 0.6e-6
PCI_STEP_S = 1.0e-6
# NVIDIA/nccl src/graph/tuning.cc hwLat[NVLINK][NVLS][Simple] = 25 us: NVLS only wins on large messages.
NVLS_LATENCY_S = 25e-6
# NVLS reduces in the NVSwitch: each rank sends its buffer once and receives the result once (half a ring's
# 2(G-1)/G traffic), at algbw ~275 GB/s of the 450 GB/s H100 NVLink (nccl-tests #212): 275 / 450 of the link rate.
NVLS_EFFICIENCY = 275 / 450
# NDR 400 Gb/s = 50 GB/s per NIC reaches 46-48 GB/s in nccl-tests (issue #290); HDR in issue #119: 96 of 100 GB/s.
# The network's own efficiency, apart from hw.link_efficiency (which describes NVLink/PCIe protocol overhead).
NET_EFFICIENCY = 0.94
# NCCL's tuner gives trees a lower per-channel bandwidth than rings (tuning.cc perChMaxTreeBws); assumed share.
TREE_BANDWIDTH_SHARE = 0.85

# vLLM custom all-reduce (vllm csrc/custom_all_reduce.cuh; vllm/distributed/device_communicators/custom_all_reduce.py).
CUSTOM_AR_WORLD_SIZES = (2, 4, 6, 8)
CUSTOM_AR_MAX_BYTES = 8 * MiB
# One-shot: every rank reads all G-1 peer buffers through its own NVLink port; those loads reach ~0.8 of the ring
# bandwidth (vLLM PR #24111, TP6: 5 x 3.5 MiB more read between 0.5 and 4 MiB in 57 us = ~310 of ~370 GB/s).
ONE_SHOT_READ_SHARE = 0.8
# Two-shot (reduce-scatter then all-gather through peer memory) has two barrier rounds: twice the one-shot latency.
TWO_SHOT_LATENCY_FACTOR = 2.0
# No field says whether a node's GPUs are NVLink/Infinity-Fabric connected; intra-node links this fast are
# (PCIe Gen5 x16 is 64 GB/s per direction). vLLM refuses its custom all-reduce on more than 2 PCIe-only GPUs.
FULL_MESH_MIN_BANDWIDTH = 100e9

ALGORITHMS = ("none", "one-shot", "two-shot", "ring", "nvls", "tree", "hierarchical-ring")


def _nvlink(hw: HardwareSpec) -> bool:
    return hw.intra_node_bandwidth >= FULL_MESH_MIN_BANDWIDTH


def _intra_bw(hw: HardwareSpec) -> float:
    return hw.intra_node_bandwidth * hw.link_efficiency


def _nic_bw(hw: HardwareSpec) -> float:
    return hw.inter_node_bandwidth * NET_EFFICIENCY


def _step_s(hw: HardwareSpec) -> float:
    return NVLINK_STEP_S if _nvlink(hw) else PCI_STEP_S


def _layout(hw: HardwareSpec, ranks: int) -> tuple[int, int]:
    """(GPUs of the group per node, nodes): a group fills nodes of hw.gpus_per_node before spilling over."""
    per_node = min(ranks, max(1, hw.gpus_per_node))
    return per_node, math.ceil(ranks / per_node)


def _allreduce_candidates(hw: HardwareSpec, ranks: int, nbytes: float, custom: bool) -> dict[str, float]:
    """Modelled seconds of every all-reduce algorithm the engine could use for this call."""
    per_node, nodes = _layout(hw, ranks)
    ring_share = 2 * (ranks - 1) / ranks
    out: dict[str, float] = {}
    if nodes == 1:
        bw = _intra_bw(hw)
        if custom and ranks in CUSTOM_AR_WORLD_SIZES and nbytes < CUSTOM_AR_MAX_BYTES and (_nvlink(hw) or ranks == 2):
            lat = hw.intra_node_latency_s
            out["one-shot"] = lat + (ranks - 1) * nbytes / (bw * ONE_SHOT_READ_SHARE)
            if _nvlink(hw) and ranks > 2:  # on 2 GPUs vLLM never runs two-shot (custom_all_reduce.cuh)
                out["two-shot"] = TWO_SHOT_LATENCY_FACTOR * lat + ring_share * nbytes / bw
        out["ring"] = NCCL_RING_BASE_S + 2 * (ranks - 1) * _step_s(hw) + ring_share * nbytes / bw
        if hw.nvls:
            out["nvls"] = NVLS_LATENCY_S + nbytes / (hw.intra_node_bandwidth * NVLS_EFFICIENCY)
        return out
    # Across nodes NCCL's rings enter and leave each node once per channel, one channel per NIC: the node's NICs
    # together carry what one GPU carries over NVLink, so the busbw is the slower of NVLink and the node's NICs
    # (nccl-tests #119: 4 HDR NICs per node -> 96 GB/s busbw). The hierarchical (intra reduce-scatter, inter
    # all-reduce of 1/G, intra all-gather) split moves the same bytes over the same links.
    bw = min(_intra_bw(hw), per_node * _nic_bw(hw))
    net_step = hw.inter_node_latency_s
    ring_lat = NCCL_RING_BASE_S + 2 * (ranks - nodes) * _step_s(hw) + 2 * (nodes - 1) * net_step
    out["hierarchical-ring"] = ring_lat + ring_share * nbytes / bw
    # NCCL's tree across nodes: up and down a chain in each node and a binary tree between nodes (tuning.cc:
    # baseLat + 2 * ((ranks per node - 1) * intra step + log2(nodes) * network step)).
    tree_lat = NCCL_TREE_BASE_S + 2 * ((per_node - 1) * _step_s(hw) + math.ceil(math.log2(nodes)) * net_step)
    out["tree"] = tree_lat + ring_share * nbytes / (bw * TREE_BANDWIDTH_SHARE)
    return out


def _best(candidates: dict[str, float]) -> tuple[str, float]:
    name = min(candidates, key=lambda k: candidates[k])
    return name, candidates[name]


def allreduce_algorithm(hw: HardwareSpec, ranks: int, nbytes: float) -> str:
    """The algorithm `allreduce_seconds` prices this call with: one-shot, two-shot, ring, nvls, tree,
    hierarchical-ring, or none (one rank or no bytes)."""
    if ranks <= 1 or nbytes <= 0:
        return "none"
    return _best(_allreduce_candidates(hw, ranks, nbytes, custom=True))[0]


def allreduce_seconds(hw: HardwareSpec, ranks: int, nbytes: float) -> float:
    """All-reduce of `nbytes` (per rank) across `ranks` GPUs, as vLLM serving runs it (custom all-reduce + NCCL)."""
    if ranks <= 1 or nbytes <= 0:
        return 0.0
    return _best(_allreduce_candidates(hw, ranks, nbytes, custom=True))[1]


def nccl_allreduce_seconds(hw: HardwareSpec, ranks: int, nbytes: float) -> float:
    """All-reduce through NCCL alone (ring / NVLS / tree): what nccl-tests' all_reduce_perf times."""
    if ranks <= 1 or nbytes <= 0:
        return 0.0
    return _best(_allreduce_candidates(hw, ranks, nbytes, custom=False))[1]


def allgather_seconds(hw: HardwareSpec, ranks: int, nbytes: float) -> float:
    """All-gather (NCCL ring): every rank ends with `nbytes` in all, 1 / ranks of it its own."""
    if ranks <= 1 or nbytes <= 0:
        return 0.0
    per_node, nodes = _layout(hw, ranks)
    share = (ranks - 1) / ranks
    if nodes == 1:
        return NCCL_RING_BASE_S + (ranks - 1) * _step_s(hw) + share * nbytes / _intra_bw(hw)
    bw = min(_intra_bw(hw), per_node * _nic_bw(hw))  # rings cross each node boundary once, as in all-reduce
    lat = NCCL_RING_BASE_S + (ranks - nodes) * _step_s(hw) + (nodes - 1) * hw.inter_node_latency_s
    return lat + share * nbytes / bw


def alltoall_seconds(hw: HardwareSpec, ranks: int, nbytes: float) -> float:
    """All-to-all of `nbytes` per rank, spread evenly over `ranks` GPUs (expert-parallel dispatch or combine).

    Of what a rank sends, the share for peers in its own node goes over NVLink and the rest over its own NIC
    (one per GPU), both at once: the slower of the two sets the time. One latency per call: the sends are
    issued together (NCCL groups them), so the call costs one NVLink step, or one network step across nodes.
    """
    if ranks <= 1 or nbytes <= 0:
        return 0.0
    per_node, nodes = _layout(hw, ranks)
    intra = (per_node - 1) / ranks * nbytes
    inter = (ranks - per_node) / ranks * nbytes
    t_intra = intra / _intra_bw(hw)
    if nodes == 1:
        return NCCL_RING_BASE_S + _step_s(hw) + t_intra
    t_inter = inter / _nic_bw(hw)
    return NCCL_RING_BASE_S + hw.inter_node_latency_s + max(t_intra, t_inter)


def p2p_seconds(hw: HardwareSpec, nbytes: float, across_nodes: bool) -> float:
    """One point-to-point send of `nbytes` (a pipeline stage boundary), over the NIC or over NVLink/PCIe."""
    if nbytes <= 0:
        return 0.0
    if across_nodes:
        return NCCL_RING_BASE_S + hw.inter_node_latency_s + nbytes / _nic_bw(hw)
    return NCCL_RING_BASE_S + _step_s(hw) + nbytes / _intra_bw(hw)
