"""`tuning.engine: optuna`: samplers, pruning, a second objective, a study several workers share,
and the one-line errors; keras-tuner's chief/worker mode with a killed worker."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kerasft.config import load_config
from kerasft.report import tuning_report
from kerasft.training.search import tune
from kerasft.training.search_optuna import LOST, open_study, pruner_for, sampler_for, storage_for
from kerasft.training.trials import Pruned, TrialReporter
from kerasft.tune import main
from tests.conftest import REPO, write_yaml

optuna = pytest.importorskip("optuna")

LR_CHOICE = {"training.learning_rate": {"type": "choice", "values": [3e-3, 1e-7]}}


@pytest.fixture
def optuna_config(tiny_config, tmp_path):
    tiny_config["training"]["epochs"] = 2
    tiny_config["tuning"] = {
        "engine": "optuna",
        "sampler": "random",
        "max_trials": 3,
        "objective": "val_loss",  # smooth on 8 validation examples, unlike F1
        "space": LR_CHOICE,
        "directory": str(tmp_path / "search"),
    }
    return tiny_config


def _rows(root: Path) -> list[dict]:
    with (root / "trials.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_pruned_trials_stop_mid_epoch_leave_nothing_and_the_study_continues(
    optuna_config, tmp_path, capsys
):
    # A good rate and a hopeless one (1.0 throws the weights off at the first step: its loss
    # trails at the first report on any machine, unlike a rate too small to move them).
    rates = [3e-3, 1.0]
    optuna_config["tuning"].update(
        pruner_startup_trials=1,
        report_every_steps=1,
        space={"training.learning_rate": {"type": "choice", "values": rates}},
    )
    path = write_yaml(tmp_path / "tune.yaml", optuna_config)
    root = tmp_path / "search"
    root.mkdir()
    # The good trial first (random draws could give two equal trials, and a trial that ties
    # the median is not pruned).
    study = open_study(load_config(path), root)
    for rate in rates:
        study.enqueue_trial({"training.learning_rate": rate})
    best = tune(str(path), [], verbose=0)
    out = capsys.readouterr().out
    rows = _rows(root)
    assert [r["state"] for r in rows].count("complete") >= 1
    pruned = [r for r in rows if r["state"] == "pruned"]
    assert pruned, out[-3000:]
    # Stopped at the first report that trailed (mid-epoch: reports every step), no export, no
    # checkpoints or backup, no metrics: the trial never finished.
    assert re.search(r"trial pruned at epoch 0\.\d+: val_loss", out)
    assert not (tmp_path / "saved_models").exists()
    for row in pruned:
        trial_dir = root / "trials" / row["trial_id"]
        assert not list(trial_dir.rglob("metrics.json"))
        assert not list(trial_dir.rglob("checkpoints")) and not list(trial_dir.rglob("backup"))
    assert any((root / "hparams").rglob("events.out.tfevents.*"))  # TensorBoard HParams
    study = optuna.load_study(study_name="tiny", storage=storage_for(load_config(path), root))
    assert all(t.intermediate_values for t in study.trials)
    assert load_config(best).training.learning_rate == float(rows[0]["training.learning_rate"])

    # The same command continues the study: one more trial, numbered after the others.
    tune(str(path), ["tuning.max_trials=4"], verbose=0)
    assert "study `tiny` (3 trials so far)" in capsys.readouterr().out
    assert sorted(r["trial_id"] for r in _rows(root)) == ["000", "001", "002", "003"]
    page = tuning_report(root).read_text()
    assert "pruned" in page and "optuna search" in page


@pytest.mark.slow
def test_second_objective_gives_a_pareto_front_in_the_report(optuna_config, tmp_path):
    optuna_config["training"]["epochs"] = 1
    optuna_config["tuning"].update(
        sampler="grid",
        objective="val_accuracy",
        second_objective="size_mb",
        space={"model.num_layers": {"type": "choice", "values": [1, 2]}},
    )
    path = write_yaml(tmp_path / "tune.yaml", optuna_config)
    tune(str(path), [], verbose=0)
    root = tmp_path / "search"
    rows = {r["model.num_layers"]: r for r in _rows(root)}
    assert set(rows) == {"1", "2"}  # the grid, once each: the budget of 3 is capped at 2
    assert float(rows["1"]["size_mb"]) < float(rows["2"]["size_mb"])
    assert rows["1"]["state"] == "complete (pareto)"  # the smallest model is always on the front
    meta = json.loads((root / "search.json").read_text())
    assert meta["second_objective"] == "size_mb"
    assert "Pareto front" in tuning_report(root).read_text()
    assert (root / "plots" / "pareto.png").stat().st_size > 5000


def test_the_sampler_is_reseeded_per_trial_so_workers_do_not_repeat_values(optuna_config, tmp_path):
    optuna_config["tuning"]["space"] = {
        "training.learning_rate": {"type": "float", "min": 1e-5, "max": 1e-2, "sampling": "log"}
    }
    cfg = load_config(write_yaml(tmp_path / "t.yaml", optuna_config))

    def draws(n: int) -> list[float]:
        study = optuna.create_study(sampler=sampler_for(cfg), direction="minimize")
        out = []
        for _ in range(n):
            trial = study.ask()
            out.append(trial.suggest_float("training.learning_rate", 1e-5, 1e-2, log=True))
            study.tell(trial, 1.0)
        return out

    first, again = draws(4), draws(4)
    assert first == again  # seeded: one worker's search is reproducible
    assert len(set(first)) == 4  # trial n draws with seed + n: no two trials alike


def test_reports_are_in_thousandths_of_an_epoch_and_a_prune_stops_fit_at_once():
    class Validation:
        def measure(self):
            return {"loss": 0.25}, 8

    reports = []
    reporter = TrialReporter(
        lambda step, value: reports.append((step, value)) or step >= 1333,
        Validation(),
        "val_loss",
        steps_per_epoch=6,
        every=2,
    )
    reporter.on_epoch_begin(0)
    for batch in range(6):  # reports after steps 2 and 4; step 6 is the epoch end's
        reporter.on_train_batch_end(batch)
    reporter.on_epoch_end(0, {"val_loss": 0.5})
    reporter.on_epoch_begin(1)
    reporter.on_train_batch_end(0)
    with pytest.raises(Pruned, match="pruned at 1.333 epochs"):
        reporter.on_train_batch_end(1)
    assert reports == [(333, 0.25), (667, 0.25), (1000, 0.5), (1333, 0.25)]


def test_hyperband_budgets_follow_the_epochs_searched(optuna_config, tmp_path):
    optuna_config["tuning"].update(
        pruner="hyperband",
        report_every_steps=5,
        space={"training.epochs": {"type": "int", "min": 1, "max": 4}},
    )
    pruner = pruner_for(load_config(write_yaml(tmp_path / "t.yaml", optuna_config)))
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    assert (pruner._min_resource, pruner._max_resource) == (250, 4000)


@pytest.mark.parametrize(
    ("tuning", "message"),
    [
        ({"engine": "optunaa"}, r"tuning.engine"),
        ({"pruner": "mean"}, r"tuning.pruner"),
        ({"engine": "keras_tuner", "pruner": "median"}, r"needs `tuning.engine: optuna`"),
        ({"engine": "keras_tuner", "storage": "x.db"}, r"`tuning.storage` is Optuna's"),
        ({"oracle": "bayesian"}, r"`tuning.oracle` is keras-tuner's"),
        (
            {
                "sampler": "grid",
                "space": {"training.learning_rate": {"type": "float", "min": 0.1, "max": 0.2}},
            },
            r"has no `step`",
        ),
        ({"storage": "redis://localhost/0"}, r"is not a storage kerasft knows"),
        ({"storage": "sqlite:////no/such/dir/study.db"}, r"directory /no/such/dir does not exist"),
        (
            {"storage": "postgresql://kerasft:s3cret@127.0.0.1:1/study"},
            r"`tuning.storage: postgresql://kerasft:\*\*\*@127.0.0.1:1/study` cannot be opened",
        ),
    ],
)
def test_bad_tuning_input_is_one_line_and_exit_2(optuna_config, tmp_path, capsys, tuning, message):
    if tuning.get("engine") == "keras_tuner":
        del optuna_config["tuning"]["sampler"]
    optuna_config["tuning"].update(tuning)
    path = write_yaml(tmp_path / "tune.yaml", optuna_config)
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert "s3cret" not in err
    assert not (tmp_path / "search").exists()


def test_a_study_made_for_another_space_is_refused(optuna_config, tmp_path, capsys):
    path = write_yaml(tmp_path / "tune.yaml", optuna_config)
    open_study(load_config(path), tmp_path / "search")
    changed = {"training.learning_rate": {"type": "choice", "values": [1e-3, 1e-4]}}
    optuna_config["tuning"]["space"] = changed
    write_yaml(path, optuna_config)
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "study `tiny` in the storage was made for another search" in err
    assert "`tuning.space.training.learning_rate` differs" in err


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        ("middle", "study.journal:2: the study's journal is damaged (Expecting property name"),
        ("cut", "study.journal:3: the study's journal ends in a line cut short"),
    ],
)
def test_a_damaged_journal_is_one_line_naming_its_line(
    optuna_config, tmp_path, capsys, damage, fragment
):
    """Optuna's error named neither ("study `tiny` in the storage does not match the config:
    Expecting value"), and a line cut short by a kill was glued to the next write."""
    from tests.test_hostile import one_error_line

    path = write_yaml(tmp_path / "tune.yaml", optuna_config)
    open_study(load_config(path), tmp_path / "search")
    journal = tmp_path / "search" / "study.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    assert len(lines) >= 2
    if damage == "middle":
        lines.insert(1, b"{garbage\n")
    else:
        lines.append(b'{"op_code": 4, "wor')
    journal.write_bytes(b"".join(lines))
    line = one_error_line(capsys, main(["--config", str(path)]), fragment)
    assert line.endswith(
        "Cut the file before this line to keep the trials recorded before it, or delete it to start the search over."
    )
    assert not (tmp_path / "search" / "trials").exists()


def test_optuna_missing_is_one_line(optuna_config, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    path = write_yaml(tmp_path / "tune.yaml", optuna_config)
    assert main(["--config", str(path)]) == 2
    assert "pip install 'kerasft[optuna]'" in capsys.readouterr().err
    assert not (tmp_path / "search").exists()


def _launch(path: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "kerasft.tune", "--config", str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )


def _kill_mid_trial(proc: subprocess.Popen) -> list[str]:
    """Reads the worker's output until its first trial trains, then SIGKILLs it."""
    seen, in_trial = [], False
    for line in proc.stdout:
        seen.append(line)
        in_trial |= line.startswith("=== trial")
        if in_trial and line.startswith("epoch 1 step"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    return seen


def _started(output: str) -> list[str]:
    """Trial ids of "=== trial N: key=value" lines (a start; an end line has " = ")."""
    return re.findall(r"^=== trial (\w+)(?: \(again[^)]*\))?: (?!.* = )", output, re.M)


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study_and_a_killed_workers_trial_runs_again(
    optuna_config, tmp_path
):
    optuna_config["tuning"].update(
        max_trials=2,
        sampler="tpe",
        pruner="none",
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        heartbeat_seconds=1,
        space={
            "training.learning_rate": {"type": "float", "min": 1e-4, "max": 3e-3, "sampling": "log"}
        },
    )
    path = write_yaml(tmp_path / "tune.yaml", optuna_config)
    killed, survivor = _launch(path), _launch(path)
    killed_out = "".join(_kill_mid_trial(killed))
    out, _ = survivor.communicate(timeout=900)
    assert survivor.returncode == 0, out[-3000:]
    assert "lost its worker" in out and "queued to run again" in out

    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'study.db'}")
    state = optuna.trial.TrialState
    complete = [t for t in study.trials if t.state == state.COMPLETE]
    lost = [t for t in study.trials if t.system_attrs.get(LOST)]
    assert len(complete) == 2 and len(lost) == 1
    retry = next(t for t in complete if t.user_attrs.get("retry_of") == lost[0].number)
    assert retry.params == lost[0].params
    # No trial ran twice: every trial id started once, in one worker or the other.
    starts = _started(killed_out) + _started(out)
    assert sorted(starts) == sorted(set(starts)), starts
    assert len({tuple(t.user_attrs["runs"]) for t in complete}) == 2
    assert out.strip().splitlines()[-1].startswith("best_config=")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_keras_tuner_chief_and_two_workers_with_one_killed(tiny_config, tmp_path):
    tiny_config["tuning"] = {
        "oracle": "random",
        "max_trials": 2,
        "heartbeat_seconds": 2,  # 1 s let a busy machine's live worker look silent
        "space": {"training.learning_rate": {"type": "float", "min": 1e-4, "max": 3e-3}},
        "directory": str(tmp_path / "chief"),
    }
    path = write_yaml(tmp_path / "tune.yaml", tiny_config)
    env = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(_free_port())}
    chief = _launch(path, {**env, "KERASTUNER_TUNER_ID": "chief"})
    time.sleep(1)
    workers = []
    for i in range(2):  # each worker keeps its own trial directories
        override = tmp_path / f"worker{i}.yaml"
        tiny_config["tuning"]["directory"] = str(tmp_path / f"worker{i}")
        write_yaml(override, tiny_config)
        workers.append(_launch(override, {**env, "KERASTUNER_TUNER_ID": f"tuner{i}"}))
    killed_out = "".join(_kill_mid_trial(workers[1]))
    worker_out, _ = workers[0].communicate(timeout=900)
    chief_out, _ = chief.communicate(timeout=300)
    assert workers[0].returncode == 0, worker_out[-3000:]
    assert chief.returncode == 0, chief_out[-3000:]
    assert "lost its worker's heartbeat; it runs again" in chief_out
    assert worker_out.strip().splitlines()[-1] == "worker done: the chief writes the results"

    rows = _rows(tmp_path / "chief")
    assert [r["state"] for r in rows] == ["complete"] * 2
    lost = _started(killed_out)
    assert len(lost) == 1
    # The lost trial ran again on the surviving worker; every other trial ran once.
    starts = _started(worker_out)
    assert sorted(starts) == sorted({r["trial_id"] for r in rows}) and lost[0] in starts
    assert chief_out.strip().splitlines()[-1].startswith("best_config=")


def test_keras_tuner_workers_wait_for_running_trials_and_a_late_result_stands(
    tiny_config, tmp_path
):
    """The chief's oracle, without gRPC: the race the two-worker test can only sometimes hit."""
    from keras_tuner.src.engine.trial import TrialStatus

    from kerasft.training.search_kt import build_oracle

    tiny_config["tuning"] = {
        "oracle": "random",
        "max_trials": 2,
        "space": {"training.learning_rate": {"type": "float", "min": 1e-4, "max": 3e-3}},
    }
    oracle = build_oracle(load_config(write_yaml(tmp_path / "t.yaml", tiny_config)))
    oracle._set_project_dir(str(tmp_path), "search")
    first, second = oracle.create_trial("tuner0"), oracle.create_trial("tuner1")

    def finish(trial):
        oracle.update_trial(trial.trial_id, {oracle.objective.name: 0.5})
        trial.status = TrialStatus.COMPLETED
        oracle.end_trial(trial)

    finish(first)
    # The budget is spent, but tuner1 still trains: tuner0 is told to wait, not to leave.
    assert oracle.create_trial("tuner0").status == TrialStatus.IDLE
    assert oracle.requeue_silent(grace=0.0) == [f"{second.trial_id} (tuner1)"]
    again = oracle.create_trial("tuner0")  # the silent worker's trial, same values
    assert again.trial_id == second.trial_id and again.status == TrialStatus.RUNNING
    finish(again)
    assert oracle.create_trial("tuner0").status == TrialStatus.STOPPED

    # A worker requeued while still alive (a busy machine) finishes before anyone took its
    # trial: the result stands and the trial does not run a second time.
    late = build_oracle(load_config(tmp_path / "t.yaml"))
    late._set_project_dir(str(tmp_path / "late"), "search")
    trial = late.create_trial("tuner0")
    late.requeue_silent(grace=0.0)
    finish_late = trial.trial_id
    late.update_trial(finish_late, {late.objective.name: 0.5})
    trial.status = TrialStatus.COMPLETED
    late.end_trial(trial)
    assert late.trials[finish_late].status == TrialStatus.COMPLETED
    assert finish_late not in late._retry_queue


def _open_at_once(barrier, paths: list[str], results) -> None:
    from kerasft.training.search_optuna import _rdb_storage

    failures = 0
    for path in paths:
        barrier.wait()  # both processes create the same new database at the same moment
        try:
            _rdb_storage(optuna, f"sqlite:///{path}", {}, Path(path + ".lock"))
        except Exception:
            failures += 1
    results.put(failures)


def test_workers_creating_one_new_sqlite_study_at_once_both_open_it(tmp_path):
    """Two bench workers once raced creating the schema ("table alembic_version already exists")."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(2), context.Queue()
    paths = [str(tmp_path / f"study{i}.db") for i in range(6)]
    procs = [
        context.Process(target=_open_at_once, args=(barrier, paths, results)) for _ in range(2)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [results.get(timeout=5) for _ in procs] == [0, 0]


def test_ctrl_c_requeues_only_the_trial_it_cut_off():
    from kerasft.training.search_optuna import _requeue_interrupted

    study = optuna.create_study()
    finished = study.ask()
    finished.suggest_float("x", 0, 1)
    study.tell(finished, 1.0)
    _requeue_interrupted(study, {"trial": finished})  # Ctrl-C between trials: nothing to redo
    assert not study.get_trials(states=(optuna.trial.TrialState.WAITING,))

    cut = study.ask()
    x = cut.suggest_float("x", 0, 1)
    cut.storage.set_trial_system_attr(cut._trial_id, LOST, True)  # as _objective does on Ctrl-C
    study.tell(cut, state=optuna.trial.TrialState.FAIL)  # then Optuna fails it
    _requeue_interrupted(study, {"trial": cut})
    (again,) = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert again.system_attrs["fixed_params"] == {"x": x}  # a waiting trial holds them here
    assert again.user_attrs["retry_of"] == cut.number
    assert study.trials[cut.number].system_attrs[LOST]
