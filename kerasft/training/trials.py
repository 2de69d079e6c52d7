"""What both search engines share: the space, each trial's config, the pruner's callback,
the trials table, best_config.yaml and the TensorBoard HParams logs (`python -m kerasft.tune`).

A trial is a training run of the config with the trial's values set. Each engine
(`search_kt`, `search_optuna`) hands back `TrialRecord`s; `write_results` turns them into
the same files whichever engine ran.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kerasft import config as config_lib
from kerasft._compat import keras, tf
from kerasft.config import Config, SearchDimension
from kerasft.errors import ConfigError, Interrupted, KerasftError
from kerasft.tasks import monitor_mode

# The pruner's steps are thousandths of an epoch: epoch ends line up across batch sizes.
STEPS_PER_EPOCH = 1000


def search_directory(cfg: Config) -> Path:
    return Path(cfg.tuning.directory or Path(cfg.training.output_dir) / cfg.name / "tuning")


def objective_of(cfg: Config) -> tuple[str, str]:
    """The objective metric and its direction (`min` or `max`)."""
    name = cfg.tuning.objective or cfg.monitor
    direction = cfg.tuning.direction if cfg.tuning.direction != "auto" else monitor_mode(name)
    return name, direction


def with_values(raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of the raw config dict with dotted keys set."""
    raw = copy.deepcopy(raw)
    for key, value in values.items():
        config_lib.set_dotted(raw, key, value, f"`tuning.space.{key}`")
    return raw


def check_space(raw: dict[str, Any], cfg: Config, source: str) -> None:
    """Validates every extreme and choice of the space against the schema, before any trial runs.

    Raises:
        ConfigError: a value the config would reject, named by its `tuning.space` key.
    """
    for key, dim in cfg.tuning.space.items():
        for value in extremes(dim):
            try:
                config_lib.config_from_dict(with_values(raw, {key: value}), source)
            except ConfigError as exc:
                raise ConfigError(
                    f"`tuning.space.{key}` allows {value!r}, which the config rejects: {exc}"
                ) from None


def extremes(dim: SearchDimension) -> list[Any]:
    if dim.type == "choice":
        return list(dim.values)
    if dim.type == "int":
        return [int(dim.min), int(dim.max)]
    return [dim.min, dim.max]


def plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def trial_config(
    cfg: Config, raw: dict, source: str, values: dict[str, Any], output_dir: Path | None
) -> Config:
    """The config a trial trains: the searched values and the per-trial budgets set.

    Args:
        output_dir: the trial's own output directory (exports off), or None for the config
            the user retrains (their output directory and export settings).
    """
    values = {k: plain(v) for k, v in values.items()}
    if cfg.tuning.max_steps_per_trial:
        values["training.max_steps"] = cfg.tuning.max_steps_per_trial
    if cfg.tuning.max_seconds_per_trial:
        values["training.max_seconds"] = cfg.tuning.max_seconds_per_trial
    if output_dir is not None:
        values["training.output_dir"] = str(output_dir)
        values["export.enabled"] = False
    return config_lib.config_from_dict(with_values(raw, values), source)


@dataclass
class TrialRecord:
    """One trial as the results show it, whichever engine ran it."""

    trial_id: str
    state: str  # complete | pruned | failed | lost (its worker died; run again) | running
    values: dict[str, Any]
    objective: float | None = None  # the last value reported, for a pruned trial
    second: float | None = None  # tuning.second_objective
    seconds: float | None = None
    runs: list[str] = field(default_factory=list)
    pareto: bool = False


def train_trial(
    cfg: Config,
    trial_cfg: Config,
    verbose: int | None,
    observers: Callable | None = None,
    label: str = "",
) -> dict[str, Any]:
    """Trains a trial's config `executions_per_trial` times (seeds seed, seed+1, ...) and returns
    its objective (their mean), second objective, run directories and seconds.

    Raises:
        KerasftError: a run's, its message led by `label` (the trial and its values): the value
            at fault may be one of the search space's, not the config file's.
    """
    try:
        return _train_trial(cfg, trial_cfg, verbose, observers)
    except Interrupted:
        raise
    except KerasftError as exc:
        raise type(exc)(f"{label}: {exc}" if label else str(exc)) from None


def _train_trial(
    cfg: Config, trial_cfg: Config, verbose: int | None, observers: Callable | None
) -> dict[str, Any]:
    from kerasft.training.runner import run

    objective, _ = objective_of(cfg)
    scores, runs, second, start = [], [], [], time.perf_counter()
    for execution in range(cfg.tuning.executions_per_trial):
        keras.backend.clear_session()
        t = trial_cfg.training.model_copy(update={"seed": trial_cfg.training.seed + execution})
        result = run(
            trial_cfg.model_copy(update={"training": t}), verbose=verbose, observers=observers
        )
        scores.append(read_metric(result.metrics, objective))
        runs.append(str(result.run_dir))
        if cfg.tuning.second_objective:
            second.append(measure_cost(result, cfg.tuning.second_objective, trial_cfg))
    return {
        "objective": float(sum(scores) / len(scores)),
        "second": float(sum(second) / len(second)) if second else None,
        "runs": runs,
        "seconds": round(time.perf_counter() - start, 1),
    }


def read_metric(metrics: dict, name: str) -> float:
    value = metrics["validation"].get(name.removeprefix("val_"))
    if value is None:
        raise ConfigError(f"objective `{name}` was not reported by the run")
    return float(value)


def measure_cost(result: Any, kind: str, cfg: Config) -> float:
    """The trained model's size (MB of float32 weights) or latency (ms per example, batch of one,
    median of 20 calls after 3 warm-up calls, in this process)."""
    model = result.model
    if kind == "size_mb":
        return sum(int(tf.size(w)) for w in model.weights) * 4 / 2**20
    names = {t.name.split(":")[0]: t.dtype for t in model.inputs or []}
    names = names or {"input_ids": tf.int32, "attention_mask": tf.int32}
    from kerasft.models.backbones import directory_positions, model_directory

    length = cfg.data.max_length
    if cfg.model.backbone != "bigru":  # what the run's texts were cut to (`input_length`)
        length = min(length, directory_positions(model_directory(cfg.model)) or length)
    inputs = {name: tf.ones([1, length], dtype) for name, dtype in names.items()}
    call = tf.function(lambda x: model(x, training=False))
    for _ in range(3):
        call(inputs)
    times = []
    for _ in range(20):
        start = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), call(inputs))
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


class Pruned(Exception):
    """Raised inside `fit` by `TrialReporter` when the pruner stops the trial."""

    def __init__(self, step: int, value: float):
        super().__init__(f"pruned at {step / STEPS_PER_EPOCH:g} epochs ({value:.4f})")
        self.step, self.value = step, value


class TrialReporter(keras.callbacks.Callback):
    """Reports the objective to the engine's pruner at every epoch end and, with
    `tuning.report_every_steps`, every N training steps; stops the trial the moment the
    pruner says so, by raising `Pruned` out of `fit`.

    Reports are at steps counted in thousandths of an epoch, so trials with different batch
    sizes compare at the same points.

    Args:
        report: `report(step, value)` → True when the trial should stop.
        validation: the run's validation callback (its `measure()` scores mid-epoch).
        objective: the `val_…` key to report.
        steps_per_epoch: training steps in one epoch.
        every: also report every this many steps. Defaults to epoch ends only.
    """

    def __init__(
        self,
        report: Callable[[int, float], bool],
        validation: keras.callbacks.Callback,
        objective: str,
        steps_per_epoch: int,
        every: int | None = None,
    ):
        super().__init__()
        self.report, self.validation, self.objective = report, validation, objective
        self.steps_per_epoch, self.every, self.epoch = max(1, steps_per_epoch), every, 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        done = batch + 1
        if not self.every or done % self.every or done >= self.steps_per_epoch:
            return
        scores, _ = self.validation.measure()
        step = self.epoch * STEPS_PER_EPOCH + round(STEPS_PER_EPOCH * done / self.steps_per_epoch)
        value = scores[self.objective.removeprefix("val_")]
        print(f"trial report at epoch {step / STEPS_PER_EPOCH:.2f}: {self.objective} {value:.4f}")
        self._check(step, value)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs and self.objective in logs:
            self._check((epoch + 1) * STEPS_PER_EPOCH, float(logs[self.objective]))

    def _check(self, step: int, value: float) -> None:
        if self.report(step, value):
            print(
                f"trial pruned at epoch {step / STEPS_PER_EPOCH:.2f}: {self.objective} {value:.4f} "
                "is behind the other trials at that point",
                flush=True,
            )
            raise Pruned(step, value)


def write_results(
    root: Path, cfg: Config, raw: dict, source: str, records: list[TrialRecord], meta: dict
) -> Path:
    """Writes trials.csv, trials.md, search.json and best_config.yaml; returns best_config.yaml.

    Each file is written whole and renamed into place: several workers may write at once.
    """
    objective, direction = objective_of(cfg)
    second = cfg.tuning.second_objective
    done = [r for r in records if r.state == "complete"]
    if not done:
        raise ConfigError(f"no trial finished in {root}; see the output above")
    order = {"complete": 0, "pruned": 1, "running": 2, "failed": 3, "lost": 4}
    sign = -1 if direction == "max" else 1
    records = sorted(  # with two objectives, the Pareto front first
        records,
        key=lambda r: (
            order[r.state],
            not r.pareto if second else False,
            sign * r.objective if r.objective is not None else 0,
        ),
    )
    header, rows = _table(cfg, records)
    table_csv = io.StringIO(newline="")
    csv.writer(table_csv).writerows([header, *rows])
    _write_text(root / "trials.csv", table_csv.getvalue())
    table = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    table += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    _write_text(root / "trials.md", "\n".join(table) + "\n")
    print("\n" + "\n".join(table), flush=True)
    meta = {**meta, "objective": objective, "direction": direction, "second_objective": second}
    keys = list(cfg.tuning.space)
    _write_text(
        root / "search.json",
        json.dumps({**meta, "params": keys, "trials": [asdict(r) for r in records]}, indent=2),
    )

    # The best trial's config, with the user's output and export settings: training it again
    # with the same seed gives the same metrics.
    best = records[0]
    best_cfg = trial_config(cfg, raw, source, best.values, None).model_dump(mode="json")
    best_cfg.pop("tuning", None)
    best_path = root / "best_config.yaml"
    _write_text(
        best_path,
        f"# Best of {len(done)} finished trials by {objective} ({best.objective:.4f}); "
        f"from {source}\n" + yaml.safe_dump(best_cfg, sort_keys=False, allow_unicode=True),
    )
    return best_path


def _table(cfg: Config, records: list[TrialRecord]) -> tuple[list[str], list[list]]:
    objective, _ = objective_of(cfg)
    second, keys = cfg.tuning.second_objective, list(cfg.tuning.space)
    header = ["rank", "trial_id", "state", *keys, objective, *([second] if second else [])]
    rows = [
        [
            i + 1,
            r.trial_id,
            r.state + (" (pareto)" if r.pareto else ""),
            *[r.values.get(k) for k in keys],
            None if r.objective is None else round(r.objective, 6),
            *([None if r.second is None else round(r.second, 4)] if second else []),
            r.seconds,
        ]
        for i, r in enumerate(records)
    ]
    return [*header, "seconds"], rows


def _write_text(path: Path, text: str) -> None:
    """Writes a sibling temporary file and renames it onto `path`: readers and other workers
    writing the same results never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8", newline="")
    tmp.replace(path)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def write_hparams(logdir: Path, values: dict, metrics: dict[str, float]) -> None:
    """One trial's TensorBoard HParams record."""
    from tensorboard.plugins.hparams import api as hp_api

    with tf.summary.create_file_writer(str(logdir)).as_default():
        hp_api.hparams(
            {
                k: (v if isinstance(v, int | float | str | bool) else str(v))
                for k, v in values.items()
            }
        )
        for name, value in metrics.items():
            tf.summary.scalar(name, value, step=1)


def write_hparams_config(logdir: Path, cfg: Config) -> None:
    """The search's HParams experiment: its dimensions and metrics."""
    from tensorboard.plugins.hparams import api as hp_api

    objective, _ = objective_of(cfg)
    params = []
    for key, dim in cfg.tuning.space.items():
        if dim.type == "choice":
            params.append(hp_api.HParam(key, hp_api.Discrete([plain(v) for v in dim.values])))
        elif dim.type == "int":
            params.append(hp_api.HParam(key, hp_api.IntInterval(int(dim.min), int(dim.max))))
        else:
            params.append(hp_api.HParam(key, hp_api.RealInterval(float(dim.min), float(dim.max))))
    metrics = [objective, *([cfg.tuning.second_objective] if cfg.tuning.second_objective else [])]
    with tf.summary.create_file_writer(str(logdir)).as_default():
        hp_api.hparams_config(
            hparams=params, metrics=[hp_api.Metric(m, display_name=m) for m in metrics]
        )
