"""What the router knows about a query before any model answers it: numbers read off the prompt alone.

The features are the prompt's domain (one-hot over the probe domains), its length in characters and in tokens,
and how much arithmetic it holds (digits, numbers, the longest number, operator signs). The probe item's level
is not a feature: it is the answer key's stratum, which a router in front of real traffic would not know.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

DOMAINS = ("facts", "math")
NAMES = ("domain_facts", "domain_math", "prompt_chars", "prompt_tokens", "digits", "numbers", "longest_number",
         "operators")
_NUMBER = re.compile(r"\d+")
_OPERATORS = re.compile(r"[-+*/%=()]")


def features(domain: str, prompt: str, prompt_tokens: int) -> list[float]:
    """One query's features, in the order of NAMES."""
    numbers = _NUMBER.findall(prompt)
    return [float(domain == "facts"), float(domain == "math"), float(len(prompt)), float(prompt_tokens),
            float(sum(c.isdigit() for c in prompt)), float(len(numbers)),
            float(max((len(n) for n in numbers), default=0)), float(len(_OPERATORS.findall(prompt)))]


def matrix(items: Sequence, count_tokens: Callable[[str], int]) -> np.ndarray:
    """(queries, features) float64 for probe items (anything with .domain and .prompt)."""
    rows = [features(it.domain, it.prompt, count_tokens(it.prompt)) for it in items]
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(NAMES))
