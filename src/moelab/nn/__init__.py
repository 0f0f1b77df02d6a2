"""Torch modules: FFN, routers, MoE layer, dispatch backends, the transformer LM, and HF weight interop."""

from moelab.nn.hf import load_pretrained, save_pretrained
from moelab.nn.model import TransformerLM, build_model
from moelab.nn.moe import MoELayer, MoEOptions

__all__ = ["MoELayer", "MoEOptions", "TransformerLM", "build_model", "load_pretrained", "save_pretrained"]
