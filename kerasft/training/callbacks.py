"""Keras callbacks kerasft adds to `fit`, the training state they share, and `build_callbacks`.

The callbacks depend on each other's order (validation metrics before the callbacks
that read them, the epoch counter before the backup that saves it, the backup's
restore before the budget that counts restored steps); `build_callbacks` is the one
place that order is fixed.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kerasft._compat import backup_now, keras, restored_position, skip_log_sync, tf
from kerasft.config import Config
from kerasft.errors import DataError, TrainingError, check_stop, first_line
from kerasft.peft.freezing import GradualUnfreezing
from kerasft.report.history import read_history
from kerasft.tasks import TaskSpec, collect, evaluate, monitor_mode
from kerasft.training.layer_groups import current_rates, variable_groups
from kerasft.training.state import TrainingState
from kerasft.training.strategies import is_chief, is_multi_worker


class StepTimer(keras.callbacks.Callback):
    """Seconds spent in training steps (tracing included) and the number of steps.

    Put it first among the callbacks: the epoch-end work of the ones after it
    (validation, checkpoints, backups) is then left out of `seconds`.
    """

    def __init__(self):
        super().__init__()
        self.seconds = 0.0
        self.steps = 0
        self._start = None
        skip_log_sync(self)  # it never reads the logs: no per-step sync for them

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.seconds, self.steps, self._start = 0.0, 0, None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.steps += 1

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds += time.perf_counter() - self._start
        self._start = None

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._start is not None:  # stopped inside an epoch (step or time budget)
            self.on_epoch_end(-1)


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first step whose loss is NaN or infinite, naming the step.

    Keras' `TerminateOnNaN` stops quietly and lets the run go on to evaluate and export a
    broken model; a `TrainingError` instead ends the command with one line (and the new run's
    directory is removed). `position` is the last step begun, (epoch, step) from 1, for the
    line a Ctrl-C prints. It is also where training stops after a step that ends with a stop
    requested by Ctrl-C or SIGTERM (`kerasft.errors.stop_between_steps`).
    """

    def __init__(self):
        super().__init__()
        self.on_train_begin()

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.position: tuple[int, int] | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self.position = (self._epoch + 1, batch + 1)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        check_stop()
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise TrainingError(
                f"training stopped at epoch {self._epoch + 1}, step {batch + 1}: the loss is "
                f"{float(loss)}. Lower `training.learning_rate` (or set `training.clipnorm`), and "
                "check the data's targets and the backbone's weights."
            )


class ValidationMetrics(keras.callbacks.Callback):
    """Scores the validation split once per epoch and adds its metrics to the logs as `val_<name>`.

    kerasft does not pass `validation_data` to `fit`: this callback's single
    pass gives the loss and the task's metrics (macro-F1, Pearson, entity F1, ...)
    together. It must come before the callbacks that read those keys (early
    stopping, checkpoints, TensorBoard).

    Args:
        dataset: an (x, y) dataset of the validation split.
        spec: the task's spec.
        label_names: class, label or tag names in id order.
        scaling: `(mean, std)` of standardised regression targets. Defaults to none.
        summary_dir: where to write TensorBoard's confusion-matrix image and PR curves of
            each epoch (classification, multi-label). Defaults to none.
    """

    def __init__(
        self,
        dataset: tf.data.Dataset,
        spec: TaskSpec,
        label_names: tuple[str, ...],
        scaling: tuple[float, float] | None = None,
        summary_dir: Path | None = None,
    ):
        super().__init__()
        self.dataset = dataset
        self.spec = spec
        self.label_names = label_names
        self.scaling = scaling
        self.summary_dir = summary_dir
        self._writer = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.summary_dir is not None and self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.summary_dir))

    def measure(self) -> tuple[dict, int]:
        """The validation scores now (also mid-epoch, for a tuning pruner) and the example count."""
        shown, examples, _ = self._score()
        return shown, examples

    def _score(self) -> tuple[dict, int, tuple]:
        outputs, targets = collect(self.model, self.dataset, self.spec)
        scores = evaluate(self.spec, outputs, targets, self.label_names, scaling=self.scaling)
        shown = {k: v for k, v in scores.items() if isinstance(v, float)}
        return shown, scores["examples"], (outputs, targets)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        start = time.perf_counter()
        shown, examples, (outputs, targets) = self._score()
        for key, value in shown.items():
            logs[f"val_{key}"] = value
        if self._writer is not None:
            from kerasft.report.summaries import write_epoch_summaries  # the report reads our logs

            write_epoch_summaries(
                self._writer, self.spec, outputs, targets, self.label_names, epoch + 1
            )
        summary = "  ".join(f"{k} {v:.4f}" for k, v in shown.items())
        print(
            f"epoch {epoch + 1} validation: {summary}  ({examples} examples, "
            f"{time.perf_counter() - start:.1f}s)",
            flush=True,
        )


class StepProgress(keras.callbacks.Callback):
    """Prints a progress line every ~10% of an epoch, for logs where Keras' progress bar cannot redraw.

    Args:
        steps: batches per epoch.
        batch_size: global batch size, for the examples/s figure.
        every: print every this many steps. Defaults to a tenth of an epoch.
        total: number the steps across epochs, out of this many (`step 150/600`).
            Defaults to none: per epoch (`epoch 2 step 15/60`).
    """

    def __init__(
        self, steps: int, batch_size: int, every: int | None = None, total: int | None = None
    ):
        super().__init__()
        self.steps = steps
        self.batch_size = batch_size
        self.every = every or max(1, steps // 10)
        self.total = total

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch
        self._start = time.perf_counter()
        self._count = 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        done = int(batch) + 1  # continues mid-epoch after a restore
        self._count += 1
        step = self._epoch * self.steps + done if self.total else done
        last = self.total if self.total else self.steps
        if step % self.every and step != last:
            return
        elapsed = time.perf_counter() - self._start
        rate = self._count * self.batch_size / max(elapsed, 1e-9)
        loss = (logs or {}).get("loss", float("nan"))
        if self.total:
            line = f"step {step}/{self.total}  loss {loss:.4f}  {rate:.1f} examples/s"
        else:
            eta = (self.steps - done) * elapsed / self._count
            line = (
                f"epoch {self._epoch + 1} step {done}/{self.steps}  loss {loss:.4f}  "
                f"{rate:.1f} examples/s  eta {eta:.0f}s"
            )
        print(line, flush=True)


class TrainingBudget(keras.callbacks.Callback):
    """Stops training after `max_steps` steps or `max_seconds` of training, whichever comes first.

    The epoch in progress still ends normally, so its validation metrics are computed.

    A run resumed from a backup counts the steps trained before it (from `state`,
    which `Backup` has restored by then); the time budget counts this process's
    training time.

    Args:
        max_steps: step budget. Defaults to none.
        max_seconds: time budget. Defaults to none.
        steps_per_epoch: training steps per epoch. Defaults to none (count from zero).
        state: the run's training state. Defaults to none (count from zero).
    """

    def __init__(
        self,
        max_steps: int | None = None,
        max_seconds: float | None = None,
        steps_per_epoch: int | None = None,
        state: TrainingState | None = None,
    ):
        super().__init__()
        self.max_steps = max_steps
        self.max_seconds = max_seconds
        self.steps_per_epoch = steps_per_epoch
        self.state = state

    def on_train_begin(self, logs: dict | None = None) -> None:
        known = self.state is not None and self.steps_per_epoch
        self._steps = self.state.steps_done(self.steps_per_epoch) if known else 0
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._steps += 1
        over_steps = self.max_steps is not None and self._steps >= self.max_steps
        over_time = (
            self.max_seconds is not None and time.perf_counter() - self._start >= self.max_seconds
        )
        if over_steps or over_time:
            self.model.stop_training = True


class EpochCounter(keras.callbacks.Callback):
    """Counts finished epochs in the variable that each epoch's data order reads.

    Args:
        counter: an int64 `tf.Variable` (`TrainingState.epochs_done`).
    """

    def __init__(self, counter: tf.Variable):
        super().__init__()
        self.counter = counter

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.counter.assign(epoch + 1)


class Backup(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore, every `every` training steps and at the end of every epoch.

    Keras writes each backup as a new checkpoint and only then moves its pointer,
    so a kill during a write leaves the previous backup intact. On restore, Keras
    continues a mid-epoch backup at the next step but replays the epoch's data from
    its first batch; this callback sets `skip` to the number of batches already
    trained, for a pipeline that skips them (`train_dataset(skip=...)`), so the
    resumed run sees exactly the batches an uninterrupted run would.

    Args:
        backup_dir: where the backups go (a directory all workers share).
        every: steps between backups; None for epoch ends only.
        state: the run's training state; its `resume_skip` is what the pipeline reads
            when an epoch starts.
        steps_per_epoch: training steps in one epoch.
        delete_checkpoint: delete the backup when training ends. Defaults to True.
        start_over: how to start afresh, said when the backup cannot be read. Defaults to
            kerasft.train's and kerasft.distill's `--fresh`.
    """

    def __init__(
        self,
        backup_dir: str,
        every: int | None,
        state: TrainingState,
        steps_per_epoch: int,
        delete_checkpoint: bool = True,
        start_over: str = "Start afresh with --fresh (the interrupted run is left as it is).",
    ):
        super().__init__(
            backup_dir, save_freq=every or "epoch", delete_checkpoint=delete_checkpoint
        )
        self.skip, self.epochs_done = state.resume_skip, state.epochs_done
        self.steps_per_epoch = steps_per_epoch
        self.start_over = start_over
        skip_log_sync(self)  # it never reads the logs: no per-step sync for them

    def on_train_begin(self, logs: dict | None = None) -> None:
        try:
            super().on_train_begin(logs)  # restores the newest backup, if any
        except (tf.errors.OpError, IndexError, ValueError) as exc:
            raise DataError(
                f"{self.backup_dir}: the backup of this interrupted run cannot be read "
                f"({first_line(exc)[:160]}); it is damaged. {self.start_over}"
            ) from None
        epoch, step = restored_position(self.model, self.steps_per_epoch)
        self.skip.assign(step)
        self.epochs_done.assign(epoch)  # the data order of the epochs to come
        if step:
            print(
                f"resumed from the backup at epoch {epoch + 1} step {step}/{self.steps_per_epoch}; "
                f"continuing with step {step + 1}",
                flush=True,
            )
        elif epoch:
            print(f"resumed from the backup at the end of epoch {epoch}", flush=True)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.skip.assign(0)  # before the next epoch's iterator starts
        if self.save_freq == "epoch":
            super().on_epoch_end(epoch, logs)
        else:  # as the epoch's last step: a restore continues with the next epoch
            backup_now(self)  # recorded at the epoch's last step


class BestCheckpoint(keras.callbacks.ModelCheckpoint):
    """Keras' best-only weights checkpoint, written atomically.

    Every improvement goes to a new prefix, `best-<epoch>`. TensorFlow's `checkpoint`
    state file names the current one and is rewritten (write, then rename) only once
    the new files are complete. So a kill during a write leaves the previous best in
    force, and `best_checkpoint` never returns a half-written one. Older prefixes are
    deleted once the state file has moved on.

    Args:
        directory: where the checkpoints go (`checkpoints/` in the run directory).
        chief: whether this process owns `directory`; other workers of a cluster
            write to a temporary directory and delete nothing here.
        every_epoch: keep every epoch's weights as the "best" (the last epoch wins), for a
            validation split too small to choose on. Defaults to False.
        **kwargs: `monitor`, `mode`, `initial_value_threshold` of `ModelCheckpoint`.
    """

    def __init__(
        self, directory: str | Path, chief: bool = True, every_epoch: bool = False, **kwargs
    ):
        self.directory = Path(directory)
        self.chief = chief
        super().__init__(
            str(self.directory / "best-{epoch:03d}"),
            save_best_only=not every_epoch,
            save_weights_only=True,
            **kwargs,
        )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_end(epoch, logs)
        current = best_checkpoint(self.directory) if self.chief else None
        if current is None:
            return
        for path in self.directory.glob("best*"):
            if not path.name.startswith(Path(current).name + "."):
                path.unlink(missing_ok=True)


def best_checkpoint(directory: str | Path) -> str | None:
    """The prefix of the best checkpoint `BestCheckpoint` completed in `directory`, or None
    (also when the `checkpoint` file names one whose `.index` is gone)."""
    state = tf.train.get_checkpoint_state(str(directory))
    current = state.model_checkpoint_path if state else None
    if current is not None and not tf.io.gfile.exists(current + ".index"):
        current = None  # what latest_checkpoint returns, without its error log
    if current is None and (Path(directory) / "best.index").is_file():
        current = str(Path(directory) / "best")  # runs from before best-<epoch> prefixes
    return current


class StepLog(keras.callbacks.Callback):
    """Appends every training step's loss, and every layer group's learning rate, to a JSON-lines file.

    Keras' step logs hold the epoch's running mean; the step's own loss is recovered
    from two consecutive means. The rates are sampled about 100 times an epoch, with
    0 for groups that are frozen at that step. The report draws both (smoothed loss
    per step; layer-wise decay, warmup, gradual unfreezing).

    Args:
        path: the file (`steps.jsonl` in the run directory), or None to write nothing
            (a non-chief worker).
        steps_per_epoch: training steps in one epoch (numbers the steps across epochs).
    """

    def __init__(self, path, steps_per_epoch: int):
        super().__init__()
        self.path = path
        self.steps_per_epoch = steps_per_epoch
        self.every = max(1, steps_per_epoch // 100)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._pending, self._epoch, self._seen, self._mean = [], 0, 0, 0.0
        self._groups = variable_groups(self.model) if self.path else {}

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch, self._seen, self._mean = epoch, 0, 0.0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.path is None or not logs or "loss" not in logs:
            return
        mean = float(logs["loss"])
        self._seen += 1
        loss = mean * self._seen - self._mean * (self._seen - 1)
        self._mean = mean
        step = int(self._epoch * self.steps_per_epoch + batch + 1)  # after a restore, numpy ints
        record = {"step": step, "epoch": int(self._epoch) + 1, "loss": round(loss, 6)}
        if batch % self.every == 0:
            trainable = {v.name for v in self.model.trainable_weights}
            rates = current_rates(self.model.optimizer, self._groups, trainable)
            record["lr"] = {g: float(f"{r:.6g}") for g, r in rates.items()}
        self._pending.append(record)
        if len(self._pending) >= 50:
            self._flush()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        self._flush()

    def _flush(self) -> None:
        if self.path is None or not self._pending:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in self._pending)
        self._pending = []


class EpochLog(keras.callbacks.Callback):
    """Appends each epoch's logs to a JSON-lines file, so an interrupted run's history survives.

    Args:
        path: the file (`history.jsonl` in the run directory), or None to write nothing
            (a non-chief worker).
    """

    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.path is None:
            return
        record = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def build_callbacks(
    cfg: Config,
    spec: TaskSpec,
    run_dir: Path,
    data: Any,
    datasets: Any,
    state: TrainingState,
    strategy: tf.distribute.Strategy,
    timer: StepTimer,
    verbose: int = 1,
    before_validation: Sequence[keras.callbacks.Callback] = (),
    validation: keras.callbacks.Callback | None = None,
    observers: Callable[[keras.callbacks.Callback, int], list] | None = None,
) -> list[keras.callbacks.Callback]:
    """The callbacks of a training run, in the order they must run.

    Args:
        data: the run's `Data` (label names, target scaling).
        datasets: the run's `Datasets` (validation split, steps per epoch).
        state: the run's training state (epoch count, batches to skip after a restore).
        strategy: the distribution strategy; only the chief writes the run's files.
        timer: times the training steps; it goes first, so the epoch-end work of the
            others is left out of its seconds.
        verbose: `fit`'s verbosity; 2 (no progress bar) adds progress lines. Defaults to 1.
        before_validation: epoch-end work the validation scores must see (the head
            `training.method: contrastive` fits). Defaults to none.
        validation: the callback that puts the validation scores into the logs.
            Defaults to `ValidationMetrics` (seq2seq passes its `GenerationMetrics`).
        observers: given the validation callback (its `measure()` scores the validation
            split at any time) and the steps per epoch, returns callbacks to run last,
            such as a tuning search's pruner. Defaults to none.
    """
    chief, multi_worker = is_chief(strategy), is_multi_worker(strategy)
    steps_per_epoch = datasets.steps
    t = cfg.training
    monitoring = _monitoring(cfg, spec, run_dir, data, datasets, chief, validation)
    callbacks = [
        timer,
        StopOnNonFiniteLoss(),
        *before_validation,
        *monitoring,
        keras.callbacks.TensorBoard(log_dir=str(run_dir / "logs"), profile_batch=0),
        EpochLog(run_dir / "history.jsonl" if chief else None),
        StepLog(run_dir / "steps.jsonl" if chief else None, steps_per_epoch),
        EpochCounter(state.epochs_done),
        # Last of the epoch-end writers, so the backup holds what the ones above updated.
        # Multi-worker: the chief deletes it once every worker is done, not while another
        # worker still writes its part under it.
        Backup(
            str(run_dir / "backup"),
            t.backup_every_steps,
            state,
            steps_per_epoch,
            delete_checkpoint=not multi_worker,
        ),
    ]
    # After Backup: they read the epochs and steps its restore brings back.
    callbacks += _optional_callbacks(t, state, steps_per_epoch, verbose)
    return callbacks + (observers(monitoring[0], steps_per_epoch) if observers else [])


def _monitoring(
    cfg: Config,
    spec: TaskSpec,
    run_dir: Path,
    data: Any,
    datasets: Any,
    chief: bool,
    validation: keras.callbacks.Callback | None = None,
) -> list[keras.callbacks.Callback]:
    """Validation metrics into the logs (first: the others read them), the best checkpoint
    and early stopping on `cfg.monitor`."""
    monitor, mode = cfg.monitor, monitor_mode(cfg.monitor)
    validation = validation or ValidationMetrics(
        datasets.validation,
        spec,
        data.label_names,
        data.scaling,
        run_dir / "logs" / "validation" if chief else None,
    )
    if data.tiny_validation:  # scores of a handful of examples: keep the last epoch
        return [validation, BestCheckpoint(run_dir / "checkpoints", chief, every_epoch=True)]
    return [
        validation,
        BestCheckpoint(
            run_dir / "checkpoints",
            chief,
            monitor=monitor,
            mode=mode,
            initial_value_threshold=_best_so_far(run_dir, monitor, mode),
        ),
        keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=cfg.training.patience),
    ]


def _best_so_far(run_dir: Path, monitor: str, mode: str) -> float | None:
    """The best `monitor` value of the epochs a resumed run already has (None for a new run)."""
    earlier = [e[monitor] for e in read_history(run_dir / "history.jsonl") if monitor in e]
    return (min if mode == "min" else max)(earlier) if earlier else None


def _optional_callbacks(
    t: Any, state: TrainingState, steps_per_epoch: int, verbose: int
) -> list[keras.callbacks.Callback]:
    """Gradual unfreezing, the step or time budget and progress lines, as configured."""
    callbacks: list[keras.callbacks.Callback] = []
    if t.unfreeze_every_epochs or t.unfreeze_every_steps:
        unit = "epoch" if t.unfreeze_every_epochs else "step"
        every = t.unfreeze_every_epochs or t.unfreeze_every_steps
        callbacks.append(GradualUnfreezing(every, state.epochs_done, unit))
    if t.max_steps or t.max_seconds:
        callbacks.append(TrainingBudget(t.max_steps, t.max_seconds, steps_per_epoch, state))
    if verbose == 2:
        callbacks.append(StepProgress(steps_per_epoch, t.batch_size))
    return callbacks
