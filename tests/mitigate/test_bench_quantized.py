"""`moelab bench` on a quantized run (moelab quantize): the measured weights are the run's exact bytes, the
engine's prediction is the quantized model's (weights within 2%; on the eager CPU model, the float model's
matmuls plus the on-the-fly dequantization, checked against a hand count from cost.eager's per-parameter
constants), predictions without components are unchanged, and --ep / --offload-experts refuse in one line."""

import json

import pytest
from safetensors import safe_open

from moelab.cli import main
from moelab.cost.roofline import Workload, decode_step, prefill
from moelab.mitigate.runs import read_run
from moelab.spec.hardware import load_hardware
from moelab.train.presets import load_train_spec

FIXED_HW = {  # as tests/mitigate/test_offload.py: fast, deterministic predictions (no reference probes: no drift)
    "name": "test-cpu", "peak_tflops": {"fp32": 0.05, "bf16": 0.1}, "memory_gb": 16, "memory_bandwidth_gbps": 10,
    "compute_efficiency": 1.0, "bandwidth_efficiency": 1.0, "tdp_watts": 16, "usd_per_hour": 0.04,
    "step_overhead_us": 50, "layer_overhead_us": 100, "moe_layer_overhead_us": 150, "expert_overhead_us": 20,
    "cache_gb": 0.032, "cache_bandwidth_gbps": 40, "gemv_bandwidth_gbps": 30, "elementwise_bandwidth_gbps": 15,
    "attention_tflops": 0.04, "attention_bandwidth_gbps": 20, "attention_head_overhead_us": 0.3,
}
ELEMENTWISE = 15e9
# Bytes per parameter of moelab's dequantization in an fp32 model (c = 4), counted by hand from
# mitigate.quantize.Format.dequantize: int8 q.to(fp32) 1 + 4, * scale 4 + 4 -> 13;
# int4 unpack_int4: &, .to(int8), -8, >>, .to(int8), -8 on the packed bytes (1 + 1 each, per 2 params: 6),
# stack (2 + 2 per 2 params: 2), then .to(fp32) 1 + 4 and * scale 4 + 4 -> 21.
HAND_BYTES = {"int8": 13.0, "int4": 21.0}
BATCHES = (1, 4)
PROMPT = 8


def _cli(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def hw_file(tmp_path):
    path = tmp_path / "hw.json"
    path.write_text(json.dumps(FIXED_HW))
    return str(path)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, mitigate_home, moe_run):
    """The shared tiny-moe run with its routed experts quantized to int8 and to int4 (group 128)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MOELAB_HOME", str(mitigate_home / "home"))
    mp.setenv("MOELAB_CACHE", str(mitigate_home / "cache"))
    out = {}
    try:
        for dtype in ("int8", "int4"):
            folder = tmp_path_factory.mktemp(f"q-{dtype}") / "run"
            assert main(["quantize", str(moe_run), "--experts", dtype, "--eval-tokens", "256", "--out",
                         str(folder), "--json"]) == 0
            out[dtype] = folder
    finally:
        mp.undo()
    return out


def _file_bytes(run) -> int:
    """Bytes of every tensor in the run's model.safetensors, read by safetensors itself."""
    with safe_open(str(run / "final" / "model.safetensors"), "pt") as f:
        return sum(t.numel() * t.element_size() for t in map(f.get_tensor, f.keys()))


def _bench(runs, hw_file, capsys) -> dict:
    code, stdout, err = _cli(["bench", *map(str, runs), "--batches", ",".join(map(str, BATCHES)), "--prompt",
                              str(PROMPT), "--gen", "2", "--repeats", "1", "--hardware", hw_file, "--json"], capsys)
    assert code == 0, err
    return json.loads(stdout)


def _row(result, model, phase, batch):
    return next(r for r in result["rows"] if r["model"] == model and r["phase"] == phase and r["batch"] == batch)


def _touched(n_experts: int, top_k: int, tokens: int) -> float:
    """Distinct experts `tokens` uniformly routed tokens touch: E (1 - (1 - k/E)^T)."""
    return n_experts * (1 - (1 - top_k / n_experts) ** tokens)


@pytest.mark.parametrize("dtype", ["int8", "int4"])
def test_bench_quantized_run_weights_and_dequantize_term(dtype, quantized, moe_run, hw_file, capsys):
    q_run = quantized[dtype]
    result = _bench([moe_run, q_run], hw_file, capsys)
    base_name, q_name = (m["name"] for m in result["models"])
    assert result["models"][1]["quantization"] == {"components": {"routed_experts": dtype}, "group_size": 128}
    assert "quantization" not in result["models"][0]

    exact = _file_bytes(q_run)
    summary = json.loads((q_run / "summary.json").read_text())
    assert exact == summary["weight_bytes"]["after"]["total"]  # quantize's own count agrees with the file
    float_exact = _file_bytes(moe_run)
    for batch in BATCHES:
        mem = _row(result, q_name, "decode", batch)["memory"]
        assert mem["weights_bytes"] == exact
        assert abs(mem["predicted_weights_bytes"] - exact) / exact < 0.02
        assert _row(result, base_name, "decode", batch)["memory"]["weights_bytes"] == float_exact
    assert exact < 0.5 * float_exact

    # the eager prediction: the float run's, plus DEQUANT bytes per touched expert parameter at the elementwise
    # bandwidth (the matmul reads the fp32 copy the dequantization writes, as the float run reads its weights)
    model = read_run(moe_run).load_model()
    layer = model.moe_layers()[0]
    n_experts, top_k = layer.spec.n_experts, layer.spec.top_k
    per_expert = (layer.gate_up_proj.numel() + layer.down_proj.numel()) // n_experts
    n_moe = len(model.moe_layers())
    for batch in BATCHES:
        for phase, tokens in (("decode", batch), ("prefill", batch * PROMPT)):
            term = HAND_BYTES[dtype] * n_moe * _touched(n_experts, top_k, tokens) * per_expert / ELEMENTWISE
            diff = _row(result, q_name, phase, batch)["predicted_s"] - _row(result, base_name, phase, batch)[
                "predicted_s"]
            assert diff == pytest.approx(term, rel=1e-9), (phase, batch)


def test_dequantize_term_of_attention_and_embeddings(moe_run, hw_file):
    """Quantized attention linears are dequantized whole every call; quantized embeddings: the lm_head's whole
    table and the looked-up rows (gathered as int4 first, 0.5 B read and written each)."""
    spec = read_run(moe_run).spec
    model = read_run(moe_run).load_model()
    attention = sum(m.weight.numel() for layer in model.layers for m in layer.self_attn.modules()
                    if hasattr(m, "weight") and m.weight.dim() == 2)
    assert not spec.tie_embeddings
    table = model.lm_head.weight.numel()
    d = model.embed_tokens.embedding_dim
    hw = load_hardware(hw_file)
    for batch in BATCHES:
        wl = Workload(batch=batch, prompt=PROMPT, gen=2, dtype="fp32", kv_dtype="fp32")
        quant = Workload(batch=batch, prompt=PROMPT, gen=2, dtype="fp32", kv_dtype="fp32",
                         components={"attention": "int8", "embeddings": "int4"})
        term = (13 * attention + 21 * (table + batch * d) + 2 * 0.5 * batch * d) / ELEMENTWISE
        assert decode_step(spec, hw, quant).seconds - decode_step(spec, hw, wl).seconds == pytest.approx(term,
                                                                                                       rel=1e-9)


def test_predictions_without_components_are_unchanged(hw_file):
    """The eager model's figures before the dequantization was modelled (commit ae66e71), and a non-quantized
    component dtype (bf16 experts in an fp32 model) still streams as stored; a GPU keeps fused W4A16 kernels,
    which read the int4 bytes, so there int4 experts make decode faster."""
    hw = load_hardware(hw_file)
    pinned = {("tiny-moe", 1): (0.001456149973333333, 0.0024371912010416664),
              ("tiny-moe", 8): (0.0025554555210416667, 0.005635416546273527),
              ("tiny-dense", 1): (0.0006930336, 0.0010078615466666667),
              ("tiny-dense", 8): (0.0011261258666666666, 0.003994581973333333)}
    for (name, batch), (dec, pre) in pinned.items():
        spec = load_train_spec(name)
        wl = Workload(batch=batch, prompt=8, gen=2, dtype="fp32", kv_dtype="fp32")
        assert decode_step(spec, hw, wl, 8.5).seconds == pytest.approx(dec, rel=1e-12)
        assert prefill(spec, hw, wl).seconds == pytest.approx(pre, rel=1e-12)
    spec = load_train_spec("tiny-moe")
    wl = Workload(batch=1, prompt=8, gen=2, dtype="fp32", kv_dtype="fp32")
    bf16 = Workload(batch=1, prompt=8, gen=2, dtype="fp32", kv_dtype="fp32", components={"routed_experts": "bf16"})
    assert decode_step(spec, hw, bf16).seconds < decode_step(spec, hw, wl).seconds
    gpu = load_hardware("h100-sxm")
    int4 = Workload(batch=1, prompt=8, gen=2, dtype="bf16", kv_dtype="bf16", components={"routed_experts": "int4"})
    plain = Workload(batch=1, prompt=8, gen=2, dtype="bf16", kv_dtype="bf16")
    assert decode_step(spec, gpu, int4).bytes < decode_step(spec, gpu, plain).bytes


def test_ep_and_offload_refuse_a_quantized_run(quantized, hw_file, capsys):
    run = str(quantized["int8"])
    for extra in (["--ep", "2"], ["--offload-experts", "--resident", "2"]):
        code, stdout, err = _cli(["bench", run, "--batches", "2", "--prompt", "8", "--gen", "2", "--repeats", "1",
                                  "--hardware", hw_file, *extra], capsys)
        assert code == 2 and stdout == "", err
        assert len(err.strip().splitlines()) == 1 and "quantized run" in err, err
