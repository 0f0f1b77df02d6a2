"""moelab's serving client against vLLM's own (`vllm bench serve`, vllm.benchmarks.serve) on one vLLM server.

Both drive the same server, level by level and in turn, with the same lengths, request count and warm-up, so
that a difference is the client's: the ratios ours/vLLM of TTFT, TPOT, ITL (p50, p99) and output tokens/s, each
level repeated, medians reported. Prints JSON.

    .venv/bin/python benchmarks/serve_client.py runs/study/runs/tiny-dense --concurrency 1,16,32 --repeats 2
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from moelab.data.cache import home_dir
from moelab.serve import bench, load
from moelab.serve.environment import find_serving_environment, server_env
from moelab.serve.export import export, is_servable_folder
from moelab.serve.server import ServerProcess, free_port

# vLLM's benchmark entry point, run in the serving environment
VLLM_BENCH = """import sys
from vllm.utils.argparse_utils import FlexibleArgumentParser
from vllm.benchmarks.serve import add_cli_args, main
p = FlexibleArgumentParser(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))
"""
FIGURES = {"ttft_ms_p50": "median_ttft_ms", "ttft_ms_p99": "p99_ttft_ms", "tpot_ms_p50": "median_tpot_ms",
           "tpot_ms_p99": "p99_tpot_ms", "itl_ms_p50": "median_itl_ms",
           "output_tokens_per_second": "output_throughput"}


def vllm_level(python: Path, base_url: str, folder: Path, c: int, args, out: Path) -> dict:
    cmd = [str(python), "-c", VLLM_BENCH, "--backend", "vllm", "--base-url", base_url, "--model", "m",
           "--tokenizer", str(folder), "--dataset-name", "random", "--random-input-len", str(args.input),
           "--random-output-len", str(args.output), "--num-prompts", str(args.requests), "--max-concurrency", str(c),
           "--ignore-eos", "--save-result", "--result-dir", str(out), "--percentile-metrics", "ttft,tpot,itl,e2el",
           "--metric-percentiles", "50,95,99", "--num-warmups", str(c)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode:
        sys.exit(f"vllm bench serve failed: {done.stderr[-2000:]}")
    return json.loads(Path(glob.glob(str(out / "*.json"))[0]).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a run folder, HF folder or exported folder")
    parser.add_argument("--concurrency", default="1,16,32")
    parser.add_argument("--input", type=int, default=128)
    parser.add_argument("--output", type=int, default=32)
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    env = find_serving_environment()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = Path(args.model)
        if not is_servable_folder(folder):
            folder = export(folder, tmp / "exported").folder
        spec_vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
        cmd = bench.vllm_command(env.python, folder, "m", "fp32", max(levels), args.input + args.output)
        ratios: dict[str, list[float]] = {k: [] for k in FIGURES}
        runs = []
        with ServerProcess(cmd, free_port(), tmp / "server.log", env=server_env(home_dir())) as server:
            endpoint = load.Endpoint("m", server.base_url, "m")
            for rep in range(args.repeats):
                for c in levels:
                    theirs = vllm_level(env.python, server.base_url, folder, c, args, tmp / f"v{rep}-{c}")
                    settings = bench.LoadSettings(concurrency=(c,), input=args.input, output=args.output,
                                                  requests=args.requests, seed=rep)
                    ours = bench.measure_levels(endpoint, settings, lambda n, seed: load.prompts_of_tokens(
                        n, args.input, spec_vocab, seed=seed, avoid={0}), lambda _: None)[0]
                    run = {"repeat": rep, "concurrency": c}
                    for key, theirs_key in FIGURES.items():
                        run[key] = {"moelab": ours[key], "vllm": theirs[theirs_key]}
                        if ours[key] and theirs[theirs_key]:
                            ratios[key].append(ours[key] / theirs[theirs_key])
                    runs.append(run)
    print(json.dumps({"benchmark": "serve_client", "vllm": env.vllm_version, "device": env.device,
                      "input": args.input, "output": args.output, "requests": args.requests, "levels": levels,
                      "median_ratio_moelab_over_vllm": {k: statistics.median(v) for k, v in ratios.items() if v},
                      "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
