"""`python -m kerasft.train --config configs/x.yaml`: one fine-tuning run, top to bottom.

config → backbone + tokenizer → data splits → token ids → tf.data → Keras model
→ AdamW + warmup/linear schedule → fit (validation metrics, early stopping,
best checkpoint, TensorBoard) → best weights → test metrics → SavedModel.

Everything that can be wrong with the user's input (config, data, backbone) is
checked before the run directory is created; if a user error still happens
later, the run directory is removed so no half-written run is left behind.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kerasft import config as config_lib
from kerasft._compat import keras, tf
from kerasft.callbacks import StepProgress, ValidationMetrics
from kerasft.config import Config
from kerasft.data import encode, eval_dataset, load_splits, steps_per_epoch, train_dataset
from kerasft.errors import ConfigError, KerasftError
from kerasft.export import export_classifier
from kerasft.metrics import classification_metrics, predict_split
from kerasft.models import build_classifier, load_backbone, load_tokenizer, resolve_backbone
from kerasft.optim import build_optimizer


@dataclass
class RunResult:
    run_dir: Path
    export_dir: Path | None
    metrics: dict
    model: keras.Model  # the trained model, holding the best epoch's weights


def run(
    cfg: Config, *, verbose: int | None = None, frames: dict[str, pd.DataFrame] | None = None
) -> RunResult:
    """Trains, evaluates and exports one experiment described by `cfg`.

    Args:
        cfg: the validated config.
        verbose: Keras `fit` verbosity. Defaults to a progress bar on a
            terminal and progress lines otherwise.
        frames: DataFrames standing in for `data.train`/`validation`/`test`. Defaults to none.
    """
    if cfg.task != "classification":
        raise ConfigError(
            f"`task: {cfg.task}`: kerasft reads and tokenizes data for this task, but trains only "
            "`classification` so far."
        )
    keras.utils.set_random_seed(cfg.training.seed)
    keras.mixed_precision.set_global_policy(cfg.training.precision)

    directory = resolve_backbone(cfg.model.backbone)
    tokenizer = load_tokenizer(directory)
    splits = load_splits(cfg.data, cfg.training.seed, cfg.task, frames)
    max_length = min(
        cfg.data.max_length, getattr(tokenizer, "model_max_length", None) or cfg.data.max_length
    )
    encoded = {
        name: encode(tokenizer, getattr(splits, name), max_length, cfg.task, cfg.data.cache_dir)
        for name in ("train", "validation", "test")
    }
    backbone = load_backbone(directory, tokenizer)
    model = build_classifier(
        backbone, len(splits.vocab.names), cfg.model.pooling, cfg.model.dropout
    )

    batch = cfg.training.batch_size
    steps = steps_per_epoch(encoded["train"], batch, cfg.data.bucketing, max_length)
    train_ds = train_dataset(
        encoded["train"],
        batch,
        backbone.pad_id,
        bucketing=cfg.data.bucketing,
        max_length=max_length,
        shuffle_buffer=cfg.data.shuffle_buffer,
        seed=cfg.training.seed,
    )
    val_ds = eval_dataset(encoded["validation"], batch * 2, backbone.pad_id)
    test_ds = eval_dataset(encoded["test"], batch * 2, backbone.pad_id)

    optimizer = build_optimizer(
        cfg.training.learning_rate,
        cfg.training.weight_decay,
        steps * cfg.training.epochs,
        cfg.training.warmup_ratio,
    )
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )

    run_dir = _new_run_dir(Path(cfg.training.output_dir) / cfg.name)
    try:
        return _fit_evaluate_export(
            cfg, run_dir, model, backbone, splits, train_ds, val_ds, test_ds, steps, verbose
        )
    except KerasftError:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _fit_evaluate_export(
    cfg, run_dir, model, backbone, splits, train_ds, val_ds, test_ds, steps, verbose
) -> RunResult:
    (run_dir / "config.yaml").write_text(config_lib.dump_config(cfg), encoding="utf-8")
    (run_dir / "labels.json").write_text(splits.vocab.to_json(), encoding="utf-8")
    best_path = run_dir / "checkpoints" / "best.weights.h5"
    best_path.parent.mkdir()
    mode = "min" if cfg.training.monitor == "val_loss" else "max"
    callbacks = [
        ValidationMetrics(val_ds, splits.vocab.names),  # first: the others read its val_* logs
        keras.callbacks.ModelCheckpoint(
            str(best_path),
            monitor=cfg.training.monitor,
            mode=mode,
            save_best_only=True,
            save_weights_only=True,
        ),
        keras.callbacks.EarlyStopping(
            monitor=cfg.training.monitor, mode=mode, patience=cfg.training.patience
        ),
        keras.callbacks.TensorBoard(log_dir=str(run_dir / "logs"), profile_batch=0),
    ]
    trainable = sum(int(tf.size(v)) for v in model.trainable_variables)
    print(
        f"training {cfg.name}: {len(splits.train)} examples, {steps} steps/epoch, up to {cfg.training.epochs} epochs, "
        f"batch {cfg.training.batch_size}, {trainable:,} trainable parameters, precision {cfg.training.precision}",
        flush=True,
    )
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    if verbose == 2:  # no live progress bar in a log file: print progress lines instead
        callbacks.append(StepProgress(steps, cfg.training.batch_size))
    start = time.perf_counter()
    history = model.fit(
        train_ds,
        epochs=cfg.training.epochs,
        callbacks=callbacks,
        verbose=verbose,
        class_weight=splits.class_weights,
    )
    wall = time.perf_counter() - start
    epochs_run = len(history.history.get("loss", []))

    # EarlyStopping only restores weights when it stops early; the checkpoint holds the best epoch either way.
    model.load_weights(str(best_path))
    metrics = {
        "validation": classification_metrics(*predict_split(model, val_ds), splits.vocab.names),
        "test": classification_metrics(*predict_split(model, test_ds), splits.vocab.names),
        "train": {
            "examples": len(splits.train),
            "epochs": epochs_run,
            "wall_seconds": round(wall, 2),
            "examples_per_second": round(len(splits.train) * epochs_run / wall, 2),
            "best_epoch": _best_epoch(history.history.get(cfg.training.monitor, []), mode),
            "history": {
                k: [round(float(v), 6) for v in vals] for k, vals in history.history.items()
            },
        },
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    for split in ("validation", "test"):
        m = metrics[split]
        if m["examples"]:
            print(
                f"{split}: accuracy {m['accuracy']:.4f}  macro_f1 {m['macro_f1']:.4f}  ({m['examples']} examples)"
            )
    print(f"train: {metrics['train']['examples_per_second']} examples/s, {wall:.1f}s")

    export_dir = None
    if cfg.export.enabled:
        export_dir = export_classifier(
            model, splits.vocab.names, backbone.input_names, Path(cfg.export.dir), cfg.name
        )
    return RunResult(run_dir, export_dir, metrics, model)


def _best_epoch(values: list[float], mode: str) -> int | None:
    if not values:
        return None
    pick = min if mode == "min" else max
    return values.index(pick(values)) + 1


def _new_run_dir(parent: Path) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    parent.mkdir(parents=True, exist_ok=True)
    for n in range(100):
        candidate = parent / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"cannot create a run directory under {parent}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kerasft.train",
        description="Fine-tune a pretrained transformer from a YAML config, evaluate it and export a SavedModel.",
        epilog="The last two output lines are run_dir=<path> and export_dir=<path>. "
        "Exit status 2 means a problem with the config, data or backbone (the message says which).",
    )
    p.add_argument(
        "--config", required=True, help="the experiment's YAML file, e.g. configs/quickstart.yaml"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set training.epochs=2 (repeatable; the value is read as YAML)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        cfg = config_lib.load_config(args.config, args.overrides)
        result = run(cfg)
    except KerasftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"run_dir={result.run_dir}")
    print(f"export_dir={result.export_dir if result.export_dir else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
