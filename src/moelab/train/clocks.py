"""The two clocks of a training run, read back from its metrics (torch-free: the report and decide use it).

`wall_seconds` is the real time of the run, evaluations and checkpoints included; `train_seconds` counts only
the training steps. The seeds' "MoE trains slower in wall-clock" is about training, so comparisons of seconds
to a target loss use the training clock; evaluations, whose cost differs by model, stay out of it.
"""

from __future__ import annotations


def training_seconds(row: dict) -> float:
    """Seconds of training steps up to a metrics row or a to-target record. Runs logged before the two clocks
    have only wall_seconds, which then counted training steps alone."""
    return row["train_seconds"] if row.get("train_seconds") is not None else row["wall_seconds"]
