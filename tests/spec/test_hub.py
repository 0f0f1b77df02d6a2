"""A Hugging Face id as a model argument: read from a fake local HF cache (the layout huggingface_hub writes:
models--OWNER--NAME/refs/main, snapshots/HASH/* as symlinks into blobs/), else a preset of that id, else one line."""

import copy
import hashlib
import json
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from moelab.cli import main
from moelab.errors import MoelabError
from moelab.spec import hub
from moelab.spec.hf import spec_from_config
from moelab.spec.presets import load_model, model_presets

MISTRAL = model_presets()["mistral-7b"]  # verbatim mistralai/Mistral-7B-v0.1 config.json (bundled preset)
SHA_OLD, SHA_MAIN = "a" * 40, "b" * 40


def add_snapshot(cache: Path, repo_id: str, sha: str, files: dict[str, bytes]) -> Path:
    """snapshots/<sha>/<file> as relative symlinks into blobs/<sha256>, as huggingface_hub stores them."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot = repo / "snapshots" / sha
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(Path("../..") / "blobs" / blob.name)
    return snapshot


def set_main(cache: Path, repo_id: str, sha: str) -> None:
    refs = cache / ("models--" + repo_id.replace("/", "--")) / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    (refs / "main").write_text(sha)  # huggingface_hub writes the hash without a newline


def config_bytes(raw: dict) -> bytes:
    return json.dumps(raw).encode()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty hub cache that HF_HUB_CACHE points at; huggingface_hub's offline flag restored afterwards."""
    from huggingface_hub import constants

    root = tmp_path / "hub"
    root.mkdir()
    for var in ("HF_HOME", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", constants.HF_HUB_OFFLINE)
    return root


def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert hub.hub_cache_dir() == tmp_path / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub.hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", "~/elsewhere")
    assert hub.hub_cache_dir() == tmp_path / "elsewhere"


def test_cached_id_resolves_to_its_config(cache):
    add_snapshot(cache, "mistralai/Mistral-7B-v0.1", SHA_MAIN, {"config.json": config_bytes(MISTRAL)})
    set_main(cache, "mistralai/Mistral-7B-v0.1", SHA_MAIN)
    config = hub.cached_config("mistralai/Mistral-7B-v0.1")
    assert config == cache / "models--mistralai--Mistral-7B-v0.1" / "snapshots" / SHA_MAIN / "config.json"
    assert config.is_symlink()
    spec = load_model("mistralai/Mistral-7B-v0.1")
    assert spec.name == "mistralai/Mistral-7B-v0.1"  # its id, not the snapshot's hash
    assert spec == replace(spec_from_config(MISTRAL, name="x"), name=spec.name)


def test_refs_main_picks_the_snapshot(cache):
    repo_id = "owner/model"
    older = copy.deepcopy(MISTRAL)
    older["num_hidden_layers"] = 3
    add_snapshot(cache, repo_id, SHA_OLD, {"config.json": config_bytes(older)})
    add_snapshot(cache, repo_id, SHA_MAIN, {"config.json": config_bytes(MISTRAL)})
    set_main(cache, repo_id, SHA_MAIN)
    assert load_model(repo_id).n_layers == MISTRAL["num_hidden_layers"] == 32
    set_main(cache, repo_id, SHA_OLD)
    assert load_model(repo_id).n_layers == 3


def test_snapshot_not_at_main_is_not_used(cache):
    # a snapshot whose hash refs/main does not name (or no refs/main at all) is not guessed at
    add_snapshot(cache, "owner/model", SHA_OLD, {"config.json": config_bytes(MISTRAL)})
    assert hub.cached_config("owner/model") is None
    set_main(cache, "owner/model", SHA_MAIN)
    assert hub.cached_config("owner/model") is None
    with pytest.raises(MoelabError, match="not in the Hugging Face cache"):
        load_model("owner/model")


def test_id_is_case_insensitive_in_the_cache(cache):
    add_snapshot(cache, "Owner/Model-X", SHA_MAIN, {"config.json": config_bytes(MISTRAL)})
    set_main(cache, "Owner/Model-X", SHA_MAIN)
    assert load_model("owner/model-x").n_layers == 32


def test_preset_fallback_by_id(cache, capsys):
    spec = load_model("MistralAI/mixtral-8x7b-V0.1")  # published.json: mistralai/Mixtral-8x7B-v0.1
    assert spec == load_model("mixtral-8x7b")
    assert main(["estimate", "mistralai/Mixtral-8x7B-v0.1", "--json"]) == 0
    by_id = json.loads(capsys.readouterr().out)
    assert main(["estimate", "mixtral-8x7b", "--json"]) == 0
    assert by_id == json.loads(capsys.readouterr().out)


def test_cache_wins_over_the_preset(cache):
    smaller = copy.deepcopy(model_presets()["mixtral-8x7b"])
    smaller["num_hidden_layers"] = 2
    add_snapshot(cache, "mistralai/Mixtral-8x7B-v0.1", SHA_MAIN, {"config.json": config_bytes(smaller)})
    set_main(cache, "mistralai/Mixtral-8x7B-v0.1", SHA_MAIN)
    assert load_model("mistralai/Mixtral-8x7B-v0.1").n_layers == 2


def test_missing_id_is_one_line_exit_2(cache, capsys):
    assert main(["estimate", "nobody/no-such-model"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err
    assert "nobody/no-such-model" in lines[0] and str(cache) in lines[0]
    assert "hf download nobody/no-such-model config.json" in lines[0] and "config.json path" in lines[0]


def test_cached_without_config_is_missing(cache, capsys):
    add_snapshot(cache, "owner/weights-only", SHA_MAIN, {"model.safetensors": b"not read"})
    set_main(cache, "owner/weights-only", SHA_MAIN)
    assert main(["compare", "owner/weights-only", "mixtral-8x7b"]) == 2
    assert "hf download owner/weights-only" in capsys.readouterr().err


def test_bad_cached_config_is_one_line(cache, capsys):
    add_snapshot(cache, "owner/broken", SHA_MAIN, {"config.json": b'{"model_type": "llama", "hidden_size": '})
    set_main(cache, "owner/broken", SHA_MAIN)
    assert main(["estimate", "owner/broken"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert SHA_MAIN in err  # names the file it read


VALID = ["mistralai/Mixtral-8x7B-v0.1", "Qwen/Qwen3-30B-A3B", "deepseek-ai/DeepSeek-V3", "a/b", "a_b/c.d-e_"]
MALFORMED = ["a/b/c", "/a/b", "a/", "/b", "a//b", "-a/b", "a/b-", ".a/b", "a/b.", "a--x/b", "a/b..c", "a/b.git",
             "a/config.json", "café/x", "a b/c", "a/" + "x" * 97, "no-slash-name", "", "a\\b", "a/b\x00"]


@pytest.mark.parametrize("text", VALID)
def test_valid_ids_pass_the_hubs_own_check(text):
    from huggingface_hub.utils import validate_repo_id

    assert hub.is_hub_id(text)
    validate_repo_id(text)  # huggingface_hub agrees


@pytest.mark.parametrize("text", MALFORMED)
def test_malformed_ids_are_not_ids(cache, text, capsys):
    assert not hub.is_hub_id(text)
    with pytest.raises(MoelabError) as e:
        load_model(text)
    assert "hf download" not in str(e.value) and "presets:" in str(e.value)  # the plain unknown-model line


def test_existing_path_stays_a_path(cache, tmp_path, monkeypatch):
    add_snapshot(cache, "owner/model", SHA_MAIN, {"config.json": config_bytes(MISTRAL)})
    set_main(cache, "owner/model", SHA_MAIN)
    local = copy.deepcopy(MISTRAL)
    local["num_hidden_layers"] = 5
    (tmp_path / "owner" / "model").mkdir(parents=True)
    (tmp_path / "owner" / "model" / "config.json").write_text(json.dumps(local))
    monkeypatch.chdir(tmp_path)
    assert load_model("owner/model").n_layers == 5


def test_no_network(cache, monkeypatch, capsys):
    from huggingface_hub import constants

    no_network(monkeypatch)
    add_snapshot(cache, "owner/model", SHA_MAIN, {"config.json": config_bytes(MISTRAL)})
    set_main(cache, "owner/model", SHA_MAIN)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert load_model("owner/model").n_layers == 32
    assert constants.HF_HUB_OFFLINE is True  # forced for anything huggingface_hub does later in the process
    assert load_model("mistralai/Mixtral-8x7B-v0.1").name == "mixtral-8x7b"
    assert main(["estimate", "owner/missing"]) == 2
    assert "hf download" in capsys.readouterr().err


def run_python(code: str, env_cache: Path) -> str:
    import os

    env = {**os.environ, "HF_HUB_CACHE": str(env_cache)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_huggingface_hub_is_imported_only_for_a_cached_id(tmp_path):
    add_snapshot(tmp_path, "owner/model", SHA_MAIN, {"config.json": config_bytes(MISTRAL)})
    set_main(tmp_path, "owner/model", SHA_MAIN)
    code = """
import sys
import moelab.spec
from moelab.cli import main
from moelab.spec import load_model
load_model("mixtral-8x7b")
load_model("mistralai/Mixtral-8x7B-v0.1")  # a preset's id, nothing cached
assert main(["estimate", "mixtral-8x7b", "--json"]) == 0
before = "huggingface_hub" in sys.modules
load_model("owner/model")
print(before, "huggingface_hub" in sys.modules)
"""
    assert run_python(code, tmp_path).splitlines()[-1] == "False True"


def test_snapshot_folder_works_like_a_folder(tmp_path):
    """A cached snapshot (config.json and safetensors as symlinks into blobs/) loads like a plain HF folder: the
    same logits as the transformers model that wrote it."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from moelab.bench.models import resolve_spec
    from moelab.nn.hf import load_pretrained

    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    reference = transformers.LlamaForCausalLM(cfg).eval()
    saved = tmp_path / "saved"
    reference.save_pretrained(saved, safe_serialization=True)
    files = {p.name: p.read_bytes() for p in saved.iterdir() if p.name.endswith((".json", ".safetensors"))}
    snapshot = add_snapshot(tmp_path / "hub", "owner/tiny", SHA_MAIN, files)
    assert all(p.is_symlink() for p in snapshot.iterdir())
    spec, source, folder = resolve_spec(str(snapshot))
    assert (source, folder) == ("hf", snapshot)
    ids = torch.randint(0, 64, (2, 7))
    with torch.no_grad():
        ours = load_pretrained(snapshot, dtype=torch.float32)(ids)
        theirs = reference(ids).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
