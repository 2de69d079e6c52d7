"""`tuning.engine: optuna`: an Optuna study over config keys, pruned, shared by any number of workers.

The study lives in `tuning.storage` (a journal file in the tuning directory by default; an
SQLite file, or a PostgreSQL/MySQL URL). Every process that runs `python -m kerasft.tune
--config` on the same storage and study name is a worker of one search: each takes the
next trial the storage hands out, so no trial runs twice, until `max_trials` have finished.
Running the command again continues the study.

A worker marks its running trial alive every `tuning.heartbeat_seconds` (a system attribute,
so journal files get it too: Optuna's own heartbeat is for databases only). A trial silent
for three intervals has lost its worker: the next worker to look marks it failed and queues
its values again, up to `tuning.max_retries` times. The sampler is reseeded for every trial
with `training.seed + trial number`: reproducible on one worker, and two workers never draw
the same values from the same seed.
"""

from __future__ import annotations

import fcntl
import json
import logging
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from kerasft.config import Config
from kerasft.errors import ConfigError, DataError, Interrupted, KerasftError, first_line
from kerasft.training.trials import (
    STEPS_PER_EPOCH,
    Pruned,
    TrialRecord,
    TrialReporter,
    extremes,
    objective_of,
    train_trial,
    trial_config,
    write_hparams,
)

BEAT = "kerasft:heartbeat"  # system attribute: the time a running trial last said it was alive
LOST = "kerasft:lost"  # system attribute of a trial failed because its worker went silent
SPACE = "kerasft:space"  # user attribute of the study: the space and objectives it was made for


def load_optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError(
            "`tuning.engine: optuna` needs Optuna: `pip install 'kerasft[optuna]'` "
            "(or `.venv/bin/pip install 'optuna==5.0.*'`)"
        ) from None
    optuna.logging.set_verbosity(logging.WARNING)
    return optuna


def check_journal(path: Path, settle: float = 1.0) -> None:
    """Refuses a damaged Optuna journal before Optuna reads it: its error names neither the file
    nor the line, and a last line cut short by a kill is glued to the next write, which breaks
    the journal for good.

    Args:
        settle: seconds to wait before judging a last line without its line break, which may
            be another worker's write in progress.

    Raises:
        DataError: a line that is not JSON, naming it, with how to keep the trials before it.
    """
    if not path.is_file():
        return
    keep = (
        "Cut the file before this line to keep the trials recorded before it, or delete it to "
        "start the search over."
    )
    for attempt in (0, 1):
        with path.open("rb") as handle:
            lines = handle.readlines()
        for number, line in enumerate(lines, start=1):
            if not line.endswith(b"\n"):
                break  # the last line: judged below
            try:
                json.loads(line)
            except ValueError as exc:
                raise DataError(
                    f"{path}:{number}: the study's journal is damaged ({first_line(exc)}). {keep}"
                ) from None
        if not lines or lines[-1].endswith(b"\n"):
            return
        if attempt == 0:
            time.sleep(settle)
    raise DataError(
        f"{path}:{len(lines)}: the study's journal ends in a line cut short (a kill while it was "
        f"written). {keep}"
    )


def storage_for(cfg: Config, root: Path):
    """The study's storage.

    Raises:
        ConfigError: a storage that is not one of the forms, or that cannot be opened.
    """
    optuna = load_optuna()
    url = cfg.tuning.storage or f"journal:{root / 'study.journal'}"
    shown = re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)  # no password in messages
    try:
        if url.startswith("journal:") or url.endswith(".journal"):
            path = Path(url.removeprefix("journal:")).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            check_journal(path)
            backend = optuna.storages.journal.JournalFileBackend(str(path))
            return optuna.storages.JournalStorage(backend)
        scheme = url.split(":", 1)[0].split("+")[0]
        if scheme not in ("sqlite", "postgresql", "mysql"):
            raise ConfigError(
                f"`tuning.storage: {shown}` is not a storage kerasft knows; use "
                "`sqlite:///path.db`, `journal:path` or a `postgresql://` or `mysql://` URL"
            )
        if scheme != "sqlite":
            return _rdb_storage(optuna, url, {})
        path = Path(url.split(":///", 1)[-1])
        if not path.parent.is_dir():
            raise ConfigError(
                f"`tuning.storage: {shown}`: the directory {path.parent} does not exist; "
                "create it or point the storage elsewhere"
            )
        lock = path.with_name(path.name + ".lock")
        return _rdb_storage(optuna, url, {"connect_args": {"timeout": 60}}, lock)
    except (KerasftError, KeyboardInterrupt):
        raise
    except Exception as exc:  # the driver's or the database's own words
        reason = first_line(exc)
        raise ConfigError(
            f"`tuning.storage: {shown}` cannot be opened: {reason[:300]}. Check the URL, that the "
            "database is reachable and that its driver is installed (psycopg2-binary, PyMySQL)"
        ) from None


RACES = ("already exists", "unique constraint", "duplicate", "integrityerror")


def _rdb_storage(optuna, url: str, kwargs: dict, lock: Path | None = None):
    """Optuna's RDB storage. Workers that start together race to create the schema of a new
    database: with SQLite they take turns (a lock file beside it); elsewhere the losers of
    the race ("already exists", a duplicate key) try again and find the schema made."""
    for attempt in range(5):
        try:
            if lock is None:
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
            with lock.open("a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except Exception as exc:
            if not any(r in f"{type(exc).__name__} {exc}".lower() for r in RACES) or attempt == 4:
                raise
            time.sleep(0.5 + attempt)


class _PerTrialSeed:
    """A sampler reseeded for each trial with `seed + trial.number` (see the module's note).
    Mixed with Optuna's `BaseSampler` by `sampler_for`; every call goes to the inner sampler."""

    def __init__(self, factory, seed: int):
        self.factory, self.seed = factory, seed
        self.inner = factory(seed)

    def before_trial(self, study, trial) -> None:
        self.inner = self.factory(self.seed + trial.number)
        self.inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


def sampler_for(cfg: Config):
    samplers = load_optuna().samplers
    seeded = type("KerasftSampler", (_PerTrialSeed, samplers.BaseSampler), {})
    t, seed = cfg.tuning, cfg.training.seed
    if t.sampler == "grid":
        grid = grid_space(cfg)
        return seeded(lambda s: samplers.GridSampler(grid, seed=s), seed)
    if t.sampler == "random":
        return seeded(lambda s: samplers.RandomSampler(seed=s), seed)
    startup = min(10, max(3, t.max_trials // 3))  # Optuna's 10 leaves an 8-trial search random
    return seeded(
        lambda s: samplers.TPESampler(seed=s, n_startup_trials=startup, constant_liar=True), seed
    )


def grid_space(cfg: Config) -> dict[str, list]:
    grid = {}
    for key, dim in cfg.tuning.space.items():
        if dim.type == "choice":
            grid[key] = list(dim.values)
        else:
            points = np.arange(dim.min, dim.max + dim.step / 2, dim.step)
            grid[key] = [int(p) if dim.type == "int" else float(p) for p in points]
    return grid


def pruner_for(cfg: Config):
    pruners = load_optuna().pruners
    if cfg.tuning.pruning == "median":
        startup = cfg.tuning.pruner_startup_trials
        if startup is None:
            startup = min(5, max(1, cfg.tuning.max_trials // 5))
        return pruners.MedianPruner(n_startup_trials=startup)
    if cfg.tuning.pruning == "hyperband":
        epochs = cfg.tuning.space.get("training.epochs")
        top = max(int(v) for v in extremes(epochs)) if epochs else cfg.training.epochs
        first = STEPS_PER_EPOCH // 4 if cfg.tuning.report_every_steps else STEPS_PER_EPOCH
        return pruners.HyperbandPruner(
            min_resource=min(first, top * STEPS_PER_EPOCH),
            max_resource=top * STEPS_PER_EPOCH,
            reduction_factor=3,
        )
    return pruners.NopPruner()


def suggest(trial, cfg: Config) -> dict[str, Any]:
    values = {}
    for key, dim in cfg.tuning.space.items():
        log = dim.sampling == "log"
        if dim.type == "choice":
            values[key] = trial.suggest_categorical(key, list(dim.values))
        elif dim.type == "int":
            step = int(dim.step or 1)
            values[key] = trial.suggest_int(key, int(dim.min), int(dim.max), step=step, log=log)
        else:
            values[key] = trial.suggest_float(key, dim.min, dim.max, step=dim.step, log=log)
    return values


def open_study(cfg: Config, root: Path):
    """Creates the study or joins it.

    Raises:
        ConfigError: the storage already holds a study of this name made for another space.
    """
    optuna = load_optuna()
    objective, direction = objective_of(cfg)
    directions = [direction + "imize"] + (["minimize"] if cfg.tuning.second_objective else [])
    name = cfg.tuning.study_name or cfg.name
    storage = storage_for(cfg, root)
    made_for = json.loads(
        json.dumps(
            {
                "space": {k: d.model_dump(mode="json") for k, d in cfg.tuning.space.items()},
                "objectives": [objective, cfg.tuning.second_objective],
                "directions": directions,
            }
        )
    )
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=name,
            sampler=sampler_for(cfg),
            pruner=pruner_for(cfg),
            directions=directions,
            load_if_exists=True,
        )
    except ValueError as exc:  # directions differ from the stored study's
        raise ConfigError(
            f"study `{name}` in the storage does not match the config: {exc}"
        ) from None
    stored = study.user_attrs.get(SPACE)
    if stored is None:
        study.set_user_attr(SPACE, made_for)
    elif stored != made_for:
        changed = _first_difference(stored, made_for)
        raise ConfigError(
            f"study `{name}` in the storage was made for another search ({changed}); restore the "
            "config's `tuning` section, or set a new `tuning.study_name` or `tuning.storage`"
        )
    return study


def _first_difference(stored: dict, now: dict) -> str:
    for key in sorted(set(stored["space"]) | set(now["space"])):
        if stored["space"].get(key) != now["space"].get(key):
            return f"`tuning.space.{key}` differs"
    return "its objectives differ"


class _Heartbeat:
    """Marks a running trial alive in the storage every `every` seconds, from a thread."""

    def __init__(self, study, trial_id: int, every: float):
        self.stopped = threading.Event()
        self.storage, self.trial_id = study._storage, trial_id
        self._beat()
        threading.Thread(target=self._loop, args=(every,), daemon=True).start()

    def _beat(self) -> None:
        try:
            self.storage.set_trial_system_attr(self.trial_id, BEAT, time.time())
        except Exception:  # finished meanwhile, or the database is busy: the next beat retries
            pass

    def _loop(self, every: float) -> None:
        while not self.stopped.wait(every):
            self._beat()

    def stop(self) -> None:
        self.stopped.set()


def fail_lost_trials(study, cfg: Config) -> None:
    """Marks running trials whose heartbeat stopped as failed and queues their values again."""
    optuna = load_optuna()
    state = optuna.trial.TrialState
    grace = 3 * cfg.tuning.heartbeat_seconds
    for t in study.get_trials(deepcopy=False, states=(state.RUNNING,)):
        last = t.system_attrs.get(BEAT) or (t.datetime_start.timestamp() if t.datetime_start else 0)
        if time.time() - last < grace:
            continue
        try:
            study._storage.set_trial_system_attr(t._trial_id, LOST, True)
            if not study._storage.set_trial_state_values(t._trial_id, state=state.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # finished meanwhile, or another worker got there first
        retries = int(t.user_attrs.get("retries", 0))
        again = retries < cfg.tuning.max_retries
        if again:
            study.enqueue_trial(t.params, user_attrs={"retries": retries + 1, "retry_of": t.number})
        print(
            f"trial {t.number} lost its worker (no heartbeat for {time.time() - last:.0f}s): failed"
            + (", queued to run again" if again else f", after {retries} retries"),
            flush=True,
        )


def _budget_left(study, cfg: Config) -> tuple[bool, bool]:
    """(a trial is left to start, a running trial may still need this worker)."""
    state = load_optuna().trial.TrialState
    trials = study.get_trials(deepcopy=False)
    if any(t.state == state.WAITING for t in trials):
        return True, True
    counted = [
        t
        for t in trials
        if t.state in (state.COMPLETE, state.PRUNED, state.RUNNING)
        or (t.state == state.FAIL and not t.system_attrs.get(LOST))
    ]
    running = any(t.state == state.RUNNING for t in trials)
    return len(counted) < _trial_budget(cfg), running


def _trial_budget(cfg: Config) -> int:
    if cfg.tuning.sampler == "grid":
        return min(cfg.tuning.max_trials, int(np.prod([len(v) for v in grid_space(cfg).values()])))
    return cfg.tuning.max_trials


def search(cfg: Config, raw: dict, source: str, root: Path, verbose) -> list[TrialRecord]:
    """Works on the study until its trials are done; returns every trial of the study."""
    study = open_study(cfg, root)
    objective, direction = objective_of(cfg)
    extra = f" and minimise {cfg.tuning.second_objective}" if cfg.tuning.second_objective else ""
    print(
        f"search: Optuna {cfg.tuning.sampler}, pruner {cfg.tuning.pruning}, "
        f"{_trial_budget(cfg)} trials, {direction}imise {objective}{extra}; study "
        f"`{study.study_name}` ({len(study.trials)} trials so far), results in {root}",
        flush=True,
    )
    current: dict[str, Any] = {}
    while True:
        fail_lost_trials(study, cfg)
        left, running = _budget_left(study, cfg)
        if not left:
            if not running:
                break
            time.sleep(min(cfg.tuning.heartbeat_seconds, 5.0))  # a running trial may be lost
            continue
        try:
            study.optimize(
                lambda trial: _objective(trial, cfg, raw, source, root, verbose, current),
                n_trials=1,
                catch=(),
            )
        except (KeyboardInterrupt, Interrupted):
            _requeue_interrupted(study, current)
            raise Interrupted(
                "the search stopped; run the same command again to continue it (finished trials "
                "are kept, the interrupted one starts over)."
            ) from None
    return records(study, cfg)


def _objective(trial, cfg: Config, raw: dict, source: str, root: Path, verbose, current: dict):
    optuna = load_optuna()
    current["trial"] = trial
    values = suggest(trial, cfg)
    out = root / "trials" / f"{trial.number:03d}"
    trial_cfg = trial_config(cfg, raw, source, values, out)
    retry = (
        f" (again, for trial {trial.user_attrs['retry_of']})"
        if "retry_of" in trial.user_attrs
        else ""
    )
    shown = ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
    )
    print(f"\n=== trial {trial.number}{retry}: {shown}", flush=True)
    observers = None
    if cfg.tuning.pruning != "none":
        observers = _reporting(trial, cfg)
    beat = _Heartbeat(trial.study, trial._trial_id, cfg.tuning.heartbeat_seconds)
    start = time.perf_counter()
    try:
        result = train_trial(cfg, trial_cfg, verbose, observers, f"trial {trial.number} ({shown})")
    except Pruned as exc:
        for leftover in ("backup", "checkpoints"):  # nothing of a pruned trial is worth keeping
            for path in out.glob(f"*/*/{leftover}"):
                shutil.rmtree(path, ignore_errors=True)
        seconds = round(time.perf_counter() - start, 1)
        trial.set_user_attr("seconds", seconds)
        print(f"=== trial {trial.number} {exc} after {seconds}s", flush=True)
        raise optuna.TrialPruned(str(exc)) from None
    except (KeyboardInterrupt, Interrupted):  # marked while it still runs: Optuna fails it next
        trial.storage.set_trial_system_attr(trial._trial_id, LOST, True)
        raise
    finally:
        beat.stop()
    trial.set_user_attr("runs", result["runs"])
    trial.set_user_attr("seconds", result["seconds"])
    objective, _ = objective_of(cfg)
    scores = {objective: result["objective"]}
    if cfg.tuning.second_objective:
        scores[cfg.tuning.second_objective] = result["second"]
    write_hparams(root / "hparams" / f"{trial.number:03d}", values, scores)
    print(
        f"=== trial {trial.number}: " + ", ".join(f"{k} = {v:.4f}" for k, v in scores.items()),
        flush=True,
    )
    return tuple(scores.values()) if len(scores) > 1 else result["objective"]


def _reporting(trial, cfg: Config):
    """The runner's `observers`: a `TrialReporter` wired to this trial and the study's pruner."""
    objective, _ = objective_of(cfg)

    def report(step: int, value: float) -> bool:
        trial.report(value, step)
        return trial.should_prune()

    def observers(validation, steps_per_epoch: int) -> list:
        every = cfg.tuning.report_every_steps
        return [TrialReporter(report, validation, objective, steps_per_epoch, every)]

    return observers


def _requeue_interrupted(study, current: dict) -> None:
    """Ctrl-C: the trial that was cut off runs again first when the command is run again."""
    trial = current.get("trial")
    if trial is None or not study._storage.get_trial(trial._trial_id).system_attrs.get(LOST):
        return  # stopped between trials: the last one finished (or was pruned), nothing to redo
    study.enqueue_trial(trial.params, user_attrs={**trial.user_attrs, "retry_of": trial.number})


def records(study, cfg: Config) -> list[TrialRecord]:
    state = load_optuna().trial.TrialState
    names = {
        state.COMPLETE: "complete",
        state.PRUNED: "pruned",
        state.FAIL: "failed",
        state.RUNNING: "running",
    }
    pareto = set()
    if cfg.tuning.second_objective:
        pareto = {t.number for t in study.best_trials}
    out = []
    for t in study.get_trials(deepcopy=False):
        if t.state not in names:
            continue  # waiting
        value = t.values[0] if t.values else None
        if t.state == state.PRUNED and t.intermediate_values:
            value = t.intermediate_values[max(t.intermediate_values)]
        out.append(
            TrialRecord(
                f"{t.number:03d}",
                "lost" if t.state == state.FAIL and t.system_attrs.get(LOST) else names[t.state],
                dict(t.params),
                value,
                second=t.values[1] if t.values and len(t.values) > 1 else None,
                seconds=t.user_attrs.get("seconds"),
                runs=list(t.user_attrs.get("runs", [])),
                pareto=t.number in pareto,
            )
        )
    return out
