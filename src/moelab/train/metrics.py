"""Per-step router statistics for metrics.jsonl, and collapse detection over consecutive steps."""

from __future__ import annotations

from moelab.nn.model import TransformerLM


def router_stats(model: TransformerLM) -> dict:
    """Per MoE layer: share of token-slots per expert, imbalance (max/mean), entropy, dropped slots, biases."""
    loads, imbalance, entropy, biases, dropped = [], [], [], [], 0
    for layer in model.moe_layers():
        counts = layer.last_counts
        share = (counts / counts.sum()).tolist()
        loads.append([round(s, 5) for s in share])
        imbalance.append(round(float(counts.max() / counts.mean()), 4))
        entropy.append(round(layer.last_entropy, 5))
        biases.append([round(b, 5) for b in layer.gate.bias.tolist()])
        dropped += layer.dropped
    if not loads:
        return {}
    return {"expert_load": loads, "imbalance": imbalance, "router_entropy": entropy, "dropped_tokens": dropped,
            "balancing_bias": biases}


class CollapseDetector:
    """Warns once per (layer, expert) whose share stays under `threshold` x fair share for `patience` steps."""

    def __init__(self, threshold: float, patience: int) -> None:
        self.threshold, self.patience = threshold, patience
        self.streak: dict[tuple[int, int], int] = {}
        self.reported: set[tuple[int, int]] = set()

    def update(self, expert_load: list[list[float]]) -> list[str]:
        warnings = []
        for layer, shares in enumerate(expert_load):
            fair = 1.0 / len(shares)
            for expert, share in enumerate(shares):
                key = (layer, expert)
                self.streak[key] = self.streak.get(key, 0) + 1 if share < self.threshold * fair else 0
                if self.streak[key] >= self.patience and key not in self.reported:
                    self.reported.add(key)
                    warnings.append(f"expert {expert} of MoE layer {layer} collapsed: share {share:.4f} under "
                                    f"{self.threshold:g} x fair share ({fair:.4f}) for {self.patience} steps")
        return warnings

    def to_dict(self) -> dict:
        """The streaks and reported experts, for a checkpoint (a resumed run warns exactly as an uninterrupted
        one)."""
        return {"streak": [[layer, expert, n] for (layer, expert), n in sorted(self.streak.items())],
                "reported": sorted([layer, expert] for layer, expert in self.reported)}

    def restore(self, saved: dict | None) -> None:
        """Take back what `to_dict` saved (nothing for a checkpoint written before it existed)."""
        if not isinstance(saved, dict):
            return
        try:
            self.streak = {(int(layer), int(expert)): int(n) for layer, expert, n in saved.get("streak", [])}
            self.reported = {(int(layer), int(expert)) for layer, expert in saved.get("reported", [])}
        except (TypeError, ValueError):  # a damaged entry: start the streaks over rather than fail the resume
            self.streak, self.reported = {}, set()
