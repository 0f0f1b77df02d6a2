"""moelab upcycle: copy, split and granular against the dense model they come from (its logits, and a per-token
sum over the dense FFN's own hidden-unit slices), an HF dense folder against transformers, and every refusal."""

import json

import pytest
import torch

from moelab.cli import main
from moelab.mitigate.runs import read_run
from moelab.mitigate.upcycle import upcycle, upcycle_model


@pytest.fixture(scope="module")
def dense64(dense_run):
    """The trained tiny-dense model in float64 (rounding far below what a wrong weight would change)."""
    return read_run(dense_run).load_model().double()


def _tokens(n: int = 24) -> torch.Tensor:
    return torch.randint(0, 512, (2, n), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(("experts", "top_k", "std"), [(8, 2, 0.02), (8, 1, 1.0), (4, 4, 10.0), (2, 1, 0.0)])
def test_copy_equals_the_dense_model_for_any_router(dense64, experts, top_k, std):
    x = _tokens()
    moe = upcycle_model(dense64, experts, top_k, "copy", router_std=std, seed=3)
    weights = moe.layers[0].mlp.gate(moe.embed_tokens(x).flatten(0, 1)).weights_TK
    assert torch.allclose(weights.sum(-1), torch.ones(()).double(), atol=1e-15)  # Mixtral: they sum to 1
    if std >= 1.0 and top_k > 1:  # a router far from uniform: the copies still average to the dense FFN
        assert weights.max() - weights.min() > 0.1
    torch.testing.assert_close(moe(x), dense64(x), rtol=0, atol=1e-12)


def test_split_with_every_expert_at_weight_one_equals_the_dense_model(dense64):
    x = _tokens()
    moe = upcycle_model(dense64, 8, 8, "split", router_std=0.0)
    routing = moe.layers[0].mlp.gate(moe.embed_tokens(x).flatten(0, 1))
    assert torch.equal(routing.weights_TK, torch.ones_like(routing.weights_TK))
    torch.testing.assert_close(moe(x), dense64(x), rtol=0, atol=1e-12)
    p_dense = sum(p.numel() for n, p in dense64.named_parameters() if ".mlp." in n)
    p_moe = sum(p.numel() for n, p in moe.named_parameters() if ".mlp." in n and ".gate." not in n)
    assert p_moe == p_dense  # the same FFN parameters, partitioned


@pytest.mark.parametrize("std", [0.0, 0.5])
def test_split_top_k_is_the_scaled_sum_of_the_dense_ffns_slices(dense64, std):
    """Per token: sum over the K chosen experts of weight x (the dense FFN restricted to that expert's hidden
    units), the weights E/K each at a uniform router and always summing to E."""
    e, k, f = 8, 2, dense64.spec.ffn_dim
    moe = upcycle_model(dense64, e, k, "split", router_std=std, seed=5)
    x_TD = torch.randn(10, dense64.spec.d_model, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    layer, dense = moe.layers[1].mlp, dense64.layers[1].mlp
    routing = layer.gate(x_TD)
    torch.testing.assert_close(routing.weights_TK.sum(-1), torch.full((10,), float(e), dtype=torch.float64))
    if std == 0.0:
        assert torch.equal(routing.weights_TK, torch.full_like(routing.weights_TK, e / k))
    w = f // e
    expected = torch.zeros_like(x_TD)
    for t in range(10):
        for slot in range(k):
            e_chosen = int(routing.indices_TK[t, slot])
            units = slice(e_chosen * w, (e_chosen + 1) * w)
            gate, up = dense.gate_proj.weight[units] @ x_TD[t], dense.up_proj.weight[units] @ x_TD[t]
            h = torch.nn.functional.silu(gate) * up
            expected[t] += routing.weights_TK[t, slot] * (dense.down_proj.weight[:, units] @ h)
    torch.testing.assert_close(layer(x_TD[None])[0], expected, rtol=0, atol=1e-12)


def test_granular_with_every_routed_slice_selected_equals_the_dense_model(dense64):
    x = _tokens()
    moe = upcycle_model(dense64, 4, 4, "granular", granularity=2, shared=3, router_std=0.0)
    mlp = moe.layers[0].mlp
    assert (mlp.spec.n_experts, mlp.spec.top_k, mlp.spec.n_shared, mlp.spec.expert_ffn) == (5, 5, 3, 64)
    assert mlp.shared_experts.gate_proj.weight.shape == (3 * 64, dense64.spec.d_model)
    torch.testing.assert_close(moe(x), dense64(x), rtol=0, atol=1e-12)


def test_granular_shared_slices_are_the_first_hidden_units(dense64):
    """The shared experts are the dense FFN restricted to its first S*f/(E*M) hidden units."""
    moe = upcycle_model(dense64, 4, 2, "granular", granularity=2, shared=1)
    x_TD = torch.randn(5, dense64.spec.d_model, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    dense, units = dense64.layers[2].mlp, slice(0, 64)
    h = torch.nn.functional.silu(x_TD @ dense.gate_proj.weight[units].T) * (x_TD @ dense.up_proj.weight[units].T)
    torch.testing.assert_close(moe.layers[2].mlp.shared_experts(x_TD), h @ dense.down_proj.weight[:, units].T,
                               rtol=0, atol=1e-12)


def test_the_written_copy_run_reads_back_equal_and_records_its_lineage(dense_run, tmp_path):
    out = tmp_path / "up"
    result = upcycle(dense_run, 4, 2, out, eval_tokens=256)
    assert result["model"] == "tiny-dense-up4x2-copy" and result["router"] == "topk_softmax"
    assert all(abs(v) < 1e-5 for v in result["loss_delta"].values())  # copy: the same loss per domain
    assert result["rare_domains"] == ["code"]
    source = read_run(out)
    assert source.spec.is_moe and source.config == read_run(dense_run).config
    entry = source.lineage[-1]
    assert entry["transform"] == "upcycle" and entry["from"] == str(dense_run.resolve()) and entry["mode"] == "copy"
    x = _tokens()
    with torch.no_grad():
        torch.testing.assert_close(source.load_model()(x), read_run(dense_run).load_model()(x), rtol=1e-5, atol=1e-5)
    assert json.loads((out / "summary.json").read_text())["lineage"] == source.lineage
    assert (source.folder / "tokenizer.json").read_text() == (dense_run / "final" / "tokenizer.json").read_text()


def test_an_hf_dense_folder_upcycles_to_transformers_own_logits(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   tie_word_embeddings=False)
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    hf.save_pretrained(tmp_path / "hf")
    result = upcycle(tmp_path / "hf", 4, 2, tmp_path / "up", mode="copy")
    assert "loss_before" not in result  # no moelab corpus to score on
    source = read_run(tmp_path / "up")
    assert source.lineage[0]["transform"] == "hf" and source.lineage[1]["transform"] == "upcycle"
    x = torch.randint(0, 96, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(source.load_model()(x), hf(x).logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("case", "message"), [
    ("moe", "already MoE"),
    ("top_k", "--top-k must be in 1..4"),
    ("missing", "no such run"),
    ("nonempty", "is not empty"),
    ("quantized", "is quantized"),
    ("split_divides", "does not divide into 3 slices"),
    ("granular_divides", "does not divide into 24 slices"),
    ("shared_mode", "need --mode granular"),
    ("shared_all", "none would be routed"),
    ("mode", "--mode must be one of"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, message, dense_run, marked_quantized, moe_run, tmp_path,
                                                         capsys):
    out = tmp_path / "out"
    run, extra = str(dense_run), []
    args = {"experts": "4", "top_k": "2"}
    if case == "moe":
        run = str(moe_run)
    elif case == "top_k":
        args["top_k"] = "5"
    elif case == "missing":
        run = str(tmp_path / "nowhere")
    elif case == "nonempty":
        out.mkdir()
        (out / "x").write_text("x")
    elif case == "quantized":
        run = str(marked_quantized(dense_run))
    elif case == "split_divides":
        args["experts"], extra = "3", ["--mode", "split"]
    elif case == "granular_divides":
        args["experts"], extra = "8", ["--mode", "granular", "--granularity", "3"]
    elif case == "shared_mode":
        extra = ["--mode", "split", "--shared", "1"]
    elif case == "shared_all":
        extra = ["--mode", "granular", "--granularity", "2", "--shared", "4"]
    elif case == "mode":
        extra = ["--mode", "clone"]
    before = sorted(p.name for p in tmp_path.iterdir())
    rc = main(["upcycle", run, "--experts", args["experts"], "--top-k", args["top_k"], "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert case == "nonempty" or not out.exists()
    if case == "nonempty":
        assert [p.name for p in out.iterdir()] == ["x"]


def test_cli_json_and_table(dense_run, tmp_path, capsys):
    assert main(["upcycle", str(dense_run), "--experts", "4", "--top-k", "4", "--mode", "split",
                 "--out", str(tmp_path / "a"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["routed_scaling_factor"] == 4.0 and result["params_total"]["after"] > result["params_total"]["before"]
    assert main(["upcycle", str(dense_run), "--experts", "4", "--top-k", "1", "--out", str(tmp_path / "b")]) == 0
    text = capsys.readouterr().out
    assert "tiny-dense-up4x1-copy" in text and "upcycled" in text
