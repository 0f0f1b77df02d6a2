"""Decisions one rank makes for all: the writer (rank 0) checks the run folder; every rank gets its verdict.

`agreed(mesh, check)` runs `check` on the writer; a MoelabError it raises is raised on every rank with the
same one line (sent as UTF-8 bytes by broadcast: no pickle), so every rank exits 2 together instead of
waiting on a peer that has left. It is also a barrier: no rank reads the folder before the writer has
tidied it.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from moelab.errors import MoelabError
from moelab.parallel.gradients import collective_device
from moelab.parallel.layout import Mesh

MAX_MESSAGE_BYTES = 4096


def agreed(mesh: Mesh | None, check):
    """check() on the writer (its result there; None on the other ranks), its MoelabError on every rank."""
    if mesh is None:
        return check()
    result, message = None, b""
    if mesh.layout.writer:
        try:
            result = check()
        except MoelabError as e:
            message = (str(e) or type(e).__name__).encode("utf-8")[:MAX_MESSAGE_BYTES]
    device = collective_device()
    size = torch.tensor([len(message)], dtype=torch.long, device=device)
    dist.broadcast(size, 0)
    if size.item():
        data = (torch.tensor(list(message), dtype=torch.uint8, device=device) if mesh.layout.writer
                else torch.empty(int(size.item()), dtype=torch.uint8, device=device))
        dist.broadcast(data, 0)
        raise MoelabError(bytes(data.tolist()).decode("utf-8", errors="replace"))
    return result
