"""The seed texts the claims quote (../shared/seeds beside the repository, or $MOELAB_SEEDS), whitespace-normalised."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from moelab.claims.registry import SEEDS

SEEDS_DIR = Path(os.environ.get("MOELAB_SEEDS", Path(__file__).resolve().parents[3] / "shared" / "seeds"))


def normalise(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="session")
def seed_texts() -> dict[str, str]:
    missing = [name for name in SEEDS.values() if not (SEEDS_DIR / name).is_file()]
    if missing:
        pytest.skip(f"seed files not found in {SEEDS_DIR} (set MOELAB_SEEDS): {', '.join(missing)}")
    return {seed: normalise((SEEDS_DIR / name).read_text(encoding="utf-8")) for seed, name in SEEDS.items()}
