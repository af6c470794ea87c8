"""Classification metrics with scikit-learn, under the `metrics.json` keys docs/design.md fixes."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn import metrics as skm

METRIC_KEYS = (
    "accuracy", "balanced_accuracy", "top5_accuracy", "precision_macro", "recall_macro",
    "f1_macro", "per_class", "confusion_matrix", "classes", "n_samples", "split",
)  # fmt: skip


def compute_metrics(
    y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str], split: str
) -> dict:
    """Every `metrics.json` key from true labels (N,) and class probabilities (N, C).

    The prediction is the arg-max. Macro averages follow scikit-learn's default (the classes seen
    in the truth or the predictions); ``per_class`` and the confusion matrix list every class.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    n, c = len(y_true), len(classes)
    assert probs.shape == (n, c), f"probs must be ({n}, {c}), got {probs.shape}"
    y_pred = probs.argmax(1) if n else y_true
    labels = np.arange(c)
    with warnings.catch_warnings():
        # a class absent from a small split is normal; its scores are 0 by zero_division
        warnings.simplefilter("ignore")
        p, r, f, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, average="macro", zero_division=0
        )
        pc, rc, fc, sc = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=None, zero_division=0
        )
        balanced = skm.balanced_accuracy_score(y_true, y_pred)
    k = min(5, c)
    top5 = (
        1.0 if k >= c
        else skm.top_k_accuracy_score(y_true, probs, k=k, labels=labels)
    )  # fmt: skip
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced),
        "top5_accuracy": float(top5),
        "precision_macro": float(p),
        "recall_macro": float(r),
        "f1_macro": float(f),
        "per_class": {
            name: {
                "precision": float(pc[i]),
                "recall": float(rc[i]),
                "f1": float(fc[i]),
                "support": int(sc[i]),
            }
            for i, name in enumerate(classes)
        },  # fmt: skip
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "classes": list(classes),
        "n_samples": int(n),
        "split": split,
    }
