"""Train/validation/test splits: given files, or seeded (stratified) carve-outs of the training data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from kerasft.config import DataConfig
from kerasft.data.labels import LabelVocab, balanced_class_weights, class_counts, describe, targets
from kerasft.data.readers import read_source
from kerasft.errors import DataError
from kerasft.tasks import TASKS, TaskSpec

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class Split:
    """One split: texts (word lists for token classification), optional text pairs, targets, origin."""

    texts: list
    targets: np.ndarray | list[np.ndarray]
    source: str
    pairs: list[str] | None = None
    columns: dict[str, list] = dataclasses.field(default_factory=dict)  # evaluation.slices

    def __len__(self) -> int:
        return len(self.texts)


@dataclasses.dataclass
class Splits:
    train: Split
    validation: Split
    test: Split
    vocab: LabelVocab
    class_weights: dict[int, float] | None = None
    # Validation and test examples whose text training has too, by split (`say_overlap`).
    also_in_training: dict[str, int] = dataclasses.field(default_factory=dict)


def load_splits(
    cfg: DataConfig,
    seed: int,
    task: TaskSpec = TASKS["classification"],
    frames: dict[str, pd.DataFrame] | None = None,
    slices: tuple[str, ...] = (),
) -> Splits:
    """Reads the configured data and returns the three splits and the label vocabulary.

    Args:
        cfg: the `data` section.
        seed: seed of the carve-outs and of the `max_*_examples` samples.
        task: the config's task spec; decides how labels are read. Defaults to classification.
        frames: DataFrames (or lists of row dicts) that stand in for
            `data.train`/`validation`/`test` (Python API). Defaults to none.
        slices: columns to carry beside the texts (`evaluation.slices`). Defaults to none.

    Raises:
        DataError: missing or malformed data, an unknown label, a single class, no validation data.
    """
    tables, sources = _read_tables(cfg, seed, task, frames or {}, slices)
    vocab = _vocabulary(cfg, task, tables["train"], sources["train"])
    splits = {}
    for name in SPLITS:
        table = tables[name]
        splits[name] = Split(
            texts=table["text"].tolist(),
            targets=targets(table, vocab, task, sources[name]),
            source=sources[name],
            pairs=table["text_pair"].tolist() if "text_pair" in table else None,
            columns={name: table[f"slice:{name}"].tolist() for name in slices},
        )
        print(
            f"{name}: {len(table)} examples ({describe(splits[name].targets, vocab, task)})",
            flush=True,
        )
    shared = {name: say_overlap(name, splits[name], splits["train"]) for name in SPLITS[1:]}
    if len(splits["validation"]) == 0:
        raise DataError(
            "No validation data: give `data.validation` or a `data.validation_split` above 0 "
            "(early stopping and the best checkpoint need it)."
        )
    weights = None
    if cfg.class_weights == "balanced" and task.single_label:
        weights = balanced_class_weights(
            class_counts(splits["train"].targets, len(vocab.names), task)
        )
        print(
            "class weights: " + ", ".join(f"{vocab.names[i]} {w:.3f}" for i, w in weights.items())
        )
    return Splits(splits["train"], splits["validation"], splits["test"], vocab, weights, shared)


def also_in_training(split: Split, train: Split) -> int:
    """How many of `split`'s examples have a text (and pair) that a training example has too,
    compared as written, case and outer spaces aside."""
    seen = set(_keys(train))
    return sum(key in seen for key in _keys(split))


def _keys(split: Split) -> list[tuple]:
    texts = [t if isinstance(t, str) else " ".join(t) for t in split.texts]
    pairs = split.pairs or [""] * len(texts)
    return [(t.strip().lower(), p.strip().lower()) for t, p in zip(texts, pairs, strict=True)]


def say_overlap(name: str, split: Split, train: Split) -> int:
    """How many of `split`'s examples are also training examples, printed when any are: their
    scores are not held out (duplicated tweets, a file given twice)."""
    shared = also_in_training(split, train)
    if not shared:
        return 0
    share = shared / len(split)
    line = (
        f"{name}: {shared:,} of {len(split):,} examples ({share:.1%}) have a text that is also in "
        "training (the same words); their scores are not held out"
    )
    if share >= 0.5:
        carved = split.source == f"{train.source} ({name} split)"  # data.{name}_split
        advice = (
            "The training data repeats its texts: remove the repeats to hold this split out."
            if carved
            else f"Is `data.{name}` the training file, or a copy of it?"
        )
        line = f"warning: {line}. {advice}"
    print(line)
    return shared


def _read_tables(
    cfg: DataConfig,
    seed: int,
    task: TaskSpec,
    frames: dict[str, pd.DataFrame],
    slices: tuple[str, ...] = (),
) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """The three splits' tables and sources: read, carved from `train` where not given, capped."""
    specs = {name: frames.get(name, getattr(cfg, name)) for name in SPLITS}
    tables, sources = {}, {}
    for name in SPLITS:
        if name == "train" and name not in frames and isinstance(cfg.train, list):
            tables[name], sources[name] = _read_files(cfg.train, cfg, task, slices)
        elif specs[name] is not None:
            tables[name], sources[name] = read_source(
                specs[name], cfg, task, f"data.{name}", name, slices
            )

    # Carve missing splits from the training data, stratified and seeded, so the held-out
    # sets stay the same whatever `max_train_examples` is.
    n_file = len(tables["train"])
    stratify = task.single_label
    for name in ("test", "validation"):
        if name in tables:
            continue
        share = cfg.test_split if name == "test" else cfg.validation_split
        if share == 0:
            tables[name] = tables["train"].iloc[:0]
        else:
            key = "data.test_split" if name == "test" else "data.validation_split"
            held = n_file - len(tables["train"])
            where = f"{sources['train']}: {n_file} rows" + (
                f", {held} held out for test" if held else ""
            )
            tables["train"], tables[name] = _carve(
                tables["train"],
                max(1, round(share * n_file)),
                seed,
                stratify,
                f"{where}; too few to hold out {{n}} for {name} (`{key}: {share}`){{every}}. "
                f"Give a separate `data.{name}` file or lower `{key}`.",
            )
        sources[name] = f"{sources['train']} ({name} split)"

    _cap(tables, sources, cfg, seed, stratify)
    return tables, sources


def _cap(
    tables: dict[str, pd.DataFrame],
    sources: dict[str, str],
    cfg: DataConfig,
    seed: int,
    stratify: bool,
) -> None:
    """Cuts each split down to `data.max_train_examples` / `max_eval_examples` (seeded,
    stratified where it can be, a row of every label kept)."""
    caps = {
        "train": cfg.max_train_examples,
        "validation": cfg.max_eval_examples,
        "test": cfg.max_eval_examples,
    }
    for name, cap in caps.items():
        if cap and len(tables[name]) > cap:
            key = "max_train_examples" if name == "train" else "max_eval_examples"
            tables[name] = _carve(
                tables[name],
                len(tables[name]) - cap,
                seed,
                stratify,
                f"{sources[name]}: `data.{key}: {cap}` keeps too few of the {{rows}} rows to hold "
                f"a row of every label. Raise it to at least the number of labels.",
            )[0]


def _read_files(
    specs: list[str], cfg: DataConfig, task: TaskSpec, slices: tuple[str, ...]
) -> tuple[pd.DataFrame, str]:
    """`data.train` given as a list: each source read and checked on its own (errors name its file and
    line), then one table in the order given."""
    read = [
        read_source(spec, cfg, task, f"data.train[{i}]", "train", slices)
        for i, spec in enumerate(specs)
    ]
    table = pd.concat([table for table, _ in read], ignore_index=True)
    return table, " + ".join(source for _, source in read)


def _vocabulary(cfg: DataConfig, task: TaskSpec, train: pd.DataFrame, source: str) -> LabelVocab:
    """`data.labels`, else the training split's labels; none for regression.

    Raises:
        DataError: a single class.
    """
    if task.numeric or task.generative:
        return LabelVocab(())
    if cfg.labels is not None:
        vocab = LabelVocab(tuple(cfg.labels))
    else:
        vocab = LabelVocab.for_task(train["label"], task)
    if len(vocab.names) < 2:
        where = "`data.labels` lists" if cfg.labels is not None else f"{source}: the labels have"
        raise DataError(
            f"{where} a single class {list(vocab.names)}; {task.name} needs at least two."
        )
    return vocab


def _carve(
    table: pd.DataFrame,
    n_take: int,
    seed: int,
    stratify: bool,
    refusal: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Splits `n_take` rows off `table`, stratified by label where every class has at least two
    rows (and the sizes allow); otherwise at random, except that one row of every label stays
    (seeded), so the rows kept hold every label the table does.

    Raises:
        DataError: `refusal`, formatted with `rows`, `n` (`n_take`) and `every` (" and keep a
            row [of every label]"), when the table cannot give `n_take` rows and keep one.
    """
    from sklearn.model_selection import train_test_split

    labels = table["label"] if stratify else None
    staying = table.iloc[:0]
    if labels is not None:
        counts = labels.value_counts()
        if counts.min() < 2 or n_take < len(counts) or len(table) - n_take < len(counts):
            labels = None
            staying = table.groupby("label", sort=False).sample(n=1, random_state=seed)
    if n_take >= len(table) - len(staying):
        every = " and keep a row of every label" if len(staying) else " and keep a row"
        raise DataError(refusal.format(rows=len(table), n=n_take, every=every))
    rest = table.drop(staying.index)
    kept, taken = train_test_split(rest, test_size=n_take, random_state=seed, stratify=labels)
    if len(staying):
        kept = pd.concat([staying, kept])
    return kept.reset_index(drop=True), taken.reset_index(drop=True)
