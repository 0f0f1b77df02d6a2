"""The README's examples work: its workload file loads as written, and every command of its Examples block runs
(through `moelab.cli.main`, with --json: exit 0 and one JSON document), as does `decide` on that workload."""

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from moelab.cli import main
from moelab.decide.workload import load_workload

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PLACEHOLDERS = ("path/to/config.json", "my-gpu.yaml")  # written into the working folder by the fixture below


def fenced(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.M | re.S)


def workload_example() -> str:
    blocks = [b for b in fenced("yaml") if "train_tokens:" in b]
    assert len(blocks) == 1, "the README has one workload example"
    return blocks[0]


def example_commands() -> list[list[str]]:
    section = README.split("\n## Examples\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"^```bash\n(.*?)^```", section, flags=re.M | re.S).group(1)
    return [shlex.split(line, comments=True)[1:] for line in block.splitlines() if line.startswith(".venv/bin/moelab")]


@pytest.fixture
def readme_files(tmp_path, monkeypatch):
    """The README's placeholder files, real: a config.json (Mixtral-8x7B's) and a hardware YAML."""
    (tmp_path / "path" / "to").mkdir(parents=True)
    shutil.copy(ROOT / "src/moelab/spec/presets/models/mixtral-8x7b.json", tmp_path / "path/to/config.json")
    (tmp_path / "my-gpu.yaml").write_text("peak_tflops: {bf16: 400}\nmemory_gb: 96\nmemory_bandwidth_gbps: 2000\n"
                                          "tdp_watts: 500\nusd_per_hour: 1.5\n")
    (tmp_path / "workload.yaml").write_text(workload_example())
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_workload_example_loads_as_written(readme_files):
    as_written = yaml.safe_load(workload_example())
    wl = load_workload(readme_files / "workload.yaml")
    # YAML 1.2 reads 2e9 as a number (YAML 1.1, PyYAML's default, reads it as the string "2e9")
    assert wl.train_tokens == 2e9
    (readme_files / "other.yaml").write_text(workload_example().replace("train_tokens: 2e9", "train_tokens: 3e9"))
    assert load_workload(readme_files / "other.yaml").train_tokens == 3e9  # read from the file, not the default
    for key, value in as_written.items():
        if key not in ("train_tokens", "task_mix"):
            got = getattr(wl, key)
            assert (list(got) if isinstance(got, tuple) else got) == value, key
    assert wl.task_mix == pytest.approx(as_written["task_mix"])  # already sums to 1, so normalising keeps it


def test_the_examples_block_has_the_commands_it_should():
    assert {argv[0] for argv in example_commands()} >= {"models", "hardware", "estimate", "compare"}
    assert any(p in argv for argv in example_commands() for p in PLACEHOLDERS)


@pytest.mark.parametrize("argv", [*example_commands(), ["decide", "--workload", "workload.yaml"]],
                         ids=lambda argv: " ".join(argv))
def test_every_example_runs(argv, readme_files, capsys):
    argv = argv if "--json" in argv else [*argv, "--json"]
    assert main(argv) == 0, capsys.readouterr().err
    out, err = capsys.readouterr()
    json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert "Traceback" not in err
