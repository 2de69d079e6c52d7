"""MirroredStrategy over two logical CPU devices trains, evaluates and exports."""

from __future__ import annotations

import json
import subprocess
import sys

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
from kerasft.train import run
result = run(load_config(sys.argv[1]), verbose=0)
loaded = tf.saved_model.load(str(result.export_dir))
out = loaded.signatures["serving_default"](text=tf.constant(["good movie", "bad film"]))
print(json.dumps({"replicas": result.model.distribute_strategy.num_replicas_in_sync,
                  "loss": result.metrics["train"]["history"]["loss"],
                  "probabilities": out["probabilities"].numpy().tolist()}))
"""


def test_mirrored_over_two_logical_cpus_trains_and_exports(tiny_config, tmp_path):
    tiny_config["training"].update(distribution="mirrored", batch_size=8)
    path = write_yaml(tmp_path / "c.yaml", tiny_config)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        "distribution: MirroredStrategy over 2 devices; global batch 8 = 4 per replica"
        in proc.stdout
    )
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    assert all(loss == loss for loss in out["loss"])  # finite, not NaN
    assert len(out["probabilities"]) == 2 and abs(sum(out["probabilities"][0]) - 1) < 1e-5


def test_mirrored_needs_two_devices_and_an_even_batch(tiny_config):
    from kerasft.distribute import resolve_strategy

    with pytest.raises(ConfigError, match=r"needs two or more devices"):
        resolve_strategy("mirrored")  # this test process has one CPU device
    assert resolve_strategy("none")[0].num_replicas_in_sync == 1
    tiny_config["training"]["distribution"] = "mirrored"
    assert config_from_dict(tiny_config).training.distribution == "mirrored"
