"""The training configuration: one frozen, validated dataclass, saved beside every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from moelab import limits
from moelab.errors import MoelabError
from moelab.validation import show_value

BALANCING = ("none", "aux", "aux-free")
# Integer fields: (lowest, highest) accepted value. The highs keep every product (tokens per step, seeds
# mixed with steps) far inside int64 and torch's seed range.
_INTS = {
    "steps": (1, limits.MAX_STEPS), "batch_size": (1, limits.MAX_TRAIN_BATCH), "seq_len": (1, limits.MAX_SEQ_LEN),
    "grad_accum": (1, 65_536), "warmup": (0, limits.MAX_STEPS), "seed": (0, limits.MAX_SEED),
    "eval_every": (1, limits.MAX_STEPS), "eval_tokens": (1, 2**40), "ckpt_every": (1, limits.MAX_STEPS),
    "keep_last": (1, 1_000_000), "collapse_patience": (1, limits.MAX_STEPS), "vocab_size": (2, limits.MAX_VOCAB),
    "max_bytes_per_domain": (1, 2**50), "data_offset": (0, limits.MAX_STEPS),
}
# Float fields: (lowest, highest, whether the lowest itself is allowed); every one must be finite.
_FLOATS = {
    "lr": (0.0, 1e3, False), "min_lr_ratio": (0.0, 1.0, True), "weight_decay": (0.0, 1e3, True),
    "grad_clip": (0.0, 1e9, False), "aux_coef": (0.0, 1e6, True), "z_coef": (0.0, 1e6, True),
    "bias_rate": (0.0, 1e3, True), "capacity_factor": (0.0, 1e6, False), "jitter": (0.0, 1.0, True),
    "collapse_threshold": (0.0, 1.0, True),
}


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300
    batch_size: int = 16
    seq_len: int = 128
    grad_accum: int = 1
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup: int = 30
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    bf16: bool = False  # autocast the forward to bfloat16
    seed: int = 0
    balancing: str = "aux"  # "none", "aux" (Switch aux loss), "aux-free" (selection-bias updates)
    aux_coef: float = 0.01
    z_coef: float = 0.001
    bias_rate: float = 0.001
    capacity_factor: float | None = None
    jitter: float = 0.0
    ds_moe: bool = False  # dense training (all experts, router-weighted), sparse top-k inference
    eval_every: int = 50
    eval_tokens: int = 16384  # per domain
    ckpt_every: int = 50
    keep_last: int = 2
    collapse_threshold: float = 0.1  # an expert under this fraction of its fair share ...
    collapse_patience: int = 50  # ... for this many consecutive steps is reported as collapsed
    vocab_size: int = 2048  # tokenizer vocabulary (at most the model's)
    data: str | None = None  # None: the built-in corpus `corpus` (built from this Python installation)
    corpus: str = "default"  # a built-in corpus (moelab.data.corpus.CORPORA): "default", or "study" (+ facts)
    max_bytes_per_domain: int = 1_500_000
    # step k trains on the batch of step k + data_offset (moelab.data.train_batch): a run continued from another
    # (train --init-from) sees the batches after its source's instead of the same ones again
    data_offset: int = 0

    def __post_init__(self) -> None:
        for name, (low, high) in _INTS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise MoelabError(f"{_flag(name)} must be an integer, got {value!r}")
            if not low <= value <= high:
                raise MoelabError(f"{_flag(name)} must be between {low} and {high:,}, got "
                                  f"{show_value(value)}")
        for name, (low, high, low_ok) in _FLOATS.items():
            value = getattr(self, name)
            if value is None and name == "capacity_factor":
                continue
            problem = limits.number_problem(value, low, high, low_open=not low_ok)
            if problem:
                raise MoelabError(f"{_flag(name)} {problem}")
        for name in ("bf16", "ds_moe"):
            if not isinstance(getattr(self, name), bool):
                raise MoelabError(f"{_flag(name)} must be true or false, got {getattr(self, name)!r}")
        if self.balancing not in BALANCING:
            raise MoelabError(f"--balancing must be one of {', '.join(BALANCING)}, got {self.balancing!r}")
        if self.data is not None and not isinstance(self.data, str):
            raise MoelabError(f"--data must be a path, got {self.data!r}")
        from moelab.data.corpus import check_corpus

        check_corpus(self.corpus)
        if self.data is not None and self.corpus != "default":
            raise MoelabError(f"--corpus {self.corpus} names a built-in corpus; it cannot be combined with --data")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.grad_accum * self.seq_len

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})
