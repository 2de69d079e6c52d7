"""Every command the README and docs/ show, each in a fresh process as a user runs it.

A test process that already imported what a command forgot hides the bug: `kerasft.predict`
once failed on every SavedModel in a fresh process (tensorflow-text's ops were never
registered) while every in-process test passed. One cold process per command, on tiny data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import POSITIVE, REPO, pretrain_config, tiny_run_config, write_yaml

pytestmark = [pytest.mark.slow, pytest.mark.precision]

# What TensorFlow printed before every command's own output until start-up was silenced.
START_UP_NOISE = ("absl::InitializeLog", "oneDNN", "cuInit", "cudart_stub", "TensorFlow and JAX")


def command(name: str, *args: str, cwd=REPO) -> subprocess.CompletedProcess:
    """`python -m kerasft.<name> ARGS` in a fresh process; fails the test on a non-zero exit."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("KERASFT_VERBOSE", None)
    proc = subprocess.run(
        [sys.executable, "-m", f"kerasft.{name}", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, f"kerasft.{name} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    noise = [n for n in START_UP_NOISE if n in proc.stderr]
    assert not noise, f"kerasft.{name} printed TensorFlow start-up logs: {proc.stderr[:1000]}"
    return proc


def last_value(proc: subprocess.CompletedProcess, key: str) -> str:
    lines = [line for line in proc.stdout.splitlines() if line.startswith(f"{key}=")]
    assert lines, f"no {key}= line in:\n{proc.stdout[-2000:]}"
    return lines[-1].removeprefix(f"{key}=").split()[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert_dir):
    """`kerasft.train` on a tiny config with the report page and the ONNX export."""
    root = tmp_path_factory.mktemp("commands")
    raw = tiny_run_config(
        root,
        tiny_bert_dir,
        training={"epochs": 2},
        export={"onnx": True},
        evaluation={"report": True},
    )
    config = write_yaml(root / "tiny.yaml", raw)
    proc = command("train", "--config", str(config))
    return root, config, proc


def test_train_writes_a_run_an_export_and_a_report(trained):
    root, _, proc = trained
    run_dir = last_value(proc, "run_dir")
    export_dir = last_value(proc, "export_dir")
    report = last_value(proc, "report")
    assert proc.stdout.strip().splitlines()[-3].startswith("run_dir=")
    assert (root / "runs" / "tiny").samefile(os.path.dirname(run_dir))
    metrics = json.loads(open(os.path.join(run_dir, "metrics.json")).read())
    assert metrics["test"]["examples"] == 12
    assert os.path.isfile(os.path.join(export_dir, "saved_model.pb"))
    assert os.path.isfile(report)
    assert not os.path.exists(os.path.join(run_dir, "backup"))


@pytest.mark.parametrize("model", ["savedmodel", "onnx", "onnx-int8"])
def test_predict_in_a_fresh_process(trained, model):
    root, _, proc = trained
    export_dir = last_value(proc, "export_dir")
    version = os.path.basename(export_dir)
    target = {
        "savedmodel": os.path.dirname(export_dir),  # the model folder: its newest version
        "onnx": os.path.join(os.path.dirname(export_dir), "onnx", version, "model.onnx"),
        "onnx-int8": os.path.join(os.path.dirname(export_dir), "onnx", version, "model.int8.onnx"),
    }[model]
    source = root / f"in-{model}.csv"
    source.write_text("id,text\n" + "".join(f"{i},{t}\n" for i, t in enumerate(POSITIVE)))
    out = root / f"out-{model}.jsonl"
    done = command("predict", "--model", target, "--input", str(source), "--output", str(out))
    assert f"rows={len(POSITIVE)}" in done.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in rows] == POSITIVE
    assert all(r["label"] in ("pos", "neg") and len(r["probabilities"]) == 2 for r in rows)


def test_export_and_report_in_fresh_processes(trained, tmp_path):
    _, _, proc = trained
    run_dir = last_value(proc, "run_dir")
    exported = command("export", "--run", run_dir, "--dir", str(tmp_path / "again"))
    target = last_value(exported, "export_dir")
    assert target == str(tmp_path / "again" / "tiny" / "1")
    assert os.path.isfile(os.path.join(target, "saved_model.pb"))
    page = Path(run_dir) / "report.html"
    page.unlink()
    reported = command("report", run_dir)
    assert last_value(reported, "report") == str(page)
    assert "<html" in page.read_text()[:500].lower()


def test_distill_in_a_fresh_process(trained, tmp_path):
    import yaml

    _, config, proc = trained
    raw = yaml.safe_load(config.read_text())
    raw["name"] = "student"
    raw["training"]["output_dir"] = str(tmp_path / "runs")
    raw["export"] = {"dir": str(tmp_path / "exports")}
    raw["distill"] = {"teacher": last_value(proc, "run_dir"), "student_layers": 1}
    done = command("distill", "--config", str(write_yaml(tmp_path / "student.yaml", raw)))
    assert os.path.isfile(os.path.join(last_value(done, "export_dir"), "saved_model.pb"))


# `kerasft.tune` runs in fresh processes in tests/test_tune.py and tests/test_tune_optuna.py.


def test_pretrain_in_a_fresh_process(tiny_bert_dir, tmp_path):
    raw = pretrain_config(tmp_path, tiny_bert_dir, epochs=1)
    done = command("pretrain", "--config", str(write_yaml(tmp_path / "p.yaml", raw)))
    written = last_value(done, "output_dir")
    assert os.path.isfile(os.path.join(written, "config.json"))


@pytest.mark.parametrize("name", ["train", "predict"])  # the others' start-up is checked above
def test_help_is_quiet_and_exits_zero(name):
    done = command(name, "--help")
    assert done.stdout.startswith("usage: python -m kerasft.")
    assert done.stderr == ""
