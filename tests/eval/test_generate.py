"""greedy_answer: the tokens TransformerLM.generate picks, the log-probabilities a float64 full forward gives,
the stop rules, and the confidence it reports."""

import copy
import math

import pytest
import torch

from moelab.errors import MoelabError
from moelab.eval.generate import Generation, greedy_answer

PROMPTS = ["Q: 3 + 4 = ? A:", "Q: Where was Alice Abbott born? A:", "Q: 12 - 47 = ? A:"]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_tokens_equal_generate(model, tokenizer, prompt):
    g = greedy_answer(model, tokenizer, prompt, max_new_tokens=10, stop="")
    ids = tokenizer.encode(prompt, add_special_tokens=False).ids
    ref = model.generate(torch.tensor([ids]), 10)[0, len(ids):].tolist()
    if 0 in ref:  # <|endoftext|> ends greedy_answer before it
        ref = ref[:ref.index(0)]
    assert g.token_ids == ref and len(ref) > 0
    assert g.text == tokenizer.decode(ref).strip()


@pytest.mark.parametrize("prompt", PROMPTS)
def test_logprobs_equal_a_float64_full_forward(model, tokenizer, prompt):
    g = greedy_answer(model, tokenizer, prompt, max_new_tokens=8, stop="")
    ids = tokenizer.encode(prompt, add_special_tokens=False).ids
    ref_model = copy.deepcopy(model).double()
    with torch.no_grad():
        logits = ref_model(torch.tensor([ids + g.token_ids]))[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    expected = [float(logp[len(ids) - 1 + i, t]) for i, t in enumerate(g.token_ids)]
    assert g.logprobs == pytest.approx(expected, abs=2e-4)
    # each is the greedy (highest) log-probability at its position, and the distribution is not flat
    for i, t in enumerate(g.token_ids):
        assert int(logp[len(ids) - 1 + i].argmax()) == t
    assert max(g.logprobs) > math.log(2 / 512)
    assert g.confidence == pytest.approx(math.exp(sum(g.logprobs) / len(g.logprobs)))
    assert g.seconds > 0


class _ScriptedModel(torch.nn.Module):
    """A "model" whose greedy continuation is a fixed token script (logits one-hot), with new_cache/forward."""

    def __init__(self, script, vocab):
        super().__init__()
        self.script, self.vocab, self.calls = script, vocab, 0
        self.w = torch.nn.Parameter(torch.zeros(1))

    def new_cache(self, capacity=0):
        return {"capacity": capacity}

    def forward(self, ids, cache=None):
        T = ids.shape[1]
        out = torch.full((1, T, self.vocab), -5.0)
        token = self.script[min(self.calls, len(self.script) - 1)]
        out[0, -1, token] = 5.0
        self.calls += 1
        return out


def _ids(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False).ids


def test_stops_at_newline_and_drops_the_bare_stop_token(tokenizer):
    answer, newline = _ids(tokenizer, " 7"), _ids(tokenizer, "\n")
    assert len(newline) == 1
    script = [*answer, newline[0], *_ids(tokenizer, "Q")]
    g = greedy_answer(_ScriptedModel(script, tokenizer.get_vocab_size()), tokenizer, "Q: 3 + 4 = ? A:")
    assert g.text == "7" and g.token_ids == answer and len(g.logprobs) == len(answer)
    assert g.confidence == pytest.approx(math.exp(5 - 5 - math.log(1 + (tokenizer.get_vocab_size() - 1) *
                                                                    math.exp(-10))))


def test_stops_at_endoftext_and_max_tokens(tokenizer):
    answer = _ids(tokenizer, " Lyon")
    g = greedy_answer(_ScriptedModel([*answer, 0], tokenizer.get_vocab_size()), tokenizer, "Q: x? A:")
    assert g.text == "Lyon" and g.token_ids == answer
    g = greedy_answer(_ScriptedModel([answer[0]], tokenizer.get_vocab_size()), tokenizer, "Q: x? A:",
                      max_new_tokens=3)
    assert g.token_ids == [answer[0]] * 3
    g = greedy_answer(_ScriptedModel([0], tokenizer.get_vocab_size()), tokenizer, "Q: x? A:")
    assert g.text == "" and g.token_ids == [] and g.confidence == 0.0


def test_bad_arguments_are_one_line(model, tokenizer):
    with pytest.raises(MoelabError, match="max_new_tokens"):
        greedy_answer(model, tokenizer, "Q:", max_new_tokens=0)
    with pytest.raises(MoelabError, match="no tokens"):
        greedy_answer(model, tokenizer, "")
    with pytest.raises(MoelabError, match="positions"):
        greedy_answer(model, tokenizer, "Q:", max_new_tokens=1000)


def test_confidence_bounds():
    assert Generation("").confidence == 0.0
    assert Generation("a", [1], [0.0]).confidence == 1.0
    assert Generation("a", [1, 2], [-1.0, -3.0]).confidence == pytest.approx(math.exp(-2.0))
