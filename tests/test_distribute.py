"""MirroredStrategy over two logical CPU devices trains, evaluates and exports."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kerasft.config import config_from_dict
from kerasft.errors import ConfigError
from tests.conftest import REPO, write_yaml

SCRIPT = """
import json, os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from kerasft.config import load_config
from kerasft.training.runner import run
for path in sys.argv[1:]:
    result = run(load_config(path), verbose=0)
    model = result.model
    if result.export_dir:  # the export takes raw text
        loaded = tf.saved_model.load(str(result.export_dir))
        out = loaded.signatures["serving_default"](text=tf.constant(["good movie", "bad film"]))
        probabilities = out["probabilities"].numpy().tolist()
    else:  # the trained model itself, on fixed token ids
        ids = {"input_ids": tf.constant([[2, 5, 6, 3], [2, 8, 9, 3]]),
               "attention_mask": tf.ones((2, 4), tf.int32), "token_type_ids": tf.zeros((2, 4), tf.int32)}
        probabilities = tf.nn.softmax(model(ids, training=False)).numpy().tolist()
    strategy = model.distribute_strategy
    spread = max(  # how far apart the replicas' copies of any weight are
        float(tf.reduce_max(tf.abs(tf.cast(c, tf.float32) - tf.cast(copies[0], tf.float32))))
        for v in model.weights for copies in [strategy.experimental_local_results(v)] for c in copies
    )
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "spread": spread,
                      "loss": result.metrics["train"]["history"]["loss"],
                      "probabilities": probabilities}))
"""


def run_on_two_devices(paths: list) -> tuple[str, list[dict]]:
    """Runs the configs one after the other in one process with two logical CPU devices;
    returns its output and each run's facts (replicas, weight spread, losses, probabilities)."""
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, *map(str, paths)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]


OPTIONS = {
    # Everything the optimizer does per variable, inside the update each replica runs on its
    # own copy: layer-wise rates, clipping, accumulation, and a second and third optimizer
    # (SGD with momentum for the embeddings, a head rate) each accumulating too.
    "accumulation, layer-wise rates, clipping, per-group optimizers": {
        "epochs": 2,
        "gradient_accumulation_steps": 2,
        "layerwise_lr_decay": 0.5,
        "clipnorm": 0.5,
        "group_optimizers": {
            "embeddings": {"optimizer": "sgd", "learning_rate": 0.05, "momentum": 0.9},
            "head": {"learning_rate": 1e-3},
        },
    },
    # Packed batches: each replica gets whole rows, so different numbers of texts; the loss
    # is still the global batch's mean (class weights inside the batch).
    "packing": {"epochs": 2, "data": {"packing": True, "class_weights": "balanced"}},
    # Contrastive training: its own train step on pairs, and the head HeadFit writes into
    # every replica's copy.
    "contrastive": {
        "epochs": 1,
        "method": "contrastive",
        "contrastive": {"iterations": 2},
        "learning_rate": 1e-3,
    },
}


@pytest.mark.slow
def test_mirrored_over_two_logical_cpus_trains_like_one_device(tiny_config, tmp_path):
    """Two replicas of 4 examples compute the mean gradient of the same global batch of 8
    as one device does: the same losses and the same exported probabilities (float32, no
    dropout, so both runs are deterministic), with every optimizer feature, and every
    replica's copy of every weight stays the same."""
    tiny_config["model"].update(hidden_dropout=0.0, attention_dropout=0.0, dropout=0.0)
    paths = []
    for i, options in enumerate(OPTIONS.values()):
        for distribution in ("mirrored", "none"):
            config, options = copy.deepcopy(tiny_config), dict(options)
            config["data"].update(options.pop("data", {}))
            config["training"].update(batch_size=8, precision="float32", **options)
            config["training"]["distribution"] = distribution
            config["training"]["output_dir"] = str(tmp_path / f"{distribution}{i}")
            config["export"].update(dir=str(tmp_path / f"export-{distribution}{i}"), enabled=not i)
            paths.append(write_yaml(tmp_path / f"{distribution}{i}.yaml", config))
    out, results = run_on_two_devices(paths)
    assert "distribution: MirroredStrategy over 2 devices; global batch 8 = 4 per replica" in out
    assert len(results) == 2 * len(OPTIONS)
    for i, name in enumerate(OPTIONS):
        mirrored, single = results[2 * i], results[2 * i + 1]
        assert mirrored["replicas"] == 2 and single["replicas"] == 1, name
        assert mirrored["spread"] < 1e-6, name
        np.testing.assert_allclose(mirrored["loss"], single["loss"], atol=1e-4, err_msg=name)
        # The contrastive head is a logistic regression solved to sklearn's tolerance (1e-4):
        # embeddings equal to float32 rounding can stop it a few 1e-4 apart.
        atol = 1e-3 if name == "contrastive" else 1e-4
        np.testing.assert_allclose(
            mirrored["probabilities"], single["probabilities"], atol=atol, err_msg=name
        )
        assert abs(sum(mirrored["probabilities"][0]) - 1) < 1e-5


@pytest.mark.slow
def test_distillation_under_mirrored_trains_like_one_device(tmp_path, tiny_bert_dir):
    """The Distiller's own train step under two replicas: the same loss and student as one
    device (it once raised Keras' "use Reduction.SUM or NONE" error under any strategy)."""
    from kerasft.training.runner import run
    from tests.conftest import tiny_run_config

    raw = tiny_run_config(
        tmp_path,
        tiny_bert_dir,
        copies=2,  # 24 training rows: three whole batches of 8 on one device and on two
        name="teacher",
        model={"dropout": 0.0, "hidden_dropout": 0.0, "attention_dropout": 0.0},
        training={"epochs": 2, "learning_rate": 5e-3, "precision": "float32"},
        export={"enabled": False},
    )
    teacher = run(config_from_dict(raw), verbose=0).run_dir
    paths = []
    for distribution in ("mirrored", "none"):
        student = copy.deepcopy(raw)
        student["name"] = "student"
        student["training"].update(
            distribution=distribution,
            batch_size=8,
            epochs=1,
            output_dir=str(tmp_path / distribution),
        )
        # No transfer set: its copies and joins would leave a partial last batch, split unevenly.
        student["distill"] = {"teacher": str(teacher), "transfer_copies": 0, "transfer_joins": 0}
        paths.append(write_yaml(tmp_path / f"{distribution}.yaml", student))
    mirrored, single = run_on_two_devices(paths)[1]
    assert mirrored["replicas"] == 2 and mirrored["spread"] < 1e-6
    np.testing.assert_allclose(mirrored["loss"], single["loss"], atol=1e-4)
    np.testing.assert_allclose(mirrored["probabilities"], single["probabilities"], atol=1e-4)


def test_mirrored_needs_two_devices_and_an_even_batch(tiny_config):
    from kerasft.training.strategies import check_fits, resolve_strategy

    with pytest.raises(ConfigError, match=r"needs two or more devices"):
        resolve_strategy("mirrored")  # this test process has one CPU device
    assert resolve_strategy("none")[0].num_replicas_in_sync == 1
    tiny_config["training"].update(distribution="mirrored", batch_size=9)
    training = config_from_dict(tiny_config).training
    with pytest.raises(ConfigError, match=r"`training.batch_size: 9` does not split evenly over 2"):
        check_fits(training, replicas=2, multi_worker=False)
    check_fits(training, replicas=3, multi_worker=False)  # 3 per replica
    check_fits(training, replicas=1, multi_worker=False)  # one device: any batch
    tiny_config["training"].update(batch_size=8, max_seconds=60)
    with pytest.raises(ConfigError, match=r"use `training.max_steps`"):
        check_fits(config_from_dict(tiny_config).training, replicas=2, multi_worker=True)


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start_workers(config: Path, tmp_path: Path, extra_env: dict | None = None, tag: str = ""):
    """Two `python -m kerasft.train` workers on fresh 127.0.0.1 ports; logs in worker<i><tag>.log."""
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        env = {
            **os.environ,
            **(extra_env or {}),
            "TF_CONFIG": json.dumps(
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            ),
        }
        log = open(tmp_path / f"worker{index}{tag}.log", "w")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "kerasft.train", "--config", str(config)],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    return procs


@pytest.mark.slow
def test_two_worker_processes_train_and_only_the_chief_exports(tiny_config, tmp_path):
    """`distribution: auto` with a TF_CONFIG cluster: MultiWorkerMirroredStrategy on 127.0.0.1,
    with gradient accumulation and layer-wise rates in the optimizer."""
    tiny_config["training"].update(
        batch_size=8, epochs=2, gradient_accumulation_steps=2, layerwise_lr_decay=0.8
    )
    config = write_yaml(tmp_path / "c.yaml", tiny_config)
    procs = _start_workers(config, tmp_path)
    codes = [p.wait(timeout=600) for p in procs]
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], "\n\n".join(log[-3000:] for log in logs)
    for i, log in enumerate(logs):
        assert f"MultiWorkerMirroredStrategy over 2 workers, 2 replicas; this is worker {i}" in log
        assert "a worker silent for 60 s stops the cluster" in log  # not TensorFlow's 10 s
        assert "multi-worker: waiting for the 2 tasks of TF_CONFIG to start" in log
        assert "global batch 8 = 4 per replica" in log
    # The other worker ran every step of both epochs, in step with the chief.
    per_epoch = int(re.search(r"(\d+) steps/epoch", logs[1]).group(1))
    assert f"worker done: {2 * per_epoch} steps" in logs[1] and "worker done:" not in logs[0]
    # Both trained the same steps in lockstep: the chief's history has every epoch.
    run_dirs = list((tmp_path / "runs" / "tiny").iterdir())
    assert len(run_dirs) == 1 and run_dirs[0].name.startswith("multi-worker-")
    history = (run_dirs[0] / "history.jsonl").read_text().splitlines()
    assert len(history) == 2
    assert not list(run_dirs[0].rglob("workertemp_*"))  # the worker's scratch files are gone
    exports = [p for p in (tmp_path / "saved_models" / "tiny").iterdir() if p.is_dir()]
    assert [e.name for e in exports] == ["1"]  # one export, by the chief
    assert f"export_dir={exports[0]}" in logs[0]
    assert "export_dir=\n" in logs[1] or logs[1].rstrip().endswith("export_dir=")


def test_tf_config_is_read_and_bad_ones_are_named(monkeypatch):
    from kerasft.training.strategies import cluster_from_env

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert cluster_from_env() is None
    spec = {
        "cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]},
        "task": {"type": "worker", "index": 0},
    }
    monkeypatch.setenv("TF_CONFIG", json.dumps(spec))
    cluster = cluster_from_env()
    assert cluster.tasks == 3 and not cluster.is_chief  # the chief writes, not worker 0
    spec["task"] = {"type": "chief", "index": 0}
    monkeypatch.setenv("TF_CONFIG", json.dumps(spec))
    assert cluster_from_env().is_chief
    del spec["cluster"]["chief"]
    spec["task"] = {"type": "worker", "index": 0}
    monkeypatch.setenv("TF_CONFIG", json.dumps(spec))
    assert cluster_from_env().is_chief  # no chief: worker 0 acts as one
    for bad, message in [
        ("{not json", r"TF_CONFIG is not valid JSON"),
        (json.dumps({**spec, "task": {"type": "worker", "index": 5}}), r"task worker 5 is not in"),
        (json.dumps({**spec, "task": {"type": "ps", "index": 0}}), r"should be"),
        ("[1, 2]", r"TF_CONFIG is a JSON list, not an object like"),
    ]:
        monkeypatch.setenv("TF_CONFIG", bad)
        with pytest.raises(ConfigError, match=message):
            cluster_from_env()


def test_a_tf_config_without_a_cluster_trains_alone_and_says_so_once(monkeypatch, capsys):
    from kerasft.training.strategies import cluster_from_env

    monkeypatch.setenv("TF_CONFIG", '{"cluster": {}, "task": {"type": "worker", "index": 0}}')
    assert cluster_from_env() is None and cluster_from_env() is None
    out = capsys.readouterr().out
    assert out.count("warning: TF_CONFIG names no cluster") == 1
    assert "training on this machine alone" in out


def test_distribution_settings_that_cannot_run_here_are_config_errors(monkeypatch):
    from kerasft.training.strategies import resolve_strategy

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match=r"needs TF_CONFIG naming the cluster"):
        resolve_strategy("multi_worker")
    monkeypatch.delenv("TPU_NAME", raising=False)
    with pytest.raises(ConfigError, match=r"`training.distribution: tpu`: no TPU found"):
        resolve_strategy("tpu")


def test_a_lost_cluster_is_one_line_with_exit_status_1_and_the_backup_is_kept(tmp_path):
    """What a worker's collectives raise when another worker dies: a traceback before."""
    from kerasft._compat import tf
    from kerasft.errors import PeerLost
    from kerasft.training.rundir import ending_for

    run_dir = tmp_path / "multi-worker-0123456789"
    (run_dir / "backup" / "chief").mkdir(parents=True)
    (run_dir / "backup" / "chief" / "checkpoint").write_text("")
    lost = tf.errors.UnavailableError(  # as a worker saw it when the chief was killed
        None,
        None,
        "{{function_node __wrapped__CollectiveReduceV2_Nordering_token_1_device_/job:worker/"
        "replica:0/task:1/device:CPU:0}} Collective ops is aborted by: failed to connect to all "
        "addresses; last error: UNKNOWN: ipv4:127.0.0.1:34889: Failed to connect to remote host: "
        "Connection refused\nAdditional GRPC error information from remote target",
    )
    ending = ending_for(lost, run_dir, keep=False, where=(2, 3), cluster=True)
    assert isinstance(ending, PeerLost) and ending.exit_status == 1
    assert str(ending) == (
        "multi-worker: this worker lost the cluster (failed to connect to all addresses; last "
        "error: UNKNOWN: ipv4:127.0.0.1:34889: Failed to connect to remote host: Connection "
        "refused): another worker stopped or "
        "the network failed. Training stopped at epoch 2, step 3; start every worker again "
        f"with the same command to resume {run_dir} from its last backup."
    )
    assert (run_dir / "backup").is_dir()
    # On one machine the same error is not a lost peer: left as it is (a traceback).
    assert ending_for(lost, run_dir, keep=False, where=(2, 3)) is None
    # Before the first backup: nothing to resume, and the chief's directory goes.
    shutil.rmtree(run_dir / "backup")
    ending = ending_for(tf.errors.CancelledError(None, None, "aborted"), run_dir, False, None, True)
    assert str(ending).endswith(
        "before its first step; start every worker again with the same "
        "command to train from the start."
    )
    assert not run_dir.exists()


def test_ctrl_c_ends_the_wait_for_a_worker_that_never_starts(tiny_config, tmp_path):
    """TensorFlow holds the interpreter while the cluster forms: Ctrl-C did nothing, and the
    worker waited silently (nothing printed) for a peer that was never started."""
    import signal
    import time

    from tests.conftest import _ctrl_c_works

    config = write_yaml(tmp_path / "c.yaml", tiny_config)
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    spec = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": 0}}
    log = tmp_path / "worker0.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kerasft.train", "--config", str(config)],
            cwd=REPO,
            env={**os.environ, "TF_CONFIG": json.dumps(spec)},
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_ctrl_c_works,
        )
    try:
        deadline = time.time() + 120
        while "waiting for the 2 tasks of TF_CONFIG" not in log.read_text():
            assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        time.sleep(2)  # inside TensorFlow's wait
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == -signal.SIGINT
    finally:
        proc.kill()
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("index", [0, 1])
def test_a_worker_whose_peer_never_starts_stops_after_cluster_wait_seconds(
    tiny_config, tmp_path, index
):
    """It waited forever (TensorFlow's wait has no limit of its own). Worker 0 runs the
    coordination service and knows which task never came; worker 1 only that none answered."""
    tiny_config["training"]["cluster_wait_seconds"] = 3
    config = write_yaml(tmp_path / "c.yaml", tiny_config)
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    spec = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
    proc = subprocess.run(
        [sys.executable, "-m", "kerasft.train", "--config", str(config)],
        cwd=REPO,
        env={**os.environ, "TF_CONFIG": json.dumps(spec)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "waiting for the 2 tasks of TF_CONFIG to start, for up to 3 s" in proc.stdout
    assert "Traceback" not in proc.stderr
    missing = "; not started: worker 1" if index == 0 else ""
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: multi-worker: the 2 tasks of TF_CONFIG did not all start within 3 s (this is "
        f"worker {index}{missing}). "
        "Start every task with the same command and TF_CONFIG, or raise "
        "`training.cluster_wait_seconds` (null: wait without a limit)."
    )
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["SIGKILL", "SIGTERM"])
def test_a_killed_cluster_restarts_and_resumes_from_its_backup(tiny_config, tmp_path, stop):
    """The chief SIGKILLed mid-epoch (the other worker then stops by itself, in one line), or
    both workers SIGTERMed, as a scheduler preempting the job; restarted (on new ports), they
    resume together. TensorFlow's coordination agent took SIGTERM for a preemption notice of
    its own, and the workers trained on; a worker whose peer died ended in a traceback."""
    import signal
    import time

    tiny_config["training"].update(batch_size=4, epochs=2, backup_every_steps=1)
    tiny_config["export"]["enabled"] = False
    config = write_yaml(tmp_path / "c.yaml", tiny_config)
    procs = _start_workers(config, tmp_path, {"PYTHONUNBUFFERED": "1"}, tag="-killed")
    deadline = time.time() + 300
    chief_log = tmp_path / "worker0-killed.log"
    while "epoch 2 step 2/" not in chief_log.read_text() and time.time() < deadline:
        assert all(p.poll() is None for p in procs), chief_log.read_text()[-3000:]
        time.sleep(0.2)
    for p in procs if stop == "SIGTERM" else procs[:1]:
        p.send_signal(getattr(signal, stop))
    codes = [p.wait(timeout=120) for p in procs]
    if stop == "SIGTERM":
        assert codes == [143, 143], chief_log.read_text()[-3000:]
        assert "terminated (SIGTERM): training stopped at epoch 2" in chief_log.read_text()
    else:  # the other worker: one line, exit 1, the run directory kept
        log = (tmp_path / "worker1-killed.log").read_text()
        assert codes == [-9, 1], log[-3000:]
        assert re.search(
            r"\nerror: multi-worker: this worker lost the cluster \(.+\): another worker "
            r"stopped or the network failed\. Training stopped at epoch 2, step \d+; start every "
            r"worker again with the same command to resume .+ from its last backup\.\n$",
            log,
        ), log[-3000:]
        assert "Graph execution error" not in log and "Traceback" not in log
    (run_dir,) = list((tmp_path / "runs" / "tiny").iterdir())
    assert not (run_dir / "metrics.json").exists() and (run_dir / "backup").is_dir()

    procs = _start_workers(config, tmp_path, tag="-restarted")
    codes = [p.wait(timeout=600) for p in procs]
    logs = [(tmp_path / f"worker{i}-restarted.log").read_text() for i in range(2)]
    assert codes == [0, 0], "\n\n".join(log[-3000:] for log in logs)
    for log in logs:
        assert re.search(r"resumed from the backup at epoch 2 step [2-9]", log), log[-3000:]
        assert "epoch 1 validation" not in log and "epoch 2 validation" in log
    assert "resuming the interrupted multi-worker run" in logs[0]
    history = (run_dir / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in history] == [1, 2]
    assert (run_dir / "metrics.json").exists() and not (run_dir / "backup").exists()
