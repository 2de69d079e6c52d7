"""`run(cfg)`: one fine-tuning (or distillation) run, top to bottom; `python -m kerasft.train` calls it.

`run(cfg)` is the whole run as named steps:

    start_runtime    distribution strategy, seed, precision        (training.strategies)
    prepare_data     splits, label vocabulary, token ids           (data)
                     and, with `distill:`, the teacher's outputs   (training.distillation)
                     then settle_precision: `auto` weighs the training set's size (training.hardware)
    the builder      task_model_for: backbone, task head, prompt / LoRA / adapters (models);
                     or distilling: that model as a Distiller's student (training.distillation);
                     or packed_model, where `packing_for` packs    (training.packing)
    build_datasets   packed or length-sorted, resumable tf.data pipelines (data)
    compile_model    build_optimizer, freezing, BitFit, compile    (training.optimizers, peft)
    build_callbacks  validation metrics, best checkpoint, backups  (training.callbacks)
    fit              Keras' own loop
    finish           on the chief: evaluate_best (the best epoch on validation and test),
                     write_run_files (metrics.json, export.json, predictions/; tasks.evaluation),
                     write_report (report.html, plots/; report), export (serving)

Everything that can be wrong with the user's input (config, data, backbone) is
checked before the run directory is created; if a user error still happens
later, the run directory is removed so no half-written run is left behind.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from kerasft import config as config_lib
from kerasft._compat import keras, tf
from kerasft.config import Config
from kerasft.data import Data, Datasets, build_datasets, calibration_examples, load_data
from kerasft.data.packing import ROW_TOKENS
from kerasft.data.pipeline import eval_dataset, eval_order
from kerasft.errors import ConfigError, stop_between_steps
from kerasft.models import Backbone, backbone_for, build_model, load_tokenizer, model_directory
from kerasft.models.seq2seq import check_lengths, load_seq2seq
from kerasft.peft.bitfit import apply_bitfit
from kerasft.peft.freezing import freeze
from kerasft.report import write_report
from kerasft.report.history import read_history
from kerasft.serving import ExportInfo, RunCard
from kerasft.tasks import TASKS, TaskSpec, collect, evaluate, monitor_mode, tune_thresholds
from kerasft.tasks.evaluation import Predictions, distributions, slice_metrics
from kerasft.training import distillation as distill
from kerasft.training.callbacks import (
    StepTimer,
    StopOnNonFiniteLoss,
    best_checkpoint,
    build_callbacks,
)
from kerasft.training.contrastive import ContrastiveModel, HeadFit
from kerasft.training.exports import export_run, reexport
from kerasft.training.generation import evaluate_generation, generation_callback, seq2seq_model
from kerasft.training.hardware import resolve_jit, resolve_precision, settle_precision
from kerasft.training.optimizers import build_optimizer
from kerasft.training.packing import PackedModel, packing_for
from kerasft.training.rundir import (
    check_outputs,
    ending_for,
    open_run_dir,
    remove_leftovers,
    unfinished_run,
)
from kerasft.training.state import TrainingState
from kerasft.training.strategies import (
    barrier,
    check_fits,
    cluster_from_env,
    is_chief,
    is_multi_worker,
    resolve_strategy,
)


@dataclass
class RunResult:
    run_dir: Path
    export_dir: Path | None
    metrics: dict
    model: keras.Model  # the trained model, holding the best epoch's weights
    report: Path | None = None  # report.html, unless `evaluation.report: false`


def run(
    cfg: Config,
    *,
    verbose: int | None = None,
    frames: dict | None = None,
    resume_dir: Path | None = None,
    observers: Callable[[keras.callbacks.Callback, int], list] | None = None,
) -> RunResult:
    """Trains, evaluates and exports one experiment described by `cfg`.

    Args:
        cfg: the validated config.
        verbose: `fit` verbosity. Defaults to a progress bar on a terminal, else progress lines.
        frames: DataFrames standing in for `data.train`/`validation`/`test`. Defaults to none.
        resume_dir: an interrupted run of the same config to continue from its last
            backup (every `training.backup_every_steps` steps and every epoch end).
            Defaults to a new run. Multi-worker runs find their own (docs/training.md).
        observers: callbacks to add, such as a search's pruner (`build_callbacks`). Defaults to none.
    """
    verbose, before, lock = _verbosity(verbose), keras.mixed_precision.global_policy(), None
    try:
        check_outputs(cfg)
        strategy = start_runtime(cfg)
        cfg, spec, data, teacher, tokenizer, directory = prepare_data(cfg, frames)
        jit = resolve_jit(cfg.training.jit_compile)
        with strategy.scope():  # model, optimizer and metrics live on every replica
            backbone = run_backbone(cfg, spec, directory, tokenizer)
            packs = packing_for(cfg, spec, backbone.model.config.model_type, jit)
            model, facts = builder_for(cfg, teacher, packs)(cfg, spec, backbone, data)
            state = TrainingState()
            datasets = build_datasets(cfg, data, backbone.pad_id, state, strategy, jit, packs)
            compile_model(model, cfg, spec, data, datasets.steps, jit)
        chief, multi = is_chief(strategy), is_multi_worker(strategy)
        run_dir, resume_dir, lock = open_run_dir(cfg, data, strategy, resume_dir)
        callbacks: list = []
        try:
            timer, first = StepTimer(), epoch_end_work(cfg, spec, data, backbone)
            args = (cfg, spec, run_dir, data, datasets, state, strategy, timer, verbose)
            validation = validation_for(cfg, spec, data, datasets, backbone)
            callbacks = build_callbacks(*args, first, validation, observers)
            wall = fit(model, cfg, data, datasets, callbacks, verbose, jit)
            if not chief:
                print(
                    f"worker done: {timer.steps} steps in {timer.seconds:.1f}s; the chief exports"
                )
                return RunResult(run_dir, None, {}, model)
            finished = Trained(model, backbone, data, datasets, timer, wall, facts)
            return finish(cfg, spec, run_dir, finished)
        except BaseException as exc:
            where = next(
                (c.position for c in callbacks if isinstance(c, StopOnNonFiniteLoss)), None
            )
            ending = ending_for(exc, run_dir, resume_dir is not None or not chief, where, multi)
            if ending is None:  # a bug: its own traceback
                raise
            raise ending from None
    finally:  # the run's precision is its own, not the caller's from now on
        if lock is not None:
            lock.release()
        keras.mixed_precision.set_global_policy(before)


@dataclass(frozen=True)
class Trained:
    """What `fit` leaves for the chief to evaluate, record and export."""

    model: keras.Model
    backbone: Backbone
    data: Data
    datasets: Datasets
    timer: StepTimer
    wall: float  # fit's wall-clock seconds
    facts: dict  # the builder's, for metrics.json (distillation's)


def finish(cfg: Config, spec: TaskSpec, run_dir: Path, t: Trained) -> RunResult:
    """The chief's end of a run: the best epoch scored, the run's files, its report and export."""
    shutil.rmtree(run_dir / "backup", ignore_errors=True)  # finished: nothing to resume
    if spec.generative:
        t.model.load_weights(best_checkpoint(run_dir / "checkpoints"))
        metrics = evaluate_generation(t.model, cfg, run_dir, t.data, t.datasets, t.backbone)
        thresholds = None
    else:
        metrics, thresholds = evaluate_best(t.model, cfg, spec, run_dir, t.data, t.datasets)
    metrics["train"] = training_summary(cfg, t.data, t.datasets.steps, t.timer, t.wall, run_dir)
    metrics["data"] = distributions(t.data.splits, spec)
    metrics.update(t.facts)
    write_run_files(cfg, run_dir, t.backbone, t.data, metrics, thresholds)
    report = write_report(run_dir, cfg.evaluation.errors) if cfg.evaluation.report else None
    export_dir = export(cfg, run_dir, t.model, t.backbone, t.data, t.datasets)
    return RunResult(run_dir, export_dir, metrics, t.model, report)


def prepare_data(cfg: Config, frames: dict | None) -> tuple:
    """The run's data, with the teacher's outputs among the targets when `cfg.distill` names one;
    then the precision policy, which for `auto` weighs the size of the training set.

    Returns:
        (cfg, with a cut student's layer count; the task spec; `Data`; the teacher or None;
        the backbone's tokenizer; its directory).
    """
    spec = TASKS[cfg.task]
    teacher = distill.load_teacher(cfg.distill.teacher) if cfg.distill else None
    cfg = distill.student_config(cfg, teacher) if teacher else cfg
    directory = model_directory(cfg.model)
    tokenizer = load_tokenizer(directory)
    data = load_data(cfg, spec, tokenizer, frames)
    if teacher:  # the teacher's logits join the training targets
        data = distill.distillation_data(cfg, spec, data, teacher, tokenizer)
    settle_precision(cfg.training.precision, data.rows_per_epoch, data.pairs is not None)
    return cfg, spec, data, teacher, tokenizer, directory


def compile_model(
    model: keras.Model,
    cfg: Config,
    spec: TaskSpec,
    data: Data,
    steps: int,
    jit: bool,
) -> None:
    """Compiles `model` for `fit`: optimizer, frozen weights, loss, metrics, XLA.

    Args:
        steps: optimizer steps per epoch (the schedule's length).
        jit: compile the steps with XLA (`hardware.resolve_jit`).
    """
    optimizer = build_optimizer(cfg.training, model, steps)
    # After the optimizer: with gradual unfreezing it has slots for every block.
    freeze(model, cfg.training.freeze_embeddings, cfg.training.freeze_layers)
    if cfg.training.bitfit:
        print(f"BitFit: {apply_bitfit(model)} bias vectors of the backbone train, and the head")
    # Slots for what trains now (frozen weights get none), built under the strategy's scope.
    optimizer.build(model.trainable_variables)
    model.compile(
        optimizer=optimizer,
        loss=loss_for(cfg, spec, data),
        metrics=spec.fit_metrics(),
        jit_compile=jit,
    )


def task_model_for(
    cfg: Config, spec: TaskSpec, backbone: Backbone, data: Data
) -> tuple[keras.Model, dict]:
    """The model builder of a training run: the `model:` section's task model, and no facts."""
    return build_model(cfg.model, spec, backbone, len(data.label_names), data.max_length), {}


def packed_model(
    cfg: Config, spec: TaskSpec, backbone: Backbone, data: Data
) -> tuple[keras.Model, dict]:
    """The model builder of packed training (`data.packing`): the task model as a `PackedModel`."""
    model, _ = task_model_for(cfg, spec, backbone, data)
    print(f"packing: each batch's texts laid end to end in rows of about {ROW_TOKENS} tokens")
    facts = {"packing": {"row_tokens": ROW_TOKENS}}  # metrics.json: this run trained packed
    return PackedModel.around(model, backbone.model, cfg.model.pooling), facts


def run_backbone(cfg: Config, spec: TaskSpec, directory: Path, tokenizer) -> Backbone:
    """The run's backbone: an encoder-decoder model for seq2seq, else `backbone_for`'s."""
    if spec.generative:
        backbone = load_seq2seq(cfg.model, directory, tokenizer, _dropout_overrides(cfg))
        check_lengths(backbone, cfg.data.max_length)
        return backbone
    return backbone_for(cfg.model, directory, tokenizer, _dropout_overrides(cfg))


def builder_for(cfg: Config, teacher: distill.Teacher | None, packs: bool = False):
    """The model builder the run's config asks for: distilling, contrastive, seq2seq, packed
    (`packs`: `packing_for` said so) or the task model."""
    if packs:
        return packed_model
    if cfg.task == "seq2seq":
        return seq2seq_model
    if teacher:
        return partial(distilling, teacher=teacher)
    return contrastive if cfg.training.method == "contrastive" else task_model_for


def contrastive(
    cfg: Config, spec: TaskSpec, backbone: Backbone, data: Data
) -> tuple[keras.Model, dict]:
    """The model builder of `training.method: contrastive`: the task model as a `ContrastiveModel`."""
    model, _ = task_model_for(cfg, spec, backbone, data)
    pairs = data.pairs
    facts = {
        "sampling": cfg.training.contrastive.sampling,
        "pairs": len(pairs),
        "same_label_pairs": int(pairs[:, 2].sum()),
        "labelled_examples": len(data.encoded["train"]),
    }
    return ContrastiveModel.around(model), {"contrastive": facts}


def epoch_end_work(
    cfg: Config, spec: TaskSpec, data: Data, backbone: Backbone
) -> list[keras.callbacks.Callback]:
    """What must happen at each epoch end before validation: `contrastive`'s head fit, else nothing."""
    if cfg.training.method != "contrastive":
        return []
    examples = eval_dataset(data.encoded["train"], cfg.training.batch_size * 2, backbone.pad_id)
    outputs = len(data.label_names)
    balanced = cfg.data.class_weights == "balanced"
    c = cfg.training.contrastive.head_l2
    return [HeadFit(examples, spec.multi_hot, outputs, c, balanced)]


def validation_for(cfg: Config, spec: TaskSpec, data: Data, datasets: Datasets, backbone: Backbone):
    """The callback that scores validation each epoch: seq2seq's on generated text, else the default."""
    return generation_callback(cfg, data, datasets, backbone) if spec.generative else None


def distilling(
    cfg: Config, spec: TaskSpec, backbone: Backbone, data: Data, teacher: distill.Teacher
) -> tuple[keras.Model, dict]:
    """The model builder of a distillation run: the student as a `Distiller`, and its facts."""
    student, _ = task_model_for(cfg, spec, backbone, data)
    model, facts = distill.build_distiller(student, cfg, data, teacher)
    return model, {"distill": facts}


def start_runtime(cfg: Config) -> tf.distribute.Strategy:
    """The distribution strategy, the global seed and the precision policy of the run.

    Raises:
        ConfigError: a setting this strategy cannot run, or `export.onnx` without the ONNX packages.
    """
    # First: MultiWorkerMirroredStrategy must be created before TensorFlow's runtime starts.
    strategy, described = resolve_strategy(
        cfg.training.distribution, cfg.training.cluster_wait_seconds
    )
    if cfg.export.enabled and cfg.export.onnx:
        from kerasft.serving import onnx as onnx_lib

        onnx_lib.require()  # now, not after hours of training
    t = cfg.training
    replicas, multi_worker = strategy.num_replicas_in_sync, is_multi_worker(strategy)
    check_fits(t, replicas, multi_worker)
    if replicas > 1 or multi_worker:
        print(
            f"distribution: {described}; global batch {t.batch_size} = "
            f"{t.batch_size // replicas} per replica"
        )
    keras.utils.set_random_seed(t.seed)
    # The hardware's choice, for what prepare_data computes; settle_precision has the last word.
    keras.mixed_precision.set_global_policy(resolve_precision(t.precision)[0])
    return strategy


def _dropout_overrides(cfg: Config) -> dict[str, float]:
    dropout = {"hidden": cfg.model.hidden_dropout, "attention": cfg.model.attention_dropout}
    return {k: v for k, v in dropout.items() if v is not None}


def loss_for(cfg: Config, spec: TaskSpec, data: Data):
    """The task's training loss with the config's smoothing and focal settings."""
    t = cfg.training
    focal = t.focal_gamma if t.loss == "focal" else None
    return spec.make_loss(len(data.label_names), t.label_smoothing, focal)


def fit(
    model: keras.Model,
    cfg: Config,
    data: Data,
    datasets: Datasets,
    callbacks: list,
    verbose: int,
    jit: bool,
) -> float:
    """Keras' `fit` with the run's callbacks; returns its wall-clock seconds."""
    trainable = sum(int(tf.size(v)) for v in model.trainable_variables)
    total = sum(int(tf.size(v)) for v in model.variables)
    t = cfg.training
    print(
        f"training {cfg.name} ({cfg.task}): {len(data.encoded['train'])} examples, {datasets.steps} steps/epoch, "
        f"up to {t.epochs} epochs, batch {t.batch_size}, {trainable:,} of {total:,} parameters trainable "
        f"({100 * trainable / total:.2f}%), precision {keras.mixed_precision.global_policy().name}, "
        f"XLA {'on' if jit else 'off'}, monitoring {cfg.monitor}",
        flush=True,
    )
    start = time.perf_counter()
    with stop_between_steps():
        model.fit(
            datasets.train,
            epochs=t.epochs,
            callbacks=callbacks,
            verbose=verbose,
            # Pairs carry similarities, not classes: class weights apply to the head's fit
            # only. Packed batches carry their class weights themselves.
            class_weight=None
            if data.pairs is not None or isinstance(model, PackedModel)
            else data.splits.class_weights,
        )
    wall = time.perf_counter() - start
    barrier(model.distribute_strategy)
    return wall


def evaluate_best(
    model: keras.Model, cfg: Config, spec: TaskSpec, run_dir: Path, data: Data, datasets: Datasets
) -> tuple[dict, list[float] | None]:
    """Loads the best epoch's weights, scores validation and test, and saves their predictions.

    EarlyStopping restores weights only when it stops early; the checkpoint holds the
    best epoch either way. Multi-label decision thresholds are tuned on validation here.
    Each split's predictions go to `predictions/<split>.npz` in input order (the report
    reads them); `evaluation.slices` adds each split's metrics per slice value.

    Returns:
        (metrics per split, the tuned thresholds or None).
    """
    model.load_weights(best_checkpoint(run_dir / "checkpoints"))
    splits = {"validation": datasets.validation, "test": datasets.test}
    outputs = {name: collect(model, dataset, spec) for name, dataset in splits.items()}
    names, thresholds = data.label_names, None
    if spec.multi_hot:
        thresholds = [float(t) for t in tune_thresholds(*outputs["validation"])]
        shown = ", ".join(f"{n} {t:.2f}" for n, t in zip(names, thresholds, strict=True))
        print(f"decision thresholds tuned on validation: {shown}")
    metrics = {
        name: evaluate(spec, *outputs[name], names, thresholds=thresholds, scaling=data.scaling)
        for name in splits
    }
    for name in splits:
        m = metrics[name]
        if not m["examples"]:
            continue
        shown = "  ".join(
            f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, float) and k != "loss"
        )
        print(f"{name}: {shown}  ({m['examples']} examples)")
        predictions = Predictions.in_input_order(
            *outputs[name], eval_order(data.encoded[name]), getattr(data.splits, name), data.scaling
        )
        predictions.save(run_dir / "predictions" / f"{name}.npz")
        if cfg.evaluation.slices:
            m["slices"] = slice_metrics(spec, predictions, names, _headline(cfg), thresholds)
            _print_gaps(name, m["slices"])
    return metrics, thresholds


def _headline(cfg: Config) -> str:
    """The metric slices are compared on: the monitored one (without `val_`)."""
    return cfg.monitor.removeprefix("val_")


def _print_gaps(split: str, slices: dict) -> None:
    for column, scored in slices.items():
        gap = scored["largest_gap"]
        if gap:
            print(
                f"{split} slices by {column}: {len(scored['values'])} values; largest {gap['metric']} gap "
                f"{gap['gap']:.4f} ({gap['highest']} over {gap['lowest']})"
            )


def training_summary(
    cfg: Config, data: Data, steps: int, timer: StepTimer, wall: float, run_dir: Path
) -> dict:
    """metrics.json's `train` section: size, epochs, speed and the per-epoch history."""
    history = read_history(run_dir / "history.jsonl")
    examples = len(data.encoded["train"])  # with distillation's unlabelled texts
    # Contrastive steps are over sentence pairs: two texts through the backbone each.
    per_epoch = 2 * len(data.pairs) if data.pairs is not None else examples
    per_second = per_epoch * timer.steps / steps / max(timer.seconds, 1e-9)
    unit = "texts (pair sides)" if data.pairs is not None else "examples"
    print(
        f"train: {round(per_second, 2)} {unit}/s in training steps "
        f"({timer.seconds:.1f}s); {wall:.1f}s with validation and checkpoints"
    )
    return {
        "examples": examples,
        "augmented": len(data.augmented),  # of `examples`, added by data.augment
        "epochs": len(history),
        "wall_seconds": round(wall, 2),
        # Training steps only (tracing included); wall_seconds adds validation and checkpoints.
        "step_seconds": round(timer.seconds, 2),
        "examples_per_second": round(per_second, 2),
        "best_epoch": _best_epoch([e.get(cfg.monitor) for e in history], monitor_mode(cfg.monitor)),
        "history": {
            k: [round(float(e[k]), 6) for e in history]
            for k in (history or [{}])[-1]
            if k != "epoch"
        },
    }


def write_run_files(
    cfg: Config,
    run_dir: Path,
    backbone: Backbone,
    data: Data,
    metrics: dict,
    thresholds: list[float] | None,
) -> None:
    """`metrics.json`, and `export.json`: everything a later re-export needs besides the weights."""
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    validation = data.splits.validation
    ExportInfo(
        task=cfg.task,
        labels=data.label_names,
        max_length=data.max_length,
        pair=data.splits.train.pairs is not None,
        thresholds=None if thresholds is None else tuple(thresholds),
        scaling=data.scaling,
        # Raw strings, as clients send them (word lists are joined for token classification).
        warmup_texts=tuple(t if isinstance(t, str) else " ".join(t) for t in validation.texts[:8]),
        warmup_pairs=tuple(validation.pairs[:8]) if validation.pairs else None,
        card=run_card(cfg, run_dir, backbone, data, metrics),
        generation=(
            {"source_prefix": cfg.data.source_prefix, **cfg.generation.model_dump()}
            if cfg.task == "seq2seq"
            else None
        ),
    ).write(run_dir)


def run_card(cfg: Config, run_dir: Path, backbone: Backbone, data: Data, metrics: dict) -> RunCard:
    """What the model card says about the run."""

    def scalars(split: str) -> list[str]:
        return [k for k, v in metrics[split].items() if isinstance(v, float) and k != "loss"]

    splits = data.splits
    return RunCard(
        backbone=f"{cfg.model.backbone} ({backbone.model.config.model_type}, {backbone.directory})",
        data={
            "train": splits.train.source,
            "train_examples": len(splits.train),
            "validation": f"{splits.validation.source} ({len(splits.validation)})",
            "test": f"{splits.test.source} ({len(splits.test)})",
        },
        run_dir=str(run_dir),
        config=config_lib.dump_config(cfg),
        metrics={
            k: {n: v for n, v in metrics[k].items() if isinstance(v, float | int)}
            for k in ("validation", "test")
        },
        metric_names=tuple(scalars("test") or scalars("validation")),
        teacher=cfg.distill.teacher if cfg.distill else None,
    )


def export(
    cfg: Config,
    run_dir: Path,
    model: keras.Model,
    backbone: Backbone,
    data: Data,
    datasets: Datasets,
) -> Path | None:
    """The run's SavedModel (when `export.enabled`), computing in float32 or `export.precision`."""
    if not cfg.export.enabled:
        return None
    calibration = None
    if cfg.export.tflite_int8:
        calibration = calibration_examples(data.encoded["train"], 200, cfg.training.seed)
    wanted = cfg.export.policy
    if is_multi_worker(model.distribute_strategy) or model.dtype_policy.name != wanted:
        # A single-device copy of the best weights in the export's precision: float32 serves
        # anywhere and converts to TFLite, and saving it needs none of the collectives a
        # multi-worker model's sync-on-read variables would (the other workers have stopped).
        print(f"export: rebuilding the model in {wanted} (trained in {model.dtype_policy.name})")
        return reexport(run_dir, test_data=datasets.test, calibration=calibration)
    return export_run(run_dir, model, backbone, cfg, datasets.test, calibration)


def _verbosity(verbose: int | None) -> int:
    # No live progress bar in a log file: progress lines instead (StepProgress).
    return verbose if verbose is not None else (1 if sys.stdout.isatty() else 2)


def _best_epoch(values: list[float | None], mode: str) -> int | None:
    known = [v for v in values if v is not None]
    if not known:
        return None
    pick = min if mode == "min" else max
    return values.index(pick(known)) + 1


def launch(cfg: Config, fresh: bool) -> int:
    """Runs `cfg`, resuming its interrupted run unless `fresh`; prints run_dir=, export_dir= and report=."""
    if cluster_from_env() is not None and fresh:
        raise ConfigError(
            "--fresh does not apply to multi-worker runs (TF_CONFIG is set): their run directory "
            "is named after the config and cluster; change `name` to start over."
        )
    # Multi-worker runs find their own run directory (all workers must agree on it).
    if not cluster_from_env():
        for leftover in remove_leftovers(Path(cfg.training.output_dir) / cfg.name):
            print(f"removed {leftover}: left by a run killed before its first backup")
    resume = None if fresh or cluster_from_env() else unfinished_run(cfg)
    if resume is not None:
        print(f"resuming the interrupted run {resume} from its last backup (--fresh starts over)")
    result = run(cfg, resume_dir=resume)
    print(f"run_dir={result.run_dir}")
    print(f"export_dir={result.export_dir if result.export_dir else ''}")
    print(f"report={result.report if result.report else ''}")
    return 0
