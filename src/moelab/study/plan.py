"""How much a study trains and measures: the default and --quick.

The default took 37.5 minutes from scratch on this 2-core CPU with the test suite running beside it (training
the four models 18 of them); idle it is about 27 (training 6, serving 4, hybrid serving with two vLLM servers 4,
mitigations 5, scaling laws 4.5, the rest 3.5). Of the stages issue 16 added, --quick spends under 40 s: the
task-type probes under 10, hybrid serving (moelab's engine) about 5, the scaling-law sweep about 15, the claims
under 1."""

from __future__ import annotations

from dataclasses import asdict, dataclass

# The dense model and its two MoE counterparts (moelab.train.presets): iso-active, and fine-grained + shared;
# and the wide dense model, iso-total with tiny-moe (the task-type probes' second pair).
PAIRS = {"dense": "tiny-dense", "moe": "tiny-moe", "moe_fine": "tiny-moe-fine", "dense_wide": "tiny-dense-wide"}
# The study's corpus (moelab.data.corpus.CORPORA): the default four domains and the facts the knowledge probe asks.
CORPUS = "study"

# The frontier pairs the seeds discuss: (dense, MoE).
FRONTIER_PAIRS = (("mistral-7b", "mixtral-8x7b"), ("llama-3-70b", "mixtral-8x7b"), ("llama-3-70b", "deepseek-v3"),
                  ("llama-3-70b", "qwen3-235b-a22b"))
# The pair served with vLLM: the dense model and its iso-active MoE (the seeds' latency and throughput tables).
SERVED = ("dense", "moe")
FRONTIER_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


@dataclass(frozen=True)
class StudyPlan:
    quick: bool = False
    # training: the same budget and data order for every model
    steps: int = 300
    batch_size: int = 16
    seq_len: int = 128
    eval_every: int = 25
    eval_tokens: int = 8192
    max_bytes_per_domain: int = 1_500_000
    # measurement: decode sweep and the prompt / generated tokens per sequence
    bench_batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    bench_prompt: int = 128
    bench_gen: int = 32
    # serving with vLLM (full study only): closed-loop levels, the seeds' concurrency 1 and 32 among them
    serve_concurrency: tuple[int, ...] = (1, 4, 16, 32)
    serve_requests: int = 96
    serve_greedy_prompts: int = 8
    # multi-process scaling (torchrun, gloo, one thread per process): process counts, steps, batch per process
    scaling_ranks: tuple[int, ...] = (1, 2, 4)
    scaling_steps: int = 10
    scaling_batch: int = 4
    scaling_timeout_s: float = 300.0
    # mitigations of the trained MoE (moelab.study.mitigations): experts kept by pruning, resident counts offloaded,
    # and the decode timing of every variant (batch sizes, steps after the prompt, rounds)
    prune_keep: int = 6
    offload_resident: tuple[int, ...] = (2, 4, 6)
    mitigation_batches: tuple[int, ...] = (1, 8)
    mitigation_gen: int = 16
    mitigation_repeats: int = 3

    @classmethod
    def default(cls) -> StudyPlan:
        return cls()

    @classmethod
    def quick_plan(cls) -> StudyPlan:
        return cls(quick=True, steps=30, batch_size=8, seq_len=64, eval_every=10, eval_tokens=2048,
                   max_bytes_per_domain=200_000, bench_batches=(1, 4, 16), bench_prompt=64, bench_gen=8,
                   scaling_ranks=(1, 2), scaling_steps=5, scaling_batch=2, offload_resident=(4,),
                   mitigation_batches=(1,), mitigation_gen=8, mitigation_repeats=2)

    @classmethod
    def from_dict(cls, raw: dict) -> StudyPlan:
        raw = {**raw, "bench_batches": tuple(raw["bench_batches"])}
        for key in ("serve_concurrency", "scaling_ranks", "offload_resident", "mitigation_batches"):
            if key in raw:
                raw[key] = tuple(raw[key])
        return cls(**raw)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["bench_batches"] = list(self.bench_batches)
        out["serve_concurrency"] = list(self.serve_concurrency)
        out["scaling_ranks"] = list(self.scaling_ranks)
        out["offload_resident"] = list(self.offload_resident)
        out["mitigation_batches"] = list(self.mitigation_batches)
        return out
