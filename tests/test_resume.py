"""A run killed with SIGKILL mid-training resumes from its backup and ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

from kerasft._compat import tf
from kerasft.training.callbacks import best_checkpoint
from tests.conftest import REPO, command, write_yaml


def train(path, *extra, kill_at=None, sig=signal.SIGKILL):
    """Runs `kerasft.train`; with `kill_at`, sends `sig` when a line starts with it. Returns the
    exit status and the output (stdout and stderr together, read to the end)."""
    proc = command("kerasft.train", path, *extra)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if kill_at and line.startswith(kill_at):
            proc.send_signal(sig)
            kill_at = None
            if sig == signal.SIGKILL:
                break
    proc.wait(timeout=300)
    return proc.returncode, "".join(lines)


def killed_resumed_and_fresh(path, runs, kill_at: str):
    """Trains `path` killed (SIGKILL) at the line starting with `kill_at`, resumes it mid-epoch
    2, then trains it again with --fresh; returns the (resumed, fresh) run directories."""
    code, out = train(path, kill_at=kill_at)
    assert code == -signal.SIGKILL, out[-2000:]
    (interrupted,) = list(runs.iterdir())
    code, out = train(path)
    assert code == 0 and "resumed from the backup at epoch 2 step" in out, out[-3000:]
    code, out = train(path, "--fresh")
    assert code == 0, out[-3000:]
    (fresh,) = [d for d in runs.iterdir() if d != interrupted]
    return interrupted, fresh


def assert_same_best_weights(a_run, b_run, at_least: int, skip: tuple[str, ...] = ()) -> None:
    """Two runs' best checkpoints hold the same values, variable by variable (and optimizer
    slot), within 1e-6; `skip` leaves out variables whose names start with one of its entries."""
    a = tf.train.load_checkpoint(best_checkpoint(a_run / "checkpoints"))
    b = tf.train.load_checkpoint(best_checkpoint(b_run / "checkpoints"))
    names = [
        n
        for n in a.get_variable_to_shape_map()
        if "/.ATTRIBUTES/VARIABLE_VALUE" in n and not n.startswith(skip)
    ]
    assert len(names) > at_least  # every weight (and optimizer slot) of the model
    for name in names:
        np.testing.assert_allclose(a.get_tensor(name), b.get_tensor(name), atol=1e-6)


@pytest.fixture
def deterministic_config(tiny_config, tmp_path):
    tiny_config["model"].update(hidden_dropout=0.0, attention_dropout=0.0, dropout=0.0)
    # Layer-wise decay: every group's Adam state has to come back from the backup.
    tiny_config["training"].update(
        epochs=4, patience=10, monitor="val_loss", layerwise_lr_decay=0.8
    )
    tiny_config["export"]["enabled"] = False
    return tiny_config


@pytest.mark.slow
def test_killed_mid_epoch_resumes_at_its_backup_step_to_the_result_of_an_uninterrupted_run(
    deterministic_config, tmp_path
):
    deterministic_config["training"].update(epochs=3, batch_size=4, backup_every_steps=2)
    path = write_yaml(tmp_path / "c.yaml", deterministic_config)
    code, out = train(path, kill_at="epoch 2 step 4/")
    assert code == -signal.SIGKILL, out[-2000:]
    runs = tmp_path / "runs" / "tiny"
    (interrupted,) = list(runs.iterdir())
    assert not (interrupted / "metrics.json").exists() and (interrupted / "backup").is_dir()

    code, out = train(path)
    assert code == 0, out[-3000:]
    assert f"resuming the interrupted run {interrupted}" in out
    resumed_at = re.search(r"resumed from the backup at epoch 2 step (\d+)/(\d+)", out)
    assert resumed_at, out[-3000:]
    step, per_epoch = map(int, resumed_at.groups())
    assert 2 <= step <= 4 < per_epoch  # mid-epoch: not replayed from the epoch's start
    assert f"epoch 2 step {step + 1}/{per_epoch}  loss" in out
    assert f"epoch 2 step {step}/{per_epoch}  loss" not in out  # the steps done are not redone
    assert "epoch 1 validation" not in out and "epoch 2 validation" in out
    resumed = json.loads((interrupted / "metrics.json").read_text())
    assert resumed["train"]["epochs"] == 3 and not (interrupted / "backup").exists()

    code, out = train(path)  # the resumed run finished: this is a new run, not a resumption
    assert code == 0 and "resuming" not in out
    (fresh,) = [d for d in runs.iterdir() if d != interrupted]
    straight = json.loads((fresh / "metrics.json").read_text())
    assert resumed["train"]["history"]["val_loss"] == pytest.approx(
        straight["train"]["history"]["val_loss"], abs=1e-6
    )
    assert resumed["test"]["loss"] == pytest.approx(straight["test"]["loss"], abs=1e-6)
    # Same final (best) weights and optimizer slots, variable by variable.
    assert_same_best_weights(interrupted, fresh, 20)


@pytest.mark.slow
def test_a_damaged_backup_is_one_line_and_the_interrupted_run_is_kept(
    deterministic_config, tmp_path
):
    """A truncated backup was an IndexError traceback from Keras' restore."""
    deterministic_config["training"].update(epochs=3, batch_size=4, backup_every_steps=2)
    path = write_yaml(tmp_path / "c.yaml", deterministic_config)
    code, out = train(path, kill_at="epoch 2 step 4/")
    assert code == -signal.SIGKILL, out[-2000:]
    (interrupted,) = list((tmp_path / "runs" / "tiny").iterdir())
    for data in (interrupted / "backup").rglob("*.data-*"):
        data.write_bytes(data.read_bytes()[:200])
    code, out = train(path)
    last = out.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in out, out[-3000:]
    assert last.startswith(f"error: {interrupted / 'backup'}: the backup of this interrupted run")
    assert "--fresh" in last
    assert list((tmp_path / "runs" / "tiny").iterdir()) == [interrupted]
    assert (interrupted / "backup").is_dir() and (interrupted / "config.yaml").is_file()
    code, out = train(path, "--fresh")
    assert code == 0, out[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "code_expected", "how"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, r"terminated \(SIGTERM\)")],
)
def test_ctrl_c_says_where_it_stopped_exits_130_and_the_resumed_run_keeps_its_step_budget(
    deterministic_config, tmp_path, sig, code_expected, how
):
    """SIGTERM (a scheduler preempting the job) takes Ctrl-C's way, with 128 + 15."""
    # 6 steps per epoch: a budget of 10 steps ends in epoch 2, also across a Ctrl-C and resume.
    deterministic_config["training"].update(
        epochs=3, batch_size=4, backup_every_steps=2, max_steps=10
    )
    path = write_yaml(tmp_path / "c.yaml", deterministic_config)
    code, out = train(path, kill_at="epoch 2 step 3/", sig=sig)
    (interrupted,) = list((tmp_path / "runs" / "tiny").iterdir())
    assert code == code_expected, out[-3000:]
    assert "Traceback" not in out
    last = out.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"{how}: training stopped at epoch 2, step \d+; run the same command again to "
        rf"resume {re.escape(str(interrupted))} from its last backup\.",
        last,
    ), last
    # The backup is what a kill leaves too: resuming from it is checked above, weight by weight.
    code, out = train(path)
    assert code == 0 and "resumed from the backup at epoch 2" in out, out[-3000:]
    metrics = json.loads((interrupted / "metrics.json").read_text())
    assert metrics["train"]["epochs"] == 2
    assert "epoch 3" not in out and "epoch 2 step 4/6  loss" in out and "step 5/6  loss" not in out


@pytest.mark.slow
def test_a_killed_run_before_its_first_backup_is_cleaned_up_and_ctrl_c_leaves_nothing(
    deterministic_config, tmp_path
):
    deterministic_config["training"].update(backup_every_steps=None, epochs=1)
    path = write_yaml(tmp_path / "c.yaml", deterministic_config)
    code, _ = train(path, kill_at="epoch 1 step 1/")
    assert code == -signal.SIGKILL
    (leftover,) = list((tmp_path / "runs" / "tiny").iterdir())
    # The next command removes what the kill left, then a Ctrl-C before its own first
    # backup leaves nothing either.
    code, out = train(path, kill_at="epoch 1 step 1/", sig=signal.SIGINT)
    assert code == 130, out[-3000:]
    assert f"removed {leftover}: left by a run killed before its first backup" in out
    assert "before its first backup; nothing to resume" in out.strip().splitlines()[-1]
    assert list((tmp_path / "runs" / "tiny").iterdir()) == []


@pytest.mark.slow
def test_a_second_train_of_a_live_run_starts_its_own(deterministic_config, tmp_path):
    """Both commands of the same config: the second neither resumes nor rewrites the live
    run (it once did, and crashed it on a rotated backup); both finish."""
    deterministic_config["training"].update(  # still training when the second one looks
        epochs=12, patience=100, batch_size=4, backup_every_steps=1
    )
    path = write_yaml(tmp_path / "c.yaml", deterministic_config)
    cmd = [sys.executable, "-m", "kerasft.train", "--config", str(path)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    head = []
    for line in first.stdout:
        head.append(line)
        if line.startswith("epoch 1 step 2/"):  # a backup exists: it looks resumable
            break
    (live,) = list((tmp_path / "runs" / "tiny").iterdir())
    config_before = (live / "config.yaml").read_text()
    second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    rest = first.communicate(timeout=600)[0]
    assert first.returncode == 0, "".join(head)[-1000:] + rest[-3000:]
    assert second.returncode == 0, second.stdout[-3000:]
    assert f"{live} is being trained by another live process; starting a new run" in second.stdout
    assert "resuming" not in second.stdout
    assert (live / "config.yaml").read_text() == config_before
    assert len(list((tmp_path / "runs" / "tiny").iterdir())) == 2


def test_best_checkpoint_moves_its_pointer_only_after_a_complete_write(tmp_path):
    from kerasft._compat import keras
    from kerasft.training.callbacks import BestCheckpoint

    x = np.linspace(-1, 1, 64, dtype=np.float32)[:, None]
    model = keras.Sequential([keras.layers.Dense(1, input_shape=(1,))])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    callback = BestCheckpoint(directory, monitor="loss", mode="min")
    model.fit(x, 3 * x, epochs=3, verbose=0, callbacks=[callback])
    # The loss falls every epoch: the best is epoch 3, and only its files are kept.
    assert best_checkpoint(directory) == str(directory / "best-003")
    assert sorted(p.name for p in directory.iterdir()) == [
        "best-003.data-00000-of-00001",
        "best-003.index",
        "checkpoint",
    ]
    # A kill in the middle of writing epoch 4's files: the pointer still names epoch 3,
    # which loads, and the next completed best removes the torn files.
    (directory / "best-004.index").write_bytes(b"torn")
    assert best_checkpoint(directory) == str(directory / "best-003")
    model.load_weights(best_checkpoint(directory))
    model.fit(x, 3 * x, epochs=1, verbose=0, callbacks=[callback])
    assert best_checkpoint(directory) == str(directory / "best-001")
    assert not (directory / "best-004.index").exists()
