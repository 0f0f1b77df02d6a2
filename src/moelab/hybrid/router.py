"""The router's classifier: logistic regression on the prompt's features, P(the MoE is needed | prompt).

Fitted by Newton's method (iteratively reweighted least squares) with an L2 penalty on the weights (not the
intercept), on standardised features, in float64 numpy: the objective is convex, so the fit is deterministic and
reaches the penalised maximum likelihood to rounding (tests/hybrid/test_router.py checks the gradient there).
The label of a training query is 1 when the MoE answers it correctly and the dense model does not: what routing
it to the MoE would buy. No query's probability comes from a classifier that saw it (`cross_fit`): the scored
queries are split into FOLDS folds, and each fold is routed by a classifier fitted on another probe draw's items
(another seed, any prompt that is also scored dropped) and the scored queries of the other folds. Another draw
alone is not enough: the knowledge pool (held-out facts) and reasoning level 1 (100 sums) are small, so another
seed draws the scored items again, and a router fitted on the rest would never see a knowledge query.
Probabilities are clipped into [CLIP, 1 - CLIP], so that a route threshold of 0 sends every query to the MoE and
a threshold of 1 none. Training queries all of one label (no
query needed the MoE, or every one did) leave nothing to separate: the classifier is then the constant
(k + 1/2) / (n + 1) for k positives of n (zero weights), and says so (`constant`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moelab.errors import MoelabError

FOLDS = 5
L2 = 1.0  # penalty on the squared weights (standardised features), in units of the log-likelihood
ITERATIONS = 50
CLIP = 1e-6


@dataclass(frozen=True)
class Classifier:
    names: tuple[str, ...]
    mean: np.ndarray  # (features,) standardisation of the training features
    scale: np.ndarray  # (features,) their standard deviation (1 where a feature is constant)
    weights: np.ndarray  # (features,) on standardised features
    intercept: float
    positives: int  # training queries labelled "MoE needed"
    n: int  # training queries
    constant: bool = False  # every training label alike: P is the constant (k + 1/2) / (n + 1)

    def probability(self, x_NF: np.ndarray) -> np.ndarray:
        """P(MoE needed) of each row of x_NF, clipped into [CLIP, 1 - CLIP]."""
        z = ((np.asarray(x_NF, dtype=np.float64) - self.mean) / self.scale) @ self.weights + self.intercept
        return np.clip(_sigmoid(z), CLIP, 1.0 - CLIP)

    def to_dict(self) -> dict:
        return {"kind": "logistic regression (Newton/IRLS, L2 on standardised features)", "l2": L2,
                "features": list(self.names), "weights": self.weights.tolist(), "intercept": self.intercept,
                "mean": self.mean.tolist(), "scale": self.scale.tolist(), "positives": self.positives,
                "n": self.n, "constant": self.constant}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1 / (1 + e^-z), without overflow


def fit(x_NF: np.ndarray, y_N: np.ndarray, names: tuple[str, ...], l2: float = L2,
        iterations: int = ITERATIONS) -> Classifier:
    """The penalised logistic regression of labels y_N (0/1) on features x_NF."""
    x_NF, y_N = np.asarray(x_NF, dtype=np.float64), np.asarray(y_N, dtype=np.float64)
    if x_NF.ndim != 2 or x_NF.shape[0] != y_N.shape[0] or x_NF.shape[1] != len(names):
        raise MoelabError(f"router: features {x_NF.shape} and labels {y_N.shape} do not match ({len(names)} names)")
    if x_NF.shape[0] == 0:
        raise MoelabError("router: no training queries")
    if not np.all((y_N == 0) | (y_N == 1)):
        raise MoelabError("router: labels must be 0 or 1")
    mean = x_NF.mean(axis=0)
    scale = x_NF.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    k, n = int(y_N.sum()), int(y_N.shape[0])
    if k in (0, n):
        p = (k + 0.5) / (n + 1)
        return Classifier(tuple(names), mean, scale, np.zeros(len(names)), float(np.log(p / (1 - p))), k, n, True)
    a_NK = np.hstack([np.ones((x_NF.shape[0], 1)), (x_NF - mean) / scale])  # intercept first
    penalty = np.full(a_NK.shape[1], l2)
    penalty[0] = 0.0
    beta = np.zeros(a_NK.shape[1])
    for _ in range(iterations):
        p = _sigmoid(a_NK @ beta)
        grad = a_NK.T @ (p - y_N) + penalty * beta
        hess = (a_NK * (p * (1 - p))[:, None]).T @ a_NK + np.diag(penalty) + 1e-9 * np.eye(a_NK.shape[1])
        step = np.linalg.solve(hess, grad)
        beta = beta - step
        if np.max(np.abs(step)) < 1e-10:
            break
    return Classifier(tuple(names), mean, scale, beta[1:].copy(), float(beta[0]), k, n)


def gradient(classifier: Classifier, x_NF: np.ndarray, y_N: np.ndarray, l2: float = L2) -> np.ndarray:
    """The penalised objective's gradient at the fitted weights (intercept first): zero at the optimum."""
    a_NK = np.hstack([np.ones((x_NF.shape[0], 1)), (np.asarray(x_NF, float) - classifier.mean) / classifier.scale])
    beta = np.concatenate([[classifier.intercept], classifier.weights])
    penalty = np.full(beta.shape, l2)
    penalty[0] = 0.0
    return a_NK.T @ (_sigmoid(a_NK @ beta) - np.asarray(y_N, float)) + penalty * beta


def fold_of(n: int, folds: int = FOLDS) -> list[int]:
    """The fold of each of n scored queries: i mod folds (the probe list runs stratum by stratum, so every fold
    holds about 1/folds of each stratum)."""
    return [i % folds for i in range(n)]


def cross_fit(x_scored: np.ndarray, y_scored: np.ndarray, x_extra: np.ndarray, y_extra: np.ndarray,
              names: tuple[str, ...], folds: int = FOLDS) -> list[Classifier]:
    """One classifier per fold f, fitted on the extra queries and the scored queries outside fold f."""
    x_scored, y_scored = np.asarray(x_scored, float), np.asarray(y_scored, float)
    which = np.asarray(fold_of(len(y_scored), folds))
    out = []
    for f in range(folds):
        keep = which != f
        out.append(fit(np.vstack([np.asarray(x_extra, float).reshape(-1, len(names)), x_scored[keep]]),
                       np.concatenate([np.asarray(y_extra, float), y_scored[keep]]), names))
    return out
