"""A split's predictions in input order, saved beside the run, and metrics per slice of the data.

`evaluate_best` (kerasft.training.runner) collects each split's outputs in the evaluation
pipeline's length-sorted order; `Predictions.in_input_order` puts them back in
the order of the data file, with the texts and the `evaluation.slices` columns,
so the report (kerasft.report) can list errors and draw curves without the model.

Saved as `predictions/<split>.npz` in the run directory:

    outputs   probabilities [N, C] (classification, multi_label), scores [N] (regression),
              predicted tag ids, flat (token_classification)
    targets   class ids [N], multi-hot [N, C], scores [N], true tag ids, flat
    lengths   labelled words per example (token_classification), else absent
    texts     the texts (words joined by spaces for token classification)
    pairs     the second texts of sentence pairs, if any
    slice:<column>   the values of each slice column, as strings

Regression scores and targets are on the original scale of the data.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from kerasft.tasks.specs import TaskSpec, class_counts, evaluate

MISSING = "(missing)"
MIN_SLICE_EXAMPLES = 10  # smaller slices are scored but left out of the largest gap


@dataclasses.dataclass
class Predictions:
    """One split's model outputs and targets in input order, with its texts and slice columns."""

    outputs: Any  # [N, C] or [N] arrays, or a list of per-example tag-id arrays
    targets: Any
    texts: list[str]
    pairs: list[str] | None = None
    columns: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    @classmethod
    def in_input_order(
        cls,
        outputs: Any,
        targets: Any,
        order: np.ndarray,
        split: Any,
        scaling: tuple[float, float] | None = None,
    ) -> Predictions:
        """Undoes the evaluation pipeline's ordering: row i of `outputs` is example `order[i]`.

        Args:
            split: the `Split` (texts, pairs, slice columns) the outputs belong to.
            scaling: `(mean, std)` of standardised regression targets, undone here.
        """
        inverse = np.empty(len(order), dtype=np.int64)
        inverse[order] = np.arange(len(order))
        if isinstance(outputs, list):
            outputs = [outputs[i] for i in inverse]
            targets = [targets[i] for i in inverse]
        else:
            outputs, targets = np.asarray(outputs)[inverse], np.asarray(targets)[inverse]
            if scaling is not None:
                mean, std = scaling
                outputs, targets = outputs * std + mean, targets * std + mean
        texts = [t if isinstance(t, str) else " ".join(t) for t in split.texts]
        columns = {name: [_as_value(v) for v in values] for name, values in split.columns.items()}
        return cls(outputs, targets, texts, split.pairs, columns)

    def __len__(self) -> int:
        return len(self.texts)

    def save(self, path: Path) -> None:
        """Writes the `.npz` file described in the module docstring."""
        arrays: dict[str, np.ndarray] = {"texts": np.array(self.texts, dtype=str)}
        if isinstance(self.outputs, list):
            arrays["lengths"] = np.array([len(o) for o in self.outputs], dtype=np.int64)
            arrays["outputs"] = _flat(self.outputs)
            arrays["targets"] = _flat(self.targets)
        else:
            arrays["outputs"], arrays["targets"] = self.outputs, self.targets
        if self.pairs is not None:
            arrays["pairs"] = np.array(self.pairs, dtype=str)
        for name, values in self.columns.items():
            arrays[f"slice:{name}"] = np.array(values, dtype=str)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            np.savez_compressed(handle, **arrays)

    @classmethod
    def load(cls, path: Path) -> Predictions:
        with np.load(path, allow_pickle=False) as saved:
            outputs, targets = saved["outputs"], saved["targets"]
            if "lengths" in saved:
                cuts = np.cumsum(saved["lengths"])[:-1]
                outputs, targets = np.split(outputs, cuts), np.split(targets, cuts)
            return cls(
                outputs,
                targets,
                saved["texts"].tolist(),
                saved["pairs"].tolist() if "pairs" in saved else None,
                {k[6:]: saved[k].tolist() for k in saved.files if k.startswith("slice:")},
            )


def slice_metrics(
    spec: TaskSpec,
    predictions: Predictions,
    names: tuple[str, ...],
    metric: str,
    thresholds: list[float] | None = None,
) -> dict[str, Any]:
    """The task's metrics for every value of every slice column, and the largest gap in `metric`.

    Numeric columns with more than ten distinct values are cut into quartiles first.
    Slices with fewer than 10 examples are scored but left out of the gap.

    Returns:
        column → `{"values": {value: scalar metrics}, "largest_gap": {metric, gap, highest,
        lowest} or None}`.
    """
    result = {}
    for column, raw in predictions.columns.items():
        values = _binned(raw)
        per_value = {}
        for value in sorted(set(values), key=_natural):
            rows = np.flatnonzero(np.asarray(values) == value)
            outputs, targets = _take(predictions.outputs, rows), _take(predictions.targets, rows)
            scores = evaluate(spec, outputs, targets, names, thresholds=thresholds)
            per_value[value] = {
                k: v for k, v in scores.items() if isinstance(v, int | float) and k != "loss"
            }
        result[column] = {"values": per_value, "largest_gap": _largest_gap(per_value, metric)}
    return result


def _largest_gap(per_value: dict[str, dict], metric: str) -> dict | None:
    scored = {
        v: s[metric]
        for v, s in per_value.items()
        if metric in s and s.get("examples", 0) >= MIN_SLICE_EXAMPLES
    }
    if len(scored) < 2:
        return None
    high = max(scored, key=scored.get)
    low = min(scored, key=scored.get)
    return {
        "metric": metric,
        "gap": float(scored[high] - scored[low]),
        "highest": high,
        "lowest": low,
    }


def _binned(values: list[str]) -> list[str]:
    """Quartile bins for numeric columns with many values; the values themselves otherwise."""
    import pandas as pd

    series = pd.Series(values)
    numbers = pd.to_numeric(series.where(series != MISSING), errors="coerce")
    present = series != MISSING
    if numbers[present].notna().all() and numbers[present].nunique() > 10:
        bins = pd.qcut(numbers[present], 4, duplicates="drop")
        labelled = bins.map(lambda b: f"{b.left:.4g} to {b.right:.4g}").astype(str)
        out = series.copy()
        out[present] = labelled
        return out.tolist()
    return list(values)


def _natural(value: str):
    try:
        return (0, float(value.split(" to ")[0]), value)
    except ValueError:
        return (1, 0.0, value)


def _as_value(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return MISSING
    text = str(value).strip()
    return text or MISSING


def _take(values: Any, rows: np.ndarray) -> Any:
    if isinstance(values, list):
        return [values[i] for i in rows]
    return values[rows]


def _flat(rows: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)


def distributions(splits: Any, spec: TaskSpec) -> dict[str, dict]:
    """Per split: examples (words, for tags) per class, or a 20-bin histogram of regression
    targets; for validation and test, how many have a text that training has too."""

    names = splits.vocab.names
    out = {}
    for split in ("train", "validation", "test"):
        targets = getattr(splits, split).targets
        if spec.generative:  # target lengths in words
            words = np.array([len(str(t).split()) for t in targets], np.float64)
            counts, edges = (
                np.histogram(words, bins=20) if len(words) else (np.zeros(0), np.zeros(0))
            )
            out[split] = {"target_words": {"edges": edges.tolist(), "counts": counts.tolist()}}
        elif spec.numeric:
            counts, edges = np.histogram(np.asarray(targets, dtype=np.float64), bins=20)
            out[split] = {"histogram": {"edges": edges.tolist(), "counts": counts.tolist()}}
        else:
            counts = (
                class_counts(targets, len(names), spec) if len(targets) else np.zeros(len(names))
            )
            out[split] = {"counts": {n: int(c) for n, c in zip(names, counts, strict=True)}}
        if split in splits.also_in_training:
            out[split]["also_in_training"] = splits.also_in_training[split]
    return out
