"""Data: reading files, label vocabularies, splits, tokenization and tf.data.

The flow is `load_splits` (files → cleaned pandas frames and a `LabelVocab`),
`encode` (frames → token ids with the backbone's fast tokenizer), then
`train_dataset` / `eval_dataset` (token ids → batched `tf.data` pipelines with
dynamic padding). Every problem with the user's files raises `DataError` that
names the file and, where there is one, the line.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kerasft._compat import tf
from kerasft.config import DataConfig
from kerasft.errors import DataError

_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "tsv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
}


def resolve_path(spec: str, key: str = "data.train") -> Path:
    """Turns a config path into a file path; `pkg:<package>/<path>` looks inside an installed package.

    Raises:
        DataError: the file does not exist.
    """
    if spec.startswith("pkg:"):
        package, _, inner = spec[4:].partition("/")
        found = importlib.util.find_spec(package) if package else None
        if found is None or not found.submodule_search_locations:
            raise DataError(
                f"`{key}`: package `{package}` named in `{spec}` is not installed. "
                f"Install it (`make install` does for the demo data) or point `{key}` at a file."
            )
        path = Path(next(iter(found.submodule_search_locations))) / inner
    else:
        path = Path(spec).expanduser()
    if not path.is_file():
        raise DataError(
            f"`{key}`: data file not found: {path}. Check the path (relative paths start at {Path.cwd()})."
        )
    return path


@dataclasses.dataclass(frozen=True)
class LabelVocab:
    """Label names in id order; saved with every run and export."""

    names: tuple[str, ...]

    @classmethod
    def from_labels(cls, labels: pd.Series) -> LabelVocab:
        unique = sorted(set(labels))
        if all(_is_int(v) for v in unique):
            unique = sorted(unique, key=int)
        return cls(tuple(unique))

    def encode(self, labels: pd.Series, source: str) -> np.ndarray:
        index = {name: i for i, name in enumerate(self.names)}
        unknown = sorted(set(labels) - index.keys())
        if unknown:
            raise DataError(
                f"{source}: label {unknown[0]!r} is not in the label vocabulary {list(self.names)}. "
                "Add it to `data.labels` or remove those rows."
            )
        return labels.map(index).to_numpy(dtype=np.int32)

    def to_json(self) -> str:
        return json.dumps({"labels": list(self.names)}, indent=2)


@dataclasses.dataclass
class Split:
    """One split: texts, label ids and where they came from (for messages)."""

    texts: list[str]
    labels: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.texts)


@dataclasses.dataclass
class Splits:
    train: Split
    validation: Split
    test: Split
    vocab: LabelVocab


def read_table(path: Path, cfg: DataConfig) -> pd.DataFrame:
    """Reads one data file into a frame of two string columns, `text` and `label`.

    Rows whose text is empty are dropped with a printed count.
    """
    fmt = cfg.format if cfg.format != "auto" else _EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"{path}: cannot tell the format from the extension `{path.suffix}`. "
            "Set `data.format` to csv, tsv, jsonl or parquet."
        )
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty.")
    try:
        if fmt in ("csv", "tsv"):
            frame = pd.read_csv(
                path,
                sep="," if fmt == "csv" else "\t",
                encoding=cfg.encoding,
                dtype=str,
                keep_default_na=False,
                encoding_errors="strict",
            )
        elif fmt == "jsonl":
            frame = pd.read_json(path, lines=True, encoding=cfg.encoding, dtype=False)
        else:
            frame = pd.read_parquet(path)
    except UnicodeDecodeError as exc:
        line = _first_undecodable_line(path, cfg.encoding)
        raise DataError(
            f"{path}:{line}: bytes that are not valid {cfg.encoding} ({exc.reason}). "
            "Set `data.encoding` to the file's encoding, e.g. `latin-1` or `cp1252`."
        ) from None
    except LookupError:
        raise DataError(
            f"`data.encoding`: unknown encoding `{cfg.encoding}`. Use e.g. `utf-8` or `latin-1`."
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file has no columns.") from None
    except (pd.errors.ParserError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[-1]
        raise DataError(f"{path}: cannot parse as {fmt}: {detail}") from None
    frame.columns = [str(c).lstrip("\ufeff") for c in frame.columns]

    for key, column in (
        ("data.text_column", cfg.text_column),
        ("data.label_column", cfg.label_column),
    ):
        if column not in frame.columns:
            raise DataError(
                f"{path}: no column `{column}` (set by `{key}`). Columns present: {', '.join(frame.columns)}."
            )
    if frame.empty:
        raise DataError(f"{path}: the file has a header but no rows.")

    text = frame[cfg.text_column].map(_as_text).str.strip()
    label = frame[cfg.label_column].map(_as_text).str.strip()
    empty_label = label == ""
    if empty_label.any():
        line = int(np.flatnonzero(empty_label.to_numpy())[0]) + 2
        raise DataError(
            f"{path}:{line}: empty label in column `{cfg.label_column}` "
            f"({int(empty_label.sum())} rows in all). Fill in or remove those rows."
        )
    keep = text != ""
    dropped = int((~keep).sum())
    if dropped:
        print(f"{path.name}: dropped {dropped} rows with empty text")
    return pd.DataFrame({"text": text[keep].tolist(), "label": label[keep].tolist()})


def load_splits(cfg: DataConfig, seed: int) -> Splits:
    """Reads the configured files and returns train/validation/test splits and the label vocabulary.

    Raises:
        DataError: a file is missing or malformed, a label is unknown, or there is only one class.
    """
    from sklearn.model_selection import train_test_split

    train_path = resolve_path(cfg.train, "data.train")
    paths = {"validation": None, "test": None}
    for name in paths:
        spec = getattr(cfg, name)
        paths[name] = resolve_path(spec, f"data.{name}") if spec else None

    frames = {"train": read_table(train_path, cfg)}
    sources = {"train": str(train_path)}
    for name, path in paths.items():
        if path is not None:
            frames[name] = read_table(path, cfg)
            sources[name] = str(path)

    # Carve missing splits from the training file, stratified and seeded, so the
    # held-out sets are the same whatever `max_train_examples` is.
    n_file = len(frames["train"])
    for name in ("test", "validation"):
        if name in frames:
            continue
        share = cfg.test_split if name == "test" else cfg.validation_split
        if share == 0:
            frames[name] = frames["train"].iloc[:0]
        else:
            n_take = max(1, round(share * n_file))
            frames["train"], frames[name] = _split(frames["train"], n_take, seed, train_test_split)
        sources[name] = f"{train_path} ({name} split)"

    if cfg.max_train_examples and len(frames["train"]) > cfg.max_train_examples:
        frames["train"] = _split(
            frames["train"], len(frames["train"]) - cfg.max_train_examples, seed, train_test_split
        )[0]
    if cfg.max_eval_examples:
        for name in ("validation", "test"):
            if len(frames[name]) > cfg.max_eval_examples:
                frames[name] = _split(
                    frames[name], len(frames[name]) - cfg.max_eval_examples, seed, train_test_split
                )[0]

    if cfg.labels is not None:
        vocab = LabelVocab(tuple(cfg.labels))
    else:
        vocab = LabelVocab.from_labels(frames["train"]["label"])
    if len(vocab.names) < 2:
        where = (
            "`data.labels` lists"
            if cfg.labels is not None
            else f"{train_path}: column `{cfg.label_column}` has"
        )
        raise DataError(
            f"{where} a single class {list(vocab.names)}; classification needs at least two."
        )

    splits = {
        name: Split(
            frame["text"].tolist(), vocab.encode(frame["label"], sources[name]), sources[name]
        )
        for name, frame in frames.items()
    }
    if len(splits["validation"]) == 0:
        raise DataError(
            "No validation data: give `data.validation` or a `data.validation_split` above 0 "
            "(early stopping and the best checkpoint need it)."
        )
    for name in ("train", "validation", "test"):
        split = splits[name]
        counts = np.bincount(split.labels, minlength=len(vocab.names))
        dist = ", ".join(f"{label} {c}" for label, c in zip(vocab.names, counts, strict=True))
        print(f"{name}: {len(split)} examples ({dist})")
    return Splits(splits["train"], splits["validation"], splits["test"], vocab)


def _split(
    frame: pd.DataFrame, n_take: int, seed: int, train_test_split: Any
) -> tuple[pd.DataFrame, pd.DataFrame]:
    counts = frame["label"].value_counts()
    stratify = frame["label"] if counts.min() >= 2 and n_take >= len(counts) else None
    kept, taken = train_test_split(frame, test_size=n_take, random_state=seed, stratify=stratify)
    return kept.reset_index(drop=True), taken.reset_index(drop=True)


@dataclasses.dataclass
class Encoded:
    """Token ids of one split as flat arrays plus row lengths (cheap to hold, fast to slice)."""

    features: dict[str, np.ndarray]
    lengths: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.lengths)


def encode(tokenizer: Any, split: Split, max_length: int) -> Encoded:
    """Tokenizes a split with the backbone's Hugging Face tokenizer, truncating to `max_length`."""
    names = [
        n
        for n in tokenizer.model_input_names
        if n in ("input_ids", "attention_mask", "token_type_ids")
    ]
    if not split.texts:
        return Encoded(
            {n: np.zeros(0, np.int32) for n in names}, np.zeros(0, np.int64), split.labels
        )
    out = tokenizer(split.texts, truncation=True, max_length=max_length)
    lengths = np.fromiter((len(ids) for ids in out["input_ids"]), dtype=np.int64, count=len(split))
    features = {
        name: np.fromiter((t for row in out[name] for t in row), dtype=np.int32) for name in names
    }
    truncated = int((lengths >= max_length).sum())
    if truncated:
        print(
            f"{Path(split.source).name}: {truncated} of {len(split)} texts truncated to {max_length} tokens"
        )
    return Encoded(features, lengths, split.labels)


def bucket_boundaries(max_length: int) -> list[int]:
    """Sequence-length bucket edges, growing by about 1.5x from 16 up to `max_length`."""
    edges, edge = [], 16
    while edge < max_length:
        edges.append(edge)
        edge = int(edge * 1.5) // 8 * 8
    return edges


def steps_per_epoch(encoded: Encoded, batch_size: int, bucketing: bool, max_length: int) -> int:
    """Exact number of batches one epoch of `train_dataset` yields."""
    if not bucketing:
        return math.ceil(len(encoded) / batch_size)
    bucket = np.searchsorted(bucket_boundaries(max_length), encoded.lengths, side="right")
    return int(sum(math.ceil(c / batch_size) for c in np.bincount(bucket) if c))


def train_dataset(
    encoded: Encoded,
    batch_size: int,
    pad_id: int,
    *,
    bucketing: bool,
    max_length: int,
    shuffle_buffer: int,
    seed: int,
) -> tf.data.Dataset:
    """Shuffled training batches, padded per batch (or per length bucket) rather than to `max_length`."""
    ds = _examples(encoded, np.arange(len(encoded)))
    ds = ds.shuffle(min(shuffle_buffer, len(encoded)), seed=seed, reshuffle_each_iteration=True)
    padding = _padding_values(encoded, pad_id)
    if bucketing:
        boundaries = bucket_boundaries(max_length)
        ds = ds.bucket_by_sequence_length(
            lambda x, y: tf.shape(x["input_ids"])[0],
            bucket_boundaries=boundaries,
            bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
            padding_values=padding,
        )
    else:
        ds = ds.padded_batch(batch_size, padding_values=padding)
    # A known cardinality makes Keras restart the iterator every epoch and show a
    # true progress bar; the assertion also fails loudly if the count were wrong.
    steps = steps_per_epoch(encoded, batch_size, bucketing, max_length)
    ds = ds.apply(tf.data.experimental.assert_cardinality(steps))
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(encoded: Encoded, batch_size: int, pad_id: int) -> tf.data.Dataset:
    """Deterministic batches sorted by length (little padding); labels travel with each example."""
    order = np.argsort(encoded.lengths, kind="stable")
    ds = _examples(encoded, order)
    return ds.padded_batch(batch_size, padding_values=_padding_values(encoded, pad_id)).prefetch(
        tf.data.AUTOTUNE
    )


def _examples(encoded: Encoded, order: np.ndarray) -> tf.data.Dataset:
    # Slicing one flat tensor per feature keeps the pipeline in-graph and avoids
    # materialising a padded matrix (or a Python generator) up front.
    starts = np.concatenate([[0], np.cumsum(encoded.lengths)[:-1]]).astype(np.int64)
    flat = {name: tf.constant(values) for name, values in encoded.features.items()}

    def example(start, length, label):
        return {name: values[start : start + length] for name, values in flat.items()}, label

    ds = tf.data.Dataset.from_tensor_slices(
        (starts[order], encoded.lengths[order], encoded.labels[order])
    )
    return ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _padding_values(encoded: Encoded, pad_id: int) -> tuple[dict[str, Any], Any]:
    values = {
        name: tf.constant(pad_id if name == "input_ids" else 0, tf.int32)
        for name in encoded.features
    }
    return values, tf.constant(0, tf.int32)


def _as_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _is_int(value: str) -> bool:
    try:
        int(value)
    except ValueError:
        return False
    return True


def _first_undecodable_line(path: Path, encoding: str) -> int:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                raw.decode(encoding)
            except UnicodeDecodeError:
                return number
    return 1
