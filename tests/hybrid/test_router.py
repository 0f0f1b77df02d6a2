"""The router's logistic regression against torch's L-BFGS on the same penalised objective (float64), its
optimality (zero gradient), the constant fallback, the clip that makes the route extremes exact, and features."""

import numpy as np
import pytest
import torch

from moelab.errors import MoelabError
from moelab.hybrid import features, router


def _data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)) * [1.0, 5.0, 0.1] + [0.0, 10.0, 1.0]
    z = 0.8 * (x[:, 0]) - 0.3 * (x[:, 1] - 10) / 5 + 0.2
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    return x, y


def _lbfgs(x, y, l2):
    """The same objective minimised by torch's L-BFGS: -loglik + l2/2 |w|^2 on standardised features."""
    mean, scale = x.mean(0), x.std(0)
    a = torch.tensor((x - mean) / scale)
    t = torch.tensor(y)
    w = torch.zeros(a.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-15,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        z = a @ w + b
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, t, reduction="sum") + l2 / 2 * (w @ w)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), float(b.detach())


def test_fit_matches_lbfgs_and_is_optimal():
    x, y = _data()
    names = ("a", "b", "c")
    clf = router.fit(x, y, names)
    w, b = _lbfgs(x, y, router.L2)
    assert clf.weights == pytest.approx(w, abs=1e-6)
    assert clf.intercept == pytest.approx(b, abs=1e-6)
    assert np.abs(router.gradient(clf, x, y)).max() < 1e-8
    assert not clf.constant and (clf.positives, clf.n) == (int(y.sum()), len(y))
    p = clf.probability(x)
    assert p.shape == (len(y),) and np.all((p > 0) & (p < 1))
    assert clf.weights[0] > 0 and clf.weights[1] < 0  # the signs of the model that drew the labels


def test_constant_labels_give_the_constant():
    x, _ = _data(50)
    for y, k in ((np.zeros(50), 0), (np.ones(50), 50)):
        clf = router.fit(x, y, ("a", "b", "c"))
        assert clf.constant
        assert clf.probability(x) == pytest.approx(np.full(50, (k + 0.5) / 51))


def test_probabilities_are_clipped_inside_zero_one():
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = np.array([0.0, 0.0, 1.0, 1.0])  # separable: the unpenalised fit would saturate
    clf = router.fit(x, y, ("a",), l2=1e-9)
    far = clf.probability(np.array([[-1e6], [1e6]]))
    assert far[0] >= router.CLIP and far[1] <= 1 - router.CLIP
    assert np.all(far >= 0.0) and not np.any(far >= 1.0)  # threshold 0: all to the MoE; 1: none


def test_bad_training_data():
    with pytest.raises(MoelabError):
        router.fit(np.zeros((0, 1)), np.zeros(0), ("a",))
    with pytest.raises(MoelabError):
        router.fit(np.zeros((3, 1)), np.array([0, 2, 1]), ("a",))
    with pytest.raises(MoelabError):
        router.fit(np.zeros((3, 2)), np.zeros(3), ("a",))


def test_features_of_a_prompt():
    f = dict(zip(features.NAMES, features.features("math", "Q: (12 + 345) * 6 = ? A:", 11), strict=True))
    assert f == {"domain_facts": 0.0, "domain_math": 1.0, "prompt_chars": 24.0, "prompt_tokens": 11.0,
                 "digits": 6.0, "numbers": 3.0, "longest_number": 3.0, "operators": 5.0}
    g = features.features("facts", "Q: Where was Ana born? A:", 7)
    assert g[:2] == [1.0, 0.0] and g[4:] == [0.0, 0.0, 0.0, 0.0]


def test_cross_fit_never_routes_a_query_by_a_classifier_that_saw_it():
    x, y = _data(60, seed=3)
    extra_x, extra_y = _data(20, seed=4)
    names = ("a", "b", "c")
    fitted = router.cross_fit(x, y, extra_x, extra_y, names, folds=4)
    which = router.fold_of(60, 4)
    assert which[:6] == [0, 1, 2, 3, 0, 1] and len(fitted) == 4
    for f, clf in enumerate(fitted):  # each is the fit on the extra items and the other folds, nothing else
        keep = [i for i in range(60) if which[i] != f]
        ref = router.fit(np.vstack([extra_x, x[keep]]), np.concatenate([extra_y, y[keep]]), names)
        assert clf.n == 20 + len(keep) and clf.weights == pytest.approx(ref.weights)
    changed = y.copy()
    changed[0] = 1 - changed[0]  # a query's own label moves only the classifiers of the other folds
    again = router.cross_fit(x, changed, extra_x, extra_y, names, folds=4)
    assert again[0].weights == pytest.approx(fitted[0].weights)
    assert again[1].weights != pytest.approx(fitted[1].weights)
    empty = router.cross_fit(x, y, np.zeros((0, 3)), np.zeros(0), names, folds=4)  # no extra draw: the folds
    assert empty[0].n == 45
