"""Does a miss really read the device? Cold versus warm reads of one expert's slices of a run's model.safetensors.

Cold: posix_fadvise(POSIX_FADV_DONTNEED) over the slices' pages, then os.preadv (what an offloaded expert's miss
does, moelab.mitigate.offload); warm: the same read again, from the page cache. Prints one JSON object: medians
over --repeats of cold and warm seconds, their bytes/s and ratio, a cold one-page read (the latency), the link
bench derives from them, the file system, and a warning when cold is not clearly slower than warm (tmpfs, or a
device as fast as memory: then a miss costs no device read here).

    .venv/bin/python benchmarks/offload_read.py runs/study/runs/tiny-moe [--layer 0] [--expert 3] [--repeats 21]
"""

from __future__ import annotations

import argparse
import json
import sys

from moelab.errors import MoelabError
from moelab.mitigate.offload import read_probe
from moelab.mitigate.runs import read_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a moelab run folder (or its final/)")
    parser.add_argument("--layer", type=int, default=None, help="the MoE layer (default: the file's first)")
    parser.add_argument("--expert", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args(argv)
    try:
        source = read_run(args.run)
        if args.repeats < 1:
            raise MoelabError(f"--repeats must be at least 1, got {args.repeats}")
        prefix = None if args.layer is None else f"layers.{args.layer}.mlp."
        path = source.folder / "model.safetensors"
        result = read_probe(path, prefix, args.expert, args.repeats).to_dict()
    except MoelabError as e:
        print(f"offload_read: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"file": str(path), "layer": args.layer, "expert": args.expert, **result}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
