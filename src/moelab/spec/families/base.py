"""The registry of model families: what each reads from config.json, writes back, and calls its weights.

A family is a subclass of `Family` decorated with `@register`. It names the `model_type`s it reads and the
`*ForCausalLM` class its config names, reads a config into a ModelSpec (`read`), writes a spec back as a
config (`write`; families moelab.nn does not build leave it out), maps its weights to Hugging Face names (a
table, `weights`) and lists the switches it refuses (`refused`). spec/hf.py and nn/hf.py are generic drivers
over this registry.

Adding a family
---------------
1. A module `spec/families/<family>.py` with a `@register` class: `model_types`, `architecture`, `read()`,
   and, when moelab.nn builds it, `write()`, `weights` (overrides of DEFAULT_WEIGHTS) and `nn_refused`.
2. Its import in `spec/families/__init__.py`.
3. A real config.json in tests/spec/configs/ with its source (tests/spec/configs/SOURCES.json); the tests
   parametrise over the registry and compare counts (and logits, where moelab.nn builds it) with transformers.
"""

from __future__ import annotations

from typing import Any, ClassVar

from moelab.errors import MoelabError
from moelab.spec.families.config import ConfigReader
from moelab.spec.model import ModelSpec

# The Hugging Face tensor name of each moelab tensor: (moelab pattern, HF pattern), first match wins. {layer}
# is a layer index, {expert} an expert index (a moelab expert tensor holds every expert: HF stores one each),
# {rest} the remainder of the name. "[gate]" / "[up]" name the halves of moelab's fused gate_up_proj rows;
# moelab names joined by "+" are concatenated along rows into one HF tensor (Phi-3's qkv_proj).
DEFAULT_WEIGHTS: tuple[tuple[str, str], ...] = (
    ("embed_tokens.weight", "model.embed_tokens.weight"),
    ("norm.weight", "model.norm.weight"),
    ("norm.bias", "model.norm.bias"),
    ("lm_head.weight", "lm_head.weight"),
    ("lm_head.bias", "lm_head.bias"),
    ("layers.{layer}.mlp.gate_up_proj[gate]", "model.layers.{layer}.mlp.experts.{expert}.gate_proj.weight"),
    ("layers.{layer}.mlp.gate_up_proj[up]", "model.layers.{layer}.mlp.experts.{expert}.up_proj.weight"),
    ("layers.{layer}.mlp.down_proj", "model.layers.{layer}.mlp.experts.{expert}.down_proj.weight"),
    ("layers.{layer}.mlp.gate.bias", None),  # a selection bias: only families that store one map it
    ("layers.{layer}.{rest}", "model.layers.{layer}.{rest}"),
)


class Inexpressible(Exception):
    """The spec has a feature this family's config cannot state (the reason is the message)."""


def need(condition: bool, why: str) -> None:
    """Raise Inexpressible(why) unless `condition`: the writers' one check."""
    if not condition:
        raise Inexpressible(why)


class Family:
    """One model family. Class attributes describe it; the methods read and write its config.json."""

    model_types: ClassVar[tuple[str, ...]] = ()  # config.json model_type values this family reads
    architecture: ClassVar[str | None] = None  # the *ForCausalLM class a written config names
    activations: ClassVar[dict[str, str]] = {"silu": "silu", "swish": "silu"}  # hidden_act -> moelab's
    activation_key: ClassVar[str] = "hidden_act"
    text_config: ClassVar[bool] = False  # a multimodal config: the text model's fields are under text_config
    # config switches the engine cannot model: field -> the values it accepts (refused by name otherwise)
    refused: ClassVar[dict[str, tuple[Any, ...]]] = {}
    # switches moelab.nn does not build (the engine still estimates them): field -> accepted values
    nn_refused: ClassVar[dict[str, tuple[Any, ...]]] = {}
    weights: ClassVar[tuple[tuple[str, str | None], ...]] = ()  # overrides of DEFAULT_WEIGHTS
    aliases: ClassVar[tuple[tuple[str, str], ...]] = ()  # (another HF spelling, the HF name it stands for)

    @property
    def name(self) -> str:
        return self.model_types[0]

    @property
    def builds(self) -> bool:
        """Whether moelab.nn builds, loads and saves this family."""
        return type(self).write is not Family.write

    def weight_table(self) -> tuple[tuple[str, str | None], ...]:
        return self.weights + DEFAULT_WEIGHTS

    def read(self, c: ConfigReader, name: str) -> ModelSpec:
        raise NotImplementedError

    def write(self, spec: ModelSpec, dtype: str) -> dict[str, Any]:
        """The config.json of `spec` in this family (raise Inexpressible when it cannot state the spec)."""
        raise Inexpressible("moelab.nn does not build this family (engine only)")

    def check_buildable(self, raw: dict[str, Any], spec: ModelSpec) -> str | None:
        """Why moelab.nn cannot build this config, beyond `nn_refused` (None: it can). `raw`: the text
        model's fields (a multimodal config's text_config merged in)."""
        return None

    def check_loadable(self, raw: dict[str, Any], spec: ModelSpec) -> str | None:
        """Why moelab.nn cannot load this config's checkpoint though it builds the model (None: it can).
        `raw`: the config.json as written (a multimodal one with its vision parts)."""
        return None

    def ignored(self, name: str, spec: ModelSpec, raw: dict[str, Any]) -> bool:
        """File tensors of this family that carry nothing moelab uses (beyond rotary tables)."""
        return False

    def empty_tensors(self, spec: ModelSpec) -> dict[str, tuple[int, ...]]:
        """Width-0 tensors transformers expects in a checkpoint that moelab does not build: name -> shape."""
        return {}


REGISTRY: dict[str, Family] = {}  # model_type -> its family


def register(cls: type[Family]) -> type[Family]:
    """Class decorator: add the family under each of its model_types."""
    family = cls()
    for model_type in cls.model_types:
        if model_type in REGISTRY:
            raise RuntimeError(f"model_type {model_type!r} registered twice")
        REGISTRY[model_type] = family
    return cls


def family_of(model_type: Any, source: str) -> Family:
    """The registered family of `model_type`, or one line naming the known ones."""
    from moelab.validation import show_value

    if not isinstance(model_type, str) or model_type not in REGISTRY:
        raise MoelabError(f"{source}: unknown model_type {show_value(model_type)} "
                          f"(known: {', '.join(sorted(REGISTRY))})")
    return REGISTRY[model_type]


def families() -> list[Family]:
    """Every registered family once, in registration order."""
    return list(dict.fromkeys(REGISTRY.values()))
