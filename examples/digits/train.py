"""Train a linear classifier on scikit-learn's bundled digits, reporting validation loss per epoch.

Runs by hand (`python train.py --lr 0.01`) and under metaopt, which passes the same options and
reads the `metaopt.report` lines. Resumed by metaopt (thawed), it goes on from its checkpoint.
"""

from __future__ import annotations

import argparse
import pickle
import warnings
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import log_loss
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import metaopt


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--alpha", type=float, default=1e-4)
    parser.add_argument("--penalty", default="l2", choices=["l2", "l1", "elasticnet"])
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()

    X, y = load_digits(return_X_y=True)
    X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.3, random_state=0)
    scaler = StandardScaler().fit(X_train)
    X_train, X_val = scaler.transform(X_train), scaler.transform(X_val)
    classes = np.unique(y)

    model = SGDClassifier(
        loss="log_loss",
        learning_rate="constant",
        eta0=args.lr,
        alpha=args.alpha,
        penalty=args.penalty,
        random_state=0,
    )
    start = 0
    state_file = Path(metaopt.checkpoint_dir()) / "model.pkl"
    # Only a resumed trial loads it: run by hand (or as a fresh trial), whatever an earlier
    # run left there belongs to other hyperparameters.
    if metaopt.resume_step() is not None and state_file.exists():
        model, start = pickle.loads(state_file.read_bytes())

    rng = np.random.default_rng(0)
    for epoch in range(start + 1, args.epochs + 1):
        order = rng.permutation(len(X_train))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.partial_fit(X_train[order], y_train[order], classes=classes)
        proba = np.clip(model.predict_proba(X_val), 1e-12, 1.0)
        loss = float(log_loss(y_val, proba, labels=classes))
        accuracy = float((model.predict(X_val) == y_val).mean())
        state_file.write_bytes(pickle.dumps((model, epoch)))
        metaopt.report(loss=min(loss, 1e6), accuracy=accuracy, step=epoch)
        if metaopt.should_stop():
            return


if __name__ == "__main__":
    main()
