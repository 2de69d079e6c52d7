"""Metrics people quote, computed with scikit-learn on whole splits."""

from __future__ import annotations

from typing import Any

import numpy as np


def classification_metrics(
    probs: np.ndarray, labels: np.ndarray, names: tuple[str, ...]
) -> dict[str, Any]:
    """Loss, accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix."""
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
    )

    if len(labels) == 0:
        return {"examples": 0}
    ids = list(range(len(names)))
    pred = probs.argmax(axis=-1)
    picked = np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, pred, labels=ids, zero_division=0
    )
    return {
        "examples": int(len(labels)),
        "loss": float(-np.log(picked).mean()),
        "accuracy": float(accuracy_score(labels, pred)),
        "macro_f1": float(f1_score(labels, pred, labels=ids, average="macro", zero_division=0)),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(names, precision, recall, f1, support, strict=True)
        },
        "confusion_matrix": {
            "labels": list(names),
            "matrix": confusion_matrix(labels, pred, labels=ids).tolist(),
        },
    }
