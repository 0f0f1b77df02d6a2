"""Shrinking hits its target or says why not: aperiodic attention patterns, huge conv kernels, refusals.

The mutated configs are the review's reproducers (/tmp/review/shr2.py): real configs from tests/spec/configs
with one field changed the way transformers' config classes allow (Qwen2: use_sliding_window with
max_window_layers, configuration_qwen2.py; Qwen3-Next: layer_types and linear_conv_kernel_dim,
configuration_qwen3_next.py).
"""

import json
from pathlib import Path

import pytest

from moelab.bench.shrink import LINEAR_CONV_CAP, parse_size, shrink
from moelab.cli import main
from moelab.cost.params import count_params
from moelab.errors import MoelabError
from moelab.spec.hf import spec_from_config

CONFIGS = Path(__file__).resolve().parents[1] / "spec" / "configs"
REAL = sorted(p for p in CONFIGS.glob("*.json") if p.stem not in ("SOURCES", "NOT_FOUND", "expected_counts"))


def load(name: str, **changes):
    raw = json.loads((CONFIGS / f"{name}.json").read_text())
    raw.update(changes)
    return spec_from_config(raw, name=name)


def kind(layer) -> tuple:
    """An attention layer's kind, ignoring sizes a shrink scales (window and chunk spans are capped)."""
    a = layer.attention
    return a.kind, bool(a.sliding_window), bool(a.chunk_size), a.rope


def within(spec, target: str, factor: float = 2.0) -> bool:
    total, want = count_params(spec).total, parse_size(target)
    return want / factor <= total <= want * factor


@pytest.mark.parametrize("path", REAL, ids=lambda p: p.stem)
def test_every_real_config_shrinks_to_2m(path):
    spec = spec_from_config(json.loads(path.read_text()), name=path.stem)
    small = shrink(spec, 2e6)
    assert within(small, "2M")
    assert small.n_layers <= spec.n_layers
    assert {kind(layer) for layer in small.layers} == {kind(layer) for layer in spec.layers}


def test_periodic_pattern_keeps_first_layers():
    """Gemma 3 (five sliding, one global, repeating) still keeps its first whole period, in order."""
    spec = load("gemma3_27b")
    small = shrink(spec, "2M")
    assert [kind(layer) for layer in small.layers] == [kind(layer) for layer in spec.layers[:small.n_layers]]
    assert small.n_layers % 6 == 0


def test_qwen3_next_two_full_then_linear():
    """Review (a): 2 full then 46 linear never repeats; it used to keep all 48 layers (10.6M for 2M)."""
    spec = load("qwen3_next_80b_a3b_thinking", layer_types=["full_attention"] * 2 + ["linear_attention"] * 46)
    small = shrink(spec, "2M")
    assert within(small, "2M", 1.3)
    kinds = [layer.attention.kind for layer in small.layers]
    assert small.n_layers < 16 and kinds[0] == "gqa" and "linear" in kinds
    assert kinds.count("linear") > kinds.count("gqa")  # linear layers stay the majority


def test_qwen3_next_huge_conv_kernel_is_capped():
    """Review (b): linear_conv_kernel_dim 1e6 used to give 769M parameters for a 2M target."""
    spec = load("qwen3_next_80b_a3b_thinking", linear_conv_kernel_dim=1_000_000)
    small = shrink(spec, "2M")
    assert within(small, "2M", 1.3)
    assert {layer.attention.linear.conv_kernel for layer in small.layers if layer.attention.linear} == {
        LINEAR_CONV_CAP}
    assert LINEAR_CONV_CAP == 4  # Qwen3-Next's own linear_conv_kernel_dim


def test_qwen2_max_window_layers():
    """Review (c): 10 full then 18 sliding layers used to keep all 28 layers at d_model 32."""
    spec = load("qwen2_5_7b_instruct", use_sliding_window=True, max_window_layers=10)
    assert [bool(layer.attention.sliding_window) for layer in spec.layers] == [False] * 10 + [True] * 18
    small = shrink(spec, "2M")
    assert within(small, "2M", 1.3)
    windows = [bool(layer.attention.sliding_window) for layer in small.layers]
    assert small.n_layers <= 8 and small.d_model >= 64
    assert windows == sorted(windows) and 0 < windows.count(True) < small.n_layers  # full first, then windows


def test_a_kind_the_sample_misses_is_added():
    """One global layer last of 26: an even sample misses it; its first layer is added."""
    spec = load("gemma3_1b_it", layer_types=["sliding_attention"] * 25 + ["full_attention"])
    small = shrink(spec, "2M")
    assert within(small, "2M", 1.3)
    windows = [bool(layer.attention.sliding_window) for layer in small.layers]
    assert windows[-1] is False and all(windows[:-1]) and small.n_layers < 10


@pytest.mark.parametrize("name, target, changes, words", [
    ("mixtral_8x7b_v0_1", "20k", {}, ["20k", "cannot be shrunk below ~316k", "embedding"]),
    ("mixtral_8x7b_v0_1", "2M", {"num_local_experts": 4096}, ["2M", "cannot be shrunk below ~6.", "4096 experts"]),
    ("llama3_2_1b", "3B", {"vocab_size": 2_000_000}, ["3B", "largest shrink", "vocabulary capped"]),
])
def test_a_missed_target_is_refused_in_one_line(name, target, changes, words):
    with pytest.raises(MoelabError) as info:
        shrink(load(name, **changes), target)
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_bench_refuses_with_exit_2(tmp_path, capsys, hw_file):
    raw = json.loads((CONFIGS / "mixtral_8x7b_v0_1.json").read_text())
    raw["num_local_experts"] = 4096
    (tmp_path / "config.json").write_text(json.dumps(raw))
    assert main(["bench", str(tmp_path), "--shrink-to", "2M", "--prompt", "8", "--gen", "2", "--repeats", "1",
                 "--hardware", hw_file]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "cannot be shrunk below" in err[0]
