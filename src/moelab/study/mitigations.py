"""The study's mitigations stage: the seeds' four ways to make a MoE affordable, done to the trained MoE here.

From the study's trained MoE (runs/tiny-moe): pruned by usage (moelab prune --keep), its routed experts quantized
to int8 and int4 (moelab quantize --experts), offloaded to the run's safetensors file with a few experts resident
(moelab bench --offload-experts), and the dense model upcycled into a MoE and trained on beside continued dense
training and a MoE from scratch (moelab.study.upcycling). Each variant's weights held in memory are exact
(tensor bytes), its loss per domain is measured on the same validation tokens as the base run's, and its decode
step is timed by `moelab bench` in a fresh process (variants interleaved with the base model, as any two bench
models are), beside the engine's prediction on this study's calibration. The engine's frontier-model version of
the same mitigations (cost.mitigations) closes the section.

Offloading changes where the weights live, not their values: its logits are bit-identical to the resident
model's (tests/mitigate/test_offload.py), so its loss delta is 0 by construction and is not re-measured.

Time on this 2-core CPU: 92 s measured when the upcycling arms are cached, about 310 s from scratch (230 s of it
the three upcycling arms); --quick skips int8 and the resident sweep and shrinks upcycling: 52 s measured.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from moelab.errors import MoelabError
from moelab.study.plan import PAIRS, StudyPlan

# The seeds' claimed costs (seeds 001, "Memory Optimization Techniques" for MoE).
SEEDS_CLAIMS = {"offload": "+10-50 ms latency per swap; fits larger models",
                "quantize": "INT8 or INT4 weights: 1-2% accuracy loss, 4-8x memory reduction",
                "prune": "remove unused experts: linear memory reduction, may hurt rare cases",
                "upcycle": "Nemotron-4 15B upcycled beat continued dense training on the same tokens (seeds 000)"}


def _bench(out: Path, name: str, models: list[str], plan: StudyPlan, hardware: Path, log, extra=()) -> dict:
    """`moelab bench MODELS` in a fresh process at the stage's decode settings; its JSON."""
    from moelab.study.run import run_relayed

    target = out / f"bench-{name}.json"
    cmd = [sys.executable, "-m", "moelab.cli", "bench", *models, "--batches",
           ",".join(map(str, plan.mitigation_batches)), "--prompt", str(plan.bench_prompt), "--gen",
           str(plan.mitigation_gen), "--repeats", str(plan.mitigation_repeats), "--hardware", str(hardware),
           "--json", *extra]
    run_relayed(cmd, log, prefix="study: mitigations: ", what=f"bench of {name}", stdout=target)
    return json.loads(target.read_text())


def _decode(bench: dict, model: str, batch: int) -> dict | None:
    row = next((r for r in bench.get("rows") or [] if r.get("model") == model and r.get("phase") == "decode"
                and r.get("batch") == batch), None)
    if row is None:
        return None
    return {"batch": batch, "weights_bytes": row["memory"]["weights_bytes"], "measured_s": row["measured_s"],
            "mean_s": row.get("measured_mean_s"), "p50_s": row["p50_s"], "p95_s": row["p95_s"],
            "p99_s": row["p99_s"], "predicted_s": row.get("predicted_s"), "rel_error": row.get("rel_error"),
            "samples": row.get("samples"), **({"offload": row["offload"]} if row.get("offload") else {})}


def _total(weight_bytes) -> int | None:
    """A transform summary's weight bytes as one number (prune: bytes; quantize: {component: bytes, "total"})."""
    return weight_bytes.get("total") if isinstance(weight_bytes, dict) else weight_bytes


def _variant(name: str, transform: str | None, detail: str, weight_bytes, loss: dict, base_loss: dict,
             rare: list[str], decode: dict | None, note: str = "", speed: float | None = None) -> dict:
    """One row of the table; `speed`: the base's decode p50 over this variant's, measured in one process."""
    from moelab.mitigate.quality import loss_delta

    delta = loss_delta(base_loss, loss)
    rare_delta = [delta[d] for d in rare if d in delta]
    return {"name": name, "transform": transform, "detail": detail, "weight_bytes": weight_bytes,
            "loss": loss, "loss_delta": delta, "loss_delta_mean": delta.get("mean"),
            "loss_delta_rare": sum(rare_delta) / len(rare_delta) if rare_delta else None, "rare_domains": rare,
            "decode": decode, "speed_ratio": speed, "note": note,
            "seeds_claim": SEEDS_CLAIMS.get(transform or "", "")}


def _ratio(bench: dict, arms: dict, batch: int) -> str:
    moe, dense = (_decode(bench, arms[a]["model"], batch) for a in ("upcycled", "dense_continued"))
    if not moe or not dense:
        return "not measured"
    return f"p50 {moe['p50_s'] * 1e3:.2f} ms vs {dense['p50_s'] * 1e3:.2f} ms ({moe['p50_s'] / dense['p50_s']:.2f}x)"


def verdict(up: dict) -> str:
    """What the upcycling comparison measured, in words: the seeds' claim first (upcycled against continued dense
    training on the same budget), then the MoE from scratch."""
    arms = up["arms"]
    final = {a: (r.get("final_val") or {}).get("mean") for a, r in arms.items()}
    reached = {a: r["to_target"]["tokens_total"] for a, r in arms.items() if r.get("to_target")}
    up_loss, dense_loss, scratch_loss = (final.get(a) for a in ("upcycled", "dense_continued", "moe_scratch"))
    if up_loss is None or dense_loss is None:
        return "Not measured: an arm has no final validation loss."
    better = up_loss < dense_loss
    out = (f"Upcycled {'beat' if better else 'did not beat'} continued dense training on the same budget: final mean "
           f"validation loss {up_loss:.3f} vs {dense_loss:.3f} (the seeds: Nemotron-4 15B upcycled beat continued "
           "dense training).")
    if scratch_loss is not None:
        out += f" The same MoE from scratch on the whole budget ended at {scratch_loss:.3f}."
    if reached:
        first = min(reached, key=reached.get)
        out += (f" First to the target ({up['target_loss']:.3f}): {first.replace('_', ' ')} after "
                f"{reached[first]:,.0f} tokens in all.")
    else:
        out += f" No arm reached the target ({up['target_loss']:.3f})."
    return out + (" The continued arms restart the learning-rate schedule (warm-up, then cosine) after the "
                  "pretraining's decay; the scratch arm runs one schedule over the whole budget.")


EXPECTED_SECONDS = {"full": 310.0, "quick": 55.0}  # from scratch (module docstring)


def _speed(bench: dict, base: str, variant: str, batch: int) -> float | None:
    """Base decode p50 over the variant's, both from one bench process (interleaved rounds)."""
    a, b = _decode(bench, base, batch), _decode(bench, variant, batch)
    return a["p50_s"] / b["p50_s"] if a and b and b["p50_s"] else None


def mitigations_stage(out: Path, plan: StudyPlan, hardware: Path, log) -> dict:
    """Every mitigation of the study's trained MoE into out/mitigations, measured; the dict the report renders.
    Each variant is benched in its own process beside the base MoE (or, offloaded, beside its own resident
    model), so its speed over the base is read within one process."""
    from moelab.cost.mitigations import frontier_mitigations
    from moelab.mitigate.prune import prune
    from moelab.mitigate.quantize import quantize
    from moelab.study.upcycling import upcycling_stage

    began = time.perf_counter()
    folder = out / "mitigations"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    base = out / "runs" / PAIRS["moe"]
    batch = plan.mitigation_batches[0]
    scope = "quick" if plan.quick else "full"
    result = {"base": {"model": PAIRS["moe"], "run": str(base)}, "variants": [], "failures": [], "warnings": [],
              "eval_tokens": plan.eval_tokens, "seeds": SEEDS_CLAIMS, "expected_seconds": EXPECTED_SECONDS[scope],
              "bench": {"device": "cpu", "dtype": "fp32", "batch": batch, "batches": list(plan.mitigation_batches),
                        "prompt": plan.bench_prompt, "gen": plan.mitigation_gen, "repeats": plan.mitigation_repeats},
              "shrunk": "--quick: int8 and the resident sweep skipped, fewer decode steps" if plan.quick else None}

    def benched(name: str, models: list[str], extra=()) -> dict:
        done = _bench(folder, name, models, plan, hardware, log, extra)
        result["warnings"] += [f"bench of {name}: {w}" for w in done.get("warnings") or []]
        return done

    log(f"study: mitigations: pruning {PAIRS['moe']} to {plan.prune_keep} experts per layer")
    pruned = prune(base, folder / "pruned", keep=plan.prune_keep, calibration_tokens=plan.eval_tokens,
                   eval_tokens=plan.eval_tokens)
    base_name, base_loss, rare = pruned["from_model"], pruned["loss"]["before"], pruned["loss"]["rare_domains"]
    base_bytes = _total(pruned["weight_bytes"]["before"])
    bench = benched("pruned", [str(base), pruned["folder"]])
    variants = [_variant("base MoE", None, f"{PAIRS['moe']} as trained", base_bytes, base_loss, base_loss, rare,
                         _decode(bench, base_name, batch), speed=1.0),
                _variant(f"pruned to {plan.prune_keep}", "prune",
                         f"the {plan.prune_keep} most used experts per layer kept (load on "
                         f"{plan.eval_tokens} training tokens per domain)",
                         _total(pruned["weight_bytes"]["after"]), pruned["loss"]["after"], base_loss, rare,
                         _decode(bench, pruned["model"], batch),
                         speed=_speed(bench, base_name, pruned["model"], batch))]
    for dtype in ("int4",) if plan.quick else ("int8", "int4"):
        log(f"study: mitigations: quantizing {PAIRS['moe']}'s experts to {dtype}")
        q = quantize(base, folder / dtype, experts=dtype, eval_tokens=plan.eval_tokens)
        bench = benched(dtype, [str(base), q["folder"]])
        scheme = "per-channel" if dtype == "int8" else f"per-group of {q['group_size']}"
        variants.append(_variant(f"{dtype} experts", "quantize", f"routed experts {dtype}, {scheme} symmetric, "
                                 "dequantized on the fly; the rest fp32", _total(q["weight_bytes"]["after"]),
                                 q["loss"]["after"], base_loss, rare, _decode(bench, q["model"], batch),
                                 speed=_speed(bench, base_name, q["model"], batch)))
    offload = benched("offload", [str(base)], ["--offload-experts", "--resident",
                                               ",".join(map(str, plan.offload_resident))])
    for m in offload.get("models") or []:
        resident = (m.get("offload") or {}).get("resident")
        decode = _decode(offload, m["name"], batch) if resident is not None else None
        block = (decode or {}).get("offload")
        if not block:
            continue
        note = (f"hit rate {block['hit_rate']:.0%}, {block['misses_per_step']:.1f} misses per step, "
                f"{block['miss_seconds_median'] * 1e3:.2f} ms per miss (seeds: +10-50 ms per swap)"
                if block.get("hit_rate") is not None and block.get("miss_seconds_median") else "")
        slowdown = block.get("slowdown_vs_resident")
        variants.append(_variant(f"offloaded, {resident} resident", "offload",
                                 f"{resident} of {PAIRS['moe']}'s experts per layer resident ({block.get('cache')}), "
                                 "misses read cold from model.safetensors; weights held: the state dict plus the "
                                 "resident budget", decode["weights_bytes"], base_loss, base_loss, rare, decode,
                                 note + "; logits bit-identical to resident (tested), so loss is unchanged",
                                 speed=1 / slowdown if slowdown else None))
    result["offload"] = offload.get("offload")
    try:
        up = result["upcycling"] = upcycling_stage(out, plan, log)
    except MoelabError as e:
        result["failures"].append(f"upcycling: {e}")
        up = result["upcycling"] = {"skipped": f"failed: {e}"}
    arms = up.get("arms") or {}
    if not up.get("skipped") and "upcycled" in arms and "dense_continued" in arms:
        up["verdict"] = verdict(up)
        moe, dense = arms["upcycled"], arms["dense_continued"]
        bench = benched("upcycled", [moe["run"], dense["run"]])
        weights = next((r["memory"]["weights_bytes"] for r in bench.get("rows") or [] if r["model"] == moe["model"]),
                       None)
        variants.append(_variant(
            "upcycled, trained on", "upcycle", f"{up['dense_model']} upcycled ({up['mode']} {up['experts']}x"
            f"{up['top_k']}) and trained {moe['steps']} more steps: another model than the base MoE", weights,
            moe["final_val"], base_loss, rare, _decode(bench, moe["model"], batch),
            f"decode beside the dense model trained as long: {_ratio(bench, arms, batch)}"))
    for v in variants:
        v["memory_share"] = v["weight_bytes"] / base_bytes if v["weight_bytes"] and base_bytes else None
    result["frontier"] = [r.to_dict() for r in frontier_mitigations()]
    result["variants"] = variants
    result["seconds"] = round(time.perf_counter() - began, 2)
    return result
