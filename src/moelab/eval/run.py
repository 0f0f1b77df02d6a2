"""Probe one trained run: its model and tokenizer, every probe item answered greedily, scored, with notes on
what the run's corpus could have taught it (the knowledge set needs the study corpus's facts domain, the easy
reasoning levels its math ladder; a small byte cap can leave some probed people's biographies out)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from functools import lru_cache

from moelab.errors import MoelabError
from moelab.eval.generate import MAX_NEW_TOKENS, answer_all
from moelab.eval.probes import ProbeItem
from moelab.eval.score import exact_match, score


def run_corpus(source) -> tuple[str, int]:
    """(built-in corpus name or "custom" for --data, byte cap per domain) of a run's training config."""
    config = source.config
    if config.get("data") is not None:
        return "custom", int(config.get("max_bytes_per_domain", 1_500_000))
    return str(config.get("corpus") or "default"), int(config.get("max_bytes_per_domain", 1_500_000))


def facts_coverage(items: Sequence[ProbeItem], max_bytes_per_domain: int) -> float:
    """The share of knowledge items whose person's biography is in the training split of the study corpus at
    this byte cap (1.0 at the quick and full study caps; see tests/data/test_facts.py)."""
    from moelab.data import facts, split_documents
    from moelab.data.document import cap_bytes

    knowledge = [item for item in items if item.set == "knowledge"]
    if not knowledge:
        return 1.0
    docs = list(cap_bytes(facts.facts_documents(), max_bytes_per_domain))  # the split is decided per domain
    people = facts.people()
    said: dict[str, set[str]] = {p.name: set() for p in people}  # name -> training biography sentences naming them
    for doc in split_documents(docs)["train"]:
        for sentence in re.split(r"(?<=\.)\s+", doc.text):
            if not sentence.startswith("Q: "):
                for name in said:
                    if name in sentence:
                        said[name].add(sentence)
    covered = [item for item in knowledge
               if any(item.answer in s for s in said[people[int(item.id.rsplit("/", 1)[1])].name])]
    return len(covered) / len(knowledge)


@lru_cache(maxsize=4)
def _study_train_hash(cap: int) -> str:
    from moelab.data import split_documents
    from moelab.data.corpus import default_corpus
    from moelab.data.document import corpus_hash

    return corpus_hash(split_documents(default_corpus(cap, "study"))["train"])


def _study_tokenizer(cap: int, vocab_size: int) -> str | None:
    """The cached tokenizer (JSON) the study corpus of this moelab at `cap` trains, None when none is cached."""
    from moelab.data.cache import default_cache_dir
    from moelab.data.tokenizer import tokenizer_path

    path = tokenizer_path(default_cache_dir(), _study_train_hash(cap), vocab_size)
    return path.read_text() if path.is_file() else None


def stale_study_corpus(source) -> bool:
    """Whether the run read another version of the study corpus than this moelab builds (its tokenizer differs
    from the one cached for today's corpus). False when that cannot be told (nothing cached here)."""
    _, cap = run_corpus(source)
    today = _study_tokenizer(cap, int(source.config.get("vocab_size", 2048)))
    return today is not None and today != source.tokenizer_json()


def corpus_notes(source, items: Sequence[ProbeItem]) -> list[str]:
    """What the run's corpus holds of the probes, in words (empty when it is the study corpus at full cover)."""
    name, cap = run_corpus(source)
    if name == "study":
        if stale_study_corpus(source):
            return ["it was trained on another version of the study corpus (its tokenizer differs from today's): "
                    "the probed facts and questions may not be the ones it read; retrain it"]
        share = facts_coverage(items, cap)
        if share < 1.0:
            return [f"its corpus (study, {cap:,} bytes per domain) holds the biographies of {share:.0%} of the "
                    "probed people: the rest of the knowledge set cannot be known"]
        return []
    what = "a custom corpus (--data)" if name == "custom" else f"the {name} corpus"
    return [f"trained on {what}, which has no facts domain and no math ladder: its knowledge answers, and "
            "reasoning levels 1-2, are expected at the floor (train with --corpus study)"]


def load_probe_model(source):
    """(model in eval mode, tokenizers.Tokenizer) of a run; one line when its tokenizer cannot be read."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_str(source.tokenizer_json())
    except Exception as e:  # tokenizers raises its own exception type on a malformed file
        raise MoelabError(f"RUN {source.run_folder}: its tokenizer cannot be read ({e})") from None
    return source.load_model(), tokenizer


def probe_run(source, items: Sequence[ProbeItem], max_new_tokens: int = MAX_NEW_TOKENS,
              on_answer: Callable[[int], None] | None = None) -> dict:
    """{"run", "model", "kind", "params_total", "params_active", "corpus", "notes", "scores" (score()),
    "answers": [{"id", "answer", "generated", "correct", "confidence", "seconds"}], "seconds"} of one run."""
    import torch

    from moelab.cost.params import count_params

    began = time.perf_counter()
    model, tokenizer = load_probe_model(source)
    with torch.no_grad():
        generations = answer_all(model, tokenizer, [item.prompt for item in items], max_new_tokens, on_answer)
    counts = count_params(source.spec)
    answers = [{"id": item.id, "answer": item.answer, "generated": g.text, "correct": exact_match(g.text, item.answer),
                "confidence": g.confidence, "seconds": g.seconds} for item, g in zip(items, generations, strict=True)]
    return {"run": str(source.run_folder), "model": source.spec.name, "kind": "moe" if source.spec.is_moe else "dense",
            "params_total": counts.total, "params_active": counts.active, "corpus": run_corpus(source)[0],
            "notes": corpus_notes(source, items), "scores": score(items, generations), "answers": answers,
            "seconds": time.perf_counter() - began}
