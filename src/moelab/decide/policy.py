"""The choice policy: every threshold the decision uses, with its source, and the rule that picks dense, MoE or
a hybrid from the assessed candidates and the factor vote.

The rule (the order matters; the first that applies decides):

1. Both kinds feasible (the cheapest feasible of each, $ per million output tokens at the typical batch):
   - "route": the modelled throughput winner flips inside the workload's batch sweep and |vote| <= route_vote_max
     (small batches to one model, large to the other);
   - "cascade": |vote| <= cascade_vote_max on a mix with reasoning >= cascade_reasoning_min and knowledge +
     multilingual >= cascade_knowledge_min, and the dense is the cheaper per token: the dense answers first and
     escalates what it is unsure of to the MoE (seed 001, "Strategy 3: Cascade"; moelab hybrid measures that
     order), which saves money only when the model answering first is the cheaper one;
   a hybrid also needs one replica of each to fit the workload's GPUs and memory budget together
   (candidates.fleet_fits);
   - "vote": otherwise the sign of the vote (+ MoE, - dense), a tie to the cheaper.
2. One kind feasible: that kind ("only_feasible"), except "backbone_head" when every MoE that fails fails on
   memory alone and knowledge + multilingual >= backbone_knowledge_min (MoE capacity where knowledge lives).
3. None feasible: the candidate with the fewest violations, then the cheapest ("closest").
"""

from __future__ import annotations

from dataclasses import dataclass

from moelab.decide.candidates import fleet_fits

CHOICES = ("dense", "moe", "hybrid: dense backbone + MoE head", "hybrid: route between dense and MoE",
           "hybrid: cascade")
RULES = ("vote", "route", "cascade", "only_feasible", "backbone_head", "closest")


@dataclass(frozen=True)
class ChoicePolicy:
    """The thresholds of the decision. Defaults are POLICY; each names where its value comes from."""

    margin: float = 0.10
    """A relative modelled gap under this is "neutral": the engine's decode predictions are off by about as much
    (the study's bench, median |error| 9% on this CPU: runs/study/study.json, bench.summary.decode)."""
    task_lean_margin: float = 0.10
    """The task-mix lean (knowledge + multilingual share minus reasoning share, or with probes the share-weighted
    vote of the probe sets, both in [-1, 1]) under which the task type is "neutral": moelab's choice, a workload's
    task mix is an estimate that is rarely known to better than 10 percentage points (a mix, not a modelled gap:
    not the engine's error behind `margin`)."""
    scale_moe_from: float = 30e9
    """Total parameters from which "MoE pays off at scale" (seed 000's factor table: "Tens of billions+ where
    sparsity pays off")."""
    scale_dense_below: float = 10e9
    """Total parameters below which dense is as cheap and simpler (seed 001, Empirical Decision Framework, step 4:
    "<10B params -> Dense")."""
    flip_batches: tuple[int, int] = (1, 4096)
    """The batch range searched for the throughput winner's flip (moelab's choice: batch 1 to past the largest
    decode batch a 80 GB GPU holds for the presets)."""
    throughput_weight: int = 2
    """Votes of batch_throughput: at a fixed $/GPU-hour tokens/s per GPU *is* cost per token (moelab's choice)."""
    scratch_training_weight: int = 2
    """Votes of training from scratch (pretraining compute dominates the bill; moelab's choice); fine-tuning: 1."""
    route_vote_max: int = 2
    """|vote| at or under which a throughput flip inside the batch sweep routes by batch (moelab's choice)."""
    cascade_vote_max: int = 1
    """|vote| at or under which a mixed workload gets a cascade (moelab's choice: split evidence)."""
    cascade_reasoning_min: float = 0.3
    """Reasoning share a cascade needs (moelab's choice; seed 001: hybrids for "heterogeneous workloads")."""
    cascade_knowledge_min: float = 0.3
    """Knowledge + multilingual share a cascade needs (as cascade_reasoning_min)."""
    backbone_knowledge_min: float = 0.5
    """Knowledge + multilingual share from which the mix is knowledge-heavy, for the dense backbone + MoE head
    (moelab's choice: half the mix; seed 001, "Strategy 1: Dense Backbone + MoE Head")."""
    loss_gap_nats: float = 0.01
    """A mix-weighted validation loss gap under this is noise at tiny scale, so the prior decides (moelab's choice:
    the gaps between tiny-dense and tiny-moe after 300 steps are 0.003-0.2 nats per domain)."""

    def weight(self, factor: str, training: str) -> int:
        """How many votes a factor row casts."""
        if factor == "batch_throughput":
            return self.throughput_weight
        if factor == "training" and training == "scratch":
            return self.scratch_training_weight
        return 1


POLICY = ChoicePolicy()


@dataclass(frozen=True)
class Choice:
    """What the rule picked: `choice` (one of CHOICES), the `rule` that picked it (one of RULES), the candidate
    `pick` for a single model (`second`: the best of the other kind, or the MoE a dense backbone stands in for),
    `first` and `second` for a hybrid (the dense and the MoE; a cascade's dense answers first), and whether it
    meets every constraint."""

    choice: str
    rule: str
    pick: dict | None = None
    first: dict | None = None
    second: dict | None = None
    feasible: bool = True

    @property
    def model(self) -> str:
        if self.rule == "route":
            return f"{self.first['name']} + {self.second['name']}"
        if self.rule == "cascade":
            return f"{self.first['name']} → {self.second['name']}"
        if self.rule == "backbone_head":
            return f"{self.pick['name']} + MoE head"
        return self.pick["name"]


def knowledge_share(mix: dict[str, float]) -> float:
    return mix["knowledge"] + mix["multilingual"]


def best(cands: list[dict], kind: str, feasible_only: bool = True) -> dict | None:
    """The cheapest feasible candidate of a kind; with feasible_only=False the closest (fewest violations)."""
    pool = [c for c in cands if c["kind"] == kind and (c["feasible"] or not feasible_only)]
    if not pool:
        return None
    if feasible_only:
        return min(pool, key=lambda c: c["usd_per_million_tokens"])
    return min(pool, key=lambda c: (len(c["violations"]), c["usd_per_million_tokens"]))


def choose(cands: list[dict], vote: int, flip: dict | None, wl, policy: ChoicePolicy = POLICY) -> Choice:
    """The module docstring's rule on assessed candidates (candidates.assess), the factor vote and the modelled
    throughput flip between the best dense and the best MoE (None: no flip)."""
    dense_ok, moe_ok = best(cands, "dense"), best(cands, "moe")
    mix = wl.task_mix
    knowledge = knowledge_share(mix)
    if dense_ok and moe_ok:
        cheaper = moe_ok if moe_ok["usd_per_million_tokens"] <= dense_ok["usd_per_million_tokens"] else dense_ok
        both = fleet_fits(dense_ok, moe_ok, wl)
        if (both and flip and min(wl.batches) < flip["batch"] <= max(wl.batches)
                and abs(vote) <= policy.route_vote_max):
            return Choice(CHOICES[3], "route", first=dense_ok, second=moe_ok)
        if (both and abs(vote) <= policy.cascade_vote_max and mix["reasoning"] >= policy.cascade_reasoning_min
                and knowledge >= policy.cascade_knowledge_min and cheaper is dense_ok):
            return Choice(CHOICES[4], "cascade", first=dense_ok, second=moe_ok)
        pick = moe_ok if vote > 0 else dense_ok if vote < 0 else cheaper
        return Choice(pick["kind"], "vote", pick=pick, second=dense_ok if pick is moe_ok else moe_ok)
    if dense_ok or moe_ok:
        pick = moe_ok or dense_ok
        moe_memory_only = [c for c in cands if c["kind"] == "moe" and c["violations"] == ["memory"]]
        if pick is dense_ok and moe_memory_only and knowledge >= policy.backbone_knowledge_min:
            return Choice(CHOICES[2], "backbone_head", pick=dense_ok, second=moe_memory_only[0])
        return Choice(pick["kind"], "only_feasible", pick=pick,
                      second=best(cands, "dense" if pick is moe_ok else "moe", False))
    pick = min(cands, key=lambda c: (len(c["violations"]), c["usd_per_million_tokens"]))
    return Choice(pick["kind"], "closest", pick=pick, feasible=False)
