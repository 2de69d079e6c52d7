"""The report's figures, drawn with matplotlib's Agg backend into PNG files.

Each function draws one figure from plain data (no model, no TensorFlow) and
writes it to the given path; the report page places them. Figures stay small
(100 dpi) so a report of 10,000 test examples is written in a few seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

DPI = 100
MAX_CURVES = 10  # ROC/PR curves and bars beyond this many classes: the most frequent ones


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "figure.autolayout": True,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "font.size": 9,
        }
    )
    return plt


def _save(fig, path: Path | Any) -> Path:
    """Writes the figure as PNG to `path` (or a binary file object) and closes it."""
    if isinstance(path, Path):
        path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    _pyplot().close(fig)
    return path


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Moving average over `window` values (shorter at the start)."""
    values = np.asarray(values, dtype=np.float64)
    if window <= 1 or len(values) < 2:
        return values
    sums = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    return (sums[idx] - sums[lo]) / (idx - lo)


def training_curves(
    history: list[dict],
    steps: list[dict],
    monitor: str,
    best_epoch: int | None,
    path: Path,
    trained_on: str = "train loss",
) -> Path:
    """Loss per step (smoothed) and per epoch (named `trained_on`), validation loss, and the
    monitored metric per epoch."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    if steps:
        x = np.array([s["step"] for s in steps], dtype=np.float64)
        per_epoch = max(int(max(s["step"] for s in steps if s["epoch"] == 1) or 1), 1)
        loss = np.array([s["loss"] for s in steps])
        left.plot(x / per_epoch, loss, color="#c8d6e5", lw=0.6, label=f"{trained_on} per step")
        window = max(5, len(loss) // 25)
        left.plot(
            x / per_epoch,
            smooth(loss, window),
            color="#1f77b4",
            lw=1.5,
            label=f"{trained_on}, mean of {window} steps",
        )
    epochs = [e["epoch"] for e in history]
    if history and "loss" in history[0]:
        losses = [e["loss"] for e in history]
        left.plot(epochs, losses, "o", color="#1f77b4", label=f"{trained_on} per epoch")
    if history and "val_loss" in history[0]:
        left.plot(
            epochs,
            [e.get("val_loss") for e in history],
            "o-",
            color="#d62728",
            label="validation loss",
        )
    left.set(xlabel="epoch", ylabel="loss", title="Loss")
    left.legend(fontsize=7)
    values = [e.get(monitor) for e in history]
    if any(v is not None for v in values):
        right.plot(epochs, values, "o-", color="#2ca02c")
        if best_epoch:
            right.axvline(best_epoch, color="#999", ls="--", lw=1)
            right.annotate(
                f"best: epoch {best_epoch}",
                (best_epoch, values[best_epoch - 1]),
                textcoords="offset points",
                xytext=(6, -12),
                fontsize=8,
            )
    right.set(xlabel="epoch", ylabel=monitor, title=f"{monitor} per epoch")
    if epochs:
        for axis in (left, right):
            axis.set_xticks(epochs)
    return _save(fig, path)


def learning_rates(steps: list[dict], path: Path) -> Path | None:
    """The learning rate of every layer group over the steps (layer-wise decay, warmup, unfreezing)."""
    sampled = [s for s in steps if "lr" in s]
    if not sampled:
        return None
    plt = _pyplot()
    groups = list(sampled[0]["lr"])
    # Bottom to top: embeddings, (encoder) layers, decoder layers, head.
    order = sorted(
        groups,
        key=lambda g: (
            g != "embeddings",
            g == "head",
            g.startswith("decoder_"),
            _layer_number(g),
            g,
        ),
    )
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(order)))
    fig, axis = plt.subplots(figsize=(10, 3.4))
    x = [s["step"] for s in sampled]
    for group, color in zip(order, colors, strict=True):
        axis.plot(x, [s["lr"].get(group, 0.0) for s in sampled], color=color, lw=1.4, label=group)
    axis.set(xlabel="training step", ylabel="learning rate", title="Learning rate per layer group")
    axis.legend(fontsize=7, ncol=max(1, len(order) // 8), loc="upper right")
    return _save(fig, path)


def _layer_number(group: str) -> int:
    tail = group.rpartition("_")[2]
    return int(tail) if tail.isdigit() else -1


def confusion(matrix: np.ndarray, names: list[str], path: Path) -> Path:
    """Confusion matrix: counts and row-normalised (recall on the diagonal)."""
    plt = _pyplot()
    matrix = np.asarray(matrix)
    n = len(names)
    size = min(4 + 0.35 * n, 14)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size, size * 0.85))
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = matrix / np.maximum(rows, 1)
    annotate = n <= 25
    for axis, values, title, fmt in (
        (axes[0], matrix, "Counts", "d"),
        (axes[1], normalised, "Share of each true class", ".2f"),
    ):
        axis.imshow(values, cmap="Blues", vmin=0, vmax=values.max() or 1)
        axis.grid(False)
        axis.set(title=title, xlabel="predicted", ylabel="true", xticks=range(n), yticks=range(n))
        axis.set_xticklabels(names, rotation=45 if n > 3 else 0, ha="right" if n > 3 else "center")
        axis.set_yticklabels(names)
        if annotate:
            top = values.max() or 1
            for i in range(n):
                for j in range(n):
                    axis.text(
                        j,
                        i,
                        format(values[i, j], fmt),
                        ha="center",
                        va="center",
                        color="white" if values[i, j] > 0.6 * top else "black",
                        fontsize=8,
                    )
    return _save(fig, path)


def per_class_bars(scores: dict[str, dict], path: Path, title: str) -> Path:
    """Precision, recall and F1 (those present) per class, label or entity type."""
    plt = _pyplot()
    names = list(scores)
    kinds = [k for k in ("precision", "recall", "f1") if any(k in s for s in scores.values())]
    fig, axis = plt.subplots(figsize=(max(6, 0.6 * len(names) * len(kinds) / 2 + 2), 3.4))
    width = 0.8 / len(kinds)
    x = np.arange(len(names))
    for i, kind in enumerate(kinds):
        axis.bar(
            x + (i - (len(kinds) - 1) / 2) * width,
            [scores[n].get(kind, 0.0) for n in names],
            width,
            label=kind,
        )
    axis.set_xticks(x)
    axis.set_xticklabels(
        [f"{n}\n({scores[n].get('support', 0)})" for n in names],
        rotation=45 if len(names) > 8 else 0,
    )
    axis.set(ylim=(0, 1.18), ylabel="score", title=f"{title} (support in brackets)")
    axis.set_yticks(np.linspace(0, 1, 6))
    axis.legend(fontsize=7, ncol=len(kinds), loc="upper center")
    return _save(fig, path)


def roc_pr(scores: np.ndarray, truth: np.ndarray, names: list[str], path: Path) -> Path | None:
    """ROC and precision-recall curves, one per column (class or label) with both outcomes."""
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

    usable = [j for j in range(truth.shape[1]) if 0 < truth[:, j].sum() < len(truth)]
    if not usable:
        return None
    usable = sorted(usable, key=lambda j: -truth[:, j].sum())[:MAX_CURVES]
    plt = _pyplot()
    fig, (roc_axis, pr_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for j in usable:
        fpr, tpr, _ = roc_curve(truth[:, j], scores[:, j])
        precision, recall, _ = precision_recall_curve(truth[:, j], scores[:, j])
        ap = average_precision_score(truth[:, j], scores[:, j])
        roc_axis.plot(fpr, tpr, lw=1.3, label=f"{names[j]} (AUC {auc(fpr, tpr):.3f})")
        pr_axis.plot(recall, precision, lw=1.3, label=f"{names[j]} (AP {ap:.3f})")
    roc_axis.plot([0, 1], [0, 1], color="#999", ls="--", lw=1)
    roc_axis.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    pr_axis.set(xlabel="recall", ylabel="precision", title="Precision-recall", ylim=(0, 1.02))
    for axis in (roc_axis, pr_axis):
        axis.legend(fontsize=7, loc="lower right" if axis is roc_axis else "lower left")
    return _save(fig, path)


def reliability_diagram(bins: dict, ece: float, path: Path) -> Path:
    """Accuracy against confidence per bin, with the diagonal of perfect calibration."""
    plt = _pyplot()
    edges = np.asarray(bins["edges"])
    count = np.asarray(bins["count"])
    centres = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    fig, (axis, hist) = plt.subplots(
        2, 1, figsize=(5, 5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    present = count > 0
    axis.bar(
        centres[present],
        np.asarray(bins["accuracy"])[present],
        width * 0.9,
        color="#1f77b4",
        label="accuracy",
    )
    # The gap to each bin's mean confidence as a red line and a tick: a bar drawn from the
    # accuracy down to a lower confidence would hide in the accuracy bar.
    accuracy = np.asarray(bins["accuracy"])[present]
    confidence = np.asarray(bins["confidence"])[present]
    axis.vlines(centres[present], accuracy, confidence, color="#d62728", lw=2, label="gap")
    axis.scatter(
        centres[present], confidence, marker="_", s=120, color="black", label="mean confidence"
    )
    axis.plot([0, 1], [0, 1], color="#444", ls="--", lw=1)
    axis.set(ylabel="accuracy", title=f"Reliability (ECE {ece:.4f})", xlim=(0, 1), ylim=(0, 1))
    axis.legend(fontsize=7, loc="upper left")
    hist.bar(centres, count, width * 0.9, color="#7f7f7f")
    hist.set(xlabel="confidence", ylabel="examples")
    return _save(fig, path)


def regression_scatter(pred: np.ndarray, true: np.ndarray, path: Path) -> Path:
    """Predicted against true scores, and the distribution of the errors."""
    plt = _pyplot()
    fig, (axis, errors) = plt.subplots(1, 2, figsize=(10, 4))
    axis.scatter(true, pred, s=6, alpha=0.4, edgecolors="none")
    lo, hi = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
    axis.plot([lo, hi], [lo, hi], color="#d62728", lw=1, ls="--", label="predicted = true")
    axis.set(xlabel="true", ylabel="predicted", title="Predicted against true")
    axis.legend(fontsize=7)
    errors.hist(pred - true, bins=40, color="#7f7f7f")
    errors.set(xlabel="predicted - true", ylabel="examples", title="Errors")
    return _save(fig, path)


def distributions(data: dict[str, dict], path: Path) -> Path | None:
    """Each split's class distribution (as shares) or target histogram."""
    splits = [s for s in ("train", "validation", "test") if s in data]
    if not splits:
        return None
    plt = _pyplot()
    if "histogram" in data[splits[0]]:
        fig, axis = plt.subplots(figsize=(8, 3.2))
        for split in splits:
            h = data[split]["histogram"]
            counts = np.asarray(h["counts"], dtype=np.float64)
            edges = np.asarray(h["edges"])
            axis.stairs(
                counts / max(counts.sum(), 1), edges, label=f"{split} ({int(counts.sum())})"
            )
        axis.set(xlabel="target", ylabel="share", title="Target distribution per split")
        axis.legend(fontsize=7)
        return _save(fig, path)
    names = list(data[splits[0]]["counts"])
    fig, axis = plt.subplots(figsize=(max(6, 0.5 * len(names) * len(splits) / 2 + 2), 3.2))
    width = 0.8 / len(splits)
    x = np.arange(len(names))
    for i, split in enumerate(splits):
        counts = np.array([data[split]["counts"][n] for n in names], dtype=np.float64)
        axis.bar(
            x + (i - (len(splits) - 1) / 2) * width,
            counts / max(counts.sum(), 1),
            width,
            label=f"{split} ({int(counts.sum())})",
        )
    axis.set_xticks(x)
    axis.set_xticklabels(names, rotation=45 if len(names) > 8 else 0)
    top = axis.get_ylim()[1]
    axis.set(ylabel="share", title="Class distribution per split", ylim=(0, top * 1.2))
    axis.legend(fontsize=7, ncol=len(splits), loc="upper center")
    return _save(fig, path)


def slice_bars(
    column: str, per_value: dict[str, dict], metric: str, gap: dict | None, path: Path
) -> Path | None:
    """The headline metric for each value of one slice column, the extremes of the gap marked."""
    values = [v for v in per_value if metric in per_value[v]]
    if not values:
        return None
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(max(5, 0.6 * len(values) + 2), 3.2))
    heights = [per_value[v][metric] for v in values]
    colors = [
        "#d62728"
        if gap and v == gap["lowest"]
        else "#2ca02c"
        if gap and v == gap["highest"]
        else "#1f77b4"
        for v in values
    ]
    axis.bar(range(len(values)), heights, color=colors)
    axis.set_xticks(range(len(values)))
    axis.set_xticklabels(
        [f"{v}\n({per_value[v].get('examples', 0)})" for v in values],
        rotation=45 if len(values) > 6 else 0,
    )
    title = f"{metric} by {column}"
    if gap:
        title += f": largest gap {gap['gap']:.3f}"
    axis.set(ylabel=metric, title=title, ylim=(0, max(1.0, max(heights) * 1.05)))
    return _save(fig, path)


def overlaid_curves(runs: dict[str, list[dict]], keys: list[str], path: Path) -> Path | None:
    """Per-epoch curves of several runs on shared axes, one panel per key."""
    keys = [k for k in keys if any(k in e for history in runs.values() for e in history)]
    if not keys:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.6), squeeze=False)
    for axis, key in zip(axes[0], keys, strict=True):
        for label, history in runs.items():
            points = [(e["epoch"], e[key]) for e in history if key in e]
            if points:
                axis.plot(*zip(*points, strict=True), "o-", lw=1.3, label=label)
        axis.set(xlabel="epoch", ylabel=key, title=key)
        axis.legend(fontsize=7)
    return _save(fig, path)


def parameter_scatter(
    rows: list[dict[str, Any]], params: list[str], objective: str, path: Path
) -> Path | None:
    """The objective against each searched parameter, one panel each (log axes for wide ranges).

    Args:
        rows: the trials, best first (the best is circled).
    """
    if not rows or not params:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(params), figsize=(4 * len(params), 3.4), squeeze=False)
    y = [float(r[objective]) for r in rows]
    for axis, param in zip(axes[0], params, strict=True):
        raw = [r[param] for r in rows]
        try:
            x = [float(v) for v in raw]
        except (TypeError, ValueError):
            labels = sorted({str(v) for v in raw})
            x = [labels.index(str(v)) for v in raw]
            axis.set_xticks(range(len(labels)))
            axis.set_xticklabels(labels)
        else:
            if min(x) > 0 and max(x) / min(x) > 50:
                axis.set_xscale("log")
        axis.scatter(x, y, s=28, color="#1f77b4")
        axis.scatter([x[0]], [y[0]], s=80, facecolors="none", edgecolors="#d62728")  # the best
        axis.set(xlabel=param, ylabel=objective)
    return _save(fig, path)


def pareto_front(
    trials: list[dict[str, Any]], objective: str, second: str, direction: str, path: Path
) -> Path | None:
    """The objective against the second objective (always minimised), Pareto-optimal trials
    joined up and labelled by trial id.

    Args:
        trials: search.json's trials (`state`, `objective`, `second`, `pareto`, `trial_id`).
    """
    done = [t for t in trials if t["state"] == "complete" and t.get("second") is not None]
    if not done:
        return None
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(6, 4))
    axis.scatter([t["second"] for t in done], [t["objective"] for t in done], s=28, color="#9aa5b1")
    front = sorted((t for t in done if t.get("pareto")), key=lambda t: t["second"])
    if front:
        xs, ys = [t["second"] for t in front], [t["objective"] for t in front]
        axis.plot(xs, ys, "o-", color="#d62728", lw=1.4, label="Pareto front")
        for t in front:
            axis.annotate(
                t["trial_id"],
                (t["second"], t["objective"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
            )
        axis.legend(fontsize=8)
    better = "higher" if direction == "max" else "lower"
    axis.set(xlabel=f"{second} (lower is better)", ylabel=f"{objective} ({better} is better)")
    return _save(fig, path)
