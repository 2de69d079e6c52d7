"""`tuning.engine: keras_tuner`: keras-tuner's oracles, on one machine or as chief and workers.

keras-tuner's `Tuner` insists on Keras 3 models, so kerasft drives its oracles through
`BaseTuner` with its own `run_trial`: a full kerasft training run of the trial's config.
The state lives in `<tuning.directory>/search`; running the same command again resumes it,
skipping finished trials and re-running one that was interrupted.

Distributed (keras-tuner's own mode, set up from the environment): every process runs
`python -m kerasft.tune --config` with `KERASTUNER_ORACLE_IP`, `KERASTUNER_ORACLE_PORT` and a
`KERASTUNER_TUNER_ID` of its own; the one whose id contains `chief` serves the oracle and
runs no trial, the others (`tuner0`, `tuner1`, ...) ask it for trials. A worker sends a
heartbeat every `tuning.heartbeat_seconds` while it trains; the chief hands the trial of a
worker silent for three intervals to the next worker that asks (keras-tuner alone would wait
for that worker forever). The chief writes the results when every trial is done.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from kerasft._compat import keras  # noqa: F401 - before keras-tuner, which imports TensorFlow
from kerasft.config import Config
from kerasft.errors import ConfigError, DataError, Interrupted, KerasftError, first_line
from kerasft.training.trials import (
    TrialRecord,
    objective_of,
    plain,
    train_trial,
    trial_config,
    write_hparams,
)

# isort: split
import keras_tuner as kt  # noqa: E402
from keras_tuner.src.engine import trial as trial_module  # noqa: E402

HEARTBEAT = "kerasft_heartbeat"  # the metric name a worker's heartbeat arrives under
STATES = {"COMPLETED": "complete", "RUNNING": "running"}


def distributed_role() -> str | None:
    """`chief`, `worker`, or None on one machine (no `KERASTUNER_ORACLE_IP`).

    Raises:
        ConfigError: an incomplete keras-tuner environment.
    """
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return None
    missing = [
        v for v in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID") if not os.environ.get(v)
    ]
    if missing:
        raise ConfigError(
            f"KERASTUNER_ORACLE_IP is set but {missing[0]} is not: a distributed keras-tuner search "
            "needs all three (docs/tuning.md)"
        )
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


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


class _Heartbeats:
    """Mixed into an oracle: records workers' heartbeats and requeues the trials of silent ones."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.beats: dict[str, float] = {}  # trial id → when its worker last said it was alive

    @kt.synchronized
    def create_trial(self, tuner_id):
        trial = super().create_trial(tuner_id)
        if trial.status == trial_module.TrialStatus.RUNNING:
            self.beats[trial.trial_id] = time.monotonic()
        elif trial.status == trial_module.TrialStatus.STOPPED and self.ongoing_trials:
            # The budget is spent but other workers still train: one of them may die and its
            # trial come back to the queue, so this worker waits instead of leaving.
            self.tuner_ids.add(tuner_id)
            trial.status = trial_module.TrialStatus.IDLE
        return trial

    @kt.synchronized
    def end_trial(self, trial):
        # A worker thought silent that finishes after all: its result stands, no second run.
        if trial.trial_id in self._retry_queue:
            self._retry_queue.remove(trial.trial_id)
        super().end_trial(trial)

    def update_trial(self, trial_id, metrics, step=0):
        if set(metrics) == {HEARTBEAT}:  # alive, nothing to record
            self.beats[trial_id] = time.monotonic()
            return self.trials[trial_id]
        return super().update_trial(trial_id, metrics, step=step)

    @kt.synchronized
    def requeue_silent(self, grace: float) -> list[str]:
        """Trials whose worker has been silent for `grace` seconds go back to the queue."""
        now, moved = time.monotonic(), []
        for tuner_id, trial in list(self.ongoing_trials.items()):
            if now - self.beats.get(trial.trial_id, now) < grace:
                continue
            self.ongoing_trials.pop(tuner_id)
            self.tuner_ids.discard(tuner_id)
            self.beats.pop(trial.trial_id, None)
            if self._run_times[trial.trial_id] < self.max_retries_per_trial + 1:
                trial.status = trial_module.TrialStatus.INVALID
                self._retry_queue.append(trial.trial_id)
            else:
                trial.status = trial_module.TrialStatus.FAILED
                self.end_order.append(trial.trial_id)
            self._run_times[trial.trial_id] += 1
            self._save_trial(trial)
            self.save()
            moved.append(f"{trial.trial_id} ({tuner_id})")
        return moved


def build_oracle(cfg: Config):
    name, direction = objective_of(cfg)
    common = {
        "objective": kt.Objective(name, direction),
        "hyperparameters": hyperparameters(cfg),
        "seed": cfg.training.seed,
        "max_retries_per_trial": cfg.tuning.max_retries,
    }
    if cfg.tuning.oracle == "random":
        base, extra = kt.oracles.RandomSearchOracle, {"max_trials": cfg.tuning.max_trials}
    elif cfg.tuning.oracle == "bayesian":
        base, extra = kt.oracles.BayesianOptimizationOracle, {"max_trials": cfg.tuning.max_trials}
    else:
        base, extra = kt.oracles.HyperbandOracle, {"max_epochs": cfg.training.epochs, "factor": 3}
    return type(f"Kerasft{base.__name__}", (_Heartbeats, base), {})(**common, **extra)


class KerasftTuner(kt.engine.base_tuner.BaseTuner):
    """Runs each trial as a kerasft training run and reports its validation metrics."""

    def __init__(self, oracle, raw: dict, cfg: Config, source: str, root: Path, verbose):
        self.raw, self.cfg, self.source, self.verbose, self.root = raw, cfg, source, verbose, root
        self.idle = 0  # create_trial calls since the last trial began
        super().__init__(oracle=oracle, directory=str(root), project_name="search", overwrite=False)

    def pre_create_trial(self) -> None:
        if self.idle:  # the chief said wait (other workers' trials are still running)
            if self.idle == 1:
                print(
                    "worker: every trial is handed out; waiting for the other workers", flush=True
                )
            time.sleep(1.0)
        self.idle += 1

    def on_trial_begin(self, trial) -> None:
        self.idle = 0
        super().on_trial_begin(trial)

    def trial_values(self, trial) -> dict:
        values = {k: plain(trial.hyperparameters.get(k)) for k in self.cfg.tuning.space}
        if "tuner/epochs" in trial.hyperparameters.values:  # hyperband's budget for this bracket
            values["training.epochs"] = int(trial.hyperparameters.get("tuner/epochs"))
        return values

    def run_trial(self, trial, *args, **kwargs) -> dict[str, float]:
        values = self.trial_values(trial)
        cfg = trial_config(
            self.cfg, self.raw, self.source, values, self.root / "trials" / trial.trial_id
        )
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())
        print(f"\n=== trial {trial.trial_id}: {shown}", flush=True)
        objective, _ = objective_of(self.cfg)
        beating = _Heartbeat(self.oracle, trial.trial_id, self.cfg.tuning.heartbeat_seconds)
        try:
            result = train_trial(
                self.cfg, cfg, self.verbose, label=f"trial {trial.trial_id} ({shown})"
            )
        except Interrupted:  # Ctrl-C: keras-tuner retries any Exception, not this
            raise KeyboardInterrupt from None
        except KerasftError as exc:  # a user error: stop the search, don't mark the trial failed
            raise kt.errors.FatalError(str(exc)) from exc
        finally:
            beating.stop()
        metrics = {objective: result["objective"], "seconds": result["seconds"]}
        write_hparams(
            self.root / "hparams" / trial.trial_id, values, {objective: result["objective"]}
        )
        print(f"=== trial {trial.trial_id}: {objective} = {result['objective']:.4f}", flush=True)
        return metrics


class _Heartbeat:
    """A worker's heartbeat to the chief's oracle while a trial trains (no-op on one machine)."""

    def __init__(self, oracle, trial_id: str, every: float):
        self.stopped = threading.Event()
        if distributed_role() != "worker":
            return
        self.thread = threading.Thread(
            target=self._beat, args=(oracle, trial_id, every), daemon=True, name="kerasft-heartbeat"
        )
        self.thread.start()

    def _beat(self, oracle, trial_id: str, every: float) -> None:
        while not self.stopped.wait(every):
            try:
                oracle.update_trial(trial_id, {HEARTBEAT: 0.0})
            except Exception:  # the chief is busy or gone: the next beat tries again
                pass

    def stop(self) -> None:
        self.stopped.set()


def _fmt(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _watch(oracle, grace: float, done: threading.Event) -> None:
    """The chief's watchdog: requeues the trials of silent workers until the search ends."""
    while not done.wait(min(grace / 3, 10.0)):
        for moved in oracle.requeue_silent(grace):
            print(f"chief: trial {moved} lost its worker's heartbeat; it runs again", flush=True)


def check_saved_state(project: Path) -> None:
    """Reads every JSON file keras-tuner saved in `project` before it does, which would raise
    a bare JSONDecodeError on a damaged one (a kill or a full disk while it wrote).

    Raises:
        DataError: a file that does not parse, naming it and `tuning.directory`.
    """
    if not project.is_dir():
        return
    for path in sorted(project.glob("*.json")) + sorted(project.glob("trial_*/trial.json")):
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(
                f"{path}: keras-tuner's saved search state cannot be read ({first_line(exc)}). "
                f"Delete {project.parent} (`tuning.directory`) to start the search over."
            ) from None


def search(cfg: Config, raw: dict, source: str, root: Path, verbose) -> list[TrialRecord] | None:
    """Runs (or resumes) the search; the trials, or None on a worker (the chief writes them)."""
    role = distributed_role()
    check_saved_state(root / "search")
    oracle = build_oracle(cfg)
    tuner = KerasftTuner(oracle, raw, cfg, source, root, verbose)
    objective, direction = objective_of(cfg)
    where = {"chief": " (chief: serving the oracle)", "worker": " (worker)"}.get(role, "")
    print(
        f"search: keras-tuner {cfg.tuning.oracle}, {cfg.tuning.max_trials} trials, {direction}imise "
        f"{objective}, state in {root}{where}",
        flush=True,
    )
    done = threading.Event()
    if role == "chief":
        grace = 3 * cfg.tuning.heartbeat_seconds
        threading.Thread(target=_watch, args=(tuner.oracle, grace, done), daemon=True).start()
    try:
        tuner.search()
    finally:
        done.set()
    if role == "worker":
        print("worker done: the chief writes the results", flush=True)
        return None
    return [_record(tuner, t) for t in tuner.oracle.trials.values()]


def _record(tuner: KerasftTuner, trial) -> TrialRecord:
    objective, _ = objective_of(tuner.cfg)
    value = trial.metrics.get_last_value(objective) if trial.metrics.exists(objective) else None
    seconds = trial.metrics.get_last_value("seconds") if trial.metrics.exists("seconds") else None
    state = STATES.get(trial.status, "failed")
    if state == "complete" and value is None:
        state = "failed"
    done = sorted((tuner.root / "trials" / trial.trial_id).glob("*/*/metrics.json"))
    runs = [str(path.parent) for path in done]  # on this machine (a worker's are on its own)
    return TrialRecord(
        trial.trial_id, state, tuner.trial_values(trial), value, seconds=seconds, runs=runs
    )
