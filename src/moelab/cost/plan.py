"""A parallel plan: how one model replica is laid over GPUs (pipeline, tensor and expert parallel), and how many
replicas serve side by side.

Grammar: ``^(pp\\d+)?(tp\\d+)?(ep\\d+)?(x\\d+)?$`` — ``tp8``, ``ep8``, ``tp2ep4``, ``pp2tp8``, ``tp2x4`` (four
replicas of TP2). One replica uses pp * tp * ep GPUs; the plan uses that times the replicas.

- tp: every attention head group, dense FFN and expert matrix split tp ways; two all-reduces per layer.
- ep: ep data-parallel attention groups (each of tp GPUs, each serving 1 / ep of the sequences) and the routed
  experts split ep ways (E / ep whole experts per group, each expert's matrices split tp ways inside the group);
  a dispatch and a combine all-to-all per MoE layer. A dense model has no experts to split: ep > 1 is refused.
- pp: the layers split into pp stages, one after another (a point-to-point send between stages).
- x: replicas, each with its share of the requests (data parallel serving).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from moelab.errors import MoelabError
from moelab.limits import MAX_GPUS
from moelab.spec.model import ModelSpec

_GRAMMAR = re.compile(r"^(?:pp(\d+))?(?:tp(\d+))?(?:ep(\d+))?(?:x(\d+))?$")


@dataclass(frozen=True)
class Plan:
    """pp x tp x ep GPUs per replica, `replicas` replicas."""

    pp: int = 1
    tp: int = 1
    ep: int = 1
    replicas: int = 1

    def __post_init__(self) -> None:
        for key in ("pp", "tp", "ep", "replicas"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MoelabError(f"plan: {key} must be a positive integer, got {value!r}")
        if self.gpus > MAX_GPUS:
            raise MoelabError(f"plan {self.name} uses {self.gpus} GPUs, more than moelab models ({MAX_GPUS})")

    @classmethod
    def parse(cls, text: str) -> Plan:
        """A plan from its name (``tp2ep4x2``); one line naming the grammar when it does not match."""
        match = _GRAMMAR.match(text.strip().lower()) if isinstance(text, str) else None
        if not text or match is None or not any(match.groups()):
            raise MoelabError(f"plan {text!r} does not read as [ppN][tpN][epN][xN] (e.g. tp8, ep8, tp2ep4, pp2tp8, "
                              "tp2x4)")
        pp, tp, ep, x = (int(g) if g is not None else 1 for g in match.groups())
        if 0 in (pp, tp, ep, x):
            raise MoelabError(f"plan {text!r}: every degree must be at least 1")
        return cls(pp=pp, tp=tp, ep=ep, replicas=x)

    @property
    def gpus_per_replica(self) -> int:
        return self.pp * self.tp * self.ep

    @property
    def gpus(self) -> int:
        return self.gpus_per_replica * self.replicas

    @property
    def name(self) -> str:
        """The canonical name: degrees of 1 left out, except a lone tp1."""
        parts = [f"{key}{getattr(self, key)}" for key in ("pp", "tp", "ep") if getattr(self, key) > 1]
        return "".join(parts or ["tp1"]) + (f"x{self.replicas}" if self.replicas > 1 else "")

    def __str__(self) -> str:
        return self.name

    @property
    def replica(self) -> Plan:
        """One replica of this plan."""
        return Plan(pp=self.pp, tp=self.tp, ep=self.ep)


def _heads(spec: ModelSpec) -> set[tuple[str, int, int]]:
    """(kind, heads that must split, KV heads) of every distinct attention of the model."""
    out = set()
    for layer, _ in spec.layer_groups:
        a = layer.attention
        if a.kind == "linear":
            out.add(("linear", a.linear.n_v_heads, a.linear.n_k_heads))
        elif a.kind == "mla":
            out.add(("mla", a.n_heads, a.n_heads))  # the latent cache is replicated, the heads split
        else:
            out.add((a.kind, a.n_heads, a.n_kv_heads))
    return out


def expert_counts(spec: ModelSpec) -> set[int]:
    return {layer.moe.n_experts for layer, _ in spec.layer_groups if layer.moe is not None}


def plan_problem(spec: ModelSpec, plan: Plan) -> str | None:
    """Why `plan` cannot serve `spec` (one clause), or None when it can."""
    if plan.tp > 1:
        for kind, heads, kv in sorted(_heads(spec)):
            if heads % plan.tp:
                return f"tp{plan.tp} does not divide the {heads} {'value ' if kind == 'linear' else ''}heads"
            if kv % plan.tp and plan.tp % kv:
                return f"tp{plan.tp} neither divides nor is a multiple of the {kv} KV heads"
    if plan.ep > 1:
        if not spec.is_moe:
            return f"ep{plan.ep} on a dense model (expert parallelism needs routed experts)"
        counts = expert_counts(spec)
        bad = sorted(e for e in counts if e % plan.ep)
        if bad:
            return (f"ep{plan.ep} does not divide the {bad[0]} routed experts per layer (EP places whole experts, "
                    "the same number on every group)")
    if plan.pp > 1 and spec.n_layers % plan.pp:
        return f"pp{plan.pp} does not divide the {spec.n_layers} layers"
    return None


def check_plan(spec: ModelSpec, plan: Plan) -> None:
    """One MoelabError line when `plan` cannot serve `spec`."""
    problem = plan_problem(spec, plan)
    if problem:
        raise MoelabError(f"plan {plan.name} for {spec.name}: {problem}")
