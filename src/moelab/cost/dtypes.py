"""Bytes per element of weights, KV cache and activations, and the compute dtype a weight dtype runs in."""

from __future__ import annotations

from moelab.errors import MoelabError

INT4_GROUP = 128  # int4 weights carry one fp16 scale per group of 128 (GPTQ/AWQ-style, symmetric)

WEIGHT_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5 + 2.0 / INT4_GROUP}
# Formats a checkpoint may store its routed experts in, whatever dtype the rest is served at: MXFP4 (OCP
# Microscaling spec v1.0: FP4 E2M1 values, one E8M0 scale per block of 32 -> 4.25 bits; gpt-oss's experts).
EXPERT_STORAGE_BYTES = {"mxfp4": (4 + 8 / 32) / 8}
KV_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}
# int4 is weight-only (W4A16): its matmuls run in bf16. fp8 and int8 are W8A8.
COMPUTE_DTYPE = {"fp32": "fp32", "bf16": "bf16", "fp16": "fp16", "fp8": "fp8", "int8": "int8", "int4": "bf16"}


def check_dtype(dtype: str, table: dict[str, float] = WEIGHT_BYTES, what: str = "--dtype") -> str:
    if dtype not in table:
        raise MoelabError(f"{what} must be one of {', '.join(table)}, got {dtype!r}")
    return dtype


def kv_dtype_for(dtype: str, kv_dtype: str | None = None) -> str:
    """The KV cache dtype: `kv_dtype` when given (checked), else the weights' own where a KV cache can hold it
    (fp32, bf16, fp16, fp8), else bf16 (int8 and int4 quantise weights, not the cache)."""
    kv = kv_dtype or (dtype if dtype in ("fp32", "bf16", "fp16", "fp8") else "bf16")
    return check_dtype(kv, KV_BYTES, "--kv-dtype")


def activation_bytes(dtype: str) -> float:
    """Activations stay in the compute precision: fp32 for fp32 weights, 16-bit otherwise."""
    return 4.0 if dtype == "fp32" else 2.0


def high_precision_bytes(dtype: str) -> float:
    """Embeddings, lm_head, norms and routers are kept unquantized: fp32 with fp32 weights, else 16-bit."""
    return 4.0 if dtype == "fp32" else 2.0


# The parts of a model a per-component dtype names (moelab quantize --component, estimate --expert-dtype).
COMPONENTS = ("routed_experts", "shared_experts", "attention", "dense_ffn", "embeddings")


def parse_components(texts: list[str] | tuple[str, ...] = (), expert_dtype: str | None = None,
                     allowed: tuple[str, ...] = tuple(WEIGHT_BYTES), expert_flag: str = "--expert-dtype"
                     ) -> dict[str, str]:
    """NAME=DTYPE texts (and `expert_dtype`, the shorthand for routed_experts=DTYPE) as {component: dtype}, each
    component named once, each dtype one of `allowed`; the one parser `quantize` and `estimate` share. Components
    not named keep their dtype (absent from the result)."""
    pairs = [(expert_flag, f"routed_experts={expert_dtype}")] if expert_dtype is not None else []
    pairs += [("--component", text) for text in texts]
    out: dict[str, str] = {}
    for flag, text in pairs:
        name, sep, dtype = text.partition("=")
        name, dtype = name.strip(), dtype.strip()
        shown = dtype if flag == expert_flag else text
        if not sep or not name:
            raise MoelabError(f"--component expects NAME=DTYPE (e.g. routed_experts=int4), got {text!r}")
        if name not in COMPONENTS:
            raise MoelabError(f"{flag}: unknown component {name!r} (choose from {', '.join(COMPONENTS)})")
        if dtype not in allowed:
            raise MoelabError(f"{flag}: dtype must be one of {', '.join(allowed)}, got {shown!r}")
        if name in out:
            raise MoelabError(f"{flag}: {name} is given twice ({out[name]} and {dtype})")
        out[name] = dtype
    return out


def components_key(components: dict[str, str] | tuple[tuple[str, str], ...] | None) -> tuple[tuple[str, str], ...]:
    """Per-component dtypes as sorted (component, dtype) pairs: hashable, for a Workload (checked)."""
    pairs = tuple(sorted(dict(components or {}).items()))
    for name, dtype in pairs:
        if name not in COMPONENTS:
            raise MoelabError(f"unknown component {name!r} (choose from {', '.join(COMPONENTS)})")
        check_dtype(dtype, WEIGHT_BYTES, f"component {name}")
    return pairs


def component_dtype(dtype: str, components: dict[str, str] | tuple[tuple[str, str], ...] | None,
                    component: str) -> str:
    """The weight dtype of `component`: the one it is given, else the model's `dtype`."""
    return dict(components or {}).get(component, dtype)


def component_compute_dtype(dtype: str, weight_dtype: str) -> str:
    """The dtype a component's matmuls run in when its weights are at `weight_dtype` in a model served at `dtype`:
    weight-only int4 (W4A16) dequantizes into the activations' precision (fp32 in an fp32 model, else bf16);
    the others as COMPUTE_DTYPE."""
    if weight_dtype == "int4" and dtype == "fp32":
        return "fp32"
    return COMPUTE_DTYPE[weight_dtype]
