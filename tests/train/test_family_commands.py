"""For every family moelab.nn builds, a real public config of it benches and trains end to end.

The issue's commands, `moelab bench DIR --shrink-to 2M --batches 1 --json` and `moelab train --model
DIR/config.json --steps 5`, with what keeps them seconds long here: a fixed hardware file instead of a
calibration, a short prompt, and --shrink-to 2M for train too (the real models need tens of GB to train).
"""

import json
import sys
from pathlib import Path

import pytest

from moelab.cli import main
from moelab.spec.families import REGISTRY

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
from bench_hardware import FIXED_HW  # noqa: E402

CONFIGS = Path(__file__).parents[1] / "spec" / "configs"
SOURCES = json.loads((CONFIGS / "SOURCES.json").read_text())


def _one_config_per_building_family() -> list[str]:
    chosen: dict[str, str] = {}
    for row in SOURCES:
        family = REGISTRY.get(row["model_type"])
        if family is not None and family.builds:
            chosen.setdefault(family.name, row["name"])
    # the Llama 3.x configs carry rope_scaling llama3: one of them, beside the plain family pick
    chosen["llama3-rope"] = "llama3_1_8b"
    return sorted(set(chosen.values()))


@pytest.fixture()
def model_dir(tmp_path, request):
    folder = tmp_path / request.param
    folder.mkdir()
    (folder / "config.json").write_text((CONFIGS / f"{request.param}.json").read_text())
    return folder


@pytest.mark.parametrize("model_dir", _one_config_per_building_family(), indirect=True)
def test_a_real_config_benches_and_trains(model_dir, corpus_dir, tmp_path, capsys):
    hw = tmp_path / "hw.json"
    hw.write_text(json.dumps(FIXED_HW))
    assert main(["bench", str(model_dir), "--shrink-to", "2M", "--batches", "1", "--json", "-H", str(hw),
                 "--prompt", "16", "--gen", "4", "--repeats", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rows"] and all(r["measured_s"] > 0 for r in result["rows"])
    out = tmp_path / "run"
    assert main(["train", "--model", str(model_dir / "config.json"), "--steps", "5", "--shrink-to", "2M",
                 "--out", str(out), "--data", str(corpus_dir), "--batch-size", "2", "--seq-len", "32",
                 "--eval-every", "5", "--ckpt-every", "5", "--no-progress", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["tokens"] == 5 * 2 * 32 and (out / "final").is_dir()
