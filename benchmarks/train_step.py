"""Training step (forward + backward + AdamW) of a moelab MoE LM against transformers' MixtralForCausalLM.

Both run the identical architecture with the identical weights (moelab's model is written with
`save_pretrained` and read back by transformers), on the same batches, in float32 on this CPU. Prints one JSON
object: tokens/s of each (transformers in each experts implementation) and the ratio to the best of them.

    python benchmarks/train_step.py [--layers 4 --d 256 --f 512 --experts 8 --top-k 2 --seq 256 --batch 8]
"""

from __future__ import annotations

import argparse
import json
import tempfile

import torch
import torch.nn.functional as F
from common import interleaved_medians

from moelab.nn import MoEOptions, build_model, save_pretrained
from moelab.nn.dispatch import BACKENDS
from moelab.nn.moe import default_backend
from moelab.spec.hf import spec_from_config


def step_fn(model, ids, logits_of):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        optimizer.zero_grad(set_to_none=True)
        logits = logits_of(model, ids)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("layers", 4), ("d", 256), ("f", 512), ("experts", 8), ("top-k", 2), ("seq", 256),
                          ("batch", 8), ("vocab", 2048), ("rounds", 7)):
        parser.add_argument(f"--{name}", type=int, default=default)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = dict(model_type="mixtral", hidden_size=args.d, intermediate_size=args.f, num_hidden_layers=args.layers,
                  num_attention_heads=8, num_key_value_heads=4, vocab_size=args.vocab,
                  num_local_experts=args.experts, num_experts_per_tok=args.top_k, max_position_embeddings=4096)
    spec = spec_from_config(config, "bench-moe")
    ours = build_model(spec).train()
    ids = torch.randint(0, args.vocab, (args.batch, args.seq))
    tokens = args.batch * args.seq
    result = {"config": config, "tokens_per_step": tokens, "dtype": "float32", "threads": torch.get_num_threads(),
              "moelab_default_backend": default_backend("cpu", torch.float32, backward=True)}
    steps = {}
    for backend in BACKENDS:
        model = build_model(spec, MoEOptions(backend=backend)).train()
        model.load_state_dict(ours.state_dict())
        steps[f"moelab_{backend}"] = step_fn(model, ids, lambda m, x: m(x))
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as folder:
        save_pretrained(ours, folder)
        for impl in ("eager", "grouped_mm"):  # batched_mm is orders slower on CPU (see moe_layer.py)
            theirs = AutoModelForCausalLM.from_pretrained(folder, experts_implementation=impl).train()
            steps[f"transformers_{impl}"] = step_fn(theirs, ids, lambda m, x: m(input_ids=x).logits)
    seconds = interleaved_medians(steps, rounds=args.rounds, round_time=0.0, warmup=1)
    for name, s in seconds.items():
        result[f"{name}_tokens_per_second"] = tokens / s
    result["moelab_tokens_per_second"] = result[f"moelab_{result['moelab_default_backend']}_tokens_per_second"]
    best = max(v for k, v in result.items() if k.startswith("transformers_"))
    result["transformers_best_tokens_per_second"] = best
    result["ratio_moelab_over_transformers_best"] = result["moelab_tokens_per_second"] / best
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
