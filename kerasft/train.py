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
import hashlib
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kerasft import config as config_lib
from kerasft._compat import keras, tf
from kerasft.callbacks import (
    Backup,
    BestCheckpoint,
    EpochCounter,
    EpochLog,
    StepProgress,
    StepTimer,
    TrainingBudget,
    ValidationMetrics,
    best_checkpoint,
)
from kerasft.config import Config
from kerasft.data import encode, eval_dataset, load_splits, steps_per_epoch, train_dataset
from kerasft.distribute import (
    barrier,
    cluster_from_env,
    is_chief,
    is_multi_worker,
    resolve_strategy,
)
from kerasft.errors import ConfigError, DataError, KerasftError, cli_main
from kerasft.export import export_run, reexport
from kerasft.freezing import GradualUnfreezing, freeze
from kerasft.hardware import resolve_jit, resolve_precision
from kerasft.lora import apply_lora_config
from kerasft.models import build_model, load_backbone, load_tokenizer, resolve_backbone
from kerasft.optim import (
    build_optimizer,
    group_multipliers,
    grouped_optimizer,
    layerwise_multipliers,
)
from kerasft.tasks import collect, evaluate, fit_metrics, loss_for, monitor_mode, tune_thresholds


@dataclass
class RunResult:
    run_dir: Path
    export_dir: Path | None
    metrics: dict
    model: keras.Model  # the trained model, holding the best epoch's weights


def run(
    cfg: Config,
    *,
    verbose: int | None = None,
    frames: dict[str, pd.DataFrame] | None = None,
    resume_dir: Path | None = None,
) -> RunResult:
    """Trains, evaluates and exports one experiment described by `cfg`.

    Args:
        cfg: the validated config.
        verbose: Keras `fit` verbosity. Defaults to a progress bar on a
            terminal and progress lines otherwise.
        frames: DataFrames standing in for `data.train`/`validation`/`test`. Defaults to none.
        resume_dir: an interrupted run of the same config to continue from its last
            backup (every `training.backup_every_steps` steps and every epoch end).
            Defaults to a new run. Multi-worker runs find their own (see README).
    """
    before = keras.mixed_precision.global_policy()
    try:
        return _run(cfg, verbose, frames, resume_dir)
    finally:  # the run's precision is its own, not the caller's from now on
        keras.mixed_precision.set_global_policy(before)


def _run(cfg, verbose, frames, resume_dir) -> RunResult:
    # First: MultiWorkerMirroredStrategy must be created before TensorFlow's runtime starts.
    strategy, described = resolve_strategy(cfg.training.distribution)
    multi_worker = is_multi_worker(strategy)
    if multi_worker and cfg.training.max_seconds:
        raise ConfigError(
            "`training.max_seconds` would stop workers at different steps under multi-worker training; "
            "use `training.max_steps`."
        )
    keras.utils.set_random_seed(cfg.training.seed)
    policy, why = resolve_precision(cfg.training.precision)
    keras.mixed_precision.set_global_policy(policy)
    if cfg.training.precision == "auto":
        print(f"precision: {policy} ({why})")

    directory = resolve_backbone(cfg.model.backbone)
    tokenizer = load_tokenizer(directory)
    splits = load_splits(cfg.data, cfg.training.seed, cfg.task, frames)
    max_length = min(
        cfg.data.max_length, getattr(tokenizer, "model_max_length", None) or cfg.data.max_length
    )
    scaling = None
    if cfg.task == "regression" and cfg.data.target_scaling == "standard":
        target = splits.train.targets
        scaling = (float(target.mean()), float(target.std()) or 1.0)
        for split in (splits.train, splits.validation, splits.test):
            split.targets = ((split.targets - scaling[0]) / scaling[1]).astype(np.float32)
        print(f"regression targets standardised: mean {scaling[0]:.4f}, std {scaling[1]:.4f}")
    encoded = {
        name: encode(tokenizer, getattr(splits, name), max_length, cfg.task, cfg.data.cache_dir)
        for name in ("train", "validation", "test")
    }
    replicas = strategy.num_replicas_in_sync
    if replicas > 1 or multi_worker:
        print(
            f"distribution: {described}; global batch {cfg.training.batch_size} = "
            f"{cfg.training.batch_size // replicas} per replica"
        )
        if cfg.training.gradient_accumulation_steps > 1 or cfg.training.group_optimizers:
            raise ConfigError(
                "`training.gradient_accumulation_steps` and `training.group_optimizers` do not run under "
                "a distribution strategy yet; set `training.distribution: none`."
            )
        if cfg.training.batch_size % replicas:
            raise ConfigError(
                f"`training.batch_size: {cfg.training.batch_size}` does not split evenly over {replicas} replicas."
            )
    with strategy.scope():  # model, optimizer and metrics live on every replica
        dropout = {"hidden": cfg.model.hidden_dropout, "attention": cfg.model.attention_dropout}
        backbone = load_backbone(
            directory, tokenizer, {k: v for k, v in dropout.items() if v is not None}
        )
        model = build_model(
            backbone, cfg.task, len(splits.vocab.names), cfg.model.pooling, cfg.model.dropout
        )

        if cfg.model.lora:
            adapted = apply_lora_config(model, cfg.model.lora, backbone.input_names)
            print(
                f"LoRA: rank {cfg.model.lora.rank} adapters on {adapted} layers; the rest of the backbone is frozen"
            )

        # Finished epochs: saved with every backup, and it seeds each epoch's data order, so a
        # resumed run sees the same batches as an uninterrupted one.
        epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_done")
        # Batches of the current epoch to leave out: set by a mid-epoch restore (see Backup).
        resume_skip = tf.Variable(0, dtype=tf.int64, trainable=False, name="resume_skip")
        jit = resolve_jit(cfg.training.jit_compile)

        batch = cfg.training.batch_size
        steps = steps_per_epoch(encoded["train"], batch, replicas > 1)
        if steps == 0:
            raise DataError(
                f"{splits.train.source}: {len(splits.train)} training examples make no full batch of "
                f"{batch}; lower `training.batch_size`."
            )
        datasets = {
            "train": train_dataset(
                encoded["train"],
                batch,
                backbone.pad_id,
                bucketing=cfg.data.bucketing,
                max_length=max_length,
                window=cfg.data.bucket_window,
                seed=cfg.training.seed,
                epoch=epochs_done,
                skip=resume_skip,
                fixed_widths=jit,
                drop_remainder=replicas > 1,
            ),
            "validation": eval_dataset(encoded["validation"], batch * 2, backbone.pad_id),
            "test": eval_dataset(encoded["test"], batch * 2, backbone.pad_id),
        }
        if multi_worker:
            # Every worker builds the same seeded stream of global batches; each takes its
            # share of every batch, so all run the same number of steps.
            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = (
                tf.data.experimental.AutoShardPolicy.DATA
            )
            datasets["train"] = datasets["train"].with_options(options)
        multipliers = None
        if cfg.training.group_learning_rates:
            multipliers = group_multipliers(
                model, cfg.training.group_learning_rates, cfg.training.learning_rate
            )
            print(
                "learning rates per group: "
                + ", ".join(f"{g} {r:g}" for g, r in cfg.training.group_learning_rates.items())
            )
        if cfg.training.layerwise_lr_decay < 1.0:
            multipliers = layerwise_multipliers(model, cfg.training.layerwise_lr_decay)
            print(
                f"layer-wise learning-rate decay {cfg.training.layerwise_lr_decay}: multipliers from "
                f"{min(multipliers.values()):.3g} (embeddings) to 1 (head)"
            )
        t = cfg.training
        updates = math.ceil(
            min(steps * t.epochs, t.max_steps or steps * t.epochs) / t.gradient_accumulation_steps
        )
        optimizer = build_optimizer(
            t.learning_rate,
            t.weight_decay,
            updates,
            t.warmup_ratio,
            multipliers,
            warmup_steps=t.warmup_steps,
            schedule=t.schedule,
            clipnorm=t.clipnorm,
            accumulation_steps=t.gradient_accumulation_steps,
            optimizer=t.optimizer,
            momentum=t.momentum,
            lazy_sparse=t.lazy_embedding_updates,
        )
        if t.gradient_accumulation_steps > 1:
            optimizer.prepare_accumulation(model.trainable_variables, t.gradient_accumulation_steps)
        if t.group_optimizers:
            specs = {g: spec.model_dump() for g, spec in t.group_optimizers.items()}
            optimizer = grouped_optimizer(model, specs, optimizer, updates, t.warmup_ratio)
            print(
                "separate optimizers: "
                + ", ".join(
                    f"{g} {s['optimizer']} lr {s['learning_rate']:g}" for g, s in specs.items()
                )
            )
        if t.unfreeze_every_epochs or t.unfreeze_every_steps:
            # Slots for every variable now, while all are trainable, so blocks unfrozen later
            # get Adam state and the ones already training keep theirs.
            optimizer.build(model.trainable_variables)
        freeze(model, t.freeze_embeddings, t.freeze_layers)
        loss = loss_for(
            cfg.task,
            len(splits.vocab.names),
            t.label_smoothing,
            t.focal_gamma if t.loss == "focal" else None,
        )
        model.compile(
            optimizer=optimizer, loss=loss, metrics=fit_metrics(cfg.task), jit_compile=jit
        )
        # On the optimizer, the counter is part of every backup but not of the weight files.
        model.optimizer.kerasft_epochs_done = epochs_done

    chief = is_chief(strategy)
    if multi_worker:
        run_dir, resume_dir = _multi_worker_run_dir(cfg)
    else:
        run_dir = resume_dir or _new_run_dir(Path(cfg.training.output_dir) / cfg.name)
    try:
        prepared = _Prepared(
            model, backbone, splits, datasets, steps, scaling, max_length, resume_skip
        )
        return _fit_evaluate_export(cfg, run_dir, prepared, verbose, chief)
    except KerasftError:
        if resume_dir is None and chief:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


@dataclass
class _Prepared:
    """Everything `_run` builds before the run directory exists."""

    model: keras.Model
    backbone: Any
    splits: Any
    datasets: dict[str, tf.data.Dataset]
    steps: int  # training steps per epoch
    scaling: tuple[float, float] | None  # regression target standardisation
    max_length: int
    resume_skip: tf.Variable  # batches a mid-epoch restore leaves out (see Backup)


def _fit_evaluate_export(
    cfg: Config, run_dir: Path, prepared: _Prepared, verbose: int | None, chief: bool
) -> RunResult:
    """Trains and, on the chief (every process but a non-chief worker), evaluates and exports.

    Non-chief workers train in step with the chief and write nothing of their own:
    Keras sends their checkpoints, backups and logs to temporary directories.
    """
    model, backbone, splits, datasets = (
        prepared.model,
        prepared.backbone,
        prepared.splits,
        prepared.datasets,
    )
    steps, scaling, max_length = prepared.steps, prepared.scaling, prepared.max_length
    resume_skip = prepared.resume_skip
    names = splits.vocab.names
    multi_worker = is_multi_worker(model.distribute_strategy)
    if chief:
        (run_dir / "config.yaml").write_text(config_lib.dump_config(cfg), encoding="utf-8")
        (run_dir / "labels.json").write_text(splits.vocab.to_json(), encoding="utf-8")
    # TensorFlow checkpoint format: it restores into mirrored variables too (HDF5 does not).
    checkpoints = run_dir / "checkpoints"
    checkpoints.mkdir(exist_ok=True)
    monitor, mode = cfg.monitor, monitor_mode(cfg.monitor)
    history_file = run_dir / "history.jsonl"
    earlier = read_history(history_file)  # epochs finished before an interruption
    best_so_far = [e[monitor] for e in earlier if monitor in e]
    timer = StepTimer()
    callbacks = [
        timer,  # first: it times the steps, not the epoch-end work of the others
        # before the callbacks that read its val_* logs
        ValidationMetrics(datasets["validation"], cfg.task, names, scaling),
        BestCheckpoint(
            checkpoints,
            chief,
            monitor=monitor,
            mode=mode,
            initial_value_threshold=(min if mode == "min" else max)(best_so_far)
            if best_so_far
            else None,
        ),
        keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=cfg.training.patience),
        keras.callbacks.TensorBoard(log_dir=str(run_dir / "logs"), profile_batch=0),
        EpochLog(history_file if chief else None),
        EpochCounter(model.optimizer.kerasft_epochs_done),
        # last of the epoch-end writers: the backup holds everything the ones above updated
        Backup(
            str(run_dir / "backup"),
            cfg.training.backup_every_steps,
            resume_skip,
            steps,
            # Multi-worker: the chief deletes it after every worker is done (below), not
            # while another worker still writes its part under it.
            delete_checkpoint=not multi_worker,
        ),
    ]
    trainable = sum(int(tf.size(v)) for v in model.trainable_variables)
    total = sum(int(tf.size(v)) for v in model.variables)
    print(
        f"training {cfg.name} ({cfg.task}): {len(splits.train)} examples, {steps} steps/epoch, "
        f"up to {cfg.training.epochs} epochs, batch {cfg.training.batch_size}, {trainable:,} of {total:,} parameters trainable "
        f"({100 * trainable / total:.2f}%), precision {keras.mixed_precision.global_policy().name}, XLA {'on' if model._jit_compile else 'off'}, monitoring {monitor}",
        flush=True,
    )
    t = cfg.training
    # After the restore in Backup.on_train_begin: it reads the restored epoch count.
    if t.unfreeze_every_epochs:
        callbacks.append(
            GradualUnfreezing(t.unfreeze_every_epochs, model.optimizer.kerasft_epochs_done, "epoch")
        )
    elif t.unfreeze_every_steps:
        callbacks.append(
            GradualUnfreezing(t.unfreeze_every_steps, model.optimizer.kerasft_epochs_done, "step")
        )
    if cfg.training.max_steps or cfg.training.max_seconds:
        callbacks.append(TrainingBudget(cfg.training.max_steps, cfg.training.max_seconds, steps))
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    if verbose == 2:  # no live progress bar in a log file: print progress lines instead
        callbacks.append(StepProgress(steps, cfg.training.batch_size))
    start = time.perf_counter()
    model.fit(
        datasets["train"],
        epochs=cfg.training.epochs,
        callbacks=callbacks,
        verbose=verbose,
        class_weight=splits.class_weights,
    )
    wall = time.perf_counter() - start
    barrier(model.distribute_strategy)
    if not chief:
        print(
            f"worker done: {timer.steps} steps in {timer.seconds:.1f}s; the chief evaluates and exports"
        )
        return RunResult(run_dir, None, {}, model)
    shutil.rmtree(run_dir / "backup", ignore_errors=True)  # finished: nothing left to resume
    full_history = read_history(history_file)
    epochs_run = len(full_history)

    # EarlyStopping only restores weights when it stops early; the checkpoint holds the best epoch either way.
    model.load_weights(best_checkpoint(checkpoints))
    outputs = {name: collect(model, datasets[name], cfg.task) for name in ("validation", "test")}
    thresholds = None
    if cfg.task == "multi_label":
        thresholds = tune_thresholds(*outputs["validation"])
        print(
            "decision thresholds tuned on validation: "
            + ", ".join(f"{n} {t:.2f}" for n, t in zip(names, thresholds, strict=True))
        )
    metrics = {
        name: evaluate(cfg.task, *outputs[name], names, thresholds=thresholds, scaling=scaling)
        for name in ("validation", "test")
    }
    metrics["train"] = {
        "examples": len(splits.train),
        "epochs": epochs_run,
        "wall_seconds": round(wall, 2),
        # Training steps only (tracing included); wall_seconds adds validation and checkpoints.
        "step_seconds": round(timer.seconds, 2),
        "examples_per_second": round(
            len(splits.train) * timer.steps / steps / max(timer.seconds, 1e-9), 2
        ),
        "best_epoch": _best_epoch([e.get(monitor) for e in full_history], mode),
        "history": {
            k: [round(float(e[k]), 6) for e in full_history]
            for k in (full_history or [{}])[-1]
            if k != "epoch"
        },
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    for split in ("validation", "test"):
        m = metrics[split]
        if m["examples"]:
            shown = "  ".join(
                f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, float) and k != "loss"
            )
            print(f"{split}: {shown}  ({m['examples']} examples)")
    print(
        f"train: {metrics['train']['examples_per_second']} examples/s in training steps "
        f"({timer.seconds:.1f}s); {wall:.1f}s with validation and checkpoints"
    )

    # Everything a later re-export (`python -m kerasft.export`) needs besides the weights.
    export_info = {
        "max_length": max_length,
        "pair": splits.train.pairs is not None,
        "thresholds": None if thresholds is None else [float(t) for t in thresholds],
        "scaling": None if scaling is None else list(scaling),
        # Raw strings, as clients send them (word lists are joined for token classification).
        "warmup_texts": [
            t if isinstance(t, str) else " ".join(t) for t in splits.validation.texts[:8]
        ],
        "warmup_pairs": splits.validation.pairs[:8] if splits.validation.pairs else None,
        "card": card_info(cfg, run_dir, backbone, splits, metrics),
    }
    (run_dir / "export.json").write_text(json.dumps(export_info, indent=2), encoding="utf-8")
    export_dir = None
    if cfg.export.enabled and (multi_worker or model.dtype_policy.name != "float32"):
        # A float32 single-device copy of the best weights: it serves anywhere, converts to
        # TFLite, and saving it needs none of the collectives a multi-worker model's
        # sync-on-read variables would (the other workers have stopped).
        print(f"export: rebuilding the model in float32 (trained in {model.dtype_policy.name})")
        export_dir = reexport(run_dir, test_data=datasets["test"])
    elif cfg.export.enabled:
        export_dir = export_run(run_dir, model, backbone, cfg, test_data=datasets["test"])
    return RunResult(run_dir, export_dir, metrics, model)


def card_info(cfg: Config, run_dir: Path, backbone, splits, metrics: dict) -> dict:
    """What the model card says about the run."""
    scalar = [k for k, v in metrics["test"].items() if isinstance(v, float) and k != "loss"]
    if not scalar:
        scalar = [
            k for k, v in metrics["validation"].items() if isinstance(v, float) and k != "loss"
        ]
    return {
        "backbone": f"{cfg.model.backbone} ({backbone.model.config.model_type}, {backbone.directory})",
        "data": {
            "train": splits.train.source,
            "train_examples": len(splits.train),
            "validation": f"{splits.validation.source} ({len(splits.validation)})",
            "test": f"{splits.test.source} ({len(splits.test)})",
        },
        "run_dir": str(run_dir),
        "config": config_lib.dump_config(cfg),
        "metrics": {
            k: {n: v for n, v in metrics[k].items() if isinstance(v, float | int)}
            for k in ("validation", "test")
        },
        "metric_names": scalar,
    }


def read_history(path: Path) -> list[dict]:
    """Per-epoch logs of a run, one per epoch (the last record wins if an epoch was redone)."""
    if not path.is_file():
        return []
    by_epoch = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            by_epoch[record["epoch"]] = record
    return [by_epoch[e] for e in sorted(by_epoch)]


def _best_epoch(values: list[float | None], mode: str) -> int | None:
    known = [v for v in values if v is not None]
    if not known:
        return None
    pick = min if mode == "min" else max
    return values.index(pick(known)) + 1


def unfinished_run(cfg: Config) -> Path | None:
    """The newest run of this exact config that was interrupted (a backup and no metrics.json)."""
    parent = Path(cfg.training.output_dir) / cfg.name
    if not parent.is_dir():
        return None
    resolved = config_lib.dump_config(cfg)
    for run_dir in sorted((p for p in parent.iterdir() if p.is_dir()), reverse=True):
        backup = run_dir / "backup"
        complete = (run_dir / "metrics.json").exists()
        same = (run_dir / "config.yaml").is_file() and (
            run_dir / "config.yaml"
        ).read_text() == resolved
        if same and not complete and backup.is_dir() and any(backup.rglob("checkpoint")):
            return run_dir
    return None


def _multi_worker_run_dir(cfg: Config) -> tuple[Path, Path | None]:
    """The run directory every worker of a cluster agrees on, and whether it is being resumed.

    Named after the config and the cluster's shape, so a restarted cluster finds its backup
    (on a filesystem all workers share, as Keras' BackupAndRestore expects).

    Raises:
        ConfigError: the run of this config on this cluster has already finished.
    """
    import os

    # The cluster's shape, not its addresses: restarted workers may come back elsewhere.
    cluster = json.loads(os.environ["TF_CONFIG"])["cluster"]
    shape = {role: len(tasks) for role, tasks in cluster.items()}
    key = config_lib.dump_config(cfg) + json.dumps(shape, sort_keys=True)
    run_dir = (
        Path(cfg.training.output_dir)
        / cfg.name
        / f"multi-worker-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
    )
    if (run_dir / "metrics.json").exists():
        raise ConfigError(
            f"{run_dir} holds the finished run of this config on this cluster; change `name` "
            "(or move that directory away) to train again."
        )
    resumed = run_dir if (run_dir / "backup").is_dir() else None
    if resumed:
        print(f"resuming the interrupted multi-worker run {run_dir} from its last backup")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir, resumed


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
        "--fresh",
        action="store_true",
        help="start a new run even if an interrupted run of the same config could be resumed",
    )
    config_lib.add_override_argument(p)
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    cfg = config_lib.load_config(args.config, args.overrides)
    if cluster_from_env() is not None and args.fresh:
        raise ConfigError(
            "--fresh does not apply to multi-worker runs (TF_CONFIG is set): their run directory "
            "is named after the config and cluster; change `name` to start over."
        )
    # Multi-worker runs find their own run directory (all workers must agree on it).
    resume = None if args.fresh or cluster_from_env() else unfinished_run(cfg)
    if resume is not None:
        print(f"resuming the interrupted run {resume} from its last backup (--fresh starts over)")
    result = run(cfg, resume_dir=resume)
    print(f"run_dir={result.run_dir}")
    print(f"export_dir={result.export_dir if result.export_dir else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
