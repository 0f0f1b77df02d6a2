"""Where this process stands in a torchrun job, checked before any process group starts, and the group's start.

torchrun (torch.distributed.run) gives every process WORLD_SIZE, RANK and LOCAL_RANK. moelab lays W processes
out as a (dp, ep) mesh: rank = dp_rank * ep + ep_rank. The ep ranks of one dp row hold one copy of the experts
between them (E / ep each, exchanged by all-to-all); the dp rows replicate it; attention, embeddings, norms and
routers are replicated on all W ranks. Every rank reads its own slice of each global batch.

`check` refuses a layout that cannot run (one line, MoelabError: exit 2 on every rank, since every rank checks
the same arguments) before `start` opens the group; the group has a timeout, so a rank that dies mid-collective
ends the others' wait (torchrun also stops the remaining workers when one fails).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from moelab.cost.training_step import plan_name
from moelab.errors import MoelabError

TIMEOUT_ENV = "MOELAB_DIST_TIMEOUT"  # seconds a collective may wait for its peers
DEFAULT_TIMEOUT_S = 300
TORCHRUN_HINT = "torchrun --nproc-per-node N -m moelab"


@dataclass(frozen=True)
class Layout:
    """W processes as dp x ep; the one-process default is Layout()."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0
    ep: int = 1

    @property
    def dp(self) -> int:
        return self.world // self.ep

    @property
    def ep_rank(self) -> int:
        return self.rank % self.ep

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def writer(self) -> bool:
        """Rank 0 logs, writes the run folder and holds its lock."""
        return self.rank == 0

    @property
    def plan(self) -> str:
        """The engine's plan name for this layout (cost.training_step.plan_name: ep2, x2, ep2x2); "single" for one
        process."""
        return plan_name(self.ep, self.dp) if self.distributed else "single"

    def to_dict(self) -> dict:
        return {"world": self.world, "ep": self.ep, "dp": self.dp, "plan": self.plan}


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise MoelabError(f"${name} must be an integer (torchrun sets it), got {raw!r}") from None


def launched() -> tuple[int, int, int] | None:
    """(world, rank, local rank) when this process was started by torchrun, else None."""
    world, rank = _env_int("WORLD_SIZE"), _env_int("RANK")
    if world is None or rank is None:
        return None
    if world < 1 or not 0 <= rank < world:
        raise MoelabError(f"torchrun environment: RANK {rank} of WORLD_SIZE {world} is not a process of the job")
    return world, rank, _env_int("LOCAL_RANK") or 0


def check(ep: int | None, n_experts: set[int], what: str = "train") -> Layout:
    """The layout for `--ep` (None: not given) in this process; MoelabError naming the problem.

    `n_experts`: the routed expert counts of the model's MoE layers (empty for a dense model)."""
    found = launched()
    world, rank, local_rank = found or (1, 0, 0)
    if ep is not None and ep < 1:
        raise MoelabError(f"--ep must be at least 1, got {ep}")
    ep = ep or 1
    if ep > 1 and not n_experts:
        raise MoelabError(f"--ep {ep}: the model is dense (no experts to split); run it without --ep")
    if ep > 1 and found is None:
        if what == "bench":  # one copy of the model over exactly ep processes
            raise MoelabError(f"--ep {ep} needs {ep} processes: start it with `torchrun --nproc-per-node {ep} -m "
                              f"moelab bench ... --ep {ep}`")
        raise MoelabError(f"--ep {ep} needs {ep} or more processes: start it with `{TORCHRUN_HINT} {what} ... --ep "
                          f"{ep}` (--nproc-per-node a multiple of {ep})")
    if world % ep:
        raise MoelabError(f"--ep {ep} does not divide the {world} processes torchrun started (world = ep x dp)")
    for count in sorted(n_experts):
        if count % ep:
            raise MoelabError(f"--ep {ep} does not divide the model's {count} routed experts per MoE layer "
                              "(expert parallelism places whole experts, the same number on every rank)")
    return Layout(world, rank, local_rank, ep)


def timeout_seconds() -> float:
    raw = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 1 <= value <= 86_400:
        raise MoelabError(f"${TIMEOUT_ENV} must be seconds between 1 and 86400, got {raw!r}")
    return value


@dataclass(frozen=True)
class Mesh:
    """A started layout: the process groups of its ep and dp dimensions."""

    layout: Layout
    ep_group: object
    dp_group: object


def start(layout: Layout, device: str = "cpu") -> Mesh | None:
    """Open the process group (gloo on CPU, NCCL on CUDA) and its (dp, ep) mesh; None for one process."""
    if not layout.distributed:
        return None
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    timeout = timedelta(seconds=timeout_seconds())
    if device == "cuda":
        torch.cuda.set_device(layout.local_rank)
    dist.init_process_group("nccl" if device == "cuda" else "gloo", timeout=timeout)
    mesh = init_device_mesh(device, (layout.dp, layout.ep), mesh_dim_names=("dp", "ep"))
    return Mesh(layout, mesh["ep"].get_group(), mesh["dp"].get_group())


_PEER_FAILURE = ("gloo", "nccl", "timed out", "connection closed", "connection reset", "broken pipe")


@contextmanager
def started(layout: Layout, device: str = "cpu"):
    """`start` ... `stop` around a block, whatever ends it. A collective that fails because a peer stopped or
    did not answer within the timeout becomes one line (MoelabError) instead of a backend's traceback."""
    try:
        mesh = start(layout, device)
    except (RuntimeError, ValueError) as e:
        stop()
        raise MoelabError(f"the process group did not start ({_first_line(e)})") from None
    try:
        yield mesh
    except RuntimeError as e:
        if mesh is None or not any(word in str(e).lower() for word in _PEER_FAILURE):
            raise
        raise MoelabError(f"rank {layout.rank}: a collective failed: a peer process stopped or did not answer "
                          f"within ${TIMEOUT_ENV}={timeout_seconds():g} s ({_first_line(e)})") from None
    finally:
        stop()


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return (lines[0] if lines else type(e).__name__)[:240]


def stop() -> None:
    """Close the process group if one is open (every exit path calls it)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
