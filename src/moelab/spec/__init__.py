"""What a model and a machine *are*: frozen, validated dataclasses. No torch import."""

from moelab.spec.hardware import HardwareSpec, load_hardware
from moelab.spec.model import AttentionSpec, FFNSpec, LayerSpec, ModelSpec, MoESpec, build_spec
from moelab.spec.presets import load_model, model_presets

__all__ = [
    "AttentionSpec",
    "FFNSpec",
    "LayerSpec",
    "HardwareSpec",
    "ModelSpec",
    "MoESpec",
    "build_spec",
    "load_hardware",
    "load_model",
    "model_presets",
]
