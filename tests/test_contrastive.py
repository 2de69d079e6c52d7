"""`training.method: contrastive` (SetFit): pairs, loss, head, a whole run, resume, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from kerasft._compat import tf
from kerasft.config import config_from_dict
from kerasft.data.pairs import check_pairable, sentence_pairs
from kerasft.errors import DataError
from kerasft.training.callbacks import best_checkpoint
from kerasft.training.contrastive import cosine_similarity_loss, logistic_head
from kerasft.training.runner import run
from tests.conftest import REPO, read_json, write_yaml
from tests.test_resume import assert_same_best_weights, killed_resumed_and_fresh

LABELS = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])


def test_iteration_pairs_pair_each_example_with_its_label_and_another_label_every_round():
    pairs = sentence_pairs(LABELS, False, "iterations", 3, seed=7)
    assert len(pairs) == 2 * len(LABELS) * 3 and pairs.dtype == np.int64
    same = LABELS[pairs[:, 0]] == LABELS[pairs[:, 1]]
    np.testing.assert_array_equal(same, pairs[:, 2] == 1)
    assert pairs[:, 2].sum() == len(LABELS) * 3  # one positive and one negative per example a round
    assert not np.any((pairs[:, 0] == pairs[:, 1]) & (pairs[:, 2] == 1))  # never itself
    np.testing.assert_array_equal(pairs, sentence_pairs(LABELS, False, "iterations", 3, seed=7))
    assert not np.array_equal(pairs, sentence_pairs(LABELS, False, "iterations", 3, seed=8))
    assert len(sentence_pairs(LABELS, False, "iterations", 3, seed=7, max_pairs=10)) == 10


def test_oversampling_takes_every_pair_once_and_repeats_the_rarer_kind():
    pairs = sentence_pairs(LABELS, False, "oversampling", 1, seed=0)
    negatives = {(i, j) for i, j, s in pairs if s == 0}
    n = len(LABELS)
    expected = {(i, j) for i in range(n) for j in range(i + 1, n) if LABELS[i] != LABELS[j]}
    assert negatives == expected  # 26 different-label pairs, each once
    assert (pairs[:, 2] == 1).sum() == len(expected)  # 3·4/2 + 2·3/2 + 4·5/2 = 19 drawn up to 26
    positives = {(i, j) for i, j, s in pairs if s == 1}
    assert len(positives) == 19 and all(LABELS[i] == LABELS[j] for i, j in positives)


def test_a_multi_label_examples_label_is_its_label_set():
    targets = np.array([[1, 0, 1], [1, 0, 1], [0, 1, 0], [0, 1, 0], [1, 1, 0]], np.float32)
    pairs = sentence_pairs(targets, True, "iterations", 2, seed=0)
    for i, j, same in pairs:
        assert same == int(np.array_equal(targets[i], targets[j]))


def test_pairs_need_two_examples_per_label_and_two_labels():
    with pytest.raises(DataError, match=r"d\.csv: label `b` has a single training example"):
        check_pairable(np.array([0, 0, 1]), False, ("a", "b"), "d.csv")
    with pytest.raises(DataError, match="every training example has the same label"):
        check_pairable(np.array([0, 0, 0]), False, ("a", "b"), "d.csv")


def test_cosine_similarity_loss_is_the_squared_error_of_the_cosine():
    u = tf.constant([[1.0, 0.0], [1.0, 1.0]])
    v = tf.constant([[2.0, 0.0], [-1.0, 1.0]])
    # cosines 1 and 0; targets 0 and 0 -> errors 1 and 0
    assert float(cosine_similarity_loss(u, v, tf.constant([0.0, 0.0]))) == pytest.approx(0.5)
    assert float(cosine_similarity_loss(u, v, tf.constant([1.0, 0.0]))) == pytest.approx(0.0)


@pytest.mark.parametrize("classes", [2, 3])
def test_the_head_computes_the_fitted_logistic_regression(classes):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    y = np.arange(40) % classes
    x = rng.normal(size=(40, 5)) + y[:, None]
    kernel, bias = logistic_head(x, y, False, classes + 1, 1.0)  # one class never seen
    logits = x @ kernel + bias
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    expected = LogisticRegression(C=1.0, max_iter=1000).fit(x, y).predict_proba(x)
    np.testing.assert_allclose(probs[:, :classes], expected, atol=1e-5)
    assert probs[:, classes].max() < 1e-6


def test_the_multi_label_head_is_one_sigmoid_regression_per_label():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4))
    targets = np.stack([x[:, 0] > 0, np.ones(30, bool), np.zeros(30, bool)], 1).astype(np.float32)
    kernel, bias = logistic_head(x, targets, True, 3, 1.0)
    from sklearn.linear_model import LogisticRegression

    expected = LogisticRegression(C=1.0, max_iter=1000).fit(x, targets[:, 0]).predict_proba(x)[:, 1]
    np.testing.assert_allclose(1 / (1 + np.exp(-(x @ kernel[:, 0] + bias[0]))), expected, atol=1e-5)
    assert bias[1] == 8.0 and bias[2] == -8.0 and not kernel[:, 1:].any()


@pytest.fixture
def contrastive_config(tiny_config):
    tiny_config["model"].update(hidden_dropout=0.0, attention_dropout=0.0)
    tiny_config["training"] = {
        "method": "contrastive",
        "contrastive": {"iterations": 2},
        "learning_rate": 1e-3,
        "epochs": 2,
        "output_dir": tiny_config["training"]["output_dir"],
    }
    return tiny_config


def test_method_contrastive_brings_setfits_defaults_unless_set(contrastive_config):
    cfg = config_from_dict(contrastive_config)
    t = cfg.training
    assert (t.batch_size, t.learning_rate, t.epochs, cfg.model.normalize) == (16, 1e-3, 2, True)
    assert t.warmup_ratio == 0.1  # SetFit's warmup_proportion; the standard method has none
    assert config_from_dict({**contrastive_config, "training": {}}).training.warmup_ratio == 0.0
    set_zero = {**contrastive_config["training"], "warmup_ratio": 0.0}
    assert config_from_dict({**contrastive_config, "training": set_zero}).training.warmup_ratio == 0
    with pytest.raises(Exception, match="`task: regression` does not apply"):
        config_from_dict({**contrastive_config, "task": "regression"})


@pytest.mark.slow
def test_a_contrastive_run_is_an_ordinary_run(contrastive_config, tmp_path):
    contrastive_config["export"].update(tflite=True, onnx=True)
    contrastive_config["evaluation"]["report"] = True
    cfg = config_from_dict(contrastive_config)
    result = run(cfg, verbose=0)
    metrics = result.metrics
    assert metrics["contrastive"]["pairs"] == 2 * 2 * metrics["train"]["examples"]
    history = metrics["train"]["history"]
    assert len(history["loss"]) == 2 and history["loss"][1] < history["loss"][0]
    assert history["head_train_accuracy"][-1] >= 0.75
    # The head is the logistic regression fitted on the final sentence vectors (unit length),
    # and the saved best (last) weights are the model's.
    model = result.model
    head = model.get_layer("head").get_weights()
    from kerasft.data import eval_dataset

    vectors, targets = [], []
    for x, y in eval_dataset(result_data(cfg), 16, 0):
        vectors.append(model.embed(x).numpy())
        targets.append(y.numpy())
    vectors, targets = np.concatenate(vectors), np.concatenate(targets)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=-1), 1.0, atol=1e-5)
    kernel, bias = logistic_head(vectors, targets, False, 2, 1.0)
    np.testing.assert_allclose(head[0], kernel, atol=1e-4)
    np.testing.assert_allclose(head[1], bias, atol=1e-4)
    ckpt = tf.train.load_checkpoint(best_checkpoint(result.run_dir / "checkpoints"))
    saved = [
        ckpt.get_tensor(n)
        for n in ckpt.get_variable_to_shape_map()
        if n.endswith("-1/kernel/.ATTRIBUTES/VARIABLE_VALUE")
    ]
    np.testing.assert_allclose(saved[0], head[0], atol=1e-6)
    # The export is the ordinary raw-text SavedModel and agrees with the model.
    import tensorflow_text  # noqa: F401  (ops of the in-graph tokenizer)

    served = tf.saved_model.load(str(result.export_dir))
    texts = ["a wonderful film", "a dull mess"]
    out = served.signatures["serving_default"](text=tf.constant(texts))
    probs = out["probabilities"].numpy()
    assert probs.shape == (2, 2) and np.allclose(probs.sum(-1), 1.0, atol=1e-5)
    written = read_json(result.run_dir / "metrics.json")
    assert written["contrastive"]["sampling"] == "iterations"
    # TFLite and ONNX beside it, agreeing with it on the test split; the report page.
    meta = read_json(result.export_dir / "assets.extra" / "kerasft.json")
    assert meta["tflite"]["agreement"] >= 0.75 and meta["onnx"]["onnx_max_abs_diff"] < 1e-4
    assert (result.export_dir.parent / "onnx" / result.export_dir.name / "model.onnx").is_file()
    page = result.report.read_text()
    assert "tiny" in page and "head_train_accuracy" in page


@pytest.mark.slow
def test_auto_precision_counts_a_contrastive_runs_pairs(contrastive_config, bf16_cpu, capsys):
    contrastive_config["training"]["epochs"] = 1
    contrastive_config["export"]["enabled"] = False
    result = run(config_from_dict(contrastive_config), verbose=0)
    pairs = result.metrics["contrastive"]["pairs"]
    assert pairs > result.metrics["train"]["examples"]
    assert (
        f"precision: float32 (CPU with native bfloat16 (avx512_bf16), but {pairs:,} training pairs"
        in (capsys.readouterr().out)
    )


def test_multi_label_contrastive_runs(contrastive_config, tmp_path):
    rows = ["text,labels"]
    for i in range(6):
        rows += [f"good fun {i},pos", f"dull plot {i},neg", f"good but dull {i},pos|neg"]
    (tmp_path / "ml.csv").write_text("\n".join(rows) + "\n")
    contrastive_config["task"] = "multi_label"
    contrastive_config["data"].update(
        train=str(tmp_path / "ml.csv"), label_column="labels", label_delimiter="|"
    )
    contrastive_config["export"]["enabled"] = False
    result = run(config_from_dict(contrastive_config), verbose=0)
    assert result.metrics["train"]["history"]["head_train_accuracy"][-1] >= 0.5  # label by label
    assert "micro_f1" in result.metrics["test"]


def result_data(cfg):
    """The run's encoded training split, read again as the run read it."""
    from kerasft.data import load_data
    from kerasft.models import load_tokenizer, model_directory
    from kerasft.tasks import TASKS

    return load_data(cfg, TASKS[cfg.task], load_tokenizer(model_directory(cfg.model))).encoded[
        "train"
    ]


def command(config_path):
    return subprocess.run(
        [sys.executable, "-m", "kerasft.train", "--config", str(config_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_single_example_class_is_a_one_line_error(contrastive_config, tmp_path):
    (tmp_path / "one.csv").write_text(
        "text,label\n" + "".join(f"nice {i},pos\nbad {i},neg\n" for i in range(6)) + "meh,so-so\n"
    )
    (tmp_path / "val.csv").write_text("text,label\nnice one,pos\nbad one,neg\n")
    contrastive_config["data"].update(
        train=str(tmp_path / "one.csv"), validation=str(tmp_path / "val.csv"), test_split=0.0
    )
    proc = command(write_yaml(tmp_path / "c.yaml", contrastive_config))
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "one.csv: label `so-so` has a single training example" in errors[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("config.yaml"))


@pytest.mark.slow
def test_a_killed_contrastive_run_resumes_to_the_same_weights(contrastive_config, tmp_path):
    contrastive_config["training"].update(batch_size=4, backup_every_steps=2)
    contrastive_config["export"]["enabled"] = False
    path = write_yaml(tmp_path / "c.yaml", contrastive_config)
    runs = tmp_path / "runs" / "tiny"
    interrupted, fresh = killed_resumed_and_fresh(path, runs, "epoch 2 step 4/")
    resumed = json.loads((interrupted / "metrics.json").read_text())
    straight = json.loads((fresh / "metrics.json").read_text())
    # (An epoch's mean training loss after a mid-epoch resume covers the resumed steps only.)
    for key in ("val_loss", "head_train_accuracy"):
        assert resumed["train"]["history"][key] == pytest.approx(
            straight["train"]["history"][key], abs=1e-6
        )
    assert resumed["test"]["loss"] == pytest.approx(straight["test"]["loss"], abs=1e-6)
    assert_same_best_weights(interrupted, fresh, 20, skip=("pair_loss/",))  # a metric
