"""Per-component weight dtypes (cost.memory.weight_bytes components=, Workload.components, estimate
--expert-dtype / --component): exact bytes against hand counts, nothing changes without them, and Mixtral-8x7B
with int4 experts fits one 48 GB L40S where bf16 does not."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from moelab.cli import main
from moelab.cost.dtypes import WEIGHT_BYTES, component_compute_dtype, high_precision_bytes
from moelab.cost.estimate import estimate
from moelab.cost.memory import model_weight_bytes, weight_bytes
from moelab.cost.parallel import evaluate
from moelab.cost.params import count_params
from moelab.cost.plan import Plan
from moelab.cost.roofline import Workload, decode_step
from moelab.errors import MoelabError
from moelab.spec import load_hardware, load_model

INT4 = 0.5 + 2.0 / 128  # 4 bits plus one fp16 scale per group of 128


def _old_rule(p, dtype: str, expert: float | None = None) -> float:
    """The one-dtype rule before components existed: linear layers at dtype, experts at `expert`, embeddings,
    lm_head, norms and routers at high precision."""
    q, hp = WEIGHT_BYTES[dtype], high_precision_bytes(dtype)
    e = q if expert is None else expert
    return ((p.attention + p.dense_ffn + p.shared_experts) * q + p.routed_experts * e
            + (p.embedding + p.lm_head + p.norms + p.routers) * hp)


@pytest.mark.parametrize("name", ["mixtral-8x7b", "deepseek-v3", "qwen3-30b-a3b", "llama-3-8b"])
@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp8", "int8", "int4"])
def test_no_components_is_the_old_rule(name, dtype):
    p = count_params(load_model(name))
    for given in (None, {}, ()):
        wb = weight_bytes(p, dtype, None, given)
        assert wb.total == _old_rule(p, dtype)
        assert wb.total == pytest.approx(sum(wb.by_component().values()) + wb.other, rel=1e-15)


def test_mixtral_int4_experts_hand_count():
    spec = load_model("mixtral-8x7b")
    p = count_params(spec)
    # Mixtral-8x7B (mistralai/Mixtral-8x7B-v0.1 config.json): 32 layers, 8 experts of 3 * 4096 * 14336
    routed = 32 * 8 * 3 * 4096 * 14336
    assert p.routed_experts == routed
    wb = model_weight_bytes(spec, "bf16", {"routed_experts": "int4"})
    assert wb.routed_experts == routed * INT4
    assert wb.expert == 3 * 4096 * 14336 * INT4
    assert wb.attention == p.attention * 2 and wb.embeddings == (p.embedding + p.lm_head) * 2
    assert wb.total == routed * INT4 + (p.total - routed) * 2
    assert dict(wb.dtypes)["routed_experts"] == "int4" and dict(wb.dtypes)["attention"] == "bf16"
    # attention int8 too, and the embeddings named: their own dtype, norms and routers stay 16-bit
    wb2 = model_weight_bytes(spec, "bf16", {"routed_experts": "int4", "attention": "int8", "embeddings": "fp8"})
    assert wb2.total == (routed * INT4 + p.attention * 1 + (p.embedding + p.lm_head) * 1
                         + (p.norms + p.routers) * 2)
    assert wb2.always_read == wb2.total - wb2.routed_experts - p.embedding * 1


def test_published_mixtral_size_and_the_48gb_fit():
    """Mistral AI, "Mixtral of experts" (2023-12-11): 46.7B total parameters. Routed experts are 45.1B of them
    (32 x 8 x 3 x 4096 x 14336): at int4 with fp16 group scales 45.1e9 x 0.5156 = 23.3 GB, the other 1.6B at bf16
    3.2 GB: 26.5 GB, inside one L40S's 43.2 GB usable (48 GB x 0.9); bf16 throughout is 93.4 GB."""
    spec, hw = load_model("mixtral-8x7b"), load_hardware("L40S")
    p = count_params(spec)
    assert p.total == pytest.approx(46.7e9, rel=0.005)
    assert p.routed_experts == pytest.approx(45.1e9, rel=0.001)
    hand = p.routed_experts * INT4 + (p.total - p.routed_experts) * 2
    assert hand == pytest.approx(26.46e9, rel=0.001)
    for b in (1, 16):
        bf16 = evaluate(spec, hw, Workload(batch=b, gpus=1, plan="tp1"), Plan())
        int4 = evaluate(spec, hw, Workload(batch=b, gpus=1, plan="tp1", components={"routed_experts": "int4"}),
                        Plan())
        assert not bf16.fits and int4.fits
        assert int4.memory_per_gpu_bytes < 48e9 * 0.9 < bf16.memory_per_gpu_bytes
        assert int4.memory_per_gpu_bytes - hand > 0  # plus KV cache, workspace and runtime overhead


def test_decode_reads_touched_experts_at_their_dtype():
    """At batch 1 each Mixtral layer touches its top-2 experts: the experts operator streams 2 x 32 experts at
    int4, and the attention projections stay at bf16."""
    spec, hw = load_model("mixtral-8x7b"), load_hardware("L40S")
    wl = Workload(batch=1, gpus=1, plan="tp1")
    ops = {op.name: op for op in decode_step(spec, hw, replace(wl, components={"routed_experts": "int4"})).operators}
    base = {op.name: op for op in decode_step(spec, hw, wl).operators}
    assert ops["experts"].bytes == pytest.approx(32 * 2 * 3 * 4096 * 14336 * INT4, rel=1e-12)
    assert base["experts"].bytes == pytest.approx(32 * 2 * 3 * 4096 * 14336 * 2, rel=1e-12)
    assert ops["qkv_proj"].bytes == base["qkv_proj"].bytes
    assert decode_step(spec, hw, replace(wl, components={"routed_experts": "int4"})).seconds < \
        decode_step(spec, hw, wl).seconds


def test_compute_dtype_of_weight_only_int4():
    assert component_compute_dtype("bf16", "int4") == "bf16"  # W4A16
    assert component_compute_dtype("fp32", "int4") == "fp32"  # dequantized into an fp32 model
    assert component_compute_dtype("bf16", "int8") == "int8"  # W8A8
    assert component_compute_dtype("int4", "int4") == "bf16"  # as COMPUTE_DTYPE before components


def test_expert_storage_interplay():
    """A checkpoint's own expert storage (gpt-oss: MXFP4, 4.25 bits) is a floor on what the experts take: a
    larger dtype asked for (int8) keeps MXFP4, a smaller one (int4 with its scales, 4.125 bits) wins."""
    spec = replace(load_model("mixtral-8x7b"), expert_storage="mxfp4")
    p = count_params(spec)
    mx = (4 + 8 / 32) / 8
    assert model_weight_bytes(spec, "bf16").routed_experts == p.routed_experts * mx
    assert model_weight_bytes(spec, "bf16", {"routed_experts": "int8"}).routed_experts == p.routed_experts * mx
    assert model_weight_bytes(spec, "bf16", {"routed_experts": "int4"}).routed_experts == p.routed_experts * INT4


def test_estimate_unchanged_without_components():
    spec, hw = load_model("mixtral-8x7b"), load_hardware("H100-SXM")
    a = estimate(spec, hw, Workload(batch=4), derived=False).to_dict()
    b = estimate(spec, hw, Workload(batch=4, components={}), derived=False).to_dict()
    assert a == b
    assert a["precision"]["given"] == {} and a["workload"]["components"] == {}


def test_workload_refuses_bad_components():
    with pytest.raises(MoelabError, match="unknown component"):
        Workload(components={"experts": "int4"})
    with pytest.raises(MoelabError, match="must be one of"):
        Workload(components={"routed_experts": "int3"})


def test_cli_expert_dtype(capsys):
    assert main(["estimate", "mixtral-8x7b", "-H", "L40S", "--expert-dtype", "int4", "--component",
                 "attention=int8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["precision"]["dtypes"]["routed_experts"] == "int4"
    assert out["precision"]["dtypes"]["attention"] == "int8"
    assert out["workload"]["components"] == {"attention": "int8", "routed_experts": "int4"}
    assert out["parallel"]["gpus"] == 1 and out["memory"]["fits"]
    p = count_params(load_model("mixtral-8x7b"))
    assert out["precision"]["by_component"]["attention"] == p.attention * 1


@pytest.mark.parametrize("args", [["--expert-dtype", "int3"], ["--component", "attention=int3"],
                                  ["--component", "experts=int4"], ["--component", "attention"],
                                  ["--expert-dtype", "int4", "--component", "routed_experts=int8"]])
def test_cli_bad_component_is_one_line(capsys, args):
    assert main(["estimate", "mixtral-8x7b", "-H", "L40S", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.err
