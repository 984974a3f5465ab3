"""Learning-curve pools with known ground truth for the freeze-thaw benchmark.

A pool is a fixed set of configurations with their whole noisy curves drawn up front, so every
early-stopping method sees exactly the same reports (common random numbers) and regret is
measured against the pool's true best final value.

The real pool comes from scikit-learn's SGDClassifier trained epoch by epoch (partial_fit) on
the bundled digits data set; regenerate its table with
``python -m simulations._curves --write-sgd`` (fixed seed, about a minute on one core).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["Pool", "load_sgd_pool", "synthetic_pool", "write_sgd_table"]

FloatArray = npt.NDArray[np.float64]

SGD_TABLE = Path(__file__).with_name("freezethaw_sgd_digits.npz")


@dataclass(frozen=True)
class Pool:
    """Configurations X (n, d), observed curves (n, T) (nan after divergence) at steps 1..T,
    and truth (n,): each configuration's noiseless value at step T (inf if it diverges)."""

    name: str
    X: FloatArray
    curves: FloatArray
    truth: FloatArray

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    @property
    def T(self) -> int:
        return int(self.curves.shape[1])


def _asymptote(X: FloatArray) -> FloatArray:
    """A smooth multimodal test function on [0, 1]^4 with values in roughly [0.05, 0.9]."""
    c = np.array([0.3, 0.7, 0.4, 0.6])
    bowl = ((X - c) ** 2 * np.array([1.0, 0.6, 0.8, 0.5])).sum(1)
    ripple = 0.08 * np.sin(6.0 * X[:, 0]) * np.cos(5.0 * X[:, 1])
    out: FloatArray = 0.1 + 0.9 * bowl + ripple + 0.08
    return out


def synthetic_pool(rng: np.random.Generator, n: int = 400, T: int = 100) -> Pool:
    """Curves a(x) + c(x)·shape(t) mixing power laws, exponentials and late sigmoid drops.

    Rates depend on x so curves cross; slow learners (large tau) tend to have good asymptotes;
    a late-bloomer region plateaus then drops; x0 > 0.85 diverges half of the time.
    """
    X = rng.random((n, 4))
    a = _asymptote(X)
    t = np.arange(1, T + 1, dtype=np.float64)[None, :]
    gap = (0.4 + 0.6 * X[:, 2])[:, None]
    # Slow learners tend to end better: tau grows as the asymptote falls, so curves cross.
    rank = np.argsort(np.argsort(a)) / max(n - 1, 1)
    tau = (4.0 + 30.0 * (1.0 - rank) * (0.5 + X[:, 3]))[:, None]
    w = X[:, 1][:, None]
    power = (1.0 + t / tau) ** -1.5
    expo = np.exp(-t / tau)
    shape = w * power + (1.0 - w) * expo
    bloom = (X[:, 3] > 0.65) & (X[:, 0] < 0.5)
    t0 = (15.0 + 35.0 * rng.random(n))[:, None]
    sig = 1.0 / (1.0 + np.exp(-(t - t0) / 4.0))
    shape = np.where(bloom[:, None], (1.0 - sig) * 0.9 + 0.1 * expo, shape)
    clean = a[:, None] + gap * shape
    noise = 0.01 * rng.standard_normal(clean.shape)
    obs = clean + noise
    truth = clean[:, -1].copy()
    div = (X[:, 0] > 0.85) & (rng.random(n) < 0.5)
    for i in np.flatnonzero(div):
        td = int(rng.integers(8, T - 10))
        grow = 0.05 * (np.exp((t[0, td:] - td) / 4.0) - 1.0)
        obs[i, td:] += grow
        obs[i, td:][obs[i, td:] > 5.0] = np.nan
        truth[i] = math.inf
    return Pool("synthetic", X, obs, truth)


def write_sgd_table(path: Path = SGD_TABLE, n: int = 160, epochs: int = 40, seed: int = 0) -> None:
    """Train SGDClassifier configurations on digits epoch by epoch; store validation error."""
    import warnings

    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import SGDClassifier
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    Xd, yd = load_digits(return_X_y=True)
    Xtr, Xva, ytr, yva = train_test_split(Xd, yd, test_size=0.3, random_state=seed, stratify=yd)
    sc = StandardScaler().fit(Xtr)
    Xtr, Xva = sc.transform(Xtr), sc.transform(Xva)
    classes = np.unique(yd)
    U = rng.random((n, 4))
    err = np.full((n, epochs), np.nan)
    for i, u in enumerate(U):
        clf = SGDClassifier(
            loss="log_loss",
            penalty="elasticnet",
            alpha=10 ** (-6 + 5 * u[0]),
            eta0=10 ** (-4 + 4 * u[1]),
            learning_rate="invscaling",
            power_t=0.05 + 0.9 * u[2],
            l1_ratio=u[3],
            random_state=int(rng.integers(2**31)),
        )
        order = np.random.default_rng(i).permutation(Xtr.shape[0])
        batches = np.array_split(order, 8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for e in range(epochs):
                for b in batches:
                    clf.partial_fit(Xtr[b], ytr[b], classes=classes)
                err[i, e] = 1.0 - float(clf.score(Xva, yva))
    np.savez_compressed(path, X=U, curves=err)


def load_sgd_pool(path: Path = SGD_TABLE) -> Pool:
    """The precomputed SGDClassifier-on-digits pool (truth = its own last epoch)."""
    if not path.exists():
        write_sgd_table(path)
    with np.load(path) as z:
        X = np.asarray(z["X"], dtype=np.float64)
        curves = np.asarray(z["curves"], dtype=np.float64)
    return Pool("sgd-digits", X, curves, curves[:, -1].copy())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write-sgd", action="store_true", help="regenerate the SGD table")
    args = ap.parse_args()
    if args.write_sgd:
        write_sgd_table()
        print(f"wrote {SGD_TABLE}")


if __name__ == "__main__":
    main()
