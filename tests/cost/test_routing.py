"""Distinct experts per batch (routing.distinct_experts) against Monte-Carlo simulations of the routing itself.

Uniform routing is simulated the way a router works: every token takes the top-k of i.i.d. random logits, which
is a uniformly random k-subset of the E experts. Skewed routing is simulated with systematic PPS sampling, a
design that picks exactly k distinct experts per token with inclusion probability q_i = k * load_i each.
"""

import numpy as np
import pytest

from moelab.cost.routing import distinct_experts, expert_loads
from moelab.errors import MoelabError

CASES = [(8, 2), (64, 6), (128, 8), (256, 8)]
BATCHES = [1, 2, 8, 32, 128]
ELEMENTS_PER_CHUNK = 1 << 22  # random numbers drawn at once (bounds the memory of one simulation chunk)


def _chunks(trials: int, batch: int, n_experts: int):
    per_chunk = max(1, ELEMENTS_PER_CHUNK // (batch * n_experts))
    done = 0
    while done < trials:
        n = min(per_chunk, trials - done)
        yield n
        done += n


def simulate_uniform(n_experts: int, top_k: int, batch: int, trials: int, rng: np.random.Generator) -> np.ndarray:
    """Distinct experts hit by `batch` tokens, each routing to the top-k of i.i.d. logits; one count per trial."""
    counts = []
    for n in _chunks(trials, batch, n_experts):
        logits = rng.random((n, batch, n_experts), dtype=np.float32)
        chosen = np.argpartition(-logits, top_k - 1, axis=-1)[..., :top_k]  # (n, batch, k) expert ids
        hit = np.zeros((n, n_experts), dtype=bool)
        np.put_along_axis(hit, chosen.reshape(n, batch * top_k), True, axis=1)
        counts.append(hit.sum(axis=1))
    return np.concatenate(counts)


def systematic_pps(q: np.ndarray, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Boolean selections of shape shape + (E,): exactly k = sum(q) distinct experts each, P(i chosen) = q_i.

    Experts are put in a random order and laid end to end on [0, k) with lengths q_i (each <= 1); a uniform
    start u in [0, 1) picks the experts whose interval holds one of u, u+1, ..., u+k-1.
    """
    n_experts = q.size
    order = np.argsort(rng.random(shape + (n_experts,)), axis=-1)
    upper = np.cumsum(q[order], axis=-1)
    lower = upper - q[order]
    u = rng.random(shape + (1,))
    # points u + m (m = 0, 1, ...) in [lower, upper): ceil(upper - u) - ceil(lower - u)
    picked_in_order = (np.ceil(upper - u) - np.ceil(lower - u)) > 0
    chosen = np.zeros_like(picked_in_order)
    np.put_along_axis(chosen, order, picked_in_order, axis=-1)
    return chosen


def simulate_skewed(q: np.ndarray, batch: int, trials: int, rng: np.random.Generator) -> np.ndarray:
    counts = []
    for n in _chunks(trials, batch, q.size):
        picks = systematic_pps(q, (n, batch), rng)
        counts.append(picks.any(axis=1).sum(axis=1))
    return np.concatenate(counts)


@pytest.mark.parametrize("n_experts,top_k", CASES)
def test_uniform_matches_monte_carlo(n_experts, top_k):
    rng = np.random.default_rng(1000 + n_experts)
    trials = 256_000 // n_experts  # fewer trials where E is large: the relative spread of the count shrinks
    for batch in BATCHES:
        counts = simulate_uniform(n_experts, top_k, batch, trials, rng)
        mc = counts.mean()
        stderr = counts.std() / np.sqrt(trials)
        model = distinct_experts(n_experts, top_k, batch)
        assert model == pytest.approx(mc, rel=0.015), (n_experts, top_k, batch, mc, model)
        assert abs(model - mc) <= 5 * stderr + 1e-9, (n_experts, top_k, batch, mc, stderr, model)


def test_monte_carlo_detects_a_wrong_formula():
    """The simulation is sharp enough to reject the naive 'min(E, k*B)' and a per-token off-by-one."""
    rng = np.random.default_rng(7)
    mc = simulate_uniform(8, 2, 4, 32_000, rng).mean()
    assert abs(min(8, 2 * 4) - mc) > 0.015 * mc
    assert abs(8 * (1 - (1 - 2 / 8) ** 3) - mc) > 0.015 * mc
    assert distinct_experts(8, 2, 4) == pytest.approx(mc, rel=0.015)


def test_mixtral_design_facts():
    assert distinct_experts(8, 2, 1) == pytest.approx(2.0, abs=1e-12)
    assert distinct_experts(8, 2, 8) == pytest.approx(7.2, abs=0.01)  # 8 * (1 - 0.75**8) = 7.1992
    for batch in (32, 64, 1024):
        assert 7.99 < distinct_experts(8, 2, batch) <= 8.0
    assert distinct_experts(8, 2, 0) == 0.0


def test_systematic_pps_has_the_intended_design():
    """The reference sampler itself: k distinct experts per token, inclusion frequencies q_i."""
    rng = np.random.default_rng(3)
    q = 2 * np.array(expert_loads(8, 2, 1.5))
    picks = systematic_pps(q, (200_000,), rng)
    assert (picks.sum(axis=1) == 2).all()
    np.testing.assert_allclose(picks.mean(axis=0), q, atol=0.005)


@pytest.mark.parametrize("n_experts,top_k", [(8, 2), (64, 6), (128, 8)])
@pytest.mark.parametrize("skew", [0.5, 1.0, 2.0])
def test_skewed_matches_monte_carlo(n_experts, top_k, skew):
    rng = np.random.default_rng(int(skew * 10) + n_experts)
    q = top_k * np.array(expert_loads(n_experts, top_k, skew))
    trials = 40_000 // n_experts
    for batch in (1, 2, 8, 32, 128):
        mc = simulate_skewed(q, batch, trials, rng).mean()
        model = distinct_experts(n_experts, top_k, batch, skew)
        assert model == pytest.approx(mc, rel=0.02), (n_experts, top_k, skew, batch, mc, model)


@pytest.mark.parametrize("n_experts,top_k", CASES)
@pytest.mark.parametrize("skew", [0.0, 0.3, 1.0, 2.0, 5.0])
def test_loads_are_a_capped_non_increasing_distribution(n_experts, top_k, skew):
    loads = expert_loads(n_experts, top_k, skew)
    assert len(loads) == n_experts
    assert sum(loads) == pytest.approx(1.0, abs=1e-12)
    assert all(a >= b - 1e-15 for a, b in zip(loads, loads[1:], strict=False))
    assert max(loads) <= 1 / top_k + 1e-12
    assert min(loads) > 0


def test_zero_skew_is_uniform():
    assert expert_loads(64, 6, 0.0) == pytest.approx([1 / 64] * 64, abs=1e-15)
    for batch in (1, 3, 17):
        uniform = 64 * (1 - (1 - 6 / 64) ** batch)
        assert distinct_experts(64, 6, batch, 0.0) == pytest.approx(uniform, rel=1e-12)
        # the skewed code path with a vanishing skew agrees with the uniform closed form
        assert distinct_experts(64, 6, batch, 1e-12) == pytest.approx(uniform, rel=1e-9)


def test_loads_by_hand():
    # uncapped Zipf: E=4, k=1, s=1 -> weights 1, 1/2, 1/3, 1/4 (sum 25/12)
    assert expert_loads(4, 1, 1.0) == pytest.approx([12 / 25, 6 / 25, 4 / 25, 3 / 25], abs=1e-15)
    # capped: E=4, k=2, s=2 -> expert 0 would take 1/1.423... > 1/2, so it gets 1/2 and the other 1/2 is
    # shared by 1/4 : 1/9 : 1/16
    rest = 1 / 4 + 1 / 9 + 1 / 16
    expected = [0.5, 0.5 * (1 / 4) / rest, 0.5 * (1 / 9) / rest, 0.5 * (1 / 16) / rest]
    assert expert_loads(4, 2, 2.0) == pytest.approx(expected, abs=1e-15)
    # top_k = E: every expert is picked by every token, whatever the skew
    assert expert_loads(4, 4, 3.0) == pytest.approx([0.25] * 4, abs=1e-15)


def test_skew_reduces_distinct_experts():
    for batch in (2, 8, 32):
        values = [distinct_experts(64, 6, batch, s) for s in (0.0, 0.5, 1.0, 2.0)]
        assert all(a > b for a, b in zip(values, values[1:], strict=False)), values
    # one token always touches exactly k experts, skewed or not
    assert distinct_experts(64, 6, 1, 2.0) == pytest.approx(6.0, abs=1e-12)


def test_invalid_arguments():
    with pytest.raises(MoelabError):
        expert_loads(8, 9, 0.0)
    with pytest.raises(MoelabError):
        expert_loads(8, 0, 0.0)
    with pytest.raises(MoelabError):
        expert_loads(8, 2, -0.5)
    with pytest.raises(MoelabError):
        distinct_experts(8, 2, -1)


def test_uniform_path_rejects_top_k_above_expert_count():
    with pytest.raises(MoelabError):
        distinct_experts(8, 9, 3)
    with pytest.raises(MoelabError):
        distinct_experts(8, 0, 3)
