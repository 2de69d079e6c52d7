"""Sentence pairs for contrastive training (SetFit): two examples, and whether they share a label.

`sentence_pairs` draws them, seeded, from the training targets; `pipeline.pair_dataset`
batches them. A multi-label example's "label" is its whole label set, as in SetFit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kerasft.errors import DataError


def label_keys(targets: np.ndarray, multi_hot: bool) -> list:
    """What two examples must share to make a positive pair: the class, or the label set."""
    if multi_hot:
        return [tuple(np.flatnonzero(row > 0.5)) for row in targets]
    return [int(t) for t in targets]


def check_pairable(targets: np.ndarray, multi_hot: bool, names: Sequence[str], source: str) -> None:
    """Raises DataError unless every label has two examples (a positive pair) and there are two
    kinds of example (a negative pair)."""
    if multi_hot:
        counts = (targets > 0.5).sum(axis=0)
        kinds = len(set(label_keys(targets, True)))
    else:
        counts = np.bincount(targets.astype(np.int64), minlength=len(names))
        kinds = int((counts > 0).sum())
    single = [names[i] for i, c in enumerate(counts) if c == 1]
    if single:
        raise DataError(
            f"{source}: label `{single[0]}` has a single training example, so no positive pair for "
            "`training.method: contrastive`; add a second example of it or drop the label."
        )
    if kinds < 2:
        raise DataError(
            f"{source}: every training example has the same label, so no negative pair for "
            "`training.method: contrastive`; add examples of another label."
        )


def sentence_pairs(
    targets: np.ndarray,
    multi_hot: bool,
    sampling: str,
    iterations: int,
    seed: int,
    max_pairs: int | None = None,
) -> np.ndarray:
    """Seeded pairs `[i, j, same]` (int64; `same` is 1 when i and j share a label, else 0).

    Args:
        sampling: `iterations`: per round, every example paired once with another example of
            its label (itself only when it is alone) and once with an example of another label.
            `oversampling`: every pair once (same-label pairs including each example with itself,
            as SetFit), the rarer kind repeated in a seeded order until both kinds are as many.
        iterations: rounds of `iterations` sampling.
        max_pairs: keep a seeded sample of at most this many. Defaults to all.

    Returns:
        The pairs in a seeded random order.
    """
    rng = np.random.default_rng(seed)
    # One integer per distinct label (or label set): examples pair on equal ids.
    index: dict = {}
    ids = np.asarray([index.setdefault(k, len(index)) for k in label_keys(targets, multi_hot)])
    if sampling == "iterations":
        pairs = _rounds(ids, iterations, rng)
    else:
        pairs = _oversampled(ids, rng)
    pairs = pairs[rng.permutation(len(pairs))]
    return pairs[:max_pairs] if max_pairs else pairs


def _rounds(ids: np.ndarray, iterations: int, rng) -> np.ndarray:
    members = {k: np.flatnonzero(ids == k) for k in np.unique(ids)}
    others = {k: np.flatnonzero(ids != k) for k in members}  # once per label, not per example
    rows = []
    for _ in range(iterations):
        for i, key in enumerate(ids):
            same = members[key]
            partners = same[same != i] if len(same) > 1 else same
            rows.append((i, int(rng.choice(partners)), 1))
            rows.append((i, int(rng.choice(others[key])), 0))
    return np.asarray(rows, np.int64).reshape(-1, 3)


def _oversampled(ids: np.ndarray, rng) -> np.ndarray:
    i, j = np.triu_indices(len(ids))  # with the diagonal: an example is its own positive, as SetFit
    same = ids[i] == ids[j]
    positives = np.stack([i[same], j[same], np.ones(same.sum(), np.int64)], 1)
    negatives = np.stack([i[~same], j[~same], np.zeros((~same).sum(), np.int64)], 1)
    fewer, more = sorted((positives, negatives), key=len)
    if len(fewer) and len(fewer) < len(more):
        repeats = -(-len(more) // len(fewer))
        cycle = np.concatenate([fewer[rng.permutation(len(fewer))] for _ in range(repeats)])
        fewer = cycle[: len(more)]
    return np.concatenate([fewer, more]).astype(np.int64)
