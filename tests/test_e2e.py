"""End to end on the real embedded MiniLM and the real tweet corpus (a few hundred examples)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from kerasft._compat import tf
from kerasft.config import load_config
from kerasft.data import encode, eval_dataset, load_splits
from kerasft.models import load_tokenizer, resolve_backbone
from kerasft.tasks import TASKS, collect
from kerasft.training.exports import rebuild
from kerasft.training.runner import run
from tests.conftest import REPO, read_json

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_quickstart_config_on_a_few_hundred_tweets(tmp_path):
    cfg = load_config(
        REPO / "configs" / "quickstart.yaml",
        [
            "data.max_train_examples=320",
            "data.max_eval_examples=160",
            "data.max_length=48",
            "training.epochs=2",
            f"training.output_dir={tmp_path / 'runs'}",
            f"export.dir={tmp_path / 'exports'}",
            f"data.cache_dir={tmp_path / 'cache'}",
        ],
    )
    result = run(cfg, verbose=0)

    metrics = read_json(result.run_dir / "metrics.json")
    losses = metrics["train"]["history"]["loss"]
    assert losses[1] < losses[0], losses
    assert metrics["test"]["examples"] == 160
    assert metrics["test"]["accuracy"] > 0.5  # majority class is 0.42

    # The export, reloaded, gives the in-memory model's probabilities on real tweets.
    tokenizer = load_tokenizer(resolve_backbone("minilm-l6"))
    splits = load_splits(cfg.data, cfg.training.seed)
    dataset = eval_dataset(encode(tokenizer, splits.test, 48), 32, tokenizer.pad_token_id)
    # The quickstart trains in mixed_bfloat16 here (precision: auto); the export is a float32
    # rebuild of the best weights, so it matches that rebuild exactly and the bf16 model closely.
    assert result.model.dtype_policy.name in ("mixed_bfloat16", "float32")
    float32_model = rebuild(result.run_dir)[0]
    expected, _ = collect(float32_model, dataset, TASKS["classification"])
    serve = tf.saved_model.load(str(result.export_dir)).signatures["predict_ids"]
    got = np.concatenate([serve(**features)["probabilities"].numpy() for features, _ in dataset])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    trained, _ = collect(result.model, dataset, TASKS["classification"])
    np.testing.assert_allclose(got, trained, atol=3e-2)

    # Standalone proof: a fresh process where only tensorflow and tensorflow_text can be imported
    # feeds raw tweets to serving_default and gets the trained model's probabilities.
    texts = splits.test.texts[:64] + ["", "É" * 300, "東京 😀 https://x.y/z"]
    ids = tokenizer(texts, truncation=True, max_length=48, padding=True, return_tensors="np")
    reference = tf.nn.softmax(
        float32_model({k: tf.constant(v) for k, v in ids.items()}, training=False)
    ).numpy()
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    script = f"""
import json, sys
for blocked in ("kerasft", "transformers", "tf_keras", "tokenizers"):
    sys.modules[blocked] = None
import tensorflow as tf, tensorflow_text  # noqa: F401  (registers the tokenizer ops)
texts = json.load(open({str(tmp_path / "texts.json")!r}))
serve = tf.saved_model.load({str(result.export_dir)!r}).signatures["serving_default"]
out = serve(text=tf.constant(texts))
print(json.dumps({{"p": out["probabilities"].numpy().tolist(), "label": [s.decode() for s in out["label"].numpy()]}}))
"""
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(np.array(out["p"]), reference, atol=1e-4)
    names = splits.vocab.names
    assert out["label"] == [names[i] for i in reference.argmax(-1)]
