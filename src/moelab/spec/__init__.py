"""What a model and a machine *are*: frozen, validated dataclasses. No torch import."""

from moelab.spec.hardware import HardwareSpec, load_hardware
from moelab.spec.model import AttentionSpec, ModelSpec, MoESpec
from moelab.spec.presets import load_model, model_presets

__all__ = [
    "AttentionSpec",
    "HardwareSpec",
    "ModelSpec",
    "MoESpec",
    "load_hardware",
    "load_model",
    "model_presets",
]
