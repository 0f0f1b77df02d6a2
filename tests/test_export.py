"""`moelab export`: a run or HF folder becomes a folder transformers (and so vLLM) loads with the same logits and
the run's own tokenizer; bad sources and targets are refused in one line without touching anything.

References are independent of moelab.serve.export: transformers' AutoModelForCausalLM / AutoTokenizer reading
the exported folder, tokenizers' Tokenizer reading the run's final/tokenizer.json, and moelab's own model
loaded from the run (moelab.bench.models), whose agreement with transformers' families is what counts.
"""

import json
import random
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_model
from tests.nn.test_hf_interop import randomise  # every weight random, norms and biases too

from moelab.cli import main
from moelab.spec.model import spec_to_dict

transformers = pytest.importorskip("transformers")

TEXTS = (
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu 12 + 34 = 46",
    "  leading spaces, trailing tab\t and a newline\n",
    "naïve café — 日本語のテキスト, emoji 🤖🚀, Ελληνικά, עברית",
    "def f(x: int) -> int:\n    return x ** 2  # squared\n\nprint({'k': [1, 2, 3]})\n",
    "one document<|endoftext|>and the next",
    "",
)


def one_error_line(err: str) -> bool:
    return err.startswith("moelab: error: ") and err.count("\n") == 1 and "Traceback" not in err


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def random_ids(vocab: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (2, 19), generator=torch.Generator().manual_seed(seed))


def moelab_logits(ref: Path, ids: torch.Tensor) -> torch.Tensor:
    from moelab.bench.models import build, resolve

    loaded = build(resolve(str(ref)), "cpu", torch.float32)
    with torch.no_grad():
        return loaded.model(ids)


def hf_load(folder: Path):
    model, info = transformers.AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info.get("mismatched_keys"), info
    return model.eval()


def hf_logits(folder: Path, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hf_load(folder)(ids).logits


def fake_run(folder: Path, spec, tokenizer_json: str | None = None, weights: bool = True) -> Path:
    """A run folder as `moelab train` leaves one: final/meta.json (spec, config), final/model.safetensors."""
    from moelab.nn.model import build_model

    final = folder / "final"
    final.mkdir(parents=True)
    (final / "meta.json").write_text(json.dumps({"spec": spec_to_dict(spec), "config": {"vocab_size": 300}}))
    if weights:
        torch.manual_seed(0)
        save_model(randomise(build_model(spec)), str(final / "model.safetensors"))
    if tokenizer_json is not None:
        (final / "tokenizer.json").write_text(tokenizer_json)
    return folder


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A small corpus, and one tiny-moe run trained 3 steps on it (caches and runs store in a temp folder)."""
    from moelab.train import loop
    from moelab.train.config import TrainConfig
    from moelab.train.presets import load_train_spec

    root = tmp_path_factory.mktemp("export-lab")
    corpus = root / "corpus"
    rng = random.Random(0)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    for domain in ("prose", "numbers"):
        (corpus / domain).mkdir(parents=True)
        for i in range(6):
            text = (" ".join(rng.choice(words) for _ in range(300)) if domain == "prose" else
                    "\n".join(f"{a} + {b} = {a + b}" for a, b in
                              ((rng.randrange(100), rng.randrange(100)) for _ in range(100))))
            (corpus / domain / f"doc{i}.txt").write_text(text)
    run = root / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOELAB_HOME", str(root / "home"))
        patch.setenv("MOELAB_CACHE", str(root / "cache"))
        cfg = TrainConfig(steps=3, batch_size=2, seq_len=32, eval_every=3, ckpt_every=3, eval_tokens=128,
                          data=str(corpus), vocab_size=300, warmup=1)
        loop.train(load_train_spec("tiny-moe"), cfg, run, progress=False)
    exported = root / "exported"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOELAB_HOME", str(root / "home"))
        patch.setenv("MOELAB_CACHE", str(root / "cache"))
        assert main(["export", str(run), "--out", str(exported)]) == 0
    return {"root": root, "corpus": corpus, "run": run, "exported": exported}


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MOELAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MOELAB_CACHE", str(tmp_path / "cache"))


@pytest.fixture()
def run_tokenizer(lab):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(lab["run"] / "final" / "tokenizer.json"))


# --------------------------------------------------------------------------------------------- the model


def test_trained_moe_run_loads_in_transformers_as_mixtral_with_equal_logits(lab):
    out = lab["exported"]
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "mixtral" and config["architectures"] == ["MixtralForCausalLM"]
    assert config["num_local_experts"] == 8 and config["num_experts_per_tok"] == 2
    ids = random_ids(config["vocab_size"])
    ours, theirs = moelab_logits(lab["run"], ids), hf_logits(out, ids)
    assert theirs.dtype == torch.float32 and ours.shape == theirs.shape == (2, 19, 2048)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 0 and generation["pad_token_id"] == 0
    mark = json.loads((out / "moelab_export.json").read_text())
    assert mark["source"] == "run" and mark["model_type"] == "mixtral" and mark["name"] == "tiny-moe"


@pytest.mark.parametrize("preset,model_type,architecture", [
    ("tiny-dense", "llama", "LlamaForCausalLM"),
    ("tiny-moe-fine", "glm4_moe", "Glm4MoeForCausalLM"),  # shared experts + sigmoid routing with selection bias
])
def test_other_presets_export_to_their_family_with_equal_logits(preset, model_type, architecture, tmp_path, lab):
    from moelab.train.presets import TRAIN_PRESETS

    run = fake_run(tmp_path / "run", TRAIN_PRESETS[preset](),
                   (lab["run"] / "final" / "tokenizer.json").read_text())
    out = tmp_path / "out"
    assert main(["export", str(run), "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == model_type and config["architectures"] == [architecture]
    ids = random_ids(config["vocab_size"], seed=3)
    torch.testing.assert_close(hf_logits(out, ids), moelab_logits(run, ids), atol=1e-5, rtol=1e-5)


def test_an_hf_folder_written_by_transformers_exports_with_its_logits(tmp_path, lab):
    """A Mixtral folder saved by transformers itself (weights and tokenizer), exported and read back by
    transformers: the same logits as the model that wrote it, the tokenizer files byte for byte."""
    config = transformers.AutoConfig.for_model(
        "mixtral", vocab_size=512, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
        max_position_embeddings=256, tie_word_embeddings=False)
    torch.manual_seed(0)
    source = randomise(transformers.AutoModelForCausalLM.from_config(config))
    folder = tmp_path / "hf"
    source.save_pretrained(folder)
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(lab["run"] / "final" / "tokenizer.json"), eos_token="<|endoftext|>")
    tokenizer.save_pretrained(folder)
    out = tmp_path / "out"
    assert main(["export", str(folder), "--out", str(out)]) == 0
    ids = random_ids(512, seed=5)
    with torch.no_grad():
        expected = source(ids).logits
    torch.testing.assert_close(hf_logits(out, ids), expected, atol=1e-5, rtol=1e-5)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (out / name).read_bytes() == (folder / name).read_bytes(), name


def test_exporting_an_export_keeps_weights_config_and_tokenizer(tmp_path, lab):
    out = tmp_path / "again"
    assert main(["export", str(lab["exported"]), "--out", str(out)]) == 0
    a, b = load_file(lab["exported"] / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)
    first, second = folder_files(lab["exported"]), folder_files(out)
    assert first.keys() == second.keys()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        assert first[name] == second[name], name
    assert json.loads(first["config.json"]) == json.loads(second["config.json"])
    assert json.loads(second["moelab_export.json"])["source"] == "hf"


# --------------------------------------------------------------------------------------------- the tokenizer


def test_tokenizer_is_the_runs_own_as_a_fast_hf_tokenizer(lab, run_tokenizer):
    tokenizer = transformers.AutoTokenizer.from_pretrained(lab["exported"])
    assert tokenizer.is_fast
    assert (lab["exported"] / "tokenizer.json").read_bytes() == (lab["run"] / "final" / "tokenizer.json").read_bytes()
    assert tokenizer.eos_token_id == 0 and tokenizer.pad_token_id == 0 and tokenizer.bos_token_id == 0
    assert tokenizer.convert_ids_to_tokens(0) == "<|endoftext|>"
    assert len(tokenizer) == run_tokenizer.get_vocab_size() == 300
    for text in TEXTS:
        expected = run_tokenizer.encode(text).ids
        assert tokenizer(text)["input_ids"] == expected, text  # add_special_tokens=True: still no BOS
        assert tokenizer.encode(text, add_special_tokens=False) == expected, text
        assert tokenizer.decode(expected) == text == run_tokenizer.decode(expected, skip_special_tokens=False)
    assert 0 in run_tokenizer.encode(TEXTS[4]).ids  # the separator is one token, not its bytes
    assert tokenizer("alpha")["input_ids"][0] != 0  # no BOS in front


def test_a_run_without_tokenizer_json_gets_the_same_tokenizer_rebuilt(tmp_path, lab, monkeypatch):
    """A run from before runs kept final/tokenizer.json: the tokenizer is trained again from its corpus and
    vocabulary size, into an empty cache (so it is rebuilt, not found), and is the one the run trained with."""
    run = tmp_path / "old-run"
    shutil.copytree(lab["run"], run)
    (run / "final" / "tokenizer.json").unlink()
    cache = tmp_path / "fresh-cache"
    monkeypatch.setenv("MOELAB_CACHE", str(cache))
    out = tmp_path / "out"
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert (out / "tokenizer.json").read_text() == (lab["run"] / "final" / "tokenizer.json").read_text()
    assert any(p.is_file() for p in cache.rglob("*"))  # it was trained here, not read from the run's cache
    assert folder_files(out)["tokenizer_config.json"] == folder_files(lab["exported"])["tokenizer_config.json"]


def test_a_run_without_tokenizer_whose_corpus_is_gone_is_refused(tmp_path, lab, capsys):
    from moelab.train.presets import tiny_moe

    run = fake_run(tmp_path / "run", tiny_moe())
    meta_file = run / "final" / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta["config"]["data"] = str(tmp_path / "deleted-corpus")
    meta_file.write_text(json.dumps(meta))
    out = tmp_path / "out"
    assert main(["export", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert one_error_line(err) and "tokenizer.json" in err, err
    assert not out.exists()


# --------------------------------------------------------------------------------------------- the CLI


def test_json_output(tmp_path, lab, capsys):
    out = tmp_path / "out"
    assert main(["export", str(lab["run"]), "--out", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info == {"folder": str(out), "source": "run", "model_type": "mixtral",
                    "architecture": "MixtralForCausalLM", "name": "tiny-moe"}


@pytest.mark.parametrize("case", ["missing", "empty", "unrelated-files", "config-without-weights"])
def test_a_source_that_is_neither_run_nor_hf_folder_exits_2(case, tmp_path, capsys):
    source = tmp_path / "src"
    if case != "missing":
        source.mkdir()
    if case == "unrelated-files":
        (source / "notes.txt").write_text("hello")
        (source / "meta.json").write_text("{}")  # no weights next to it: not a run
    if case == "config-without-weights":
        (source / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
        (source / "tokenizer.json").write_text("{}")
    out = tmp_path / "out"
    assert main(["export", str(source), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert one_error_line(captured.err), captured.err
    assert captured.out == "" and not out.exists()


def test_out_holding_other_files_is_refused_and_untouched(tmp_path, lab, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    (out / "config.json").write_text("{\"not\": \"yours\"}")
    before = folder_files(out)
    assert main(["export", str(lab["run"]), "--out", str(out)]) == 2
    assert one_error_line(capsys.readouterr().err)
    assert folder_files(out) == before and sorted(p.name for p in out.iterdir()) == ["config.json", "keep.txt"]


def test_out_that_is_a_file_is_refused(tmp_path, lab, capsys):
    out = tmp_path / "file"
    out.write_text("x")
    assert main(["export", str(lab["run"]), "--out", str(out)]) == 2
    assert one_error_line(capsys.readouterr().err) and out.read_text() == "x"


@pytest.mark.parametrize("target", ["run", "run/final", "hf"])
def test_out_that_is_the_source_is_refused(target, tmp_path, lab, capsys):
    run = tmp_path / "run"
    shutil.copytree(lab["run"], run)
    hf = tmp_path / "hf"
    shutil.copytree(lab["exported"], hf)  # an export is an HF folder, and carries the export mark
    source = hf if target == "hf" else run
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert main(["export", str(source), "--out", str(tmp_path / target)]) == 2
    assert one_error_line(capsys.readouterr().err)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_re_export_into_an_earlier_export(tmp_path, lab):
    out = tmp_path / "out"
    shutil.copytree(lab["exported"], out)
    (out / "model.safetensors").write_bytes(b"stale")
    assert main(["export", str(lab["run"]), "--out", str(out)]) == 0
    assert folder_files(out).keys() == folder_files(lab["exported"]).keys()
    a, b = load_file(out / "model.safetensors"), load_file(lab["exported"] / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_re_export_into_an_earlier_export_is_a_fresh_export(tmp_path, lab):
    hf = tmp_path / "hf"  # an HF folder with weights and tokenizer.json only
    hf.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        shutil.copyfile(lab["exported"] / name, hf / name)
    fresh, reused = tmp_path / "fresh", tmp_path / "reused"
    shutil.copytree(lab["exported"], reused)  # an earlier export of the run
    assert main(["export", str(hf), "--out", str(fresh)]) == 0
    assert main(["export", str(hf), "--out", str(reused)]) == 0
    assert folder_files(reused) == folder_files(fresh)


def test_hf_folder_without_tokenizer_is_refused(tmp_path, lab, capsys):
    hf = tmp_path / "hf"
    hf.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(lab["exported"] / name, hf / name)
    out = tmp_path / "out"
    assert main(["export", str(hf), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert one_error_line(err) and "tokenizer.json" in err, err
    assert not out.exists()


def test_a_spec_no_family_can_state_is_refused_before_out_is_made(tmp_path, lab, capsys):
    """tiny-moe with a Gemma-2 logit soft cap: Mixtral has no soft cap and no family with one has MoE layers."""
    from moelab.train.presets import tiny_moe

    run = fake_run(tmp_path / "run", replace(tiny_moe(), logits_softcap=30.0),
                   (lab["run"] / "final" / "tokenizer.json").read_text())
    out = tmp_path / "deep" / "out"
    assert main(["export", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert one_error_line(err) and "no Hugging Face family can state" in err, err
    assert not (tmp_path / "deep").exists()


def test_a_run_with_corrupt_weights_is_refused(tmp_path, lab, capsys):
    run = tmp_path / "run"
    shutil.copytree(lab["run"], run)
    (run / "final" / "model.safetensors").write_bytes(b"\x00" * 64)
    out = tmp_path / "out"
    assert main(["export", str(run), "--out", str(out)]) == 2
    assert one_error_line(capsys.readouterr().err)
    assert not out.exists()


def test_a_run_folder_named_like_a_preset_exports(tmp_path, lab, monkeypatch):
    shutil.copytree(lab["run"], tmp_path / "tiny-moe")
    monkeypatch.chdir(tmp_path)
    assert main(["export", "tiny-moe", "--out", "served"]) == 0
