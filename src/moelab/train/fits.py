"""Before any training work: the run must fit this machine's memory and the model's positions (one line if not).

The estimate of one CPU training process, in bytes, all fp32 (bf16 autocast only lowers it):
- 16 per parameter: weights, gradients and AdamW's two moments (4 bytes each);
- per token of a micro-batch (batch_size x seq_len): twice the engine's bf16 per-layer activation figure
  (moelab.cost.memory.layer_activation_bytes_per_token, summed over layers; fp32 doubles it), plus 12 per
  vocabulary entry for the logits (fp32 logits, the loss's float copy, their gradient);
- attention scores and probabilities, 8 bytes per (sequence, head, query, key) in every layer: SDPA's math
  path on CPU materialises them for backward (a fused path needs less: the estimate errs high);
- 16 per token of a whole step (batch_size x grad_accum x seq_len): the int64 inputs and targets.
It is compared with bench's share of this machine's available memory (moelab.bench.calibrate).
"""

from __future__ import annotations

from moelab.cost.memory import layer_activation_bytes_per_token
from moelab.cost.params import count_params
from moelab.errors import MoelabError
from moelab.spec.model import ModelSpec, every_expert
from moelab.train.config import TrainConfig

STATE_BYTES_PER_PARAM = 16.0  # fp32 weights, gradients, Adam m and v
FP32_OVER_BF16 = 2.0
LOGIT_BYTES = 12.0  # fp32 logits, float copy for the loss, gradient
SCORE_BYTES = 8.0  # fp32 attention scores and probabilities
BATCH_BYTES_PER_TOKEN = 16.0  # int64 inputs and targets


def training_bytes(spec: ModelSpec, cfg: TrainConfig) -> float:
    """The estimate above, in bytes, of training `spec` under `cfg` in one CPU process."""
    if cfg.ds_moe and spec.is_moe:  # DS-MoE runs every expert on every token
        spec = every_expert(spec)
    micro_tokens = cfg.batch_size * cfg.seq_len
    per_token = FP32_OVER_BF16 * sum(n * layer_activation_bytes_per_token(spec, layer)
                                     for layer, n in spec.layer_groups) + LOGIT_BYTES * spec.vocab_size
    scores = SCORE_BYTES * cfg.batch_size * spec.attention.n_heads * cfg.seq_len * cfg.seq_len * spec.n_layers
    return (STATE_BYTES_PER_PARAM * count_params(spec).total + micro_tokens * per_token + scores
            + BATCH_BYTES_PER_TOKEN * cfg.tokens_per_step)


def check_trainable(spec: ModelSpec, cfg: TrainConfig, available: tuple[float, str] | None = None) -> None:
    """MoelabError (one line) if --seq-len exceeds the model's positions, or if the estimate exceeds bench's
    share of this machine's available memory (`available`: (bytes, what), default measured now)."""
    if spec.max_position is not None and cfg.seq_len > spec.max_position:
        raise MoelabError(f"--seq-len {cfg.seq_len} exceeds {spec.name}'s {spec.max_position} positions")
    from moelab.bench.calibrate import available_memory_bytes
    from moelab.bench.models import MAX_RUN_SHARE

    free, where = available if available is not None else available_memory_bytes("cpu")
    need = training_bytes(spec, cfg)
    if need > MAX_RUN_SHARE * free:
        raise MoelabError(f"training {spec.name} at --batch-size {cfg.batch_size} x --seq-len {cfg.seq_len} needs "
                          f"about {need / 1e9:.3g} GB (weights, gradients, Adam states, activations), more than "
                          f"this machine's {free / 1e9:.1f} GB of {where} available holds; use a smaller "
                          "--batch-size or --seq-len (--grad-accum keeps the tokens per step)")
