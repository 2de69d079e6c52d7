from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kerasft._compat import tf
from kerasft.config import config_from_dict, load_config
from kerasft.train import main
from kerasft.training.runner import run
from tests.conftest import read_json, write_yaml

# Trains with `precision: auto`: `make test-bf16` reruns this module in mixed_bfloat16.
pytestmark = pytest.mark.precision


@pytest.mark.slow
def test_run_trains_evaluates_and_exports(tiny_config, tmp_path):
    result = run(config_from_dict(tiny_config), verbose=0)

    files = {p.name for p in result.run_dir.iterdir()}
    assert {"config.yaml", "labels.json", "metrics.json", "checkpoints", "logs"} <= files
    assert load_config(result.run_dir / "config.yaml") == config_from_dict(tiny_config)
    assert read_json(result.run_dir / "labels.json") == {"labels": ["neg", "pos"]}

    metrics = read_json(result.run_dir / "metrics.json")
    # The tiny classifier trains on packed batches (`data.packing: auto`), which it records.
    assert set(metrics) == {"validation", "test", "train", "data", "packing"}
    assert metrics["data"]["test"]["counts"] == {"neg": 4, "pos": 4}
    test = metrics["test"]
    assert test["examples"] == 8 and 0.0 <= test["accuracy"] <= 1.0
    assert set(test["per_class"]) == {"neg", "pos"}
    assert np.array(test["confusion_matrix"]["matrix"]).sum() == 8
    assert metrics["train"]["examples_per_second"] > 0 and metrics["train"]["epochs"] == 2
    history = metrics["train"]["history"]
    assert history["loss"][1] < history["loss"][0]
    assert len(history["val_macro_f1"]) == 2

    assert result.export_dir == tmp_path / "saved_models" / "tiny" / "1"
    loaded = tf.saved_model.load(str(result.export_dir))
    out = loaded.signatures["predict_ids"](
        input_ids=tf.constant([[2, 5, 6, 3]]),
        attention_mask=tf.ones((1, 4), tf.int32),
        token_type_ids=tf.zeros((1, 4), tf.int32),
    )
    assert out["probabilities"].shape == (1, 2)


@pytest.mark.slow
def test_same_seed_gives_the_same_run(tiny_config):
    tiny_config["export"]["enabled"] = False
    first = run(config_from_dict(tiny_config), verbose=0).metrics
    second = run(config_from_dict(tiny_config), verbose=0).metrics
    assert first["train"]["history"] == second["train"]["history"]
    assert first["test"]["loss"] == pytest.approx(second["test"]["loss"], abs=1e-6)


@pytest.mark.slow
def test_best_epoch_weights_are_restored(tiny_config, tmp_path):
    """Training labels are the inverse of validation labels, so validation gets worse every epoch:
    the best epoch is the first, and its weights must be the ones evaluated and exported."""
    from tests.conftest import NEGATIVE, POSITIVE

    def rows(pos, neg, copies=1):
        one = "".join(f"{t},{pos}\n" for t in POSITIVE) + "".join(f"{t},{neg}\n" for t in NEGATIVE)
        return "text,label\n" + copies * one

    # Enough steps at a steady rate that the flipped labels are learnt every epoch: the
    # validation loss then rises from the first epoch on (0.82, 1.18, 1.98, 2.45 here), in
    # float32 and bfloat16 alike. At 1e-2 on one copy it rose and fell again, and which epoch
    # was best moved with the kernels' rounding.
    (tmp_path / "flipped.csv").write_text(rows("neg", "pos", copies=4))
    (tmp_path / "val.csv").write_text(rows("pos", "neg"))
    tiny_config["data"].update(
        train=str(tmp_path / "flipped.csv"), validation=str(tmp_path / "val.csv"), test_split=0.0
    )
    tiny_config["training"].update(
        epochs=4, learning_rate=3e-3, warmup_ratio=0.0, monitor="val_loss", patience=5
    )
    tiny_config["export"]["enabled"] = False
    result = run(config_from_dict(tiny_config), verbose=0)
    val_losses = result.metrics["train"]["history"]["val_loss"]
    best = val_losses.index(min(val_losses))
    assert best < len(val_losses) - 1, "the scenario needs a best epoch before the last"
    assert result.metrics["train"]["best_epoch"] == best + 1
    # metrics.json scores the best epoch's weights, not the last epoch's.
    assert result.metrics["validation"]["loss"] == pytest.approx(val_losses[best], abs=1e-5)


def cli(args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "kerasft.train", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _bad(tiny_config, tmp_path, mutate):
    mutate(tiny_config)
    return write_yaml(tmp_path / "bad.yaml", tiny_config)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda c: c["data"].update(train="missing.csv"),
            r"`data.train`: data file not found: missing.csv",
        ),
        (
            lambda c: c["data"].update(text_column="sentence"),
            r"no column `sentence`.*Columns present: text, label",
        ),
        (
            lambda c: c["model"].update(backbone="./no-such-model"),
            r"Unknown model `./no-such-model` in `model.backbone`",
        ),
        (
            lambda c: c["data"].update(labels=["pos", "neutral"]),
            r"label 'neg' is not in the label vocabulary",
        ),
        (lambda c: c["training"].update(epochs=0), r"`training.epochs`.*Received: 0"),
        (
            lambda c: (c["data"].update(packing=True), c["training"].update(jit_compile=True)),
            r"`data.packing: true` cannot train with XLA .*; set `data.packing: auto`",
        ),
    ],
)
def test_user_errors_are_one_line_exit_2_and_leave_nothing(
    tiny_config, tmp_path, mutate, message, monkeypatch, capsys
):
    path = _bad(tiny_config, tmp_path, mutate)
    monkeypatch.chdir(tmp_path)  # relative paths start where the user runs the command
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ")
    assert "Traceback" not in err
    import re

    assert re.search(message, last), last
    assert not (tmp_path / "saved_models").exists() or not any(
        (tmp_path / "saved_models").rglob("*")
    )
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.json"))


def test_single_class_and_missing_config_are_rejected(tiny_config, tmp_path):
    csv = tmp_path / "one.csv"
    csv.write_text("text,label\n" + "\n".join(f"good movie {i},pos" for i in range(10)) + "\n")
    tiny_config["data"]["train"] = str(csv)
    assert main(["--config", str(write_yaml(tmp_path / "c.yaml", tiny_config))]) == 2
    assert main(["--config", str(tmp_path / "absent.yaml")]) == 2


@pytest.mark.slow
def test_cli_prints_run_export_and_report_paths_last(tiny_config, tmp_path):
    tiny_config["evaluation"]["report"] = True
    path = write_yaml(tmp_path / "c.yaml", tiny_config)
    proc = cli(["--config", str(path), "--set", "training.epochs=1"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_line, export_line, report_line = proc.stdout.strip().splitlines()[-3:]
    run_dir = tmp_path / Path(run_line.removeprefix("run_dir="))
    assert run_line.startswith("run_dir=") and (run_dir / "metrics.json").is_file()
    assert export_line == f"export_dir={tmp_path / 'saved_models' / 'tiny' / '1'}"
    assert (
        report_line == f"report={run_dir / 'report.html'}" and (run_dir / "report.html").is_file()
    )


def test_help_describes_the_command(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--help"])
    out = capsys.readouterr().out
    assert stopped.value.code == 0 and "--set" in out and "run_dir=" in out


def test_kerasft_command_dispatches_and_rejects_unknown_commands(capsys):
    from kerasft.cli import main as cli_main

    assert cli_main(["--help"]) == 0 and "kerasft train" in capsys.readouterr().out
    assert cli_main(["frobnicate"]) == 2
    assert "unknown command `frobnicate`" in capsys.readouterr().err


def test_sigterm_takes_ctrl_cs_way_exits_143_and_restores_the_handler(tmp_path, capsys):
    """A scheduler's SIGTERM killed the process where it stood: a predictions file stayed
    half-written as `.partial` and the exit status was -15."""
    import os
    import signal
    import threading

    from kerasft.cli import cli_main
    from kerasft.predict import _partial_file

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are set in the main thread only")
    before = signal.getsignal(signal.SIGTERM)

    @cli_main
    def command(argv):
        with _partial_file(tmp_path / "out.jsonl") as handle:
            handle.write("half")
            os.kill(os.getpid(), signal.SIGTERM)
        return 0

    assert command([]) == 143
    assert capsys.readouterr().err.strip() == "terminated (SIGTERM)."
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_sigterm_whose_interrupt_is_lost_still_stops_training(tiny_config, capsys):
    """Python runs a signal handler wherever the interpreter is: a multi-worker run's SIGTERM
    raised its KeyboardInterrupt inside a multiprocessing pool's finalizer, which printed and
    dropped it, and the worker trained on until its peer's collective failed (exit 1)."""
    import os
    import signal
    import threading

    from kerasft._compat import keras
    from kerasft.cli import cli_main
    from kerasft.training.runner import run

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are set in the main thread only")

    class Swallowed(keras.callbacks.Callback):  # a finalizer that drops what it raises
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 1:
                try:
                    os.kill(os.getpid(), signal.SIGTERM)
                except KeyboardInterrupt:
                    pass

    @cli_main
    def command(argv):
        run(config_from_dict(tiny_config), verbose=0, observers=lambda *_: [Swallowed()])
        return 0

    assert command([]) == 143
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("terminated (SIGTERM): training stopped at epoch 1, step 2")


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_in_training_stops_after_the_step_and_a_second_one_at_once(
    tiny_config, capfd, ctrl_c, presses
):
    """Ctrl-C raised KeyboardInterrupt wherever the interpreter stood, at times inside Python
    code that TensorFlow's runtime had called and that did not expect it: the command died of
    a segmentation fault (exit -11) or failed with `SystemError: ... bad argument to internal
    function` instead of its one line and exit 130. Training's loop now stops after the step."""
    from kerasft._compat import keras
    from kerasft.cli import cli_main
    from kerasft.training.runner import run

    steps_begun = []

    class CtrlC(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            steps_begun.append(batch)
            if batch == 1:
                for _ in range(presses):
                    ctrl_c()
                steps_begun.append("went on")

    @cli_main
    def command(argv):
        run(config_from_dict(tiny_config), verbose=0, observers=lambda *_: [CtrlC()])
        return 0

    assert command([]) == 130
    err = capfd.readouterr().err.strip().splitlines()
    assert err[-1].startswith("interrupted: training stopped at epoch 1, step 2")
    assert "Ctrl-C: stopping after this step (Ctrl-C again stops at once)" in err
    # One press: the step ran to its end, and no other began. Two: stopped inside the step.
    assert steps_begun == ([0, 1, "went on"] if presses == 1 else [0, 1])


def test_ctrl_c_while_scoring_stops_between_batches(capfd, ctrl_c, monkeypatch):
    """`collect` scores validation in training's loop and both splits after it."""
    import kerasft.tasks.specs as specs
    from kerasft.cli import cli_main
    from kerasft.tasks import TASKS, collect

    batches = []

    def forward(model, spec, input_spec):
        def step(x):
            batches.append(len(x))
            if len(batches) == 1:
                ctrl_c()
            return tf.zeros([len(x), 2])

        return step

    monkeypatch.setattr(specs, "_forward", forward)
    dataset = tf.data.Dataset.from_tensor_slices((tf.zeros([12, 3]), tf.zeros([12]))).batch(4)
    command = cli_main(lambda argv: collect(None, dataset, TASKS["classification"]))
    assert command([]) == 130
    assert batches == [4]  # the batch ran to its end; no other began
    assert "Ctrl-C: stopping after this step" in capfd.readouterr().err


def test_a_stop_asked_during_the_last_step_still_stops():
    import signal

    from kerasft.errors import clear_stop, request_stop, stop_between_steps

    try:
        with pytest.raises(KeyboardInterrupt), stop_between_steps():
            request_stop(signal.SIGINT)
    finally:
        clear_stop()


def test_two_predictions_into_one_output_each_write_a_whole_file(tmp_path):
    """They shared one `.partial` file: both wrote into it at once, and the second rename
    failed with a FileNotFoundError traceback."""
    import os
    import stat

    from kerasft.predict import _partial_file

    out = tmp_path / "out.jsonl"
    with _partial_file(out) as first, _partial_file(out) as second:
        first.write("first\n" * 3)
        second.write("second\n" * 2)
        second.flush()
    assert out.read_text() == "first\n" * 3  # the last to finish
    assert list(tmp_path.iterdir()) == [out]
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~mask  # as open() makes files


def test_python_dash_m_kerasft_is_the_kerasft_command():
    """It was "No module named kerasft.__main__"."""
    import subprocess
    import sys

    run = [sys.executable, "-m", "kerasft"]
    shown = subprocess.run([*run, "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and shown.stdout.startswith("usage: kerasft <command>")
    wrong = subprocess.run([*run, "trian"], capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "unknown command `trian`" in wrong.stderr
