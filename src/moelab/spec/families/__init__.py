"""Model families, one module each, registered in `base.REGISTRY` by model_type (see base.py: adding a family)."""

from moelab.spec.families import (  # noqa: F401  (each module registers its family on import)
    dbrx,
    deepseek,
    gemma2,
    gemma3,
    glm4_moe,
    gpt_oss,
    granitemoe,
    jetmoe,
    llama,
    llama4,
    mistral,
    mixtral,
    olmo2,
    olmoe,
    phi3,
    phimoe,
    qwen2,
    qwen2_moe,
    qwen3,
    qwen3_moe,
    qwen3_next,
)
from moelab.spec.families.base import REGISTRY, Family, families, family_of, register

__all__ = ["REGISTRY", "Family", "families", "family_of", "register"]
