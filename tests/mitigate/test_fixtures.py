"""The shared runs the mitigation tests start from, read back through moelab.mitigate.runs."""

import pytest

from moelab.errors import MoelabError
from moelab.mitigate import quality
from moelab.mitigate.runs import check_out, read_run


def test_moe_run_reads_back_with_its_corpus(moe_run):
    source = read_run(moe_run)
    assert source.spec.is_moe and source.folder.name == "final" and source.lineage == []
    model = source.load_model()
    corpus = quality.run_corpus(source)
    losses = quality.domain_loss(model, corpus, quality.seq_len(source), 256)
    assert set(losses) == {"code", "numbers", "prose", "mean"}
    assert quality.rare_domains(corpus) == ["code"]
    slices = quality.calibration_streams(corpus, 100)
    assert all(0 < len(t) <= 100 for t in slices.values())


def test_check_out_refuses_a_run_and_writes_nothing(moe_run, tmp_path):
    with pytest.raises(MoelabError, match="not empty"):
        check_out(moe_run)
    with pytest.raises(MoelabError, match="no such run"):
        read_run(tmp_path / "missing")
    target = tmp_path / "new"
    assert check_out(target) == target and not target.exists()
