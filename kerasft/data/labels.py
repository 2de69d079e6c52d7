"""Label vocabularies and the numeric targets of each task."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable

import numpy as np
import pandas as pd

from kerasft.errors import DataError
from kerasft.tasks import IGNORE_INDEX, TaskSpec, class_counts

__all__ = [
    "IGNORE_INDEX",
    "LabelVocab",
    "balanced_class_weights",
    "class_counts",
    "describe",
    "targets",
]


@dataclasses.dataclass(frozen=True)
class LabelVocab:
    """Label (or tag) names in id order; saved with every run and export."""

    names: tuple[str, ...]

    def __post_init__(self) -> None:
        # Exports keep label names one per line (assets/labels.txt, which TF Serving clients read):
        # a name holding a line break would shift every later name onto the wrong probability.
        for name in self.names:
            if "\n" in str(name) or "\r" in str(name):
                raise DataError(
                    f"Label {name!r} contains a line break; labels are stored one per line in the "
                    "export. Replace the line break in that label (in the data or `data.labels`)."
                )

    @classmethod
    def from_labels(cls, labels: Iterable[str]) -> LabelVocab:
        unique = sorted(set(labels))
        if all(is_integer(v) for v in unique):
            unique = sorted(unique, key=int)
        return cls(tuple(unique))

    @classmethod
    def for_task(cls, labels: pd.Series, spec: TaskSpec) -> LabelVocab:
        """The vocabulary of a training split's labels (lists of labels or tags are flattened)."""
        if spec.multi_hot or spec.per_token:
            return cls.from_labels(v for row in labels for v in row)
        return cls.from_labels(labels)

    def index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    def to_json(self) -> str:
        return json.dumps({"labels": list(self.names)}, indent=2)


def targets(
    frame: pd.DataFrame, vocab: LabelVocab, spec: TaskSpec, source: str
) -> np.ndarray | list[np.ndarray]:
    """The numeric targets of a split.

    Returns:
        int32 ids `[N]` (classification), float32 multi-hot `[N, C]` (multi_label),
        float32 `[N]` (regression) or a list of int32 tag ids per word (token_classification).

    Raises:
        DataError: a label is not in the vocabulary; the message names it and `source`.
    """
    if spec.numeric:
        return frame["label"].to_numpy(dtype=np.float32)
    if spec.generative:
        return frame["label"].to_numpy(dtype=object)
    index = vocab.index()
    seen = frame["label"] if spec.single_label else (v for row in frame["label"] for v in row)
    unknown = sorted(set(seen) - index.keys())
    if unknown:
        raise DataError(
            f"{_where(frame, spec, unknown[0], source)}: label {unknown[0]!r} is not in the label "
            f"vocabulary {list(vocab.names)} taken from the training data ({len(unknown)} such "
            "label(s)). Add it to `data.labels`, or remove those rows."
        )
    if spec.single_label:
        return frame["label"].map(index).to_numpy(dtype=np.int32)
    if spec.multi_hot:
        hot = np.zeros((len(frame), len(vocab.names)), np.float32)
        for row, labels in enumerate(frame["label"]):
            hot[row, [index[v] for v in labels]] = 1.0
        return hot
    return [np.array([index[v] for v in row], np.int32) for row in frame["label"]]


def _where(frame: pd.DataFrame, spec: TaskSpec, label: str, source: str) -> str:
    """`source:line` of the first row that holds `label`, or `source` where rows have no lines."""
    if "line" not in frame:
        return source
    for line, value in zip(frame["line"], frame["label"], strict=True):
        if (value == label) if spec.single_label else (label in value):
            return f"{source}:{int(line)}"
    return source


def balanced_class_weights(counts: np.ndarray) -> dict[int, float]:
    """scikit-learn's `balanced` weights, n / (k * count), for classes that occur."""
    total, present = counts.sum(), int((counts > 0).sum())
    return {i: float(total / (present * c)) for i, c in enumerate(counts) if c > 0}


def describe(target: np.ndarray | list[np.ndarray], vocab: LabelVocab, spec: TaskSpec) -> str:
    """A one-line class distribution (or target summary, for regression)."""
    if spec.generative:
        words = [len(str(t).split()) for t in target]
        return f"target texts of {np.mean(words):.1f} words on average" if words else "no targets"
    if spec.numeric:
        if len(target) == 0:
            return "no targets"
        return f"target mean {target.mean():.3f}, std {target.std():.3f}, range {target.min():g}..{target.max():g}"
    counts = class_counts(target, len(vocab.names), spec)
    shown = Counter(dict(zip(vocab.names, counts.tolist(), strict=True)))
    items = shown.most_common(12)
    more = f", +{len(shown) - 12} more" if len(shown) > 12 else ""
    unit = " words" if spec.per_token else ""
    return ", ".join(f"{name} {count}" for name, count in items) + more + unit


def is_integer(value: str) -> bool:
    """Whether a label reads as an integer: such labels sort by value and are codes, not names."""
    try:
        int(value)
    except ValueError:
        return False
    return True
