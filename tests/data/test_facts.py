"""The facts domain: deterministic people and documents; every held-out pair's biography in the training split
of the study corpus (quick and full caps) and its Q/A line nowhere in it; the default corpus unchanged."""

import re
import sys

import pytest

from moelab.data import corpus_hash, default_corpus, facts, split_documents
from moelab.data.corpus import CORPORA, DOMAINS, check_corpus
from moelab.errors import MoelabError
from moelab.eval.probes import knowledge_items

QUICK_CAP, FULL_CAP = 200_000, 1_500_000


@pytest.fixture(scope="module")
def study_full():
    return default_corpus(FULL_CAP, "study")


def _facts(docs):
    return [d for d in docs if d.domain == "facts"]


def test_people_deterministic_distinct_and_valued():
    a, b = facts.people(), facts.people()
    assert a == b and len(a) == facts.N_PEOPLE
    assert len({p.name for p in a}) == len(a)
    for p in a:
        assert [k for k, _ in p.attributes] == list(facts.ATTRIBUTES)
        for k, v in p.attributes:
            assert v in facts.VALUES[k]
    assert facts.people(50, seed=1) != facts.people(50)


def test_documents_deterministic_and_each_round_tells_everyone():
    first = [d for _, d in zip(range(30), facts.facts_documents(), strict=False)]
    again = [d for _, d in zip(range(30), facts.facts_documents(), strict=False)]
    assert first == again
    per_round = -(-facts.N_PEOPLE // facts.BIOS_PER_DOC)
    round_text = "".join(d.text for d in first[:per_round])
    for p in facts.people():
        # each biography sentence names the person in full: five sentences per round
        assert round_text.count(p.name) >= len(facts.ATTRIBUTES)


def _bio_part(text):
    return text.split("\n\nQ: ", 1)[0] if "\n\nQ: " in text else text


@pytest.mark.parametrize("cap", [QUICK_CAP, FULL_CAP])
def test_held_out_pairs_have_training_biographies_and_no_qa(cap, study_full):
    docs = study_full if cap == FULL_CAP else default_corpus(cap, "study")
    train = [d for d in split_documents(docs)["train"] if d.domain == "facts"]
    all_text = "".join(d.text for d in docs)  # every domain, every split
    bios = "".join(_bio_part(d.text) for d in train)
    items = knowledge_items(10_000)
    assert len(items) == len(facts.held_out_pairs()) > 0.4 * facts.N_PEOPLE * len(facts.ATTRIBUTES)
    for item in items:
        person = facts.people()[int(item.id.rsplit("/", 1)[1])]
        assert item.prompt not in all_text, item  # the Q/A line of a held-out pair is nowhere
        # the person's biography states this attribute's value in the training split, at least twice
        sentences = [s for s in re.split(r"(?<=\.) ", bios) if person.name in s and item.answer in s]
        assert len(sentences) >= 2, (item, cap)
    # and trained pairs do get their Q/A lines in training
    trained = [(p, a) for p in facts.people() for a in facts.ATTRIBUTES if not facts.held_out(p.name, a)]
    train_text = "".join(d.text for d in train)
    assert trained and all(facts.qa_line(p, a) + "\n" in train_text for p, a in trained)


def test_held_out_fraction_is_near_its_setting():
    n = len(facts.people()) * len(facts.ATTRIBUTES)
    share = len(facts.held_out_pairs()) / n
    assert abs(share - facts.HELD_OUT_FRACTION) < 0.1


def test_study_corpus_is_default_plus_facts(study_full):
    assert CORPORA["default"] == DOMAINS and CORPORA["study"] == (*DOMAINS, "facts")
    domains = {d.domain for d in study_full}
    assert domains == {*DOMAINS, "facts"}
    share = sum(len(d.text) for d in _facts(study_full)) / sum(len(d.text) for d in study_full)
    assert 0.15 < share < 0.25  # a fifth of the study's stream: each biography read ~14 times in 300 steps


def test_check_corpus_refuses_unknown_names():
    assert check_corpus("study") == "study"
    for bad in ("Study", "", None, 3):
        with pytest.raises(MoelabError, match="--corpus must be one of default, study"):
            check_corpus(bad)
    with pytest.raises(MoelabError):
        default_corpus(1000, "facts")


# The default corpus is what `moelab train` read before the study corpus existed: its generated domains are
# pinned here (any Python); the whole corpus (stdlib sources and pydoc topics included) for the Python it was
# measured on. A change would silently invalidate every cached run and token tensor.
DEFAULT_GENERATED_HASH = {200_000: "f4477b6065590ddd8ca05eeaf53dc81c5cfddaf84ede2366df5e424e46138ecb",
                          1_500_000: "a43e7edfe9bdff40a91cd461076eb9c48c602d091eef7ea90b708ae882d1170e"}
DEFAULT_FULL_HASH = "2b9002426aad47884443fba296a6f64d660899fe435e3cb00ef64ef8341f021a"
PINNED_PYTHON = "3.11.7 (main, May  9 2026, 07:35:25) [GCC 12.2.0]"


@pytest.mark.parametrize("cap", sorted(DEFAULT_GENERATED_HASH))
def test_default_corpus_generated_domains_pinned(cap):
    docs = default_corpus(cap)
    assert default_corpus(cap, "default") == docs
    assert corpus_hash([d for d in docs if d.domain in ("math", "json")]) == DEFAULT_GENERATED_HASH[cap]
    assert [d.domain for d in docs if d.domain == "facts"] == []


@pytest.mark.skipif(sys.version != PINNED_PYTHON, reason="the stdlib sources differ between Pythons")
def test_default_corpus_hash_pinned():
    assert corpus_hash(default_corpus()) == DEFAULT_FULL_HASH


def test_train_config_corpus_field(tmp_path, capsys):
    from moelab.cli import main
    from moelab.data import prepare
    from moelab.train.config import TrainConfig

    assert TrainConfig().corpus == "default" and TrainConfig(corpus="study").corpus == "study"
    assert TrainConfig.from_dict({"steps": 3}).corpus == "default"  # a run saved before named corpora
    with pytest.raises(MoelabError, match="--corpus must be one of"):
        TrainConfig(corpus="trivia")
    with pytest.raises(MoelabError, match="cannot be combined with --data"):
        TrainConfig(corpus="study", data=str(tmp_path))
    with pytest.raises(MoelabError, match="cannot be combined with --data"):
        prepare(str(tmp_path), corpus="study")
    for argv in (["--corpus", "trivia"], ["--corpus", "study", "--data", str(tmp_path)]):
        capsys.readouterr()
        assert main(["train", "--model", "tiny-dense", "--out", str(tmp_path / "run"), *argv]) == 2
        err = capsys.readouterr().err
        assert "--corpus" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
