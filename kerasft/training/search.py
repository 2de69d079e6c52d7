"""A keras-tuner search over config keys: every trial a training run (`python -m kerasft.tune`).

Every trial is a full `kerasft.training.runner.run` of the config with the trial's values
set (the same code path as `python -m kerasft.train`), after
`clear_session()`. keras-tuner's `Tuner` insists on Keras 3 models, so kerasft
drives its oracles through `BaseTuner` with its own `run_trial`. The search
state lives in `tuning.directory`; running the same command again resumes it,
skipping finished trials and re-running one that was interrupted.
"""

from __future__ import annotations

import copy
import csv
import json
import time
from pathlib import Path
from typing import Any

import yaml

from kerasft import config as config_lib
from kerasft._compat import keras, tf  # before keras-tuner, which imports TensorFlow
from kerasft.config import Config, SearchDimension
from kerasft.errors import ConfigError, Interrupted, KerasftError
from kerasft.tasks import monitor_mode

# isort: split
import keras_tuner as kt  # noqa: E402


def search_directory(cfg: Config) -> Path:
    return Path(cfg.tuning.directory or Path(cfg.training.output_dir) / cfg.name / "tuning")


def objective_of(cfg: Config) -> tuple[str, str]:
    """The objective metric and its direction (`min` or `max`)."""
    name = cfg.tuning.objective or cfg.monitor
    direction = cfg.tuning.direction if cfg.tuning.direction != "auto" else monitor_mode(name)
    return name, direction


def hyperparameters(cfg: Config):
    """The search space as keras-tuner HyperParameters."""
    hp = kt.HyperParameters()
    for key, dim in cfg.tuning.space.items():
        if dim.type == "choice":
            hp.Choice(key, dim.values)
        elif dim.type == "int":
            hp.Int(key, int(dim.min), int(dim.max), step=int(dim.step or 1), sampling=dim.sampling)
        else:
            hp.Float(key, dim.min, dim.max, step=dim.step, sampling=dim.sampling)
    return hp


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
        for value in _extremes(dim):
            try:
                config_lib.config_from_dict(with_values(raw, {key: value}), source)
            except ConfigError as exc:
                raise ConfigError(
                    f"`tuning.space.{key}` allows {value!r}, which the config rejects: {exc}"
                ) from None


def _extremes(dim: SearchDimension) -> list[Any]:
    if dim.type == "choice":
        return list(dim.values)
    if dim.type == "int":
        return [int(dim.min), int(dim.max)]
    return [dim.min, dim.max]


def build_oracle(cfg: Config):
    name, direction = objective_of(cfg)
    objective = kt.Objective(name, direction)
    common = {
        "objective": objective,
        "hyperparameters": hyperparameters(cfg),
        "seed": cfg.training.seed,
    }
    if cfg.tuning.oracle == "random":
        return kt.oracles.RandomSearchOracle(max_trials=cfg.tuning.max_trials, **common)
    if cfg.tuning.oracle == "bayesian":
        return kt.oracles.BayesianOptimizationOracle(max_trials=cfg.tuning.max_trials, **common)
    return kt.oracles.HyperbandOracle(max_epochs=cfg.training.epochs, factor=3, **common)


class KerasftTuner(kt.engine.base_tuner.BaseTuner):
    """Runs each trial as a kerasft training run and reports its validation metrics."""

    def __init__(
        self, oracle, raw: dict, cfg: Config, source: str, directory: Path, verbose: int | None
    ):
        self.raw, self.cfg, self.source, self.verbose = raw, cfg, source, verbose
        self.root = directory
        super().__init__(
            oracle=oracle, directory=str(directory), project_name="search", overwrite=False
        )

    def trial_config(self, trial) -> Config:
        values = {k: trial.hyperparameters.get(k) for k in self.cfg.tuning.space}
        values = {k: (v.item() if hasattr(v, "item") else v) for k, v in values.items()}
        if "tuner/epochs" in trial.hyperparameters.values:  # hyperband's budget for this bracket
            values["training.epochs"] = int(trial.hyperparameters.get("tuner/epochs"))
        if self.cfg.tuning.max_steps_per_trial:
            values["training.max_steps"] = self.cfg.tuning.max_steps_per_trial
        if self.cfg.tuning.max_seconds_per_trial:
            values["training.max_seconds"] = self.cfg.tuning.max_seconds_per_trial
        values["training.output_dir"] = str(self.root / "trials" / trial.trial_id)
        values["export.enabled"] = False
        return config_lib.config_from_dict(with_values(self.raw, values), self.source)

    def run_trial(self, trial, *args, **kwargs) -> dict[str, float]:
        from kerasft.training.runner import run

        cfg = self.trial_config(trial)
        shown = ", ".join(
            f"{k}={_fmt(trial.hyperparameters.get(k))}" for k in self.cfg.tuning.space
        )
        number = len(self.oracle.trials)
        print(f"\n=== trial {number} (id {trial.trial_id}): {shown}", flush=True)
        objective, _ = objective_of(self.cfg)
        scores, runs, start = [], [], time.perf_counter()
        try:
            for execution in range(self.cfg.tuning.executions_per_trial):
                keras.backend.clear_session()
                seeded = cfg.model_copy(
                    update={
                        "training": cfg.training.model_copy(
                            update={"seed": cfg.training.seed + execution}
                        )
                    }
                )
                result = run(seeded, verbose=self.verbose)
                scores.append(_read_metric(result.metrics, objective))
                runs.append(str(result.run_dir))
        except Interrupted:  # Ctrl-C: keras-tuner retries any Exception, not this
            raise KeyboardInterrupt from None
        except KerasftError as exc:  # a user error: stop the search, don't mark the trial failed
            raise kt.errors.FatalError(str(exc)) from exc
        value = float(sum(scores) / len(scores))
        record = {
            "trial_id": trial.trial_id,
            "values": {k: _plain(trial.hyperparameters.get(k)) for k in self.cfg.tuning.space},
            "objective": value,
            "runs": runs,
            "seconds": round(time.perf_counter() - start, 1),
        }
        (self.root / "trials" / trial.trial_id / "trial.json").write_text(
            json.dumps(record, indent=2)
        )
        _write_hparams(
            self.root / "hparams" / trial.trial_id, self.cfg, record["values"], objective, value
        )
        print(f"=== trial {number}: {objective} = {value:.4f}", flush=True)
        return {objective: value}


def _read_metric(metrics: dict, name: str) -> float:
    key = name.removeprefix("val_")
    value = metrics["validation"].get(key)
    if value is None:
        raise ConfigError(f"objective `{name}` was not reported by the run")
    return float(value)


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _write_hparams(logdir: Path, cfg: Config, values: dict, objective: str, value: float) -> None:
    from tensorboard.plugins.hparams import api as hp_api

    with tf.summary.create_file_writer(str(logdir)).as_default():
        hp_api.hparams(
            {
                k: (v if isinstance(v, int | float | str | bool) else str(v))
                for k, v in values.items()
            }
        )
        tf.summary.scalar(objective, value, step=1)


def write_results(tuner, cfg: Config, raw: dict, source: str) -> Path:
    """Writes trials.csv, trials.md and best_config.yaml; returns the best config's path."""
    root = tuner.root
    objective, direction = objective_of(cfg)
    records = []
    for trial_id in sorted(tuner.oracle.trials):
        path = root / "trials" / trial_id / "trial.json"
        if path.is_file():
            records.append(json.loads(path.read_text()))
    if not records:
        raise ConfigError(f"no trial finished in {root}; see the output above")
    records.sort(key=lambda r: r["objective"], reverse=direction == "max")
    keys = list(cfg.tuning.space)
    header = ["rank", "trial_id", *keys, objective, "seconds"]
    rows = [
        [
            i + 1,
            r["trial_id"],
            *[r["values"].get(k) for k in keys],
            round(r["objective"], 6),
            r["seconds"],
        ]
        for i, r in enumerate(records)
    ]
    with (root / "trials.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    table = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    table += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    (root / "trials.md").write_text("\n".join(table) + "\n")
    print("\n" + "\n".join(table))

    # The best trial's own resolved config, with the user's output and export settings restored:
    # training it again with the same seed gives the same metrics.
    best = records[0]
    trial_cfg = yaml.safe_load((Path(best["runs"][0]) / "config.yaml").read_text())
    trial_cfg["training"]["output_dir"] = cfg.training.output_dir
    trial_cfg["export"] = cfg.export.model_dump(mode="json")
    trial_cfg.pop("tuning", None)
    best_path = root / "best_config.yaml"
    best_path.write_text(
        f"# Best of {len(records)} trials by {objective} ({best['objective']:.4f}); from {source}\n"
        + yaml.safe_dump(trial_cfg, sort_keys=False, allow_unicode=True)
    )
    return best_path


def tune(config_path: str, overrides: list[str], verbose: int | None = None) -> Path:
    """Runs (or resumes) the search described by the config's `tuning` section; returns best_config.yaml."""
    source = str(config_path)
    cfg = config_lib.load_config(config_path, overrides)
    if cfg.tuning is None:
        raise ConfigError(f"{source} has no `tuning:` section; see configs/tune_quickstart.yaml.")
    raw = config_lib.load_raw(config_path, overrides)
    raw.pop("tuning")
    check_space(raw, cfg, source)
    root = search_directory(cfg)
    root.mkdir(parents=True, exist_ok=True)
    (root / "hparams").mkdir(exist_ok=True)
    _write_hparams_config(root / "hparams", cfg)

    tuner = KerasftTuner(build_oracle(cfg), raw, cfg, source, root, verbose)
    objective, direction = objective_of(cfg)
    print(
        f"search: {cfg.tuning.oracle}, {cfg.tuning.max_trials} trials, {direction}imise {objective}, "
        f"state in {root}",
        flush=True,
    )
    tuner.search()
    best_path = write_results(tuner, cfg, raw, source)
    if cfg.tuning.export_best:
        from kerasft.training.runner import run

        keras.backend.clear_session()
        result = run(config_lib.load_config(best_path), verbose=verbose)
        print(f"best config retrained: run_dir={result.run_dir} export_dir={result.export_dir}")
    return best_path


def _write_hparams_config(logdir: Path, cfg: Config) -> None:
    from tensorboard.plugins.hparams import api as hp_api

    objective, _ = objective_of(cfg)
    params = []
    for key, dim in cfg.tuning.space.items():
        if dim.type == "choice":
            params.append(hp_api.HParam(key, hp_api.Discrete([_plain(v) for v in dim.values])))
        elif dim.type == "int":
            params.append(hp_api.HParam(key, hp_api.IntInterval(int(dim.min), int(dim.max))))
        else:
            params.append(hp_api.HParam(key, hp_api.RealInterval(float(dim.min), float(dim.max))))
    with tf.summary.create_file_writer(str(logdir)).as_default():
        hp_api.hparams_config(
            hparams=params, metrics=[hp_api.Metric(objective, display_name=objective)]
        )
