"""`moelab hybrid RUN_DENSE RUN_MOE --out DIR`: measure a dense and a MoE run on the probe sets once per query, then
compose every hybrid policy and threshold from those measurements into a cost-quality curve (DIR/hybrid.json).

1. Inputs are checked before any work (moelab.hybrid.inputs).
2. The scored items are moelab.eval.probes.probe_items(per_level) (both sets, every level); the router's training
   items are probe_items(per_level, PROBE_SEED + ROUTER_SEED_OFFSET) less any prompt that is also scored (the
   scored items of the other folds join them: step 4).
3. Every item is answered once by each model, greedy, by the engine: moelab's own generation (both models in
   this process, their queries interleaved and their order alternated, so that a machine's drift falls on both)
   or vLLM (each run exported and served on 127.0.0.1 in turn). The first WARMUP_QUERIES queries of each model
   are answered before and not measured. Each answer keeps its exact-match verdict (moelab.eval.score), its
   confidence exp(mean token log-probability), its wall seconds, its prompt and generated tokens, and its FLOPs
   (moelab.hybrid.cost).
4. The router's classifier (label: the MoE right where the dense model is wrong) gives each scored query P(MoE
   needed) from its prompt alone, timed; it is cross-fitted on the training items and the other folds of the
   scored ones, so that no query is routed by a classifier that saw it (moelab.hybrid.router).
5. dense, MoE, cascade(t) and route(t) for every threshold t, and the domain route, are composed from the
   scored queries' measurements (moelab.hybrid.policies), flagged Pareto-optimal (moelab.hybrid.curve).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from moelab.basis import BASIS_TINY as BASIS
from moelab.errors import MoelabError
from moelab.hybrid import curve, features
from moelab.hybrid.inputs import check_engine, check_out, check_per_level, parse_thresholds, read_pair
from moelab.hybrid.table import Answer, Query

DEFAULT_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
PER_LEVEL = 16
ROUTER_SEED_OFFSET = 1  # the router trains on another probe draw than the one scored
WARMUP_QUERIES = 3
# moelab's engine times batch-1 decoding of models of a few million parameters with one intra-op thread: a second
# thread has nothing to split at this size, and on a shared 2-core machine its spin-waits made the same queries
# about 20x slower (tests/hybrid: 200 s against 10 s under a load average of 7)
MOELAB_THREADS = 1
COMPOSITION = ("composed from per-query measurements: every scored item was answered once by each model (its "
               "answer, confidence, wall seconds and FLOPs); each policy and threshold chooses, per item, whose "
               "answer counts and whose costs are paid, without generating again")
OUTPUT = "hybrid.json"

Log = Callable[[str], None]


def resolve_engine(engine: str) -> tuple[str, str]:
    """(engine used, the note that says why): vLLM where the serving environment is there (auto), else moelab."""
    from moelab.serve.environment import serving_available

    check_engine(engine)
    if engine == "moelab":
        return "moelab", ("moelab's own greedy generation (eager torch, float32, batch 1, KV cache), as asked "
                          "(--engine moelab)")
    reason = serving_available()
    if engine == "vllm":
        if reason is not None:
            raise MoelabError(f"--engine vllm: {reason}")
        return "vllm", "vLLM (served on 127.0.0.1, one completion at a time, temperature 0), as asked (--engine vllm)"
    if reason is None:
        return "vllm", ("vLLM (served on 127.0.0.1, one completion at a time, temperature 0): the serving "
                        "environment is here")
    return "moelab", f"moelab's own greedy generation (eager torch, float32, batch 1, KV cache): {reason}"


def _items(per_level: int):
    """(scored items, router training items apart from them: possibly none, the folds then train alone)."""
    from moelab.eval.probes import PROBE_SEED, probe_items

    scored = probe_items(per_level, PROBE_SEED)
    prompts = {it.prompt for it in scored}
    train = [it for it in probe_items(per_level, PROBE_SEED + ROUTER_SEED_OFFSET) if it.prompt not in prompts]
    return scored, train


def _measure_moelab(dense_src, moe_src, items: Sequence, max_new: int, log: Log) -> tuple[list, list, dict]:
    """Both models in this process, each item answered by both, the order alternated item by item."""
    import torch

    from moelab.hybrid.moelab_engine import MoelabEngine

    engines = (MoelabEngine(dense_src, max_new), MoelabEngine(moe_src, max_new))
    threads = torch.get_num_threads()
    torch.set_num_threads(MOELAB_THREADS)
    out: tuple[list, list] = ([], [])
    try:
        for it in items[:WARMUP_QUERIES]:
            for e in engines:
                e.answer(it.prompt)
        for i, it in enumerate(items):
            order = (0, 1) if i % 2 == 0 else (1, 0)
            got = {}
            for k in order:
                got[k] = engines[k].answer(it.prompt)
            out[0].append(got[0])
            out[1].append(got[1])
            if (i + 1) % max(1, len(items) // 4) == 0 or i + 1 == len(items):
                log(f"answered {i + 1}/{len(items)} queries with each model")
    finally:
        torch.set_num_threads(threads)
    env = {"threads": MOELAB_THREADS, "order": "interleaved, alternating which model answers first"}
    return out[0], out[1], {"dense": {**engines[0].environment, **env}, "moe": {**engines[1].environment, **env}}


def _measure_vllm(dense_src, moe_src, items: Sequence, folder: Path, max_new: int,
                  log: Log) -> tuple[list, list, dict]:
    """Each run served by vLLM in turn (dense first), every item answered once."""
    from moelab.hybrid.vllm_engine import VllmEngine

    answers, servers = [], {}
    for kind, src in (("dense", dense_src), ("moe", moe_src)):
        with VllmEngine(src, kind, folder, max_new, say=log) as engine:
            for it in items[:WARMUP_QUERIES]:
                engine.answer(it.prompt)
            got = []
            for i, it in enumerate(items):
                got.append(engine.answer(it.prompt))
                if (i + 1) % max(1, len(items) // 4) == 0 or i + 1 == len(items):
                    log(f"{kind}: answered {i + 1}/{len(items)} queries through vLLM")
            answers.append(got)
            servers[kind] = engine.environment
    return answers[0], answers[1], servers


def _answer(item, generation, spec, prompt_tokens: int) -> Answer:
    from moelab.eval.score import exact_match
    from moelab.hybrid.cost import answer_flops

    generated = len(generation.token_ids)
    return Answer(text=generation.text, correct=exact_match(generation.text, item.answer),
                  confidence=float(generation.confidence), seconds=float(generation.seconds),
                  prompt_tokens=prompt_tokens, generated_tokens=generated,
                  flops=answer_flops(spec, prompt_tokens, generated))


def _model(name: str, src, point) -> dict:
    from moelab.cost.params import count_params

    p = count_params(src.spec)
    return {"name": src.spec.name, "run": str(src.run_folder), "params_active": p.active, "params_total": p.total,
            "accuracy": point.accuracy, "ci_low": point.ci_low, "ci_high": point.ci_high, "n": point.n,
            "latency_s_mean": point.latency_s_mean, "flops_per_query": point.flops_per_query, "sets": point.sets,
            "kind": name}


def run_hybrid(dense_ref: str | Path, moe_ref: str | Path, out: str | Path,
               thresholds: str | Sequence[float] = DEFAULT_THRESHOLDS, engine: str = "auto",
               per_level: int = PER_LEVEL, log: Log = lambda _msg: None) -> dict:
    """Measure, compose and write DIR/hybrid.json (atomically); the result (the module docstring's steps)."""
    import numpy as np

    from moelab.data.cache import atomic_write_json, check_writable_dir
    from moelab.eval.generate import MAX_NEW_TOKENS
    from moelab.hybrid import router
    from moelab.hybrid.policies import dense as dense_point
    from moelab.hybrid.policies import moe as moe_point

    started = time.perf_counter()
    values = parse_thresholds(thresholds)
    check_per_level(per_level)
    check_engine(engine)
    dense_src, moe_src = read_pair(dense_ref, moe_ref)
    folder = check_out(out, (dense_src, moe_src))
    used, note = resolve_engine(engine)
    scored, train = _items(per_level)
    folder = check_writable_dir(folder, "--out")
    items = [*scored, *train]
    log(f"{len(scored)} scored queries and {len(train)} router training queries, engine {used}")
    if used == "vllm":
        gens_dense, gens_moe, servers = _measure_vllm(dense_src, moe_src, items, folder, MAX_NEW_TOKENS, log)
    else:
        gens_dense, gens_moe, servers = _measure_moelab(dense_src, moe_src, items, MAX_NEW_TOKENS, log)

    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(dense_src.tokenizer_json())  # one tokenizer (read_pair checked)

    def count(prompt: str) -> int:
        return len(tokenizer.encode(prompt, add_special_tokens=False).ids)

    answers = [(_answer(it, gd, dense_src.spec, count(it.prompt)), _answer(it, gm, moe_src.spec, count(it.prompt)))
               for it, gd, gm in zip(items, gens_dense, gens_moe, strict=True)]
    scored_answers, train_answers = answers[:len(scored)], answers[len(scored):]
    x_train = features.matrix(train, count)
    y_train = np.array([float(m.correct and not d.correct) for d, m in train_answers])
    x_scored = features.matrix(scored, count)
    y_scored = np.array([float(m.correct and not d.correct) for d, m in scored_answers])
    classifiers = router.cross_fit(x_scored, y_scored, x_train, y_train, features.NAMES)
    classifier = router.fit(np.vstack([x_train, x_scored]), np.concatenate([y_train, y_scored]), features.NAMES)
    queries = []
    for it, (d, m), fold in zip(scored, scored_answers, router.fold_of(len(scored)), strict=True):
        t0 = time.perf_counter()  # the router's work for this query: its features and its fold's classifier
        x = np.asarray([features.features(it.domain, it.prompt, count(it.prompt))])
        p = float(classifiers[fold].probability(x)[0])
        queries.append(Query(id=it.id, set=it.set, level=it.level, domain=it.domain, dense=d, moe=m, p_moe=p,
                             router_seconds=time.perf_counter() - t0))
    points = curve.sweep(queries, values)
    best = {"cascade": curve.best(points, "cascade"), "route": curve.best(points, "route", "classifier"),
            "route_domain": curve.best(points, "route", "domain")}
    held_out_p = np.array([q.p_moe for q in queries])
    result = {
        "engine": used, "engine_note": note, "basis": BASIS, "composition": COMPOSITION, "items": len(scored),
        "per_level": per_level, "thresholds": values, "max_new_tokens": MAX_NEW_TOKENS,
        "warmup_queries": WARMUP_QUERIES, "ci": "Wilson 95%",
        "models": {"dense": _model("dense", dense_src, dense_point(queries)),
                   "moe": _model("moe", moe_src, moe_point(queries))},
        "points": [p.to_dict() for p in points],
        "router": {**classifier.to_dict(), "label": "1 when the MoE answers correctly and the dense model does not",
                   "cross_fitted": True, "folds": router.FOLDS, "extra_items": len(train),
                   "extra_positives": int(y_train.sum()), "scored_positives": int(y_scored.sum()),
                   "trained_on": (f"cross-fitted: each scored query's P(MoE needed) comes from a classifier fitted "
                                  f"on {len(train)} items of another probe draw (seed PROBE_SEED + "
                                  f"{ROUTER_SEED_OFFSET}, scored prompts dropped) and the scored queries outside "
                                  f"its fold ({router.FOLDS} folds), never on itself; weights shown: the fit on "
                                  "all of them"),
                   "held_out_accuracy": float(np.mean((held_out_p >= 0.5) == (y_scored == 1))),
                   "fold_constant": [c.constant for c in classifiers],
                   "threshold_means": "route to the MoE when P(MoE needed) >= threshold",
                   "router_seconds_mean": sum(q.router_seconds for q in queries) / len(queries),
                   "domain_rule": "facts (knowledge) to the MoE, math (reasoning) to the dense model"},
        "cascade": {"confidence": "exp(mean token log-probability) of the dense answer",
                    "rule": "the MoE answers when the dense confidence < threshold; such a query costs both"},
        "best": {k: (v.to_dict() if v is not None else None) for k, v in best.items()},
        "servers": servers,
        "queries": [q.to_dict() for q in queries],
    }
    result["seconds"] = round(time.perf_counter() - started, 3)
    atomic_write_json(folder / OUTPUT, result)
    result["path"] = str(folder / OUTPUT)
    return result
