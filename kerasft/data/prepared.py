"""A run's data from its config: `load_data` (splits, labels, token ids) and `build_datasets` (tf.data)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from kerasft._compat import tf
from kerasft.config import Config
from kerasft.data.labels import class_counts
from kerasft.data.pairs import check_pairable, sentence_pairs
from kerasft.data.pipeline import eval_dataset, pair_dataset, steps_per_epoch, train_dataset
from kerasft.data.splits import SPLITS, Splits, load_splits
from kerasft.data.tokenize import Encoded, encode, encode_seq2seq
from kerasft.errors import DataError
from kerasft.models.backbones import directory_positions
from kerasft.tasks import TaskSpec


@dataclasses.dataclass(frozen=True)
class Data:
    """The three splits, their token ids, and what was decided while reading them.

    Attributes:
        splits: texts, targets and sources of train/validation/test, and the label vocabulary.
        encoded: token ids per split name.
        max_length: the sequence length kept (the config's, capped by the tokenizer's).
        scaling: `(mean, std)` the regression targets were standardised with, else None.
        augmented: the rows `data.augment` added to the training split, as readable records.
        pairs: with `training.method: contrastive`, the training pairs `[i, j, same]`
            (`data.pairs.sentence_pairs`), else None.
        tiny_validation: a class (or label) has fewer than `FEW_VALIDATION` validation
            examples: its scores are noise, so the run neither stops early nor picks a
            best epoch on them (it keeps the last).
    """

    splits: Splits
    encoded: dict[str, Encoded]
    max_length: int
    scaling: tuple[float, float] | None = None
    augmented: tuple[dict, ...] = ()
    pairs: np.ndarray | None = None
    tiny_validation: bool = False

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.splits.vocab.names

    @property
    def rows_per_epoch(self) -> int:
        """What an epoch trains on: the training examples, or with `pairs` the pairs."""
        return len(self.pairs) if self.pairs is not None else len(self.encoded["train"])


@dataclasses.dataclass(frozen=True)
class Datasets:
    """The tf.data pipelines of a run and the training steps in one epoch."""

    train: tf.data.Dataset
    validation: tf.data.Dataset
    test: tf.data.Dataset
    steps: int


def load_data(
    cfg: Config, spec: TaskSpec, tokenizer: Any, frames: dict[str, Any] | None = None
) -> Data:
    """Reads the `data:` section's splits and tokenizes them with the backbone's tokenizer.

    Args:
        frames: DataFrames standing in for `data.train`/`validation`/`test`. Defaults to none.

    Raises:
        DataError: missing or malformed data (the message names the file and line).
        ConfigError, ModelError: `data.augment` needs a model or package that cannot be loaded.
    """
    splits = load_splits(cfg.data, cfg.training.seed, spec, frames, cfg.evaluation.slices)
    augmented: list[dict] = []
    if cfg.data.augment is not None:  # the training split only, before anything is fitted to it
        from kerasft.data.augment import augment_training

        splits, augmented = augment_training(cfg, spec, splits)
    if cfg.data.mix is not None:  # after augmentation: the share is of the whole epoch
        from kerasft.data.mix import mix_in

        splits = mix_in(cfg.data, spec, splits, cfg.training.seed)
    max_length = input_length(cfg, tokenizer, spec)
    scaling = None
    if spec.numeric and cfg.data.target_scaling == "standard":
        splits, scaling = standardise_targets(splits)
    if spec.generative:
        d = cfg.data
        encoded = {
            name: encode_seq2seq(
                tokenizer, getattr(splits, name), max_length, d.max_target_length, d.source_prefix
            )
            for name in SPLITS
        }
    else:
        encoded = {
            name: encode(tokenizer, getattr(splits, name), max_length, spec, cfg.data.cache_dir)
            for name in SPLITS
        }
    pairs = None
    if cfg.training.method == "contrastive":
        pairs = contrastive_pairs(cfg, spec, splits)
    tiny = few_labels(cfg, spec, splits)
    return Data(splits, encoded, max_length, scaling, tuple(augmented), pairs, tiny)


def input_length(cfg: Config, tokenizer: Any, spec: TaskSpec) -> int:
    """`data.max_length`, or the fewer tokens the tokenizer (`model_max_length`) or the
    backbone's position embeddings take, said when it is fewer. (Sequence-to-sequence
    models are checked against `data.max_length` itself: `check_lengths` refuses it.)"""
    limits = {"the tokenizer's `model_max_length` is": getattr(tokenizer, "model_max_length", None)}
    if cfg.model.backbone != "bigru" and not spec.generative:
        directory = Path(getattr(tokenizer, "name_or_path", "") or ".")
        limits["the backbone's position embeddings take"] = directory_positions(directory)
    length, why = cfg.data.max_length, None
    for what, limit in limits.items():
        if limit and limit < length:
            length, why = limit, what
    if why:
        print(f"data.max_length {cfg.data.max_length} is cut to {length}: {why} {length}")
    return length


FEW_LABELS = 100  # labelled training examples under which standard fine-tuning warns
FEW_VALIDATION = 8  # validation examples per class under which the scores are noise


def few_labels(cfg: Config, spec: TaskSpec, splits: Splits) -> bool:
    """Warns about few labels; returns whether the validation split is too small to select on.

    With under `FEW_LABELS` training examples, standard fine-tuning points to
    `training.method: contrastive` and self-training. A class or label with fewer than
    `FEW_VALIDATION` validation examples (but some in training) makes the validation
    scores noise: the run then keeps its last epoch.
    """
    if spec.numeric or spec.per_token or spec.generative:
        return False
    names = splits.vocab.names
    if cfg.training.method == "standard" and len(splits.train) < FEW_LABELS:
        print(
            f"warning: {len(splits.train)} labelled training examples. With under {FEW_LABELS}, "
            "`training.method: contrastive` (SetFit; docs/training.md) usually scores far higher, and "
            "unlabelled text helps through self-training (`distill.unlabeled`)."
        )
    if not len(splits.validation):
        return False
    trained = class_counts(splits.train.targets, len(names), spec)
    validated = class_counts(splits.validation.targets, len(names), spec)
    short = [
        (n, int(v))
        for n, t, v in zip(names, trained, validated, strict=True)
        if t and v < FEW_VALIDATION
    ]
    if not short:
        return False
    shown = ", ".join(f"{n} {v}" for n, v in short[:5]) + (" ..." if len(short) > 5 else "")
    print(
        f"warning: validation has fewer than {FEW_VALIDATION} examples of {len(short)} label(s) "
        f"({shown}): its scores are noise, so no early stopping and no best-epoch choice; the "
        f"last of {cfg.training.epochs} epochs is kept. Give `data.validation` at least "
        f"{FEW_VALIDATION} per label to select on it."
    )
    return True


def contrastive_pairs(cfg: Config, spec: TaskSpec, splits: Splits) -> np.ndarray:
    """The seeded sentence pairs of `training.method: contrastive`.

    Raises:
        DataError: a label with a single example, or one label only.
    """
    c, train = cfg.training.contrastive, splits.train
    check_pairable(train.targets, spec.multi_hot, splits.vocab.names, train.source)
    pairs = sentence_pairs(
        train.targets, spec.multi_hot, c.sampling, c.iterations, cfg.training.seed, c.max_pairs
    )
    print(
        f"contrastive: {len(pairs)} sentence pairs ({int(pairs[:, 2].sum())} same-label) from "
        f"{len(train)} labelled examples ({c.sampling})"
    )
    return pairs


def standardise_targets(splits: Splits) -> tuple[Splits, tuple[float, float]]:
    """Splits whose targets are `(target - mean) / std` of the training targets, and `(mean, std)`."""
    target = splits.train.targets
    mean, std = float(target.mean()), float(target.std()) or 1.0
    scaled = {
        name: dataclasses.replace(split, targets=((split.targets - mean) / std).astype(np.float32))
        for name in SPLITS
        for split in [getattr(splits, name)]
    }
    print(f"regression targets standardised: mean {mean:.4f}, std {std:.4f}")
    return dataclasses.replace(splits, **scaled), (mean, std)


def build_datasets(
    cfg: Config,
    data: Data,
    pad_id: int,
    state: Any,
    strategy: tf.distribute.Strategy | None = None,
    fixed_widths: bool = False,
    packing: bool = False,
) -> Datasets:
    """Length-sorted (or packed) training batches in a seeded, resumable order; sorted evaluation batches.

    Args:
        state: the run's `TrainingState`: the order of each epoch follows its epoch
            count, and a mid-epoch restore skips its `resume_skip` batches.
        strategy: the distribution strategy. With several replicas, the last partial
            batch is dropped (an empty per-replica batch would crash); with several
            workers, each takes its share of every global batch. Defaults to one device.
        fixed_widths: pad batches to a few fixed widths, for XLA. Defaults to False.
        packing: shuffled batches packed into rows (`data.packing`) instead. Defaults to False.

    Raises:
        DataError: the training split makes no full batch.
    """
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    batch = cfg.training.batch_size
    train = data.encoded["train"]
    steps = steps_per_epoch(train, batch, replicas > 1)
    if steps == 0:
        raise DataError(
            f"{data.splits.train.source}: {len(train)} training examples make no full batch of "
            f"{batch}; lower `training.batch_size`."
        )
    training, steps = _training_batches(cfg, data, pad_id, state, replicas, fixed_widths, packing)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        # Every worker builds the same seeded stream of global batches; each takes its
        # share of every batch, so all run the same number of steps.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
        training = training.with_options(options)
    return Datasets(
        train=training,
        validation=eval_dataset(data.encoded["validation"], batch * 2, pad_id),
        test=eval_dataset(data.encoded["test"], batch * 2, pad_id),
        steps=steps,
    )


def _training_batches(
    cfg: Config,
    data: Data,
    pad_id: int,
    state: Any,
    replicas: int,
    fixed_widths: bool,
    packing: bool,
) -> tuple[tf.data.Dataset, int]:
    """The training pipeline and its steps per epoch: sentence pairs for `method: contrastive`,
    else length-sorted (or packed) examples; all in a seeded order a resumed run repeats."""
    batch, train, seed = cfg.training.batch_size, data.encoded["train"], cfg.training.seed
    drop_remainder = replicas > 1
    if data.pairs is not None:
        pairs = pair_dataset(
            train,
            data.pairs,
            batch,
            pad_id,
            seed=seed,
            epoch=state.epochs_done,
            skip=state.resume_skip,
            drop_remainder=drop_remainder,
        )
        n = len(data.pairs)
        return pairs, n // batch if drop_remainder else -(-n // batch)
    packed = None
    if packing:  # a row per replica at least; class weights travel inside the batch
        weights, table = data.splits.class_weights, None
        if weights:
            table = tf.constant([weights.get(i, 1.0) for i in range(len(data.label_names))])
        packed = {"min_rows": replicas, "class_weights": table}
    examples = train_dataset(
        train,
        batch,
        pad_id,
        packing=packed,
        bucketing=cfg.data.bucketing,
        max_length=data.max_length,
        window=cfg.data.bucket_window,
        seed=seed,
        epoch=state.epochs_done,
        skip=state.resume_skip,
        fixed_widths=fixed_widths,
        drop_remainder=drop_remainder,
    )
    return examples, steps_per_epoch(train, batch, drop_remainder)
