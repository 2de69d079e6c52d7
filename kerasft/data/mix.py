"""`data.mix`: a general-domain labelled file mixed into training at a fixed share (a regulariser)."""

from __future__ import annotations

import dataclasses

import numpy as np

from kerasft.config import DataConfig
from kerasft.data.labels import describe, targets
from kerasft.data.readers import read_source
from kerasft.data.splits import Splits
from kerasft.errors import DataError
from kerasft.tasks import TaskSpec


def mix_in(cfg: DataConfig, spec: TaskSpec, splits: Splits, seed: int) -> Splits:
    """The splits with a seeded sample of `cfg.mix.file` appended to `train`.

    The sample is `share / (1 - share)` times the training rows (after augmentation), so
    it makes `share` of every epoch; a file with fewer rows is taken whole (and says so).

    Raises:
        DataError: the file is missing or malformed, or has a label outside the task's label set.
    """
    mix = cfg.mix
    assert mix is not None
    columns = {
        "text_column": mix.text_column if mix.text_column is not None else cfg.text_column,
        "label_column": mix.label_column if mix.label_column is not None else cfg.label_column,
        "text_pair_column": None,
    }
    if cfg.text_pair_column is not None:
        raise DataError(
            "`data.mix` adds single texts; it does not apply with `data.text_pair_column`."
        )
    table, source = read_source(
        mix.file, cfg.model_copy(update=columns), spec, "data.mix.file", "mix"
    )
    if not len(table):
        raise DataError(f"{source}: no labelled rows in it (`data.mix.file`).")
    wanted = round(mix.share / (1 - mix.share) * len(splits.train))
    rng = np.random.default_rng([seed, 17])
    chosen = np.sort(rng.choice(len(table), min(wanted, len(table)), replace=False))
    table = table.iloc[chosen].reset_index(drop=True)
    mixed = targets(table, splits.vocab, spec, f"{source} (`data.mix.file`)")
    train = splits.train
    share = len(table) / (len(table) + len(train))
    short = f"; the file has only {len(table)} rows" if len(table) < wanted else ""
    print(
        f"data.mix: +{len(table)} rows from {source} ({describe(mixed, splits.vocab, spec)}), "
        f"{share:.1%} of each epoch's training examples{short}"
    )
    grown = dataclasses.replace(
        train,
        texts=list(train.texts) + table["text"].tolist(),
        targets=_concat(train.targets, mixed),
        columns={k: list(v) + [""] * len(table) for k, v in train.columns.items()},
    )
    return dataclasses.replace(splits, train=grown)


def _concat(a, b):
    if isinstance(a, list):
        return list(a) + list(b)
    return np.concatenate([np.asarray(a), np.asarray(b).astype(np.asarray(a).dtype)])
