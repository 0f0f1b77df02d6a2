"""moelab prune: pruned layers against a float64 per-token loop that routes over the kept experts only, the load
against a per-token count, keeping everything changes nothing, the run loads in bench and export, bad input."""

import json
from dataclasses import replace

import pytest
import torch

from moelab.cli import main
from moelab.errors import MoelabError
from moelab.mitigate.prune import choose_kept, measure_load, prune, prune_model
from moelab.mitigate.runs import read_run
from moelab.nn.model import build_model
from moelab.spec.model import map_moe, spec_from_dict, spec_to_dict
from moelab.train.presets import tiny_moe, tiny_moe_fine

FAST = {"calibration_tokens": 256, "eval_tokens": 128}
CLI_FAST = ["--calibration-tokens", "256", "--eval-tokens", "128"]


# --- an independent reference: one token at a time, float64, over the kept experts only --------------------


def _expert(mlp, e: int, x_D: torch.Tensor) -> torch.Tensor:
    """Expert e of the (unpruned) layer on one token: down(silu(gate) * up) with gpt-oss's biases if any."""
    f = mlp.spec.expert_ffn
    h = mlp.gate_up_proj[e] @ x_D
    if mlp.gate_up_proj_bias is not None:
        h = h + mlp.gate_up_proj_bias[e]
    gate, up = h[:f], h[f:]
    y = mlp.down_proj[e] @ (gate * torch.sigmoid(gate) * up)
    return y + mlp.down_proj_bias[e] if mlp.down_proj_bias is not None else y


def _group_limit(choice: list[float], m, n: int) -> list[float]:
    """DeepSeek-V3's group limit over the kept experts, their groups the source groups (n / n_group each)."""
    if m.n_group <= 1:
        return choice
    size = n // m.n_group
    scores = []
    for g in range(m.n_group):
        members = sorted(choice[g * size:(g + 1) * size], reverse=True)
        scores.append(members[0] if m.group_score == "max" else sum(members[:2]))
    best = sorted(range(m.n_group), key=lambda g: -scores[g])[:m.topk_group]
    return [c if j // size in best else float("-inf") for j, c in enumerate(choice)]


def reference(mlp, kept: tuple[int, ...], x_TD: torch.Tensor) -> torch.Tensor:
    """The layer pruned to `kept`, token by token from the routing rules of DESIGN.md, on the source weights."""
    import math

    m, n = mlp.spec, len(kept)
    rows = []
    for x in x_TD:
        logits = [float(mlp.gate.weight[e] @ x) + (float(mlp.gate.linear_bias[e]) if mlp.gate.linear_bias
                                                   is not None else 0.0) for e in kept]
        bias = [float(mlp.gate.bias[e]) for e in kept]
        if m.router == "topk_softmax":  # Mixtral: top-k on the logits, softmax over those k
            sel = sorted(range(n), key=lambda j: -logits[j])[:m.top_k]
            z = [math.exp(logits[j]) for j in sel]
            w = [v / sum(z) for v in z]
        elif m.router == "softmax_topk":  # Qwen/OLMoE: softmax over the kept, top-k, renormalise if asked
            z = [math.exp(v) for v in logits]
            p = [v / sum(z) for v in z]
            choice = _group_limit([p[j] + bias[j] for j in range(n)], m, n)
            sel = sorted(range(n), key=lambda j: -choice[j])[:m.top_k]
            w = [p[j] for j in sel]
            w = [v / sum(w) for v in w] if m.norm_topk_prob else w
        elif m.router == "sigmoid":  # DeepSeek-V3: biased selection, unbiased weights
            s = [1 / (1 + math.exp(-v)) for v in logits]
            choice = _group_limit([s[j] + bias[j] for j in range(n)], m, n)
            sel = sorted(range(n), key=lambda j: -choice[j])[:m.top_k]
            w = [s[j] for j in sel]
            w = [v / (sum(w) + 1e-20) for v in w] if m.norm_topk_prob else w
        else:
            raise AssertionError(m.router)
        y = sum(wj * m.routed_scaling_factor * _expert(mlp, kept[j], x) for wj, j in zip(w, sel, strict=True))
        if mlp.shared_experts is not None:
            shared = mlp.shared_experts(x[None])[0]
            if mlp.shared_expert_gate is not None:
                shared = torch.sigmoid(mlp.shared_expert_gate(x[None])[0]) * shared
            y = y + shared
        rows.append(y)
    return torch.stack(rows)


def _qwen(norm: bool):
    moe = replace(tiny_moe().moe, router="softmax_topk", norm_topk_prob=norm, n_shared=1, shared_ffn=64,
                  shared_gate=True)
    return map_moe(replace(tiny_moe(), name="tiny-qwen"), lambda _: moe)


def _biased_mixtral():  # gpt-oss's router and expert biases on Mixtral routing
    moe = replace(tiny_moe().moe, router_bias=True, expert_bias=True)
    return map_moe(replace(tiny_moe(), name="tiny-biased"), lambda _: moe)


def _grouped():  # DeepSeek-V3 style: sigmoid, selection bias, 2 groups of 4, one group per token, scaled weights
    moe = replace(tiny_moe().moe, router="sigmoid", selection_bias=True, n_group=2, topk_group=1,
                  routed_scaling_factor=2.5)
    return map_moe(replace(tiny_moe(), name="tiny-grouped"), lambda _: moe)


SPECS = {
    "mixtral": (tiny_moe, 4),
    "mixtral-biases": (_biased_mixtral, 5),
    "qwen-norm-false": (lambda: _qwen(False), 3),
    "qwen-norm-true": (lambda: _qwen(True), 6),
    "deepseek-sigmoid": (tiny_moe_fine, 12),
    "deepseek-grouped": (_grouped, 4),
}


@pytest.mark.parametrize("name", SPECS)
def test_pruned_model_equals_a_per_token_loop_over_the_kept_experts(name):
    make, keep = SPECS[name]
    spec = make()
    torch.manual_seed(0)
    model = build_model(spec).double().eval()
    with torch.no_grad():
        for mlp in model.moe_layers():
            mlp.gate.weight.normal_(0, 0.5)  # decisive routing: drops really move the weights
            if mlp.gate.linear_bias is not None:
                mlp.gate.linear_bias.normal_(0, 0.5)
            if mlp.gate_up_proj_bias is not None:
                mlp.gate_up_proj_bias.normal_(0, 0.1)
                mlp.down_proj_bias.normal_(0, 0.1)
            mlp.gate.bias.normal_(0, 0.1 if spec.moe.selection_bias or spec.moe.router == "softmax_topk" else 0)
    n = spec.moe.n_experts
    load = {i: torch.randperm(n).mul(7).add(1).tolist() for i in spec.moe_layers}  # distinct counts per layer
    kept = choose_kept(spec, load, keep=keep)
    if spec.moe.n_group > 1:  # the most used of each group
        size = n // spec.moe.n_group
        assert all(sum(e // size == g for e in ids) == keep // spec.moe.n_group for ids in kept.values()
                   for g in range(spec.moe.n_group))
    else:
        assert all(sorted(ids, key=lambda e: -load[i][e]) == sorted(range(n), key=lambda e: -load[i][e])[:keep]
                   for i, ids in kept.items())
    assert len({ids for ids in kept.values()}) > 1  # layers keep different experts
    pruned, new_spec = prune_model(model, spec, kept)
    assert spec_from_dict(json.loads(json.dumps(spec_to_dict(new_spec)))) == new_spec
    assert all(layer.moe.n_experts == keep for layer in new_spec.layers)
    x_TD = torch.randn(8, spec.d_model, dtype=torch.float64)
    with torch.no_grad():
        i = spec.moe_layers[-1]  # one layer on wide inputs (every layer below, on the model's own hidden states)
        got = pruned.layers[i].mlp(x_TD[None])[0]
        torch.testing.assert_close(got, reference(model.layers[i].mlp, kept[i], x_TD), rtol=1e-10, atol=1e-12)
        # the whole model: the source's layers with each MoE computed by the reference give the same logits
        hooks = [model.layers[i].mlp.register_forward_hook(
            lambda mod, args, out, i=i: reference(mod, kept[i], args[0].reshape(-1, spec.d_model)).view_as(out))
            for i in spec.moe_layers]
        ids = torch.randint(0, spec.vocab_size, (1, 8))
        expected = model(ids)
        for h in hooks:
            h.remove()
        torch.testing.assert_close(pruned(ids), expected, rtol=1e-9, atol=1e-10)


def test_keeping_every_expert_changes_nothing():
    spec = tiny_moe_fine()
    torch.manual_seed(1)
    model = build_model(spec).eval()
    with torch.no_grad():
        for mlp in model.moe_layers():
            mlp.gate.bias.normal_(0, 0.1)
    kept = {i: tuple(range(spec.moe.n_experts)) for i in spec.moe_layers}
    pruned, new_spec = prune_model(model, spec, kept)
    assert new_spec.layers == spec.layers
    ids = torch.randint(0, spec.vocab_size, (2, 16))
    with torch.no_grad():
        assert torch.equal(pruned(ids), model(ids))


def test_load_is_a_per_token_count():
    spec = tiny_moe()
    torch.manual_seed(2)
    model = build_model(spec).double().eval()
    with torch.no_grad():
        for mlp in model.moe_layers():
            mlp.gate.weight.normal_(0, 0.5)
    inputs = {}
    hooks = [model.layers[i].mlp.gate.register_forward_pre_hook(
        lambda mod, args, i=i: inputs.setdefault(i, []).append(args[0].detach().clone())) for i in spec.moe_layers]
    streams = {"a": torch.randint(0, spec.vocab_size, (45,)), "b": torch.randint(0, spec.vocab_size, (7,))}
    load = measure_load(model, streams, 16)  # a: 2 full sequences and a tail of 13; b: one short one
    for h in hooks:
        h.remove()
    expected = {i: [0] * spec.moe.n_experts for i in spec.moe_layers}
    tokens = 0
    for i, xs in inputs.items():
        w = model.layers[i].mlp.gate.weight
        for x_TD in xs:
            for x in x_TD:
                logits = [float(w[e].detach() @ x) for e in range(spec.moe.n_experts)]
                for e in sorted(range(len(logits)), key=lambda e: -logits[e])[:spec.moe.top_k]:
                    expected[i][e] += 1
                tokens += i == 0
    assert tokens == 52
    assert load["all"] == expected
    assert {d: sum(load[d][0]) for d in streams} == {"a": 45 * 2, "b": 7 * 2}


def test_grouped_routing_keeps_equal_counts_per_group():
    spec = _grouped()
    load = {i: list(range(1, 9)) for i in spec.moe_layers}
    with pytest.raises(MoelabError, match="multiple of 2"):
        choose_kept(spec, load, keep=3)
    with pytest.raises(MoelabError, match="same count in every group"):
        choose_kept(spec, load, min_share=0.1)  # 4, 5, ... of 36: experts 3..7 -> 1 and 4 per group
    assert choose_kept(spec, load, keep=4)[0] == (2, 3, 6, 7)


# --- the command on the shared trained run --------------------------------------------------------------


def _logits(folder, ids):
    with torch.no_grad():
        return read_run(folder).load_model()(ids)


def test_prune_keeping_every_expert_writes_the_same_model(moe_run, tmp_path):
    ids = torch.randint(0, 512, (2, 16))
    base = _logits(moe_run, ids)
    s = prune(moe_run, tmp_path / "all", keep=8, **FAST)
    assert all(r["kept"] == list(range(8)) and r["kept_load_share"] == 1.0 for r in s["layers"])
    assert torch.equal(_logits(tmp_path / "all", ids), base)
    assert s["weight_bytes"]["saved"] == 0 and all(abs(v) < 1e-6 for v in s["loss"]["delta"].values())
    # a tiny --min-share keeps every expert with any load
    spec = tiny_moe()
    load = {i: [1 + e for e in range(8)] for i in spec.moe_layers}
    assert choose_kept(spec, load, min_share=1e-9) == {i: tuple(range(8)) for i in spec.moe_layers}


def test_prune_keep_writes_a_run_with_its_numbers(moe_run, tmp_path, capsys):
    out = tmp_path / "k4"
    assert main(["prune", str(moe_run), "--keep", "4", "--out", str(out), *CLI_FAST, "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    source = read_run(moe_run)
    pruned = read_run(out)
    assert all(layer.moe.n_experts == 4 for layer in pruned.spec.layers)
    entry = pruned.lineage[-1]
    assert entry["transform"] == "prune" and entry["keep"] == 4 and entry["calibration_tokens"] == 256
    assert entry["kept"] == {str(r["layer"]): r["kept"] for r in s["layers"]}
    # the load: every calibration token goes to top-k experts, per domain and in all
    for layer in source.spec.moe_layers:
        assert sum(s["load"]["all"][str(layer)]) == 2 * sum(s["calibration_tokens_counted"].values())
        counts = s["load"]["all"][str(layer)]
        kept = s["layers"][layer]["kept"]
        assert min(counts[e] for e in kept) >= max(counts[e] for e in range(8) if e not in kept)
    # exact bytes: 4 of 8 experts' gate_up (2f x d) and down (d x f) and router rows (d) + bias, fp32
    spec = source.spec
    per_expert = (3 * spec.moe.expert_ffn * spec.d_model + spec.d_model + 1) * 4
    assert s["weight_bytes"]["saved"] == 4 * per_expert * spec.n_moe_layers
    on_disk = (out / "final" / "model.safetensors").stat().st_size
    assert 0 < on_disk - s["weight_bytes"]["after"] < 20_000  # the safetensors header only
    # the weights that are not experts are the source's
    from safetensors.torch import load_file

    a, b = load_file(source.folder / "model.safetensors"), load_file(out / "final" / "model.safetensors")
    for key, t in a.items():
        if ".mlp." not in key:
            assert torch.equal(t, b[key])
        elif key.endswith(("gate_up_proj", "down_proj", "gate.weight", "gate.bias")):
            layer = int(key.split(".")[1])
            assert torch.equal(t[s["layers"][layer]["kept"]], b[key])
    assert s["loss"]["rare_domains"] == ["code"] and set(s["loss"]["rare_delta"]) == {"code"}
    assert set(s["loss"]["delta"]) == {"code", "numbers", "prose", "mean"}
    saved = json.loads((out / "summary.json").read_text())
    assert saved["weight_bytes"] == s["weight_bytes"] and saved["lineage"][-1]["transform"] == "prune"
    # it loads in bench and export
    assert main(["bench", str(out), "--batches", "1", "--prompt", "4", "--gen", "2", "--repeats", "1",
                 "-H", "H200", "--json"]) == 0
    bench = json.loads(capsys.readouterr().out)
    assert bench["models"][0]["experts"] == 4 and bench["models"][0]["source"] == "run"
    assert main(["export", str(out), "--out", str(tmp_path / "hf"), "--json"]) == 0
    exported = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert exported.get("num_local_experts", exported.get("num_experts")) == 4


def test_min_share_keeps_different_counts_per_layer(moe_run, tmp_path, capsys):
    from moelab.mitigate import quality

    source = read_run(moe_run)  # the load, on the calibration slice the command will count
    streams = quality.calibration_streams(quality.run_corpus(source), FAST["calibration_tokens"])
    load = measure_load(source.load_model(), streams, quality.seq_len(source))
    shares = {i: [c / sum(v) for c in v] for i, v in load["all"].items()}
    assert choose_kept(source.spec, load["all"], min_share=1e-9) == {  # a share of 0 is below every share
        i: tuple(e for e, c in enumerate(v) if c) for i, v in load["all"].items()}
    share = next(x for x in sorted({v for s in shares.values() for v in s})
                 if len({sum(v >= x for v in s) for s in shares.values()}) > 1
                 and min(sum(v >= x for v in s) for s in shares.values()) >= 2)
    out = tmp_path / "share"
    assert main(["prune", str(moe_run), "--min-share", repr(share), "--out", str(out), *CLI_FAST, "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    counts = {r["layer"]: len(r["kept"]) for r in s["layers"]}
    assert counts == {i: sum(v >= share for v in sh) for i, sh in shares.items()} and len(set(counts.values())) > 1
    spec = read_run(out).spec
    assert [spec.layers[i].moe.n_experts for i in spec.moe_layers] == [counts[i] for i in spec.moe_layers]
    assert main(["bench", str(out), "--batches", "1", "--prompt", "4", "--gen", "2", "--repeats", "1",
                 "-H", "H200", "--json"]) == 0
    capsys.readouterr()


# --- bad input: one line, exit 2, nothing written --------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--keep", "0"], "keep between top-k"),
    (["--keep", "1"], "keep between top-k"),
    (["--keep", "9"], "keep between top-k"),
    (["--keep", "4", "--min-share", "0.1"], "exactly one of"),
    ([], "exactly one of"),
    (["--min-share", "0"], "in \\(0, 1\\)"),
    (["--min-share", "1"], "in \\(0, 1\\)"),
    (["--min-share", "nan"], "in \\(0, 1\\)"),
    (["--min-share", "0.5"], "below its top-k"),
    (["--keep", "4", "--calibration-tokens", "0"], "calibration-tokens"),
])
def test_bad_requests_exit_2_and_write_nothing(moe_run, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert main(["prune", str(moe_run), *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("moelab: error:")
    import re

    assert re.search(message, err), err
    assert not out.exists()


def test_bad_runs_exit_2_and_write_nothing(moe_run, dense_run, tmp_path, capsys):
    quantized = tmp_path / "quantized"
    (quantized / "final").mkdir(parents=True)
    meta = json.loads((moe_run / "final" / "meta.json").read_text())
    meta["quantization"] = {"components": {"routed_experts": "int8"}, "group_size": 128, "scheme": "symmetric"}
    (quantized / "final" / "meta.json").write_text(json.dumps(meta))
    (quantized / "final" / "model.safetensors").write_bytes((moe_run / "final" / "model.safetensors").read_bytes())
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("")
    for run, out, message in ((dense_run, tmp_path / "o1", "dense model"),
                              (tmp_path / "missing", tmp_path / "o2", "no such run"),
                              (quantized, tmp_path / "o3", "prune before quantizing"),
                              (moe_run, busy, "not empty")):
        assert main(["prune", str(run), "--keep", "4", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
        assert not out.exists() or [p.name for p in out.iterdir()] == ["x"]
    assert main(["prune", str(moe_run), "--keep", "4", "--out", str(moe_run)]) == 2
    assert "not empty" in capsys.readouterr().err
