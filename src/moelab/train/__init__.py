"""The training lab: presets, the training loop, checkpoints, metrics, matched comparisons, the runs store."""
