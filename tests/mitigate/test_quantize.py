"""moelab quantize: int8 / int4 weight-only quantization of a run, checked against independent references.

References: the rounding bound s/2 recomputed here from the stored scales (s = max|w| / qmax of each row or
group, in float64); the nibbles unpacked here with plain integer arithmetic (numpy); a float model built from
those dequantized weights, whose forward the quantized model must reproduce."""

import json

import numpy as np
import pytest
import torch

from moelab.cli import main
from moelab.mitigate import quantize as q
from moelab.mitigate.runs import read_run
from moelab.nn.model import build_model
from moelab.spec.hf import spec_from_config
from moelab.spec.transform import as_moe


def small_moe(tie: bool = False):
    """tiny-moe's shape, smaller: 2 layers of width 64, 4 experts of width 128, top-2, a 256-token vocabulary."""
    config = {"model_type": "llama", "vocab_size": 256, "hidden_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
              "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "tie_word_embeddings": tie}
    return as_moe(spec_from_config(config, "small"), 4, 2)


def _unpack_ref(packed: torch.Tensor) -> torch.Tensor:
    """Nibbles by integer division: byte = lo + 16 * hi, value = nibble - 8 (low nibble first)."""
    b = packed.numpy().astype(np.int64)
    lo, hi = b % 16 - 8, b // 16 - 8
    return torch.from_numpy(np.stack((lo, hi), axis=-1).reshape(*b.shape[:-1], 2 * b.shape[-1]))


def _dequant_ref(qw: torch.Tensor, scale: torch.Tensor, dtype: str, group: int) -> torch.Tensor:
    """float64 q * s with each element's scale looked up by its row (int8) or its group (int4)."""
    values = _unpack_ref(qw) if dtype == "int4" else qw.long()
    s = scale.double()
    s = s[..., None].expand(values.shape) if dtype == "int8" else s.repeat_interleave(group, dim=-1)
    return values.double() * s


@pytest.mark.parametrize("dtype, group", [("int8", 128), ("int4", 128), ("int4", 32)])
def test_dequantized_within_rounding_bound(dtype, group):
    torch.manual_seed(0)
    w = torch.randn(3, 64, 256) * torch.logspace(-3, 1, 64)[None, :, None]  # rows of very different ranges
    w[0, 5] = 0.0  # an all-zero row: scale 0, exact zeros
    fmt = q.Format(dtype, group)
    qw, scale = fmt.quantize(w)
    assert qw.dtype == (torch.uint8 if dtype == "int4" else torch.int8)
    assert qw.shape == ((3, 64, 128) if dtype == "int4" else (3, 64, 256))
    assert scale.dtype == torch.float32 and scale.shape == ((3, 64, 256 // group) if dtype == "int4" else (3, 64))
    # the scale is max|w| / qmax over its row or group (recomputed here)
    groups = w.double().reshape(3, 64, -1, group if dtype == "int4" else 256).abs().amax(-1)
    expect = (groups / (7 if dtype == "int4" else 127)).squeeze(-1)
    assert torch.allclose(scale.double(), expect, rtol=1e-7, atol=0)
    deq = _dequant_ref(qw, scale, dtype, group)
    err = (deq - w.double()).abs()
    bound = scale.double()[..., None].expand(w.shape) / 2 if dtype == "int8" else (
        scale.double().repeat_interleave(group, dim=-1) / 2)
    assert (err <= bound).all()
    assert float(err.max()) > 0  # it does round
    assert (deq[0, 5] == 0).all()
    # the module's own dequantization is the reference's, and the extremes are exact: q = +-qmax at max|w|
    assert torch.equal(fmt.dequantize(qw, scale, torch.float64), deq)
    values = _unpack_ref(qw) if dtype == "int4" else qw.long()
    qmax = 7 if dtype == "int4" else 127
    assert int(values.max()) == qmax and int(values.min()) >= -qmax  # symmetric: -8 (int4) never used


def test_pack_unpack_round_trip_is_exact():
    every = torch.arange(-8, 8, dtype=torch.int8)
    pairs = torch.cartesian_prod(every, every).reshape(1, -1)  # all 256 (low, high) pairs
    packed = q.pack_int4(pairs)
    assert packed.dtype == torch.uint8 and packed.shape == (1, 256)
    assert sorted(packed.flatten().tolist()) == list(range(256))  # every byte used once: a bijection
    assert torch.equal(q.unpack_int4(packed), pairs)
    assert torch.equal(_unpack_ref(packed), pairs.long())


def _float_reference(qmodel, spec) -> torch.nn.Module:
    """A float model whose weights are the quantized model's, dequantized by the reference above."""
    ref = build_model(spec)
    state = {k: v.clone() for k, v in ref.state_dict().items()}
    for path, m in qmodel.named_modules():
        if isinstance(m, q.QuantizedExperts):
            parent = path.rpartition(".")[0]
            for name in ("gate_up", "down"):
                w = _dequant_ref(getattr(m, f"{name}_q"), getattr(m, f"{name}_scale"), m.fmt.dtype, m.fmt.group)
                state[f"{parent}.{name}_proj"] = w.float()
        elif isinstance(m, q.QuantizedLinear | q.QuantizedEmbedding):
            state[f"{path}.weight"] = _dequant_ref(m.qweight, m.scale, m.fmt.dtype, m.fmt.group).float()
    if spec.tie_embeddings:  # one shared parameter: both names must carry the dequantized table
        state["lm_head.weight"] = state["embed_tokens.weight"]
    for key, value in qmodel.state_dict().items():
        if key in state and not any(s in key for s in ("qweight", "scale", "_q")):
            state[key] = value
    ref.load_state_dict(state, strict=True)
    return ref.eval()


def test_quantized_forward_equals_float_model_of_dequantized_weights():
    spec = small_moe()
    torch.manual_seed(1)
    model = build_model(spec).eval()
    meta = {"components": {"routed_experts": "int4", "attention": "int8", "embeddings": "int8"}, "group_size": 64,
            "scheme": q.SCHEME}
    ids = torch.randint(0, spec.vocab_size, (2, 24))
    errors = q.quantize_model(model, meta)
    assert set(errors) == set(meta["components"])
    assert all(0 < e["max_abs_error"] <= e["max_bound"] and e["worst_ratio"] <= 1.0 for e in errors.values())
    assert all(isinstance(layer.expert_store, q.QuantizedExperts) and layer.gate_up_proj is None
               for layer in model.moe_layers())
    ref = _float_reference(model, spec)
    with torch.no_grad():
        assert torch.allclose(model(ids), ref(ids), rtol=0, atol=1e-5)
        # and through the KV cache (decode)
        assert torch.allclose(model.generate(ids[:, :8], 4), ref.generate(ids[:, :8], 4))
    # to_float (export's path) gives the same float model
    plain = q.to_float(model, spec)
    with torch.no_grad():
        assert torch.equal(plain(ids), ref(ids))


def test_gpt_oss_experts_keep_biases_and_activation():
    """A MoE layer with gpt-oss's expert biases and clamped SwiGLU, plus shared experts: the quantized layer
    equals the layer whose stacked weights are the reference-dequantized ones (ExpertWeights.one's path)."""
    from moelab.nn.moe import MoELayer
    from moelab.spec.model import MoESpec

    torch.manual_seed(2)
    moe = MoESpec(n_experts=4, top_k=2, expert_ffn=32, n_shared=1, shared_ffn=32, router="topk_softmax",
                  expert_bias=True, router_bias=True)
    layer = MoELayer(64, moe, activation="clamped_swiglu").eval()
    with torch.no_grad():
        for b in (layer.gate_up_proj_bias, layer.down_proj_bias):
            b.normal_()
    ref = MoELayer(64, moe, activation="clamped_swiglu").eval()
    ref.load_state_dict(layer.state_dict())

    class Holder(torch.nn.Module):  # targets() walks a model: a one-layer stand-in
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList([torch.nn.Module()])
            self.layers[0].mlp, self.layers[0].self_attn = layer, torch.nn.Module()

    holder = Holder()
    q.quantize_model(holder, {"components": {"routed_experts": "int4", "shared_experts": "int8"}, "group_size": 16})
    store = layer.expert_store
    assert isinstance(store, q.QuantizedExperts) and store.gate_up_bias is not None
    assert isinstance(layer.shared_experts.down_proj, q.QuantizedLinear)
    with torch.no_grad():
        ref.gate_up_proj.copy_(_dequant_ref(store.gate_up_q, store.gate_up_scale, "int4", 16))
        ref.down_proj.copy_(_dequant_ref(store.down_q, store.down_scale, "int4", 16))
        for name in ("gate_proj", "up_proj", "down_proj"):
            m = getattr(layer.shared_experts, name)
            getattr(ref.shared_experts, name).weight.copy_(_dequant_ref(m.qweight, m.scale, "int8", 0))
        x = torch.randn(2, 5, 64)
        assert torch.allclose(layer(x), ref(x), rtol=0, atol=1e-5)


def test_tied_embeddings_are_one_quantized_table():
    spec = small_moe(tie=True)
    model = build_model(spec).eval()
    meta = {"components": {"embeddings": "int4"}, "group_size": 32, "scheme": q.SCHEME}
    q.quantize_model(model, meta)
    assert isinstance(model.lm_head, q.TiedHead)
    keys = [k for k in model.state_dict() if k.startswith(("embed_tokens", "lm_head"))]
    assert keys == ["embed_tokens.qweight", "embed_tokens.scale"]
    fresh = q.apply_layout(build_model(spec), meta)
    fresh.load_state_dict(model.state_dict(), strict=True)
    ids = torch.randint(0, spec.vocab_size, (1, 8))
    with torch.no_grad():
        assert torch.equal(fresh.eval()(ids), model(ids))
        ref = _float_reference(model, spec)  # tied: lm_head reads the same dequantized table
        assert torch.allclose(model(ids), ref(ids), atol=1e-5, rtol=0)


def _cli(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_quantize_run_reloads_benches_and_exports(moe_run, tmp_path, capsys):
    out = tmp_path / "q4"
    code, stdout, err = _cli(["quantize", str(moe_run), "--experts", "int4", "--component", "attention=int8",
                              "--group-size", "64", "--eval-tokens", "256", "--out", str(out), "--json"], capsys)
    assert code == 0, err
    s = json.loads(stdout)
    assert s["components"] == {"routed_experts": "int4", "attention": "int8"}
    w = s["weight_bytes"]
    source = read_run(moe_run)
    spec = source.spec
    n_expert = spec.n_moe_layers * spec.moe.n_experts * 3 * spec.d_model * spec.moe.expert_ffn
    assert w["before"]["routed_experts"] == 4 * n_expert  # fp32
    assert w["after"]["routed_experts"] == n_expert // 2 + 4 * n_expert // 64  # nibbles + fp32 scale per group
    assert w["after"]["embeddings"] == w["before"]["embeddings"] and w["after"]["other"] == w["before"]["other"]
    assert w["after"]["total"] < w["before"]["total"] and w["file_after"] < w["file_before"]
    assert w["file_after"] - w["after"]["total"] < 64 * 1024  # the file is the tensors plus its header
    assert json.loads((out / "summary.json").read_text())["weight_bytes"]["file_after"] == w["file_after"]
    assert all(e["worst_ratio"] <= 1.0 for e in s["error"].values())
    assert set(s["loss"]["delta"]) == {"code", "numbers", "prose", "mean"} and s["loss"]["rare_domains"] == ["code"]

    assert "already quantized" in _refused(["quantize", str(out), "--component", "attention=int8", "--out",
                                            str(tmp_path / "again")], capsys, tmp_path / "again")
    run = read_run(out)
    assert run.quantization["components"] == s["components"] and run.quantization["group_size"] == 64
    assert run.lineage[-1]["transform"] == "quantize"
    model = run.load_model()  # apply_layout, then a strict load
    assert isinstance(model.layers[0].mlp.expert_store, q.QuantizedExperts)
    assert isinstance(model.layers[0].self_attn.q_proj, q.QuantizedLinear)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    router_bias = sum(layer.gate.bias.numel() * 4 for layer in model.moe_layers())  # the one float buffer kept
    assert params + q.buffer_bytes(model) + router_bias == w["after"]["total"]

    code, stdout, err = _cli(["bench", str(out), "--batches", "1", "--prompt", "8", "--gen", "2", "--repeats", "1",
                              "--quick", "--hardware", "h100-sxm", "--json"], capsys)  # a preset: no calibration
    assert code == 0, err
    rows = json.loads(stdout)["rows"]
    assert {r["phase"] for r in rows} == {"prefill", "decode"} and rows[0]["model"] == spec_name(s)

    exported = tmp_path / "export"
    code, stdout, err = _cli(["export", str(out), "--out", str(exported), "--json"], capsys)
    assert code == 0, err
    info = json.loads(stdout)
    assert info["dequantized"]["components"] == s["components"]
    mark = json.loads((exported / "moelab_export.json").read_text())
    assert mark["dequantized"]["components"] == s["components"]
    from moelab.nn.hf import load_pretrained

    served = load_pretrained(exported).eval()
    ids = torch.randint(0, spec.vocab_size, (1, 12))
    with torch.no_grad():
        assert torch.allclose(served(ids), model(ids), atol=1e-4, rtol=0)


def spec_name(summary) -> str:
    return summary["model"]


def _refused(args, capsys, out):
    code, stdout, err = _cli(args, capsys)
    assert code == 2 and stdout == ""
    assert len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    return err


def test_bad_input_is_one_line_and_writes_nothing(moe_run, dense_run, tmp_path, capsys):
    out = tmp_path / "never"
    run = str(moe_run)
    base = ["quantize", run, "--out", str(out)]
    assert "int3" in _refused([*base, "--experts", "int3"], capsys, out)
    assert "fp8" in _refused([*base, "--component", "attention=fp8"], capsys, out)
    assert "unknown component" in _refused([*base, "--component", "router=int8"], capsys, out)
    assert "--experts DTYPE" in _refused(base, capsys, out)
    assert "positive" in _refused([*base, "--experts", "int4", "--group-size", "0"], capsys, out)
    assert "positive" in _refused([*base, "--experts", "int4", "--group-size", "-64"], capsys, out)
    err = _refused([*base, "--experts", "int4", "--group-size", "96"], capsys, out)
    assert "does not divide" in err and "128" in err
    assert "dense model" in _refused(["quantize", str(dense_run), "--experts", "int8", "--out", str(out)],
                                     capsys, out)
    assert "shared_experts" in _refused([*base, "--component", "shared_experts=int8"], capsys, out)
    assert "no such run" in _refused(["quantize", str(tmp_path / "missing"), "--experts", "int8", "--out",
                                      str(out)], capsys, out)
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    code, _, err = _cli([*base[:2], "--experts", "int8", "--out", str(full)], capsys)
    assert code == 2 and "not empty" in err and sorted(p.name for p in full.iterdir()) == ["x"]
