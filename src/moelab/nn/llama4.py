"""Llama 4's tensor layout: its fused experts are stored transposed against moelab's, gate_up_proj (E, d, 2f)
(gate columns, then up columns) and down_proj (E, f, d), where moelab keeps (E, 2f, d) and (E, d, f).
Source: transformers 5.24 models/llama4/modeling_llama4.py (Llama4TextExperts: bmm(x, gate_up_proj),
gate_up.chunk(2, dim=-1), bmm(h, down_proj))."""

from __future__ import annotations

import torch

from moelab.nn.hf import CODECS


def _swap_last_two(w_EAB: torch.Tensor) -> torch.Tensor:
    return w_EAB.transpose(1, 2)


CODECS["transpose12"] = (_swap_last_two, _swap_last_two)  # its own inverse: file -> moelab, moelab -> file
