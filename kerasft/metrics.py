"""Metrics people quote, computed with scikit-learn and SciPy on whole splits."""

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


def multi_label_metrics(
    probs: np.ndarray, hot: np.ndarray, names: tuple[str, ...], thresholds: np.ndarray | None
) -> dict[str, Any]:
    """Loss, micro/macro-F1, subset accuracy and per-label F1 at the given thresholds (0.5 each)."""
    from sklearn.metrics import f1_score

    thresholds = np.full(len(names), 0.5) if thresholds is None else np.asarray(thresholds)
    pred = (probs >= thresholds).astype(np.int32)
    truth = hot.astype(np.int32)
    eps = 1e-7
    loss = -np.mean(truth * np.log(probs + eps) + (1 - truth) * np.log(1 - probs + eps))
    per_label = f1_score(truth, pred, average=None, zero_division=0)
    return {
        "examples": int(len(hot)),
        "loss": float(loss),
        "micro_f1": float(f1_score(truth, pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(truth, pred, average="macro", zero_division=0)),
        "subset_accuracy": float((pred == truth).all(axis=1).mean()),
        "per_label": {
            name: {"f1": float(f), "threshold": float(t), "support": int(s)}
            for name, f, t, s in zip(names, per_label, thresholds, truth.sum(axis=0), strict=True)
        },
    }


def regression_metrics(
    scores: np.ndarray, target: np.ndarray, scaling: tuple[float, float] | None
) -> dict[str, Any]:
    """MSE (as `loss` too), Pearson and Spearman, on the original scale of the targets."""
    from scipy.stats import pearsonr, spearmanr

    if scaling is not None:
        mean, std = scaling
        scores, target = scores * std + mean, target * std + mean
    constant = np.ptp(scores) == 0 or np.ptp(target) == 0
    return {
        "examples": int(len(target)),
        "loss": float(np.mean((scores - target) ** 2)),
        "mse": float(np.mean((scores - target) ** 2)),
        "pearson": 0.0 if constant else float(pearsonr(scores, target)[0]),
        "spearman": 0.0 if constant else float(spearmanr(scores, target)[0]),
    }
