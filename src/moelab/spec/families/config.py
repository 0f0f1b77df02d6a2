"""Typed, bounded access to one config.json dict: every failure names the field and is collected, so that one
line reports them all (see ConfigReader)."""

from __future__ import annotations

from typing import Any

from moelab import limits
from moelab.errors import MoelabError
from moelab.validation import format_errors, show_value

MISSING = object()  # the default of a required field

# The upper bound of every integer field a reader takes (see moelab.limits for the reasons).
_INT_BOUNDS = {
    "vocab_size": limits.MAX_VOCAB,
    **dict.fromkeys(("hidden_size", "head_dim", "v_head_dim", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
                     "qk_rope_head_dim"), limits.MAX_WIDTH),
    **dict.fromkeys(("intermediate_size", "moe_intermediate_size", "shared_expert_intermediate_size"),
                    limits.MAX_FFN),
    **dict.fromkeys(("num_hidden_layers", "first_k_dense_replace", "moe_layer_freq", "decoder_sparse_step",
                     "mlp_only_layers", "num_nextn_predict_layers"), limits.MAX_LAYERS),
    **dict.fromkeys(("num_attention_heads", "num_key_value_heads"), limits.MAX_HEADS),
    **dict.fromkeys(("num_local_experts", "num_experts", "n_routed_experts", "n_shared_experts",
                     "num_experts_per_tok", "n_group", "topk_group"), limits.MAX_EXPERTS),
    **dict.fromkeys(("max_position_embeddings", "sliding_window", "original_max_position_embeddings"),
                    limits.MAX_POSITIONS),
}
# Numbers that must be finite and in (0, bound].
_NUMBER_BOUNDS = {
    "rope_theta": limits.MAX_ROPE_THETA,
    "rms_norm_eps": limits.MAX_NORM_EPS,
    "routed_scaling_factor": limits.MAX_ROUTER_SCALE,
    "factor": limits.MAX_ROPE_FACTOR,
}


def int_bound(key: str) -> int:
    """The largest value the integer field `key` may take (a field not listed: limits.MAX_POSITIONS)."""
    return _INT_BOUNDS.get(key, limits.MAX_POSITIONS)


def number_bound(key: str) -> float:
    """The largest value the number field `key` may take (a field not listed: limits.MAX_SOFTCAP)."""
    return _NUMBER_BOUNDS.get(key, limits.MAX_SOFTCAP)


class ConfigReader:
    """Typed access to a config dict. Every failure names the field and is collected in `errors`; the
    accessor then returns a harmless placeholder so that reading goes on and finds the other errors."""

    def __init__(self, raw: dict[str, Any], family: str, where: str) -> None:
        self.raw, self.family, self.where = raw, family, where
        self.errors: list[str] = []  # a field's own type or bound
        self.cross_errors: list[str] = []  # fields that disagree: reported only when each field is sound
        self.activation = "silu"  # moelab's name for the config's hidden_act (set by the driver)

    def raise_errors(self) -> None:
        """One MoelabError listing every field error (or, failing those, every cross-field error)."""
        errors = list(dict.fromkeys(self.errors or self.cross_errors))
        if errors:
            raise MoelabError(format_errors(self.where, errors))

    def _value(self, key: str, default: Any) -> Any:
        value = self.raw.get(key, default)
        if value is MISSING:
            self.errors.append(f"missing field '{key}'")
        return value

    def bad(self, message: str, placeholder: Any) -> Any:
        self.errors.append(message)
        return placeholder

    def int(self, key: str, default: Any = MISSING, optional: bool = False) -> int | None:
        value = self._value(key, default)
        if value is None and optional:
            return None
        placeholder = default if isinstance(default, int) and 0 < default <= int_bound(key) else 1
        if value is MISSING:
            return placeholder
        return self.check_int(key, value, placeholder)

    def check_int(self, key: str, value: Any, placeholder: int = 1, label: str | None = None) -> int:
        """`value` as the integer field `key` (bounded by _INT_BOUNDS), or `placeholder` after an error."""
        label = label or key
        if isinstance(value, bool) or not isinstance(value, int):
            return self.bad(f"field '{label}' must be an integer, got {show_value(value)}", placeholder)
        if value < 0:
            return self.bad(f"field '{label}' must not be negative, got {show_value(value)}", placeholder)
        if value > int_bound(key):
            return self.bad(f"field '{label}' must be at most {int_bound(key)}, got {show_value(value)}",
                             placeholder)
        return value

    def count(self, key: str, default: int) -> int:
        """An integer field of at least 1 that transformers defaults when absent or null (to `default`):
        0 is an error, never read as "absent" (num_key_value_heads: 0 is not full multi-head attention)."""
        value = self.int(key, default, optional=True)
        if value is None:
            return default
        if value < 1:
            return self.bad(f"field '{key}' must be at least 1, got {show_value(value)}", max(default, 1))
        return value

    def float(self, key: str, default: Any = MISSING) -> float:
        value = self._value(key, default)
        if value is MISSING:
            return 1.0
        return self.check_number(key, value)

    def optional_float(self, key: str) -> float | None:
        """A number field that transformers reads as "off" when absent or null (a soft cap, a clip)."""
        value = self.raw.get(key)
        return None if value is None else self.check_number(key, value)

    def check_number(self, key: str, value: Any, label: str | None = None) -> float:
        """`value` as a finite number in (0, number_bound(key)], or 1.0 after an error."""
        problem = limits.number_problem(value, 0, number_bound(key), low_open=True)
        if problem:
            return self.bad(f"field '{label or key}' {problem}", 1.0)
        return float(value)

    def bool(self, key: str, default: Any = MISSING) -> bool:
        value = self._value(key, default)
        if value is MISSING:
            return False
        if not isinstance(value, bool):
            return self.bad(f"field '{key}' must be true or false, got {show_value(value)}", False)
        return value

    def flag(self, key: str, default: bool) -> bool:
        """A switch transformers reads by truth value: absent -> default, null -> false, else true or false."""
        value = self.raw.get(key, default)
        if value is None:
            return False
        if not isinstance(value, bool):
            return self.bad(f"field '{key}' must be true or false, got {show_value(value)}", default)
        return value

    def choice(self, key: str, default: str, allowed: tuple[str, ...]) -> str:
        """A string switch with the values moelab models; any other is refused by name."""
        value = self.raw.get(key, default)
        if value not in allowed or not isinstance(value, str):
            return self.bad(f"field '{key}' {show_value(value)} is not modelled by moelab (known: "
                             f"{', '.join(allowed)})", default)
        return value

    def int_list(self, key: str) -> list[int]:
        value = self._value(key, [])
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return self.bad(f"field '{key}' must be a list of integers", [])
        if any(v < 0 or v > int_bound(key) for v in value):
            return self.bad(f"field '{key}' must list integers in 0..{int_bound(key)}", [])
        return value
