"""Expert offloading (moelab.mitigate.offload, bench --offload-experts): bit-identical decoding, the cache policies
against hand-worked references, the header parser against safetensors' own reader, the cold read path, the bench
CLI end to end and its one-line refusals."""

import json
from dataclasses import replace

import pytest
import torch

from moelab.bench.measure import prefill_last
from moelab.cli import main
from moelab.errors import MoelabError
from moelab.mitigate.offload import ExpertCache, ExpertFile, offload_experts, read_header, read_probe
from moelab.mitigate.runs import read_run
from moelab.nn.moe import MoELayer, default_backend

FIXED_HW = {  # as tests/bench/bench_hardware.py: fast, deterministic predictions
    "name": "test-cpu", "peak_tflops": {"fp32": 0.05, "bf16": 0.1}, "memory_gb": 16, "memory_bandwidth_gbps": 10,
    "compute_efficiency": 1.0, "bandwidth_efficiency": 1.0, "tdp_watts": 16, "usd_per_hour": 0.04,
    "step_overhead_us": 50, "layer_overhead_us": 100, "moe_layer_overhead_us": 150, "expert_overhead_us": 20,
    "cache_gb": 0.032, "cache_bandwidth_gbps": 40, "gemv_bandwidth_gbps": 30, "elementwise_bandwidth_gbps": 15,
    "attention_tflops": 0.04, "attention_bandwidth_gbps": 20, "attention_head_overhead_us": 0.3,
}


@pytest.fixture
def hw_file(tmp_path):
    path = tmp_path / "hw.json"
    path.write_text(json.dumps(FIXED_HW))
    return str(path)


def _sorted(model):
    """The resident reference on the per-expert path bench uses on the CPU in fp32 ("sorted")."""
    assert default_backend("cpu", torch.float32) == "sorted"
    for layer in model.moe_layers():
        layer.options = replace(layer.options, backend="sorted")
    return model


def _decode(model, batch=2, prompt=6, steps=4, seed=0):
    """Prefill + decode steps with the KV cache, as bench.measure.Runner runs them: every step's logits."""
    g = torch.Generator().manual_seed(seed)
    vocab = model.spec.vocab_size
    out = []
    with torch.inference_mode():
        cache = model.new_cache(prompt + steps)
        out.append(prefill_last(model, torch.randint(0, vocab, (batch, prompt), generator=g), cache))
        for _ in range(steps):
            out.append(model(torch.randint(0, vocab, (batch, 1), generator=g), cache))
    return out


@pytest.mark.parametrize("resident, policy", [(2, "lru"), (3, "lfu"), (6, "lru")])
def test_offloaded_decoding_is_bit_identical_to_resident(moe_run, resident, policy):
    source = read_run(moe_run)
    reference = _decode(_sorted(source.load_model()))
    model = source.load_model()
    before = sum(p.numel() for p in model.parameters())
    off = offload_experts(model, source.folder / "model.safetensors", resident, policy)
    try:
        layers = model.moe_layers()
        assert len(off.stores) == len(layers) == source.spec.n_moe_layers
        assert all(layer.gate_up_proj is None and layer.down_proj is None for layer in layers)  # dropped
        e = source.spec.moe.n_experts
        dropped = sum(isinstance(m, MoELayer) for m in model.modules()) * e * 3 * source.spec.d_model * (
            source.spec.moe.expert_ffn)
        assert before - sum(p.numel() for p in model.parameters()) == dropped
        got = _decode(model)
        for a, b in zip(reference, got, strict=True):
            assert torch.equal(a, b)
        m = off.compute_metrics()
        assert m.misses > 0 and m.bytes_read == m.misses * off.expert_bytes() and len(m.miss_seconds) == m.misses
        if resident == 6:
            assert m.hits > 0
        assert all(len(s.cache.resident()) <= resident for s in off.stores)
        off.reset_metrics()
        assert off.compute_metrics().misses == 0 and off.compute_metrics().hits == 0
    finally:
        off.close()


def _replay(policy, capacity, sequence):
    cache, hits, evicted = ExpertCache(capacity, policy), 0, []
    for e in sequence:
        hit, victim = cache.access(e)
        hits += hit
        if not hit:
            cache.admit(e, e)
            evicted.append(victim)
    return hits, evicted, cache.resident()


def test_lru_and_lfu_eviction_against_hand_worked_references():
    seq = [0, 1, 0, 2, 1, 3, 0]
    # LRU, 2 slots: 0 m, 1 m, 0 h, 2 m (evict 1: used at t2, 0 at t3), 1 m (evict 0), 3 m (evict 2), 0 m (evict 1)
    assert _replay("lru", 2, seq) == (1, [None, None, 1, 0, 2, 1], [0, 3])
    # LFU, 2 slots, counts kept across evictions, ties by LRU: 2 m evicts 1 (1 use vs 0's 2); 1 m (1 now has 2
    # uses) evicts 2 (1 use); 3 m: 0 and 1 both 2 uses, 0 used longer ago -> evict 0; 0 m (3 uses) evicts 3 (1)
    assert _replay("lfu", 2, seq) == (1, [None, None, 1, 2, 0, 3], [0, 1])
    # a popular expert survives LFU but not LRU: 0 is used often, then a scan of 1, 2, 3
    scan = [0, 0, 0, 1, 2, 3, 0]
    assert _replay("lfu", 2, scan)[0] == 3 and _replay("lru", 2, scan)[0] == 2
    with pytest.raises(MoelabError, match="--cache"):
        ExpertCache(2, "fifo")


def test_header_parser_matches_safe_open_exactly(moe_run):
    from safetensors import safe_open

    path = read_run(moe_run).folder / "model.safetensors"
    entries = read_header(path)
    source = ExpertFile(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            assert set(entries) == set(f.keys())
            experts = [n for n in entries if n.endswith((".gate_up_proj", ".down_proj"))]
            assert len(experts) == 2 * read_run(moe_run).spec.n_moe_layers
            for name in experts:
                full = f.get_tensor(name)
                assert entries[name].shape == tuple(full.shape) and entries[name].dtype == full.dtype
                for e in range(full.shape[0]):
                    row = source.row(name, e)
                    assert row.is_contiguous() and torch.equal(row.view(torch.uint8), full[e].view(torch.uint8))
    finally:
        source.close()


def test_bad_safetensors_files_are_one_line(tmp_path):
    short = tmp_path / "short.safetensors"
    short.write_bytes(b"\x01\x00")
    with pytest.raises(MoelabError, match="not a safetensors file"):
        read_header(short)
    lying = tmp_path / "lying.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}}).encode()
    lying.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 16)  # 16 of the 64 bytes
    with pytest.raises(MoelabError, match="do not match"):
        read_header(lying)


def test_cold_and_warm_reads_run(moe_run):
    probe = read_probe(read_run(moe_run).folder / "model.safetensors", repeats=3).to_dict()
    spec = read_run(moe_run).spec
    assert probe["bytes"] == 3 * spec.d_model * spec.moe.expert_ffn * 4 and probe["cold_s"] > 0 and probe["warm_s"] > 0
    assert probe["filesystem"] and probe["link_bandwidth_bytes_per_s"] > 0  # no timing claim: a shared machine


def test_offload_read_benchmark_prints_json(moe_run, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[2] / "benchmarks" / "offload_read.py"
    spec = importlib.util.spec_from_file_location("offload_read", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main([str(moe_run), "--expert", "7", "--repeats", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["expert"] == 7 and {"cold_s", "warm_s", "cold_bytes_per_s", "warm_bytes_per_s"} <= set(out)
    assert script.main([str(moe_run), "--expert", "8"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_bench_offload_end_to_end(moe_run, hw_file, capsys, tmp_path):
    args = ["bench", str(moe_run), "--offload-experts", "--resident", "2,8", "--cache", "lfu", "--batches", "1",
            "--prompt", "4", "--gen", "4", "--repeats", "1", "--hardware", hw_file]  # 4 steps: mean != median
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    by_model = {r["model"]: r for r in out["rows"] if r["phase"] == "decode"}
    assert set(by_model) == {"tiny-moe", "tiny-moe offload 2 lfu", "tiny-moe offload 8 lfu"}
    low = by_model["tiny-moe offload 2 lfu"]["offload"]
    for key in ("hit_rate", "misses_per_step", "miss_seconds_median", "predicted", "predicted_at_measured_hit_rate",
                "seeds_swap_seconds", "slowdown_vs_resident"):
        assert key in low
    assert low["misses_per_step"] > 0 and low["predicted"]["step_seconds"] > 0
    high = by_model["tiny-moe offload 8 lfu"]["offload"]
    assert high["hits_per_step"] > 0 and high["hit_rate"] > 0.5  # all 8 resident: only first touches miss
    row = by_model["tiny-moe offload 2 lfu"]
    assert row["predicted_s"] == low["predicted"]["step_seconds"] and {"p50_s", "p95_s", "p99_s"} <= set(row)
    # the engine models a mean step: the errors are against the mean of the timed steps, not the median
    assert row["measured_mean_s"] > 0 and row["measured_mean_s"] != row["measured_s"]
    assert "against the mean" in low["error_basis"]
    assert row["rel_error"] == pytest.approx((row["predicted_s"] - row["measured_mean_s"]) / row["measured_mean_s"])
    at_hit = low["predicted_at_measured_hit_rate"]["step_seconds"]
    assert low["rel_error_at_measured_hit_rate"] == pytest.approx((at_hit - row["measured_mean_s"])
                                                                  / row["measured_mean_s"])
    # memory: what the variant holds (state dict + N resident experts per MoE layer), hand-counted in fp32
    spec = read_run(moe_run).spec
    per_expert, layers, e = 3 * spec.d_model * spec.moe.expert_ffn * 4, spec.n_moe_layers, spec.moe.n_experts
    resident_row = by_model["tiny-moe"]
    for n, r in ((2, row), (8, by_model["tiny-moe offload 8 lfu"])):
        mem = r["memory"]
        assert mem["resident_expert_bytes"] == n * layers * per_expert
        assert mem["weights_bytes"] == mem["state_dict_bytes"] + mem["resident_expert_bytes"]
        assert mem["weights_bytes"] == resident_row["memory"]["weights_bytes"] - (e - n) * layers * per_expert
        assert mem["predicted_weights_bytes"] == pytest.approx(
            resident_row["memory"]["predicted_weights_bytes"] - (e - n) * layers * per_expert)
    # the prediction's parts and routing share are the offloaded step's, not the resident model's
    assert row["predicted_parts_s"]["transfer"] == low["predicted"]["transfer_seconds"] > 0
    assert row["predicted_routing_share"] == pytest.approx(
        resident_row["predicted_routing_share"] * resident_row["predicted_s"] / row["predicted_s"])
    assert row["predicted_routing_share"] < resident_row["predicted_routing_share"]
    assert out["offload"]["read_probe"]["cold_s"] > 0 and out["offload"]["link"]["host_link_bandwidth_bytes_per_s"]
    from moelab.bench.results import read_moelab_bench

    (tmp_path / "b.json").write_text(json.dumps(out))
    kept = [r for r in read_moelab_bench(tmp_path / "b.json")["rows"] if "offload" in r]
    assert len(kept) == 2 and kept[0]["offload"]["hit_rate"] == low["hit_rate"]
    assert main([a if a != "2,8" else "2" for a in args]) == 0  # the text table (one variant: time)
    text = capsys.readouterr().out
    assert "Offloaded experts" in text and "per swap" in text and "cold vs warm" in text
    assert "of weights held (2 resident experts per MoE layer" in text


@pytest.mark.parametrize("extra, message", [
    (["--offload-experts", "--resident", "1"], "--resident must be an integer from the top-k (2)"),
    (["--offload-experts", "--resident", "9"], "(8), got 9"),
    (["--offload-experts", "--resident", "2,x"], "--resident expects"),
    (["--offload-experts"], "needs --resident"),
    (["--resident", "2"], "give both"),
    (["--offload-experts", "--resident", "2", "--ep", "2"], "--ep"),
    (["--offload-experts", "--resident", "2", "--cache", "fifo"], "--cache must be"),
    (["--offload-experts", "--resident", "2", "--shrink-to", "1M"], "--shrink-to"),
])
def test_bench_offload_refusals(moe_run, hw_file, capsys, extra, message):
    assert main(["bench", str(moe_run), *extra, "--hardware", hw_file]) == 2
    err = capsys.readouterr().err
    assert err.startswith("moelab: error:") and err.count("\n") == 1 and message in err


@pytest.mark.parametrize("which, message", [
    ("dense", "dense model"), ("preset", "a preset (no weights file)"), ("quantized", "quantized run"),
])
def test_bench_offload_refuses_what_has_no_experts_to_read(moe_run, dense_run, hw_file, tmp_path, capsys, which,
                                                           message):
    if which == "dense":
        ref = str(dense_run)
    elif which == "preset":
        ref = "tiny-moe"
    else:  # a copy of the run whose meta says it is quantized
        import shutil

        ref = str(tmp_path / "q")
        shutil.copytree(moe_run / "final", tmp_path / "q" / "final")
        meta = json.loads((tmp_path / "q" / "final" / "meta.json").read_text())
        meta["quantization"] = {"components": {"routed_experts": "int8"}, "group_size": 128, "scheme": "symmetric"}
        (tmp_path / "q" / "final" / "meta.json").write_text(json.dumps(meta))
    assert main(["bench", ref, "--offload-experts", "--resident", "2", "--hardware", hw_file]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_offload_experts_refuses_a_resident_count_out_of_range(moe_run):
    source = read_run(moe_run)
    for bad in (1, 9, True):
        with pytest.raises(MoelabError, match="--resident"):
            offload_experts(source.load_model(), source.folder / "model.safetensors", bad)


@pytest.mark.parametrize("policy", ["lru", "lfu"])
def test_a_step_runs_its_resident_experts_before_any_miss(moe_run, policy):
    """A step that touches every expert with R resident hits exactly the R held before it (in expert order, LRU
    would evict each one just before the step reached it), and the output is the resident layer's exactly."""
    from moelab.nn.dispatch import ExpertBatch, ExpertWeights, per_expert

    source = read_run(moe_run)
    model = source.load_model()
    layer = model.moe_layers()[0]
    whole = ExpertWeights(layer.gate_up_proj.detach().clone(), layer.down_proj.detach().clone())
    off = offload_experts(model, source.folder / "model.safetensors", 3, policy)
    try:
        store = off.stores[0]
        e, d = source.spec.moe.n_experts, source.spec.d_model
        batch = ExpertBatch(torch.randn(2 * e, d), torch.full((e,), 2, dtype=torch.long))
        for step in range(3):
            held = set(store.cache.resident())
            before = store.compute_metrics()
            got = per_expert(batch, store)
            done = store.compute_metrics().since(before)
            assert done.hits == len(held) and done.misses == e - len(held), step
            assert torch.equal(got, per_expert(batch, whole))
    finally:
        off.close()


def test_a_bf16_model_reads_and_is_priced_at_the_files_fp32_bytes(moe_run):
    """A bf16 model offloaded from an fp32 file: a miss moves the file's fp32 slices (then casts), so bytes_read
    counts those, not the bf16 experts the cache holds."""
    source = read_run(moe_run)
    model = source.load_model().to(torch.bfloat16)
    off = offload_experts(model, source.folder / "model.safetensors", 2, "lru")
    try:
        spec = source.spec
        params = 3 * spec.d_model * spec.moe.expert_ffn
        assert off.miss_dtype() == torch.float32 and off.miss_bytes() == off.expert_bytes() == 4 * params
        assert off.resident_bytes() == 2 * spec.n_moe_layers * 2 * params  # held in bf16
        _decode(model, steps=2)
        m = off.compute_metrics()
        assert m.misses > 0 and m.bytes_read == m.misses * 4 * params
    finally:
        off.close()


def test_bench_offload_bf16_and_drift(moe_run, tmp_path, capsys, monkeypatch):
    """--dtype bf16 on the CPU: the engine prices a miss's link term at the file's fp32 bytes (the link was
    measured on them) and the resident step at bf16; with drift the prediction uses the scaled calibration and
    predicted_at_calibration_s the unscaled one, each with the measured link."""
    from moelab.bench import drift
    from moelab.cost.offload import offloaded_decode
    from moelab.spec.hardware import load_hardware

    path = tmp_path / "hw.json"
    path.write_text(json.dumps({**FIXED_HW, "measurements": {"reference": {"compute_s": 1.0, "overhead_s": 1.0}}}))
    monkeypatch.setattr(drift, "drift", lambda calibrated, now: drift.Drift(2.0, 3.0))
    assert main(["bench", str(moe_run), "--offload-experts", "--resident", "2", "--dtype", "bf16", "--batches", "1",
                 "--prompt", "4", "--gen", "2", "--repeats", "1", "--hardware", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    row = next(r for r in out["rows"] if "offload" in r)
    o, spec = row["offload"], read_run(moe_run).spec
    params = 3 * spec.d_model * spec.moe.expert_ffn
    assert o["miss_dtype"] == "fp32" and o["miss_bytes"] == 4 * params
    pred = o["predicted"]
    assert pred["expert_dtype"] == "bf16" and pred["expert_bytes"] == 2 * params and pred["miss_bytes"] == 4 * params
    assert pred["miss_seconds"] == pytest.approx(pred["link_latency_s"] + 4 * params / pred["link_bandwidth"])
    link = out["offload"]["link"]
    hw = replace(load_hardware(str(path)), host_link_bandwidth=link["host_link_bandwidth_bytes_per_s"],
                 host_link_latency_s=link["host_link_latency_s"], host_link_efficiency=1.0)
    context = 4 + (2 - 1) / 2
    calibrated = offloaded_decode(spec, hw, 1, context, "bf16", 2, miss_dtype="fp32").step_seconds
    now = offloaded_decode(spec, drift.scaled(hw, drift.Drift(2.0, 3.0)), 1, context, "bf16", 2,
                           miss_dtype="fp32").step_seconds
    assert row["predicted_at_calibration_s"] == pytest.approx(calibrated)
    # the drift scales the resident step (2x matmul, 3x fixed costs), not the measured link: the step grows, by how
    # much depends on how long this machine's cold reads took
    assert row["predicted_s"] == pytest.approx(now) and now > calibrated


def test_bench_offload_refuses_variants_too_large_for_memory(moe_run, hw_file, capsys, monkeypatch):
    """Memory that holds the resident model's sweep but not the variants and the transient full copy each is
    built as: refused in one line before any work."""
    from moelab.bench import models, run

    r = models.resolve(str(moe_run))
    lone = models.weights_bytes(r, "fp32")
    available = 1.01 * max(lone / models.MAX_BYTES_SHARE,
                           (lone + models.run_bytes(r.spec, "fp32", 1, 4, 2)) / models.MAX_RUN_SHARE)
    models.check_fits([r], "fp32", [1], 4, 2, available, "RAM")  # the resident model alone fits
    monkeypatch.setattr(run, "available_memory_bytes", lambda device: (available, "RAM"))
    assert main(["bench", str(moe_run), "--offload-experts", "--resident", "2,4", "--batches", "1", "--prompt", "4",
                 "--gen", "2", "--repeats", "1", "--hardware", hw_file]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--offload-experts --resident 2,4" in err and "one full copy" in err
