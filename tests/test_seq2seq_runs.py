"""`task: seq2seq` runs that take longer: Marian with beam search, a run killed mid-epoch and
resumed, two logical devices in bfloat16 (a module of their own, so the test workers share them
out with test_seq2seq.py's)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from kerasft._compat import tf
from kerasft.config import config_from_dict
from tests.conftest import REPO, read_json
from tests.seq2seq_fixtures import seq2seq_config


@pytest.mark.slow
def test_marian_trains_and_serves_strings_with_beam_search(tmp_path, dates, marian):
    import tensorflow_text  # noqa: F401

    from kerasft.training.runner import run

    raw = seq2seq_config(
        tmp_path,
        dates,
        model={"backbone": str(marian), "weights": "random"},
        generation={"max_new_tokens": 12, "num_beams": 2, "batch_size": 64, "xla": False},
        training={"epochs": 1},
        # A beam-search compilation per shape: keep to 320 examples and 16 held-out ones.
        data={"source_prefix": ">>fr<< "},
    )
    raw["data"].update(max_train_examples=320, max_eval_examples=16)
    result = run(config_from_dict(raw), verbose=0)
    records = [json.loads(line) for line in (result.run_dir / "predictions" / "test.jsonl").open()]
    loaded = tf.saved_model.load(str(result.export_dir))
    sources = [r["source"] for r in records[:12]]  # beam search serves one row at a time
    served = loaded.signatures["serving_default"](text=tf.constant(sources))
    assert [t.decode() for t in served["text"].numpy()] == [r["generated"] for r in records[:12]]


def small(root: Path, files: dict, **training) -> dict:
    """A quick seq2seq config: 320 training dates, no export, no report."""
    raw = seq2seq_config(root, files, training={"epochs": 2, "monitor": "val_chrf", **training})
    raw["data"]["max_train_examples"] = 320
    raw["data"]["max_eval_examples"] = 16
    raw["export"]["enabled"] = False
    return raw


@pytest.mark.slow
def test_killed_mid_epoch_resumes_to_the_same_weights(tmp_path, dates):
    from tests.conftest import write_yaml
    from tests.test_resume import assert_same_best_weights, killed_resumed_and_fresh

    raw = small(tmp_path, dates, batch_size=16, backup_every_steps=4, layerwise_lr_decay=0.8)
    raw["data"]["max_train_examples"] = 160  # 10 steps an epoch
    path = write_yaml(tmp_path / "c.yaml", raw)
    runs = tmp_path / "runs" / "dates"
    interrupted, fresh = killed_resumed_and_fresh(path, runs, "epoch 2 step 6/")
    assert_same_best_weights(interrupted, fresh, 40)
    assert read_json(interrupted / "metrics.json")["test"] == pytest.approx(
        read_json(fresh / "metrics.json")["test"], abs=1e-6
    )


TWO_DEVICES = """
import json, sys
from kerasft._compat import tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from kerasft.config import load_config
from kerasft.training.runner import run
result = run(load_config(sys.argv[1]), verbose=0)
model, strategy = result.model, result.model.distribute_strategy
spread = max(
    float(tf.reduce_max(tf.abs(c - copies[0])))
    for v in model.weights for copies in [strategy.experimental_local_results(v)] for c in copies
)
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "spread": spread,
                  "loss": result.metrics["train"]["history"]["loss"],
                  "chrf": result.metrics["test"]["chrf"]}))
"""


@pytest.mark.slow
def test_two_devices_in_bf16_train_and_generate(tmp_path, dates):
    import subprocess

    from tests.conftest import write_yaml

    raw = small(
        tmp_path,
        dates,
        precision="mixed_bfloat16",
        gradient_accumulation_steps=2,
        distribution="mirrored",
    )
    raw["data"]["max_train_examples"] = 160
    path = write_yaml(tmp_path / "c.yaml", raw)
    proc = subprocess.run(
        [sys.executable, "-c", TWO_DEVICES, str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    facts = json.loads(proc.stdout.splitlines()[-1])
    assert facts["replicas"] == 2 and facts["spread"] == 0.0
    assert facts["loss"][-1] < facts["loss"][0], facts["loss"]
    assert facts["chrf"] >= 0.0  # validation and test were generated under the strategy
