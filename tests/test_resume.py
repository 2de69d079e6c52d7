"""A run killed with SIGKILL mid-training resumes from its backup and ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO, write_yaml


def train(path, *extra, kill_at=None):
    cmd = [sys.executable, "-m", "kerasft.train", "--config", str(path), *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if kill_at and line.startswith(kill_at):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=300)
    return proc.returncode, "".join(lines)


@pytest.fixture
def deterministic_config(tiny_config, tmp_path):
    tiny_config["model"].update(hidden_dropout=0.0, attention_dropout=0.0, dropout=0.0)
    # Layer-wise decay: every group's Adam state has to come back from the backup.
    tiny_config["training"].update(
        epochs=4, patience=10, monitor="val_loss", layerwise_lr_decay=0.8
    )
    tiny_config["export"]["enabled"] = False
    return tiny_config


def test_killed_run_resumes_and_matches_an_uninterrupted_run(deterministic_config, tmp_path):
    path = write_yaml(tmp_path / "c.yaml", deterministic_config)
    code, out = train(path, kill_at="epoch 3 step 1/")
    assert code == -signal.SIGKILL, out[-2000:]
    runs = tmp_path / "runs" / "tiny"
    (interrupted,) = list(runs.iterdir())
    assert not (interrupted / "metrics.json").exists() and (interrupted / "backup").is_dir()

    code, out = train(path)
    assert code == 0, out[-3000:]
    assert f"resuming the interrupted run {interrupted}" in out
    assert (
        "epoch 1 validation" not in out and "epoch 3 validation" in out
    )  # epochs 1-2 were not redone
    resumed = json.loads((interrupted / "metrics.json").read_text())
    assert resumed["train"]["epochs"] == 4 and not (interrupted / "backup").exists()

    code, out = train(path, "--fresh")
    assert code == 0 and "resuming" not in out
    (fresh,) = [d for d in runs.iterdir() if d != interrupted]
    straight = json.loads((fresh / "metrics.json").read_text())
    assert resumed["train"]["history"]["val_loss"] == pytest.approx(
        straight["train"]["history"]["val_loss"], abs=1e-6
    )
    assert resumed["test"]["loss"] == pytest.approx(straight["test"]["loss"], abs=1e-6)


def test_a_finished_run_is_never_resumed(deterministic_config, tmp_path):
    deterministic_config["training"]["epochs"] = 1
    path = write_yaml(tmp_path / "c.yaml", deterministic_config)
    assert train(path)[0] == 0
    code, out = train(path)
    assert code == 0 and "resuming" not in out
    assert len(list((tmp_path / "runs" / "tiny").iterdir())) == 2
