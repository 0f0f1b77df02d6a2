"""A realistic `moelab study` dict for the report tests.

- training: a real tiny `train_compare` run (tiny-dense, tiny-moe, tiny-moe-fine on a small two-domain corpus),
  made once by `python tests/report/study_fixture.py` and stored in fixtures/study_parts.json (training takes
  about a minute on two CPU cores; the `slow` test in test_report.py redoes it live);
- bench, calibration: synthesised with plausible values (their producers live in moelab.bench);
- serving (vLLM on this CPU): synthesised likewise by synthetic_serving(), added to copies of the study only, so
  the shared study stays an older study.json without a "serving" key;
- frontier, decision: computed live from the engine on every test run, so they follow the engine.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import sys
import tempfile
from pathlib import Path

from moelab.study.plan import PAIRS

FIXTURE = Path(__file__).parent / "fixtures" / "study_parts.json"


def write_corpus(root: Path) -> Path:
    """Two small domains (prose, math) of generated text."""
    rng = random.Random(0)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    for domain in ("prose", "math"):
        folder = root / domain
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(12):
            if domain == "prose":
                text = " ".join(rng.choice(words) for _ in range(400))
            else:
                text = "\n".join(f"{a} + {b} = {a + b}" for a, b in
                                 ((rng.randrange(100), rng.randrange(100)) for _ in range(150)))
            (folder / f"doc{i}.txt").write_text(text)
    return root


def train_part(work: Path, steps: int = 24) -> dict:
    """A real matched training comparison, with loss curves and per-domain expert load, as `study` stores it."""
    from moelab.train.compare import train_compare
    from moelab.train.config import TrainConfig
    from moelab.train.presets import load_train_spec

    corpus = write_corpus(work / "corpus")
    cfg = TrainConfig(steps=steps, batch_size=4, seq_len=64, eval_every=max(1, steps // 4), ckpt_every=steps,
                      warmup=4, vocab_size=512, eval_tokens=2048, data=str(corpus))
    result = train_compare([load_train_spec(m) for m in PAIRS.values()], cfg, work / "runs", target_loss=4.0,
                           progress=False, log=lambda msg: None)
    return {**result, "pairs": dict(PAIRS)}


def synthetic_bench() -> dict:
    """Plausible CPU measurements: MoE decode pays routing overhead at small batch and wins at large batch."""
    rng = random.Random(1)
    shape = {"tiny-dense": (1.4e-3, 0.22e-3, 1.0), "tiny-moe": (2.6e-3, 0.11e-3, 1.15),
             "tiny-moe-fine": (3.4e-3, 0.10e-3, 1.3)}
    rows = []
    for model, (base, per_seq, prefill_x) in shape.items():
        for phase in ("prefill", "decode"):
            for batch in (1, 2, 4, 8, 16, 32, 64):
                tokens = batch * (64 if phase == "prefill" else 1)
                measured = base * (4 if phase == "prefill" else 1) + per_seq * tokens * (prefill_x if phase ==
                                                                                          "prefill" else 1)
                measured *= 1 + rng.uniform(-0.05, 0.05)
                predicted = measured * (1 + rng.uniform(-0.3, 0.25))
                p50 = measured
                rows.append({
                    "model": model, "phase": phase, "batch": batch, "measured_s": measured, "predicted_s": predicted,
                    "rel_error": (predicted - measured) / measured, "p50_s": p50,
                    "p95_s": p50 * (1.08 + rng.uniform(0, 0.05)), "p99_s": p50 * (1.15 + rng.uniform(0, 0.1)),
                    "tokens_per_second": tokens / measured, "predicted_tokens_per_second": tokens / predicted,
                    "memory": {"weights_bytes": 4 * (1.6e6 if model == "tiny-dense" else 3.9e6)},
                    "routing_share": None if model == "tiny-dense" else 0.2 + rng.uniform(0, 0.1),
                })

    def med(phase: str) -> float:
        errs = sorted(abs(r["rel_error"]) for r in rows if r["phase"] == phase)
        return errs[len(errs) // 2]

    return {"device": "cpu", "dtype": "fp32",
            "models": [{"name": m, "params_total": 1.57e6 if m == "tiny-dense" else 3.94e6} for m in shape],
            "rows": rows,
            "summary": {p: {"median_abs_rel_error": med(p), "n": sum(r["phase"] == p for r in rows)}
                        for p in ("prefill", "decode")},
            "flip": {"measured_batch": 16, "predicted_batch": 13}}


def synthetic_calibration() -> dict:
    return {"name": "calibrated-cpu", "peak_tflops": {"fp32": 0.21, "bf16": 0.08}, "memory_gb": 16,
            "memory_bandwidth_gbps": 11.5, "tdp_watts": 65, "usd_per_hour": 0.05, "layer_overhead_us": 45.0,
            "moe_layer_overhead_us": 180.0, "compute_efficiency": 1.0, "bandwidth_efficiency": 1.0,
            "measurements": {"matmul_fp32_tflops": [0.19, 0.21, 0.2], "stream_copy_gbps": [11.1, 11.5, 11.4],
                             "layer_overhead_us": [44.0, 45.0, 47.0]}}


SERVE_CONCURRENCY = (1, 4, 16, 32)


def synthetic_serving(concurrency: tuple[int, ...] = SERVE_CONCURRENCY, requests: int = 96) -> dict:
    """A `study["serving"]` block as run.serve_stage stores `moelab serve-bench`'s report.json: vLLM on this CPU
    serving tiny-dense and tiny-moe (128 prompt + 32 output tokens), with plausible synthesised timings (vLLM's
    CPU step is dominated by its scheduler and per-step overhead; MoE decode pays its fused-MoE kernels) and
    the engine's modelled means on the calibrated CPU. Row keys follow moelab.serve.bench's own names."""
    from moelab.serve.bench import MEASURED_FOR, REL_ERROR_DEFINITION, ROW_METRICS
    from moelab.serve.greedy import NEAR_TIE_LOGITS
    from moelab.serve.load import PERCENTILES

    rng = random.Random(2)
    n_in, n_out = 128, 32
    # model: (ttft at c=1 ms, ttft growth per extra request ms, tpot at c=1 ms, tpot growth per extra request ms)
    shape = {"tiny-dense": ("dense", 14.0, 4.1, 5.2, 0.42), "tiny-moe": ("moe", 19.0, 5.3, 7.4, 0.51)}
    # the engine's modelled means on the calibrated CPU: eager per-layer overheads, far below vLLM's step
    predicted_shape = {"tiny-dense": (1.9, 0.31, 0.62, 0.021), "tiny-moe": (3.1, 0.42, 1.05, 0.024)}
    rows, servers = [], []
    folder = "/tmp/study/serve"
    for model, (kind, ttft0, ttft_k, tpot0, tpot_k) in shape.items():
        for c in concurrency:
            ttft = ttft0 + ttft_k * (c - 1)
            tpot = tpot0 + tpot_k * (c - 1)
            row = {"model": model, "kind": kind, "engine": "vllm", "source": "vLLM 0.32.0 (cpu) on 127.0.0.1",
                   "concurrency": c, "requests": requests, "completed": requests, "failed": 0,
                   "input_tokens": n_in, "output_tokens": n_out}
            for metric, centre in (("ttft_ms", ttft), ("tpot_ms", tpot), ("itl_ms", tpot), ("e2e_ms", None)):
                centre = ttft + (n_out - 1) * tpot if centre is None else centre
                centre *= 1 + rng.uniform(-0.03, 0.03)
                tail = {50: 1.0, 95: 1.18 + rng.uniform(0, 0.05), 99: 1.35 + rng.uniform(0, 0.1)}
                row.update({f"{metric}_p{p}": centre * tail[p] for p in PERCENTILES})
            row["ttft_ms_mean"] = row["ttft_ms_p50"] * 1.04
            row["tpot_ms_mean"] = row["tpot_ms_p50"] * 1.02
            e2e_mean = row["ttft_ms_mean"] + (n_out - 1) * row["tpot_ms_mean"]
            row["requests_per_second"] = c / e2e_mean * 1e3
            row["output_tokens_per_second"] = row["requests_per_second"] * n_out
            row.update(goodput_requests_per_second=None, duration_s=requests / row["requests_per_second"],
                       first_error=None, result_file=f"{folder}/{model}/c{c}.json")
            p_ttft0, p_ttft_k, p_tpot0, p_tpot_k = predicted_shape[model]
            p_ttft, p_tpot = p_ttft0 + p_ttft_k * (c - 1), p_tpot0 + p_tpot_k * (c - 1)
            p_rps = c / (p_ttft + (n_out - 1) * p_tpot) * 1e3
            predicted = {"ttft_ms": p_ttft, "tpot_ms": p_tpot, "requests_per_second": p_rps,
                         "output_tokens_per_second": p_rps * n_out}
            for key, value in predicted.items():
                row[f"predicted_{key}"] = value
                row[f"rel_error_{key}"] = value / row[MEASURED_FOR[key]] - 1
            row["prediction"] = {"hardware": "calibrated-cpu", "from": "/tmp/study/hardware.json", "plan": "tp1",
                                 "dtype": "fp32", "fits": True}
            assert all(f"{m}_p{p}" in row for m in ROW_METRICS for p in PERCENTILES)
            rows.append(row)
        servers.append({"model": model, "folder": f"{folder}/export/{model}", "ready_after_s": 70.1 if kind ==
                        "dense" else 83.4, "log": f"{folder}/{model}/server.log", "python":
                        "/work/main/.venv-serve/bin/python", "vllm": "0.32.0", "torch": "2.9.0+cpu", "device": "cpu",
                        "dtype": "fp32",
                        "greedy": {"prompts": 8, "tokens_compared": 256 if kind == "dense" else 241, "matched":
                                   8 if kind == "dense" else 7, "near_ties": 0 if kind == "dense" else 1,
                                   "mismatches": [], "ok": True, "near_tie_logits": NEAR_TIE_LOGITS,
                                   "min_margin_seen": 0.031 if kind == "dense" else 0.0042}})
    return {"skipped": None, "concurrency": list(concurrency), "input": n_in, "output": n_out,
            "requests_per_level": requests, "basis": "measured: vLLM serving on this machine's CPU",
            "folder": folder, "rows": rows, "servers": servers, "notes": [], "failures": [], "warnings": [],
            "rel_error_definition": REL_ERROR_DEFINITION}


def build_parts(steps: int = 24) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("MOELAB_HOME", str(Path(tmp) / "home"))
        os.environ.setdefault("MOELAB_CACHE", str(Path(tmp) / "cache"))
        training = train_part(Path(tmp), steps)
    return {"training": training, "bench": synthetic_bench(), "calibration": synthetic_calibration(),
            "machine": {"processor": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                        "torch": __import__("torch").__version__, "python": platform.python_version(),
                        "platform": platform.platform()}}


def study(parts: dict | None = None) -> dict:
    """The full study dict: stored training/bench/calibration parts, live frontier and decision."""
    from moelab.decide import default_workload, recommend
    from moelab.study.run import frontier_stage

    parts = parts if parts is not None else json.loads(FIXTURE.read_text())
    wl = default_workload()
    evidence = {"training": parts.get("training"), "bench": parts.get("bench")}
    return {"version": 1, "created": "2026-01-01T00:00:00+00:00", "quick": False, "wall_seconds": 95.2,
            "machine": parts.get("machine"), "workload": wl.to_dict(), "training": parts.get("training"),
            "calibration": parts.get("calibration"), "bench": parts.get("bench"),
            "frontier": frontier_stage(wl), "decision": recommend(wl, evidence)}


if __name__ == "__main__":
    parts = build_parts(int(sys.argv[1]) if len(sys.argv) > 1 else 24)
    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_text(json.dumps(parts, indent=1, default=lambda x: None if isinstance(x, float) and
                                  math.isnan(x) else x) + "\n")
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)")
