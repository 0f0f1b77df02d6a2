"""FLOPs per answer against torch's own count of the real model's greedy generation (FlopCounterMode), for the
dense model and the MoE (top-2 of 8: only the routed experts' matmuls run)."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from moelab.cost.flops import attention_flops, causal_attention_flops, decode_flops, prefill_flops
from moelab.cost.params import count_params
from moelab.errors import MoelabError
from moelab.hybrid.cost import answer_flops
from moelab.nn.model import build_model
from moelab.train.presets import load_train_spec


@pytest.mark.parametrize("preset", ["tiny-dense", "tiny-moe"])
def test_answer_flops_against_torch_count(preset):
    torch.manual_seed(0)
    spec = load_train_spec(preset)
    model = build_model(spec).eval()
    prompt, generated = 9, 4
    ids = torch.randint(1, spec.vocab_size, (1, prompt))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:  # the loop of moelab.eval.generate
        cache = model.new_cache(prompt + generated + 1)
        logits = model(ids, cache)
        for _ in range(generated):  # each generated token fed once (the "prompt + generated tokens" count)
            logits = model(logits[:, -1:].argmax(-1), cache)
    counted = counter.get_total_flops()  # matmuls only (aten.mm): attention's SDPA is not counted on the CPU
    assert set(map(str, counter.get_flop_counts()["Global"])) == {"aten.mm"}
    ours = answer_flops(spec, prompt, generated)
    attention = causal_attention_flops(spec, prompt) + sum(attention_flops(spec, prompt + i)
                                                           for i in range(1, generated + 1))
    # moelab's forward computes logits at every prompt position; the engine (and a server) needs the last only
    wasted_head = (prompt - 1) * 2 * spec.d_model * spec.vocab_size
    assert counted == pytest.approx(ours - attention + wasted_head, rel=1e-12)


def test_answer_flops_parts():
    spec = load_train_spec("tiny-moe")
    p = count_params(spec)
    assert answer_flops(spec, 7, 0) == prefill_flops(spec, p, 1, 7)
    assert answer_flops(spec, 7, 3) - answer_flops(spec, 7, 2) == pytest.approx(decode_flops(spec, p, 1, 10))
    for bad in ((0, 1), (3, -1), (2.5, 1), (True, 1)):
        with pytest.raises(MoelabError):
            answer_flops(spec, *bad)
