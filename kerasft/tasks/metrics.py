"""Metrics people quote, computed with scikit-learn and SciPy on whole splits.

Classification and multi-label scores include ranking and calibration measures:
ROC AUC and PR AUC (average precision), weighted F1, the expected calibration
error (ECE: 15 equal-width confidence bins, the gap between confidence and
accuracy weighted by the bin's share) and the Brier score (mean squared error of
the probabilities: of the positive class when there are two classes, summed over
classes otherwise, per label for multi-label). AUCs skip classes that a split
does not contain both ways; when none is left the key is absent.
"""

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
    hot = np.eye(len(names))[labels]
    binary = len(names) == 2
    return {
        "examples": int(len(labels)),
        "loss": float(-np.log(picked).mean()),
        "accuracy": float(accuracy_score(labels, pred)),
        "macro_f1": float(f1_score(labels, pred, labels=ids, average="macro", zero_division=0)),
        "weighted_f1": float(
            f1_score(labels, pred, labels=ids, average="weighted", zero_division=0)
        ),
        **_ranking(probs[:, 1:] if binary else probs, hot[:, 1:] if binary else hot),
        "ece": expected_calibration_error(probs.max(axis=-1), pred == labels),
        "brier": float(
            np.mean((probs[:, 1] - labels) ** 2)
            if binary
            else np.mean(np.sum((probs - hot) ** 2, axis=-1))
        ),
        "per_class": {
            name: {
                "precision": float(p),
                "recall": float(r),
                "f1": float(f),
                "support": int(s),
                **rank,
            }
            for name, p, r, f, s, rank in zip(
                names, precision, recall, f1, support, _per_column_ranking(probs, hot), strict=True
            )
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
    ranking = _ranking(probs, truth)
    per_label_ranking = _per_column_ranking(probs, truth)
    return {
        "examples": int(len(hot)),
        "loss": float(loss),
        "micro_f1": float(f1_score(truth, pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(truth, pred, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(truth, pred, average="weighted", zero_division=0)),
        "subset_accuracy": float((pred == truth).all(axis=1).mean()),
        **ranking,
        # Every label's probability is a binary forecast of that label.
        "ece": expected_calibration_error(
            np.maximum(probs, 1 - probs).ravel(), ((probs >= 0.5) == truth).ravel()
        ),
        "brier": float(np.mean((probs - truth) ** 2)),
        "per_label": {
            name: {"f1": float(f), "threshold": float(t), "support": int(s), **rank}
            for name, f, t, s, rank in zip(
                names, per_label, thresholds, truth.sum(axis=0), per_label_ranking, strict=True
            )
        },
    }


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int = 15
) -> float:
    """ECE: `sum_b (n_b / n) * |accuracy_b - mean confidence_b|` over equal-width confidence bins."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if len(confidence) == 0:
        return 0.0
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    gap = np.abs(
        np.bincount(which, weights=correct, minlength=bins)
        - np.bincount(which, weights=confidence, minlength=bins)
    )
    return float(gap.sum() / len(confidence)) if count.sum() else 0.0


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> dict:
    """Per confidence bin: its range, examples, mean confidence and accuracy (the reliability diagram)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    safe = np.maximum(count, 1)
    return {
        "edges": np.linspace(0, 1, bins + 1).tolist(),
        "count": count.tolist(),
        "confidence": (np.bincount(which, weights=confidence, minlength=bins) / safe).tolist(),
        "accuracy": (
            np.bincount(which, weights=np.asarray(correct, float), minlength=bins) / safe
        ).tolist(),
    }


def _per_column_ranking(scores: np.ndarray, truth: np.ndarray) -> list[dict]:
    """ROC AUC and PR AUC of each column, where the column has both outcomes."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    out = []
    for j in range(truth.shape[1]):
        column = truth[:, j]
        if 0 < column.sum() < len(column):
            out.append(
                {
                    "roc_auc": float(roc_auc_score(column, scores[:, j])),
                    "pr_auc": float(average_precision_score(column, scores[:, j])),
                }
            )
        else:
            out.append({})
    return out


def _ranking(scores: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Macro (one-vs-rest) ROC AUC and PR AUC over the columns that have both outcomes."""
    per_column = [r for r in _per_column_ranking(scores, truth) if r]
    if not per_column:
        return {}
    return {
        "roc_auc": float(np.mean([r["roc_auc"] for r in per_column])),
        "pr_auc": float(np.mean([r["pr_auc"] for r in per_column])),
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
