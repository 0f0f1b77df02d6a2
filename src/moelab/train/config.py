"""The training configuration: one frozen, validated dataclass, saved beside every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from moelab.errors import MoelabError

BALANCING = ("none", "aux", "aux-free")


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
    data: str | None = None  # None: the default corpus built from this Python installation
    max_bytes_per_domain: int = 1_500_000

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "seq_len", "grad_accum", "eval_every", "eval_tokens", "ckpt_every",
                     "vocab_size", "max_bytes_per_domain"):
            if getattr(self, name) <= 0:
                raise MoelabError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.lr <= 0 or self.warmup < 0 or self.grad_clip <= 0 or self.keep_last < 1:
            raise MoelabError("--lr and --grad-clip must be positive, --warmup >= 0, --keep-last >= 1")
        if self.balancing not in BALANCING:
            raise MoelabError(f"--balancing must be one of {', '.join(BALANCING)}, got {self.balancing!r}")
        if self.capacity_factor is not None and self.capacity_factor <= 0:
            raise MoelabError("--capacity-factor must be positive")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.grad_accum * self.seq_len

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})
