"""gpt-oss's expert tensors in Hugging Face files: the codecs between transformers' fused layout and moelab's,
and MXFP4 dequantization.

transformers 5.24 (models/gpt_oss/modeling_gpt_oss.py, GptOssExperts) keeps all experts of a layer in
`mlp.experts.gate_up_proj` (E, d, 2f), multiplied as x @ W, its gate and up columns INTERLEAVED (gate = [..., ::2],
up = [..., 1::2]), `gate_up_proj_bias` (E, 2f) interleaved the same way, `down_proj` (E, f, d) and
`down_proj_bias` (E, d). moelab keeps gate_up_proj (E, 2f, d) with the gate rows first, then the up rows, and
down_proj (E, d, f); its gate_up_proj_bias (E, 2f) is gate then up.

The released checkpoints store gate_up_proj and down_proj in MXFP4 (OCP Microscaling Formats v1.0): `*_blocks`
uint8 (E, rows, G, 16), two FP4 E2M1 values a byte (low nibble first), and `*_scales` uint8 (E, rows, G), one
E8M0 power of two (bias 127) per block of 32 values along the input dimension; `dequantize_mxfp4` rebuilds the
(E, in, rows) tensor transformers multiplies with (integrations/mxfp4.py, _convert_moe_packed_tensors).
"""

from __future__ import annotations

import torch

from moelab.nn.hf import CODECS

# FP4 E2M1: sign, two exponent bits, one mantissa bit (integrations/mxfp4.py FP4_VALUES; OCP MX v1.0 table 5).
FP4_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
MX_BLOCK = 32  # values sharing one scale
E8M0_BIAS = 127


def gate_up_from_file(w_EDF2: torch.Tensor) -> torch.Tensor:
    """transformers' gate_up_proj (E, d, 2f, interleaved columns) -> moelab's (E, 2f, d, gate rows then up)."""
    w = w_EDF2.transpose(1, 2)  # (E, 2f, d), rows interleaved
    return torch.cat([w[:, 0::2], w[:, 1::2]], dim=1)


def gate_up_to_file(w_EFD: torch.Tensor) -> torch.Tensor:
    """moelab's gate_up_proj (E, 2f, d) -> transformers' (E, d, 2f) with gate and up columns interleaved."""
    e, f2, d = w_EFD.shape
    gate, up = w_EFD[:, :f2 // 2], w_EFD[:, f2 // 2:]
    return torch.stack([gate, up], dim=2).reshape(e, f2, d).transpose(1, 2)


def gate_up_bias_from_file(b_EF2: torch.Tensor) -> torch.Tensor:
    return torch.cat([b_EF2[:, 0::2], b_EF2[:, 1::2]], dim=1)


def gate_up_bias_to_file(b_EF2: torch.Tensor) -> torch.Tensor:
    e, f2 = b_EF2.shape
    return torch.stack([b_EF2[:, :f2 // 2], b_EF2[:, f2 // 2:]], dim=2).reshape(e, f2)


def down_swap(w: torch.Tensor) -> torch.Tensor:
    """down_proj (E, f, d) <-> moelab's (E, d, f): a transpose either way."""
    return w.transpose(1, 2)


CODECS.update(
    gpt_oss_gate_up=(gate_up_from_file, gate_up_to_file),
    gpt_oss_gate_up_bias=(gate_up_bias_from_file, gate_up_bias_to_file),
    gpt_oss_down=(down_swap, down_swap),
)


def dequantize_mxfp4(blocks: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """MXFP4 `*_blocks` (E, rows, G, B) and `*_scales` (E, rows, G) -> (E, G * 2B, rows) in `dtype`: the
    transposed, dequantized weight transformers' GptOssExperts multiplies with (x @ W).

    Byte j of a block holds values 2j (low nibble) and 2j + 1 (high nibble); each value is FP4_VALUES[nibble]
    times 2 ** (scale - 127). Exact in float32 and bfloat16 for the scales real checkpoints carry (E8M0 255,
    NaN in the OCP spec, is read as 2 ** 128 like transformers does)."""
    if blocks.dtype != torch.uint8 or scales.dtype != torch.uint8:
        raise ValueError(f"MXFP4 blocks and scales must be uint8, got {blocks.dtype} and {scales.dtype}")
    if blocks.dim() < 2 or tuple(blocks.shape[:-1]) != tuple(scales.shape):
        raise ValueError(f"MXFP4 blocks {tuple(blocks.shape)} do not match scales {tuple(scales.shape)}")
    *lead, groups, width = blocks.shape
    lut = torch.tensor(FP4_VALUES, dtype=torch.float32, device=blocks.device)
    values = torch.stack([lut[(blocks & 0x0F).long()], lut[(blocks >> 4).long()]], dim=-1)  # (..., G, B, 2)
    values = values.reshape(*lead, groups, 2 * width)
    values = torch.ldexp(values, scales.to(torch.int32)[..., None] - E8M0_BIAS)
    return values.reshape(*lead, groups * 2 * width).transpose(-1, -2).to(dtype).contiguous()
