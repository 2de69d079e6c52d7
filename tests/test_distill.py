"""Knowledge distillation: the loss, cutting a student from its teacher, and whole distillation runs."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import yaml

from kerasft._compat import tf
from kerasft.config import config_from_dict
from kerasft.errors import ConfigError, DataError
from kerasft.training.distillation import DistillationLoss, kept_layers
from tests.conftest import tiny_run_config, write_yaml

# Trains with `precision: auto`: `make test-bf16` reruns this module in mixed_bfloat16.
pytestmark = pytest.mark.precision


def _softmax(z, t=1.0):
    e = np.exp((z - z.max(-1, keepdims=True)) / t)
    return e / e.sum(-1, keepdims=True)


def test_classification_loss_matches_the_formula_by_hand():
    teacher = np.array([[2.0, 0.0, -1.0], [0.1, 0.2, 0.3]], np.float32)
    student = np.array([[0.5, 0.5, 0.0], [1.0, -1.0, 0.0]], np.float32)
    labels = np.array([0.0, 2.0], np.float32)
    alpha, t = 0.3, 2.0
    p, q = _softmax(teacher, t), _softmax(student, t)
    kl = (p * np.log(p / q)).sum(-1)
    ce = -np.log(_softmax(student)[[0, 1], [0, 2]])
    expected = np.mean(alpha * t * t * kl + (1 - alpha) * ce)
    packed = np.concatenate([labels[:, None], teacher], 1)
    loss = DistillationLoss("classification", 3, alpha, t)(
        tf.constant(packed), tf.constant(student)
    )
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    # An unlabelled text (label -1) contributes the distillation term only.
    packed[1, 0] = -1
    loss = DistillationLoss("classification", 3, alpha, t)(
        tf.constant(packed), tf.constant(student)
    )
    expected = np.mean([alpha * t * t * kl[0] + (1 - alpha) * ce[0], alpha * t * t * kl[1]])
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_regression_multi_label_and_token_losses_match_by_hand():
    # Regression: squared distance to the teacher's score and to the target; NaN = unlabelled.
    packed = np.array([[1.0, 0.5], [np.nan, -1.0]], np.float32)
    student = np.array([0.0, 1.0], np.float32)
    loss = DistillationLoss("regression", 1, 0.25, 2.0)(tf.constant(packed), tf.constant(student))
    expected = np.mean([0.25 * 0.25 + 0.75 * 1.0, 0.25 * 4.0])
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)

    # Multi-label: Bernoulli KL per label at temperature T, times T^2, plus binary cross-entropy.
    target = np.array([[1.0, 0.0]], np.float32)
    teacher = np.array([[3.0, -1.0]], np.float32)
    student = np.array([[0.5, 0.2]], np.float32)
    t, alpha = 2.0, 0.5

    def sigmoid(z):
        return 1 / (1 + np.exp(-z))

    p, q = sigmoid(teacher / t), sigmoid(student / t)
    kl = (p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))).mean()
    s = sigmoid(student)
    bce = -(target * np.log(s) + (1 - target) * np.log(1 - s)).mean()
    loss = DistillationLoss("multi_label", 2, alpha, t)(
        tf.constant(np.concatenate([target, teacher], 1)), tf.constant(student)
    )
    np.testing.assert_allclose(float(loss), alpha * t * t * kl + (1 - alpha) * bce, rtol=1e-5)

    # Tokens: only labelled positions count (-100: special tokens, later sub-tokens, padding).
    tags = np.array([[-100.0, 1.0, -100.0, 0.0]], np.float32)
    teacher = np.random.default_rng(0).normal(size=(1, 4, 3)).astype(np.float32)
    student = np.random.default_rng(1).normal(size=(1, 4, 3)).astype(np.float32)
    p, q = _softmax(teacher[0], 1.0), _softmax(student[0], 1.0)
    kl = (p * np.log(p / q)).sum(-1)
    ce = -np.log(_softmax(student[0])[[1, 3], [1, 0]])
    expected = np.mean(0.5 * kl[[1, 3]] + 0.5 * ce)
    packed = np.concatenate([tags[..., None], teacher], -1)
    loss = DistillationLoss("token_classification", 3, 0.5, 1.0)(
        tf.constant(packed), tf.constant(student)
    )
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_distiller_trains_the_students_own_weights_on_packed_targets(tiny_bert_dir):
    """One step: the loss is the distillation loss of the packed targets, accuracy counts only
    the labelled examples, and the student's own variables move (a Distiller is the student)."""
    from kerasft._compat import keras, tf
    from kerasft.models import build_classifier, load_backbone
    from kerasft.training.distillation import DistillationLoss, Distiller

    no_dropout = {"hidden": 0.0, "attention": 0.0}
    student = build_classifier(load_backbone(tiny_bert_dir, dropout=no_dropout), 2, dropout=0.0)
    loss = DistillationLoss("classification", 2, alpha=0.5, temperature=2.0)
    distiller = Distiller.around(student, loss)
    assert [id(w) for w in distiller.trainable_weights] == [
        id(w) for w in student.trainable_weights
    ]
    assert {id(w) for w in student.weights} <= {id(w) for w in distiller.weights}
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    x = {
        "input_ids": tf.constant([[2, 5, 6, 3], [2, 8, 9, 3], [2, 7, 7, 3], [2, 9, 5, 3]]),
        "attention_mask": tf.ones((4, 4), tf.int32),
        "token_type_ids": tf.zeros((4, 4), tf.int32),
    }
    logits = student(x, training=False).numpy()
    predicted = logits.argmax(-1)
    labels = np.array([predicted[0], 1 - predicted[1], predicted[2], -1])  # the last: unlabelled
    packed = np.concatenate([labels[:, None], np.array([[2.0, -1.0]] * 4)], 1).astype(np.float32)
    before = [w.numpy().copy() for w in student.trainable_weights]
    logs = distiller.train_on_batch(x, packed, return_dict=True)
    assert logs["loss"] == pytest.approx(float(loss(packed, logits)), rel=1e-4)
    assert logs["accuracy"] == pytest.approx(2 / 3)  # of the three labelled examples
    still = [
        w.name
        for w, b in zip(student.trainable_weights, before, strict=True)
        if np.allclose(w.numpy(), b) and "key/bias" not in w.name  # softmax ignores the key bias
    ]
    assert still == [], still
    scored = distiller.evaluate(x, np.array([0, 1, 0, 1]), return_dict=True, verbose=0)
    assert set(scored) == {"loss", "accuracy"}  # Keras' own test step: the task loss


def test_kept_layers_are_evenly_spaced_and_end_at_the_top():
    assert kept_layers(6, 3) == [1, 3, 5]
    assert kept_layers(12, 6) == [1, 3, 5, 7, 9, 11]
    assert kept_layers(2, 1) == [1]
    assert kept_layers(6, 2) == [2, 5]


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, tiny_bert_dir):
    from kerasft.training.runner import run

    root = tmp_path_factory.mktemp("teacher")
    raw = tiny_run_config(
        root,
        tiny_bert_dir,
        name="teacher",
        model={"dropout": 0.0},
        # long and fast enough for a confident teacher; the best epoch by loss is the confident
        # one (by macro F1 a lucky first epoch can already score 1.0 while still unsure)
        training={"epochs": 10, "patience": 10, "learning_rate": 5e-3, "monitor": "val_loss"},
    )
    return raw, run(config_from_dict(raw), verbose=0)


def _student_raw(raw: dict, teacher_dir, output_dir=None, **distill) -> dict:
    student = json.loads(json.dumps(raw))
    student["name"] = "student"
    if output_dir is not None:
        student["training"]["output_dir"] = str(output_dir)
    student["distill"] = {"teacher": str(teacher_dir), "student_layers": 1, **distill}
    return student


def _kl_to_teacher(student_model, teacher_model, ds) -> float:
    """Mean KL(teacher || student) of the class probabilities over a dataset."""
    kls = []
    for x, _ in ds:
        p = tf.nn.softmax(teacher_model(x, training=False)).numpy()
        q = tf.nn.softmax(student_model(x, training=False)).numpy()
        kls.append((p * np.log(p / q)).sum(-1))
    return float(np.concatenate(kls).mean())


@pytest.mark.slow
def test_a_student_with_a_fresh_head_moves_toward_its_teacher(teacher_run):
    from kerasft._compat import keras
    from kerasft.data import load_data
    from kerasft.data.pipeline import eval_dataset
    from kerasft.models import build_model, load_backbone, load_tokenizer, resolve_backbone
    from kerasft.tasks import TASKS
    from kerasft.training.distillation import load_teacher
    from kerasft.training.runner import run

    raw, teacher = teacher_run
    student_raw = _student_raw(raw, teacher.run_dir, alpha=1.0, temperature=1.0)
    student_raw["distill"]["student_layers"] = None  # model.backbone, with a new head
    student_raw["training"]["epochs"] = 6
    cfg = config_from_dict(student_raw)
    spec = TASKS["classification"]
    loaded = load_teacher(teacher.run_dir)
    directory = resolve_backbone(raw["model"]["backbone"])
    tokenizer = load_tokenizer(directory)
    ds = eval_dataset(load_data(cfg, spec, tokenizer).encoded["train"], 16, tokenizer.pad_token_id)
    before = []
    for seed in (1, 2, 3):  # heads as fresh as the run's own
        keras.utils.set_random_seed(seed)
        fresh = build_model(cfg.model, spec, load_backbone(directory, tokenizer), 2)
        before.append(_kl_to_teacher(fresh, loaded.model, ds))
    result = run(cfg, verbose=0)
    after = _kl_to_teacher(result.model, loaded.model, ds)
    assert min(before) > 0.05  # a confident teacher: a fresh head is far from it
    assert after < 0.5 * min(before)


@pytest.mark.slow
def test_a_one_layer_student_cut_from_a_two_layer_teacher_trains_and_exports(teacher_run, capsys):
    from kerasft.models import build_model, load_backbone, resolve_backbone
    from kerasft.tasks import TASKS
    from kerasft.training.distillation import Distiller, init_from_teacher, load_teacher
    from kerasft.training.exports import reexport
    from kerasft.training.runner import run

    raw, teacher = teacher_run
    # The copy itself, weight by weight: the student's layer 0 is the teacher's layer 1.
    loaded = load_teacher(teacher.run_dir)
    directory = resolve_backbone(raw["model"]["backbone"])
    cut = build_model(
        config_from_dict({**raw, "model": {**raw["model"], "num_layers": 1}}).model,
        TASKS["classification"],
        load_backbone(directory, num_layers=1),
        2,
    )
    assert init_from_teacher(cut, loaded.model, [1]) == len(cut.weights)
    teacher_weights = {w.name.split("/", 1)[1]: w.numpy() for w in loaded.model.weights}
    for weight in cut.weights:
        name = weight.name.split("/", 1)[1].replace("layer_._0/", "layer_._1/")
        np.testing.assert_array_equal(weight.numpy(), teacher_weights[name])

    result = run(config_from_dict(_student_raw(raw, teacher.run_dir)), verbose=0)
    assert isinstance(result.model, Distiller)  # the builder's choice for a `distill:` run
    out = capsys.readouterr().out
    assert (
        "distill: a 1-layer student starts from the teacher's layers 1, embeddings and head" in out
    )
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["model"]["num_layers"] == 1 and saved["distill"]["teacher"] == str(teacher.run_dir)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["distill"]["kept_layers"] == [1] and "accuracy" in metrics["test"]
    # No unlabelled text: the teacher labels a transfer set of augmented copies and joins as well.
    made = re.search(r"transfer set of (\d+) augmented copies and 36 joins of the 36 training", out)
    assert made and metrics["distill"]["teacher_labelled_only"] == int(made[1]) + 36 > 100
    assert f"training student (classification): {72 + int(made[1])} examples" in out
    assert metrics["distill"]["transfer_joins"] == 1
    serve = tf.saved_model.load(str(result.export_dir)).signatures["serving_default"]
    probabilities = serve(text=tf.constant(["good movie", "bad film"]))["probabilities"].numpy()
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
    card = (result.export_dir.parent / "README.md").read_text()
    assert f"| distilled from | `{teacher.run_dir}`" in card
    # A cut student re-exports from its run like any other (its config records the cut).
    again = reexport(result.run_dir)
    again_probabilities = (
        tf.saved_model.load(str(again))
        .signatures["serving_default"](text=tf.constant(["good movie", "bad film"]))[
            "probabilities"
        ]
        .numpy()
    )
    np.testing.assert_allclose(again_probabilities, probabilities, atol=1e-6)

    # A second run reads the teacher's outputs from the cache; unlabelled texts join the training
    # set instead of a transfer set.
    more = result.run_dir.parent / "more.txt"
    more.write_text("what a great plot\nboring and bad\n\nfun film\n")
    second = run(
        config_from_dict(_student_raw(raw, teacher.run_dir, unlabeled=str(more))), verbose=0
    )
    out = capsys.readouterr().out
    assert "distill: 3 unlabelled texts" in out
    assert "training student (classification): 39 examples" in out  # 36 labelled + 3
    assert second.export_dir is not None
    third = run(
        config_from_dict(_student_raw(raw, teacher.run_dir, unlabeled=str(more))), verbose=0
    )
    assert "teacher outputs: 39 examples from the cache" in capsys.readouterr().out
    assert third.export_dir is not None


@pytest.mark.slow
def test_distillation_inputs_that_cannot_work_are_one_line_errors(teacher_run, tmp_path):
    from kerasft.training.runner import run

    raw, teacher = teacher_run
    runs = tmp_path / "runs"
    with pytest.raises(ConfigError, match=r"is not a finished kerasft run"):
        run(config_from_dict(_student_raw(raw, tmp_path, runs)), verbose=0)
    with pytest.raises(ConfigError, match=r"must be below the teacher's 2 layers"):
        run(config_from_dict(_student_raw(raw, teacher.run_dir, runs, student_layers=2)), verbose=0)
    relabelled = tmp_path / "other.csv"
    relabelled.write_text("text,label\n" + "".join(f"t{i},{'abc'[i % 3]}\n" for i in range(30)))
    other = _student_raw(raw, teacher.run_dir, runs)
    other["data"]["train"] = str(relabelled)
    with pytest.raises(DataError, match=r"labels \['a', 'b', 'c'\] differ from the teacher's"):
        run(config_from_dict(other), verbose=0)
    assert not (tmp_path / "runs").exists()


def _transfer(task: str, pairs: bool = False, **distill):
    from kerasft.data.labels import LabelVocab
    from kerasft.data.prepared import Data
    from kerasft.data.splits import Split, Splits
    from kerasft.tasks import TASKS
    from kerasft.training.distillation import transfer_split

    texts = [f"the film number {i} was a rather good one to watch" for i in range(12)]
    train = Split(
        texts,
        np.arange(12) % 2,
        "x",
        pairs=[f"a second text {i} here" for i in range(12)] if pairs else None,
    )
    splits = Splits(train, train, train, LabelVocab(("neg", "pos")))
    raw = {
        "name": "t",
        "task": task,
        "data": {"train": "x.csv"},
        "distill": {"teacher": "runs/t", **distill},
    }
    return transfer_split(config_from_dict(raw), TASKS[task], Data(splits, {}, 16)), texts


def test_without_unlabelled_text_the_teacher_labels_a_seeded_transfer_set():
    from kerasft.training.distillation import UNLABELED

    split, texts = _transfer("classification", transfer_joins=0)
    assert split.source == "transfer set" and 40 <= len(split) <= 48  # 4 copies, equal ones dropped
    assert not set(split.texts) & set(texts)  # every copy differs from its original
    assert (split.targets == UNLABELED).all()  # only the distillation term sees them
    assert _transfer("classification", transfer_joins=0)[0].texts == split.texts  # seeded
    paired, _ = _transfer("classification", pairs=True, transfer_copies=1)
    assert len(paired.pairs) == len(paired) <= 12
    assert np.isnan(_transfer("regression")[0].targets).all()
    assert _transfer("classification", unlabeled="more.txt")[0] is None  # real text instead
    assert _transfer("classification", transfer_copies=0, transfer_joins=0)[0] is None
    assert _transfer("token_classification")[0] is None
    with pytest.raises(ConfigError, match="`distill.transfer_copies` applies to sequence-level"):
        _transfer("token_classification", transfer_copies=2)


def test_distill_command_needs_a_distill_section(tiny_config, tmp_path, capsys):
    from kerasft.distill import main

    path = write_yaml(tmp_path / "c.yaml", tiny_config)
    assert main(["--config", str(path)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {path}: no `distill:` section; add one with `teacher: <run dir>` "
        "(configs/distill_sst2.yaml shows one)."
    )


def test_transfer_joins_add_longer_texts_made_of_two_or_three_training_texts():
    split, texts = _transfer("classification", transfer_copies=0, transfer_joins=2)
    again, _ = _transfer("classification", transfer_copies=0, transfer_joins=2)
    assert len(split) == 24 and split.texts == again.texts  # seeded
    for joined in split.texts:
        parts = [t for t in texts if t in joined]
        assert 2 <= len(parts) <= 3 and len(joined) == sum(map(len, parts)) + len(parts) - 1
    both, _ = _transfer("classification")  # by default, 4 copies and 1 join per text
    assert both.texts[:-12] == _transfer("classification", transfer_joins=0)[0].texts
    with pytest.raises(ConfigError, match="`distill.transfer_joins` applies to sequence-level"):
        _transfer("token_classification", transfer_joins=1)
    raw = {
        "name": "t",
        "data": {"train": "x.csv", "text_pair_column": "b"},
        "distill": {"teacher": "runs/t", "transfer_joins": 1},
    }
    with pytest.raises(ConfigError, match="`distill.transfer_joins` joins single texts"):
        config_from_dict(raw)


def test_joins_per_text_is_zero_for_a_single_training_text_or_text_pairs():
    from kerasft.data.splits import Split
    from kerasft.training.distillation import joins_per_text

    raw = {"name": "t", "data": {"train": "x.csv"}, "distill": {"teacher": "runs/t"}}
    cfg = config_from_dict(raw)
    two = Split(["a b", "c d"], np.array([0, 1]), "x")
    assert joins_per_text(cfg, two) == 1  # the default
    assert joins_per_text(cfg, Split(["a b"], np.array([0]), "x")) == 0  # nothing to join it with
    assert joins_per_text(cfg, Split(["a", "b"], np.array([0, 1]), "x", pairs=["c", "d"])) == 0


def test_ctrl_c_stops_the_teachers_outputs_after_its_batch(capfd, ctrl_c):
    """Labelling a large transfer set takes minutes; Ctrl-C there landed inside the model's
    call, as it did in training's loop."""
    from kerasft.cli import cli_main
    from kerasft.data.tokenize import Encoded
    from kerasft.tasks import TASKS
    from kerasft.training.distillation import _run_teacher

    n = 200  # four batches of 64
    ids = np.ones(3 * n, np.int32)
    encoded = Encoded(
        {"input_ids": ids, "attention_mask": ids}, np.full(n, 3, np.int64), np.zeros(n, np.int64)
    )
    batches = []

    def teacher(x, training=False):
        batches.append(len(x["input_ids"]))
        if len(batches) == 1:
            ctrl_c()
        return tf.zeros([tf.shape(x["input_ids"])[0], 2])

    command = cli_main(lambda argv: _run_teacher(teacher, encoded, 0, TASKS["classification"]))
    assert command([]) == 130
    assert batches == [64]
    assert "Ctrl-C: stopping after this step" in capfd.readouterr().err
