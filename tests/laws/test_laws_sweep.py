"""`moelab sweep --quick` and `moelab fit-laws` end to end on a tiny corpus, resuming (a finished run skipped, a
killed one resumed bit for bit), and bad input: one line, exit 2."""

import json
import math
import os
import subprocess
import sys

import pytest

from moelab.cli import main
from moelab.laws.grid import non_embedding_active

BASE = ["--quick", "--vocab-size", "300", "--no-progress"]


def _sweep(corpus, out, *extra) -> int:
    return main(["sweep", "--out", str(out), "--data", str(corpus), *BASE, *extra])


@pytest.fixture(scope="module")
def swept(tmp_path_factory, corpus_dir, laws_home):
    """One quick sweep shared by the module: 4 sizes of each kind and an expert axis (4 and 8 experts at 20k)."""
    os.environ["MOELAB_HOME"], os.environ["MOELAB_CACHE"] = str(laws_home / "home"), str(laws_home / "cache")
    out = tmp_path_factory.mktemp("sweep")
    assert _sweep(corpus_dir, out, "--sizes", "10k,20k,40k,80k", "--experts", "4,8", "--experts-at", "20k") == 0
    return out


def test_quick_sweep_and_fit_end_to_end(swept, capsys):
    sweep = json.loads((swept / "sweep.json").read_text())
    rows = sweep["rows"]
    assert [r["name"] for r in rows] == ["dense-10k", "dense-20k", "dense-40k", "dense-80k", "moe-10k-e8",
                                         "moe-20k-e8", "moe-40k-e8", "moe-80k-e8", "moe-20k-e4"]
    assert sweep["complete"] and {r["status"] for r in rows} == {"trained"}
    budget = sweep["config"]["steps"] * sweep["config"]["batch_size"] * sweep["config"]["seq_len"]
    assert sweep["token_budget"] == budget and {r["tokens"] for r in rows} == {budget}  # one budget
    for r in rows:
        assert r["compute"] == 6.0 * r["params_active"] * budget
        run = swept / r["run"]
        meta = json.loads((run / "final" / "meta.json").read_text())
        assert meta["config"]["seed"] == 0 and meta["summary"]["val"]["mean"] == r["final_val"]
        assert meta["config"]["lr"] == r["lr"] == pytest.approx(0.003239 - 0.0001395 * math.log(r["params_active"]))
        assert {k: v for k, v in meta["config"].items() if k != "lr"} == {
            k: v for k, v in sweep["config"].items() if k != "lr"}  # everything else is the sweep's one config
        assert 3.0 < r["final_val"] < 7.0
    from moelab.laws.grid import grid_spec

    assert rows[1]["params_active"] == non_embedding_active(grid_spec("dense", 20_000, vocab=300))
    capsys.readouterr()
    assert main(["fit-laws", str(swept), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["fits"]) == {"dense", "moe", "moe_experts"}
    for kind in ("dense", "moe"):
        f = result["fits"][kind]
        assert f["points"] == 3 and f["holdout"]["name"] == f"{kind}-80k" + ("-e8" if kind == "moe" else "")
        h = f["holdout"]
        assert h["rel_error"] == pytest.approx((h["predicted"] - h["measured"]) / h["measured"])
        assert h["measured"] == rows[3 if kind == "dense" else 7]["final_val"]
    assert result["fits"]["moe_experts"]["points"] == 4  # 5 MoE points, the largest C*E (80k x 8) held out
    assert main(["fit-laws", str(swept)]) == 0
    assert "alpha" in capsys.readouterr().out


def test_rerun_skips_finished_runs(swept, corpus_dir, capsys):
    before = {str(p): p.stat().st_mtime_ns for p in (swept / "runs").glob("*/final/model.safetensors")}
    assert _sweep(corpus_dir, swept, "--sizes", "10k,20k,40k,80k", "--experts", "4,8", "--experts-at", "20k",
                  "--json") == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert {r["status"] for r in rows} == {"skipped (finished)"}
    after = {str(p): p.stat().st_mtime_ns for p in (swept / "runs").glob("*/final/model.safetensors")}
    assert after == before and len(before) == 9


@pytest.mark.slow  # 27 s in CI; the training loop's kill-and-resume tests (tests/train/test_faults.py) run by default
def test_killed_sweep_resumes_bit_for_bit(swept, corpus_dir, tmp_path, capsys):
    """A sweep killed (SIGKILL) in its second run: the rerun skips the first, resumes the second from its last
    checkpoint and trains the third; the weights equal the uninterrupted sweep's."""
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "moelab", "sweep", "--out", str(out), "--data", str(corpus_dir), *BASE,
           "--sizes", "10k,20k,40k", "--kinds", "dense"]
    steps = json.loads((swept / "sweep.json").read_text())["config"]["steps"]
    env = {**os.environ, "MOELAB_FAULT": f"metrics-append:{steps + steps - 2}"}  # run 2, two steps before its end
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr[-2000:]
    assert (out / "runs" / "dense-10k" / "final").is_dir() and not (out / "runs" / "dense-20k" / "final").exists()
    assert list((out / "runs" / "dense-20k").glob("ckpt-*"))
    assert [r["name"] for r in json.loads((out / "sweep.json").read_text())["rows"]] == ["dense-10k"]
    capsys.readouterr()
    assert _sweep(corpus_dir, out, "--sizes", "10k,20k,40k", "--kinds", "dense", "--json") == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["status"] for r in rows] == ["skipped (finished)", "resumed", "trained"]
    reference = {r["name"]: r for r in json.loads((swept / "sweep.json").read_text())["rows"]}
    for r in rows:
        assert r["final_val"] == reference[r["name"]]["final_val"]
        ours = (out / r["run"] / "final" / "model.safetensors").read_bytes()
        assert ours == (swept / r["run"] / "final" / "model.safetensors").read_bytes()


def _fails(capsys, argv, match) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("moelab: error:") and err.count("\n") == 1 and match in err, err


def test_bad_sweep_input_is_one_line(tmp_path, corpus_dir, capsys):
    out = str(tmp_path / "s")
    _fails(capsys, ["sweep", "--out", out, "--sizes", "1M"], "at least 3 sizes")
    _fails(capsys, ["sweep", "--out", out, "--sizes", "1M,2M,many"], "not a parameter count")
    _fails(capsys, ["sweep", "--out", out, "--sizes", "1M,2M,2000k"], "twice")
    _fails(capsys, ["sweep", "--out", out, "--kinds", "dense", "--experts", "4,8"], "need --kinds with moe")
    _fails(capsys, ["sweep", "--out", out, "--experts-at", "1M"], "--experts-at needs --experts")
    _fails(capsys, ["sweep", "--out", out, "--experts", "1,8"], "--experts")
    _fails(capsys, ["sweep", "--out", out, "--steps", "0"], "--steps")
    _fails(capsys, ["sweep", "--out", out, "--kinds", "sparse"], "--kinds")
    assert not (tmp_path / "s" / "sweep.json").exists()  # refused before any work


def test_sweep_refuses_a_folder_of_another_budget(swept, corpus_dir, capsys):
    _fails(capsys, ["sweep", "--out", str(swept), "--data", str(corpus_dir), *BASE, "--sizes", "10k,20k,40k",
                    "--steps", "5"], "another budget")
    _fails(capsys, ["sweep", "--out", str(swept), "--data", str(corpus_dir), *BASE, "--sizes", "10k,20k,40k",
                    "--lr", "0.001"], "another budget")


def test_fixed_lr_is_every_runs(tmp_path, corpus_dir, capsys):
    capsys.readouterr()
    assert _sweep(corpus_dir, tmp_path, "--sizes", "10k,20k,40k", "--kinds", "dense", "--steps", "2", "--lr",
                  "0.002", "--json") == 0
    sweep = json.loads(capsys.readouterr().out)
    assert sweep["lr_rule"] is None and {r["lr"] for r in sweep["rows"]} == {0.002}
    _fails(capsys, ["sweep", "--out", str(tmp_path / "x"), "--lr", "-1"], "--lr")


def _sweep_json(tmp_path, content) -> str:
    folder = tmp_path / "hostile"
    folder.mkdir(exist_ok=True)
    (folder / "sweep.json").write_text(content if isinstance(content, str) else json.dumps(content))
    return str(folder)


def test_bad_fit_input_is_one_line(swept, tmp_path, capsys):
    _fails(capsys, ["fit-laws", str(tmp_path / "missing")], "not a folder")
    _fails(capsys, ["fit-laws", str(tmp_path)], "no sweep.json")
    good = json.loads((swept / "sweep.json").read_text())
    row = good["rows"][0]
    cases = [
        ("{not json", "sweep.json"), ('{"rows": [], "rows": []}', "duplicate key"), ("[1, 2]", "not a sweep"),
        ({"rows": "many"}, "not a sweep"), ({"rows": [1]}, "not an object"), ({"rows": []}, "no scored run"),
        ('{"rows": [{"kind": "dense", "compute": NaN}]}', "sweep.json"),
        ({"rows": [dict(row, kind="sparse")]}, "kind must be dense or moe"),
        ({"rows": [dict(row, compute=-1.0)]}, "compute must be a positive number"),
        ({"rows": [dict(row, compute="1e12")]}, "compute must be a positive number"),
        ({"rows": [dict(row, size=1.5)]}, "size must be a positive integer"),
        ({"rows": [dict(row, final_val="low")]}, "final_val must be a positive number up to 100 nats or null"),
        ({"rows": [dict(row, experts=True, kind="moe")]}, "experts must be a positive integer"),
        ({"rows": [dict(row, axis="diagonal")]}, "axis must be size or experts"),
        ({"rows": [dict(row, name=None)]}, "name must be text"),
        ({**good, "token_budget": 0}, "token_budget"),
        ("[" * 100_000 + "]" * 100_000, "sweep.json"),
        ({"rows": good["rows"][:2]}, "dense has 2 scored run(s)"),
        # out of any run's range: the fit's exp/powers would overflow (the review's OverflowError traceback)
        ({"rows": [dict(row, final_val=1e308, compute=1e308)]}, "compute must be between 1 and 1e+40"),
        ({"rows": [dict(row, final_val=1e308)]}, "final_val must be a positive number up to 100"),
        ({"rows": [dict(row, final_val=100.5)]}, "final_val must be a positive number up to 100"),
        ({"rows": [dict(row, compute=0.5)]}, "compute must be between 1"),
        ({"rows": [dict(row, compute=10**400)]}, "an integer of 401 digits"),  # no float holds it: the reader refuses
        ({"rows": [dict(row, kind="moe", experts=257)]}, "experts must be at most 256"),
    ]
    for content, match in cases:
        _fails(capsys, ["fit-laws", _sweep_json(tmp_path, content)], match)
    (tmp_path / "hostile" / "sweep.json").unlink()
    (tmp_path / "hostile" / "sweep.json").symlink_to("/dev/zero")
    _fails(capsys, ["fit-laws", str(tmp_path / "hostile")], "sweep.json")


@pytest.mark.parametrize("meta", ['{"spec": [1], "config": {}, "summary": {}}', '{"spec": {}, "config": "x"}', "[1]",
                                  "{broken", '{"a": 1, "a": 2}'])
def test_a_hostile_run_folder_is_one_line(tmp_path, corpus_dir, capsys, meta):
    final = tmp_path / "runs" / "dense-10k" / "final"
    final.mkdir(parents=True)
    (final / "meta.json").write_text(meta)
    _fails(capsys, ["sweep", "--out", str(tmp_path), "--data", str(corpus_dir), *BASE, "--sizes", "10k,20k,40k",
                    "--kinds", "dense"], "meta.json")


def test_a_finished_run_of_another_model_is_refused(swept, tmp_path, corpus_dir, capsys):
    import shutil

    shutil.copytree(swept / "runs" / "dense-20k", tmp_path / "runs" / "dense-10k")  # another spec in its folder
    _fails(capsys, ["sweep", "--out", str(tmp_path), "--data", str(corpus_dir), *BASE, "--sizes", "10k,20k,40k",
                    "--kinds", "dense"], "another model or budget")


def _flat_rows(losses):
    return [{"name": f"dense-{s}", "kind": "dense", "axis": "size", "size": s, "params_active": s,
             "compute": 6.0 * s * 1000, "experts": 0, "tokens": 1000, "final_val": v}
            for s, v in zip((10_000, 20_000, 40_000, 80_000, 160_000), losses, strict=True)]


def test_fit_laws_says_when_there_is_no_power_law(tmp_path, capsys):
    """A flat sweep (every loss 3.0) and a rising one: A = 0, shown as such with the bound, never "-0"; the open
    interval is called uninformative; the seeds are held against the pure power law."""
    for losses in ([3.0] * 5, [3.0, 3.1, 3.2, 3.3, 3.4]):
        folder = _sweep_json(tmp_path, {"rows": _flat_rows(losses), "token_budget": 1000})
        capsys.readouterr()
        assert main(["fit-laws", folder]) == 0
        out = " ".join(capsys.readouterr().out.split())  # rich wraps cells: compare on single spaces
        assert "no power law (A = 0)" in out and "A=0" in out and "uninformative" in out
        assert "-0 " not in out and "-0]" not in out and "-0," not in out
        assert "compare them with the pure power-law fits" in out
        assert main(["fit-laws", folder, "--json"]) == 0
        dense = json.loads(capsys.readouterr().out)["fits"]["dense"]
        assert "A=0" in dense["at_bound"] and dense["A"] == 0.0
        assert any("no power law" in why for why in dense["uninformative"])
        assert math.copysign(1.0, dense["pure"]["alpha"]) == 1.0 or dense["pure"]["alpha"] < 0
