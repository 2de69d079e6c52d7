"""`python -m kerasft.pretrain --config x.yaml`: domain-adaptive masked-LM pretraining of a backbone.

Continues masked-language-model training of `model.backbone` on the unlabelled
texts of `pretrain.files` and writes a Hugging Face model directory (config,
tokenizer, TF weights with the masked-LM head) that `model.backbone:` accepts and
`data.augment.contextual_model` can use. A backbone shipped without a masked-LM
head (the embedded MiniLM) gets a fresh one whose decoder is tied to the input
embeddings; the output says so.

The order of the texts and every mask follow from `pretrain.seed`, so a run
killed with SIGKILL resumes from its last backup (`<output_dir>.partial/backup`)
and ends where an uninterrupted run ends. The output directory appears only when
the run has finished.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from kerasft import config as config_lib
from kerasft._compat import keras, tf
from kerasft.cli import cli_main
from kerasft.config import PretrainConfig, PretrainRun, TrainingConfig
from kerasft.data.pipeline import eval_dataset, train_dataset
from kerasft.data.pipeline import steps_per_epoch as steps_per_epoch_of
from kerasft.data.readers import resolve_path
from kerasft.data.rows import read_text_column
from kerasft.data.tokenize import Encoded
from kerasft.errors import DataError, Interrupted, stop_between_steps
from kerasft.models import resolve_backbone
from kerasft.models.masked_lm import MaskedLanguageModel, load_masked_lm, masking_for
from kerasft.models.precision import float32_dropout_masks
from kerasft.report.history import read_steps
from kerasft.training.callbacks import (
    Backup,
    EpochCounter,
    StepLog,
    StepProgress,
    StopOnNonFiniteLoss,
    TrainingBudget,
)
from kerasft.training.hardware import resolve_precision
from kerasft.training.optimizers import build_optimizer
from kerasft.training.rundir import LOCK, RunLock, check_writable
from kerasft.training.state import TrainingState

_WINDOW = 50  # batches sorted by length together


@dataclasses.dataclass(frozen=True)
class PretrainResult:
    output_dir: Path
    steps: int
    validation_loss: tuple[float, float]  # before, after
    losses: list[float]


def run(cfg: PretrainRun) -> PretrainResult:
    """Pretrains on Keras' `fit`, resuming from a backup of the same config, and writes `output_dir`.

    The same pieces as a training run: the one file reader, the length-sorted,
    resumable `tf.data` pipeline, the optimizer builder (so `layerwise_lr_decay`
    applies), and the callbacks (backups with mid-epoch resume, the step log,
    progress lines, TensorBoard under `<output_dir>.partial/logs`).
    """
    p = cfg.pretrain
    output = Path(p.output_dir or Path("pretrained") / cfg.name)
    partial = output.with_name(output.name + ".partial")
    before = keras.mixed_precision.global_policy()
    lock = None
    try:
        check_writable(output.parent, "pretrain.output_dir")
        for spec in p.files:  # a wrong path is said before the model loads, not after
            resolve_path(spec, "pretrain.files")
        policy, why = resolve_precision(p.precision)
        keras.mixed_precision.set_global_policy(policy)
        print(f"precision: {policy} ({why})")
        keras.utils.set_random_seed(p.seed)  # the fresh head's initial weights
        tokenizer, model = _model(cfg)
        train, held_out = read_texts(p, tokenizer)
        steps_per_epoch = steps_per_epoch_of(train, p.batch_size, drop_remainder=True)
        if steps_per_epoch == 0:
            raise DataError(
                f"`pretrain.files`: {len(train)} texts make no batch of {p.batch_size}; lower "
                "`pretrain.batch_size`."
            )
        total = min(p.max_steps or steps_per_epoch * p.epochs, steps_per_epoch * p.epochs)
        lock = _open_partial(partial, cfg)
        state = TrainingState()
        pad = tokenizer.pad_token_id or 0
        model.compile(optimizer=build_optimizer(_schedule(p), model, steps_per_epoch))
        first = _held_out_loss(model, held_out, p, pad)
        if first is not None and not (partial / "backup").is_dir():
            print(f"held-out masked-token loss before: {first:.4f} ({len(held_out)} texts)")
        try:
            with stop_between_steps():
                model.fit(
                    _training_batches(train, p, pad, state),
                    epochs=p.epochs,
                    verbose=0,
                    callbacks=_callbacks(p, partial, state, steps_per_epoch, total),
                )
        except KeyboardInterrupt:
            raise Interrupted(
                f"pretraining stopped at step {int(model.optimizer.iterations.numpy())} of {total}; "
                f"run the same command again to resume from the last backup in {partial}."
            ) from None
        last = _held_out_loss(model, held_out, p, pad)
        if last is not None:
            print(f"held-out masked-token loss after: {last:.4f}")
        losses = [r["loss"] for r in read_steps(partial / "steps.jsonl")]
        _write(output, partial, model.mlm, tokenizer, cfg, Summary(total, first, last, losses))
        return PretrainResult(output, total, (first or 0.0, last or 0.0), losses)
    finally:
        if lock is not None:
            lock.release()
        keras.mixed_precision.set_global_policy(before)


def _model(cfg: PretrainRun) -> tuple[Any, MaskedLanguageModel]:
    """The tokenizer and the masked LM, built (its variables exist before the optimizer's)."""
    p = cfg.pretrain
    directory = resolve_backbone(cfg.model.backbone)
    dropout = {"hidden": cfg.model.hidden_dropout, "attention": cfg.model.attention_dropout}
    tokenizer, mlm, fresh = load_masked_lm(
        directory, dropout={k: v for k, v in dropout.items() if v is not None}
    )
    if fresh:
        print(
            f"{directory} has no masked-LM head: a fresh one is initialised (its decoder is the "
            "input embedding matrix, tied as in pretraining)"
        )
    model = MaskedLanguageModel(
        mlm, masking_for(tokenizer, p.mlm_probability, p.whole_word_masking), p.seed
    )
    model({"input_ids": tf.ones((1, 4), tf.int32), "attention_mask": tf.ones((1, 4), tf.int32)})
    float32_dropout_masks(model)
    return tokenizer, model


def _schedule(p: PretrainConfig) -> TrainingConfig:
    """The `training:` settings `build_optimizer` reads, from the `pretrain:` section."""
    return TrainingConfig(
        epochs=p.epochs,
        batch_size=p.batch_size,
        max_steps=p.max_steps,
        learning_rate=p.learning_rate,
        weight_decay=p.weight_decay,
        warmup_ratio=p.warmup_ratio,
        layerwise_lr_decay=p.layerwise_lr_decay,
        lazy_embedding_updates=False,  # the tied decoder makes the embedding gradient dense
    )


def _callbacks(
    p: PretrainConfig, partial: Path, state: TrainingState, steps_per_epoch: int, total: int
) -> list:
    """A training run's callbacks, minus validation: backups, budget, step log, progress."""
    return [
        StopOnNonFiniteLoss(),
        keras.callbacks.TensorBoard(log_dir=str(partial / "logs"), profile_batch=0),
        StepLog(partial / "steps.jsonl", steps_per_epoch),
        EpochCounter(state.epochs_done),
        Backup(
            str(partial / "backup"),
            p.backup_every_steps,
            state,
            steps_per_epoch,
            start_over=f"Delete {partial} to start over.",
        ),
        TrainingBudget(total, None, steps_per_epoch, state),
        StepProgress(steps_per_epoch, p.batch_size, p.log_every_steps, total=total),
    ]


def read_texts(p: PretrainConfig, tokenizer: Any) -> tuple[Encoded, Encoded]:
    """The tokenized texts of `pretrain.files`, split into training and held-out texts.

    Each text's features are its `input_ids`, `attention_mask` and `word_ids` (the word
    of every token, -1 for special tokens, for whole-word masking).

    Raises:
        DataError: a file is missing or unreadable, lacks `text_column`, or holds no text.
    """
    texts: list[str] = []
    for spec in p.files:
        texts += _read_file(resolve_path(spec, "pretrain.files"), p)
    texts = [t.strip() for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise DataError(f"`pretrain.files`: no text in {', '.join(p.files)}.")
    rng = np.random.default_rng(p.seed)
    order = rng.permutation(len(texts))
    if p.max_examples:
        order = order[: p.max_examples]
    held = min(1000, int(len(order) * p.validation_share))
    encoded = tokenizer([texts[i] for i in order], truncation=True, max_length=p.max_length)
    ids = [np.asarray(x, dtype=np.int32) for x in encoded["input_ids"]]
    words = [_word_index(encoded, i, tokenizer) for i in range(len(ids))]
    print(f"pretraining texts: {len(ids) - held} for training, {held} held out")
    return _encoded(ids[held:], words[held:]), _encoded(ids[:held], words[:held])


def _encoded(ids: list[np.ndarray], words: list[np.ndarray]) -> Encoded:
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    flat = np.concatenate(ids) if ids else np.zeros(0, np.int32)
    return Encoded(
        features={
            "input_ids": flat,
            "attention_mask": np.ones_like(flat),
            "word_ids": np.concatenate(words).astype(np.int32) if words else np.zeros(0, np.int32),
        },
        lengths=lengths,
        targets=np.zeros(len(ids), np.int32),  # unused: the masks are the targets
    )


def _read_file(path: Path, p: PretrainConfig) -> list[str]:
    """The texts of one `pretrain.files` entry: its lines (.txt), or its `text_column`."""
    return read_text_column(
        path,
        p.text_column,
        key="pretrain.text_column",
        encoding=p.encoding,
        quoting=p.quoting,
        encoding_key="`pretrain.encoding`",
        quoting_key="`pretrain.quoting: none`",
    )


def _word_index(encoded: Any, row: int, tokenizer: Any) -> np.ndarray:
    """Per token, the index of its word (-1 for special tokens)."""
    word_ids = encoded.word_ids(row) if getattr(tokenizer, "is_fast", False) else None
    if word_ids is None:  # slow tokenizer: every token is its own word
        return np.arange(len(encoded["input_ids"][row]), dtype=np.int32)
    return np.asarray([-1 if w is None else w for w in word_ids], dtype=np.int32)


def _training_batches(train: Encoded, p: PretrainConfig, pad: int, state: TrainingState):
    """Full batches, length-sorted in windows of `_WINDOW` batches, in a seeded, resumable order."""
    return train_dataset(
        train,
        p.batch_size,
        pad,
        bucketing=p.bucketing,
        max_length=p.max_length,
        seed=p.seed,
        window=_WINDOW,
        epoch=state.epochs_done,
        skip=state.resume_skip,
        drop_remainder=True,
    )


def _held_out_loss(model: Any, held_out: Encoded, p: PretrainConfig, pad: int) -> float | None:
    """The masked-token loss on the held-out texts, with the same masks every time (None without any)."""
    if not len(held_out):
        return None
    return float(model.evaluate(eval_dataset(held_out, p.batch_size, pad), verbose=0))


def _open_partial(partial: Path, cfg: PretrainRun) -> RunLock:
    """Locks `partial` (the backups), first clearing what another config left there."""
    resolved = config_lib.yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
    stamp = partial / "config.yaml"
    partial.mkdir(parents=True, exist_ok=True)
    lock = RunLock(partial)
    if not (stamp.is_file() and stamp.read_text() == resolved):
        for leftover in partial.iterdir():  # another config's backups
            if leftover.name != LOCK:
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    stamp.write_text(resolved, encoding="utf-8")
    return lock


@dataclasses.dataclass(frozen=True)
class Summary:
    steps: int
    first: float | None  # held-out loss before
    last: float | None  # and after
    losses: list[float]


def _write(output: Path, partial: Path, mlm: Any, tokenizer: Any, cfg: PretrainRun, s: Summary):
    """The model directory, written beside the backups and moved into place when complete."""
    staging = partial / "model"
    shutil.rmtree(staging, ignore_errors=True)
    mlm.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    summary = {
        "name": cfg.name,
        "backbone": cfg.model.backbone,
        "steps": s.steps,
        "held_out_loss_before": s.first,
        "held_out_loss_after": s.last,
        "loss_per_step": s.losses,
        "config": cfg.model_dump(mode="json"),
    }
    (staging / "pretrain.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    if output.exists():
        shutil.rmtree(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(output)
    shutil.rmtree(partial, ignore_errors=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kerasft.pretrain",
        description="Continue masked-LM pretraining of a backbone on unlabelled in-domain text and write "
        "a Hugging Face model directory for `model.backbone:`.",
        epilog="The last output line is output_dir=<path>. A killed run resumes from its last backup "
        "when started again with the same config. Exit status 2 means a problem with the config, "
        "files or backbone.",
    )
    p.add_argument(
        "--config", required=True, help="YAML with `name`, `model.backbone` and `pretrain:`"
    )
    config_lib.add_override_argument(p, "pretrain.max_steps=100")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    raw = config_lib.load_raw(args.config)
    cfg = config_lib.config_from_dict(raw, args.config, args.overrides, PretrainRun)
    result = run(cfg)
    print(f"output_dir={result.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
