"""Measurement on this machine: calibrate it into a hardware spec, and bench models beside the engine's prediction."""
