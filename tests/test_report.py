"""The run report, its metrics, slices and pictures: checked on real runs and on synthetic predictions."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from kerasft.config import config_from_dict
from kerasft.report import compare_runs, tuning_report, write_report
from kerasft.report.cli import main as report_main
from kerasft.tasks import TASKS
from kerasft.tasks.evaluation import Predictions, slice_metrics
from kerasft.tasks.metrics import (
    classification_metrics,
    expected_calibration_error,
    multi_label_metrics,
)
from kerasft.training.runner import run
from tests.conftest import NEGATIVE, POSITIVE, read_json, tiny_run_config


def images_of(page: Path) -> list[Path]:
    sources = re.findall(r'<img src="([^"]+)"', page.read_text(encoding="utf-8"))
    return [page.parent / s for s in sources]


def assert_self_contained(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert not re.search(r'(src|href)="(https?:)?//', text), (
        "the page must not load anything remote"
    )
    images = images_of(page)
    assert images, "the page shows no figure"
    for image in images:
        assert image.is_file() and image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", image


# ---- a trained run ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert_dir):
    """A tiny two-class run with a `source` slice column and layer-wise decay (rates differ per group)."""
    root = tmp_path_factory.mktemp("report")
    raw = tiny_run_config(root, tiny_bert_dir, copies=4)
    rows = ["text,label,source"]
    for i, text in enumerate(POSITIVE * 4):
        rows.append(f"{text},pos,{'web' if i % 2 else 'mail'}")
    for i, text in enumerate(NEGATIVE * 4):
        rows.append(f"{text},neg,{'web' if i % 2 else 'mail'}")
    (root / "d.csv").write_text("\n".join(rows) + "\n")
    raw["training"].update({"learning_rate": 1e-3, "layerwise_lr_decay": 0.5, "warmup_ratio": 0.3})
    raw["evaluation"] = {"slices": ["source"], "errors": 5}
    return run(config_from_dict(raw), verbose=0)


@pytest.mark.slow
def test_run_writes_a_report_whose_images_exist(trained):
    assert trained.report == trained.run_dir / "report.html"
    assert_self_contained(trained.report)
    names = {p.name for p in images_of(trained.report)}
    assert {
        "curves.png",
        "learning_rates.png",
        "confusion.png",
        "per_class.png",
        "roc_pr.png",
        "calibration.png",
        "distribution.png",
        "slices_source.png",
    } <= names
    text = trained.report.read_text()
    for heading in (
        "Training",
        "Data",
        "Results on the test split",
        "Most confident errors",
        "Slices (test)",
    ):
        assert heading in text
    data = json.loads((trained.run_dir / "metrics.json").read_text())["data"]
    shared = data["validation"]["also_in_training"], data["test"]["also_in_training"]
    assert all(shared)  # the tiny data repeats its sentences
    assert f"{shared[0]:,} validation and {shared[1]:,} test examples have a text" in text


@pytest.mark.slow
def test_metrics_gain_auc_calibration_and_slices(trained):
    test = read_json(trained.run_dir / "metrics.json")["test"]
    preds = Predictions.load(trained.run_dir / "predictions" / "test.npz")
    probs, labels = np.asarray(preds.outputs), np.asarray(preds.targets)
    from sklearn.metrics import roc_auc_score

    assert test["roc_auc"] == pytest.approx(roc_auc_score(labels, probs[:, 1]))
    assert test["brier"] == pytest.approx(np.mean((probs[:, 1] - labels) ** 2))
    assert 0.0 <= test["ece"] <= 1.0 and "weighted_f1" in test
    by_source = test["slices"]["source"]
    assert set(by_source["values"]) == {"mail", "web"}
    counts = {v: s["examples"] for v, s in by_source["values"].items()}
    assert sum(counts.values()) == test["examples"] == len(preds)
    assert preds.columns["source"].count("web") == counts["web"]


@pytest.mark.slow
def test_predictions_are_saved_in_input_order(trained):
    """The evaluation pipeline sorts by length; the saved rows follow the data instead."""
    from kerasft.data import load_data
    from kerasft.models import load_tokenizer, resolve_backbone

    cfg = config_from_dict(yaml.safe_load((trained.run_dir / "config.yaml").read_text()))
    tokenizer = load_tokenizer(resolve_backbone(cfg.model.backbone))
    data = load_data(cfg, TASKS["classification"], tokenizer)
    preds = Predictions.load(trained.run_dir / "predictions" / "test.npz")
    assert preds.texts == data.splits.test.texts
    assert np.array_equal(preds.targets, data.splits.test.targets)
    lengths = data.encoded["test"].lengths
    assert not np.all(np.diff(lengths) >= 0), "the test split should not already be length-sorted"


@pytest.mark.slow
def test_steps_log_shows_layerwise_rates_and_warmup(trained):
    from kerasft.report.history import read_steps

    steps = read_steps(trained.run_dir / "steps.jsonl")
    assert [s["step"] for s in steps] == list(range(1, len(steps) + 1))
    assert all(np.isfinite(s["loss"]) for s in steps)
    sampled = [s for s in steps if "lr" in s]
    rates = sampled[len(sampled) // 2]["lr"]
    assert rates["embeddings"] < rates["layer_0"] < rates["layer_1"] < rates["head"]
    assert rates["layer_1"] == pytest.approx(rates["head"] * 0.5, rel=1e-4)
    heads = [s["lr"]["head"] for s in sampled]
    assert heads[0] < max(heads) and heads[-1] < max(heads)  # warmup, then decay


@pytest.mark.slow
def test_tensorboard_gets_confusion_images_and_pr_curves(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(
        str(trained.run_dir / "logs" / "validation"), size_guidance={"tensors": 0}
    )
    events.Reload()  # TF 2 writes images and PR curves as tensor summaries
    images = events.Tensors("confusion_matrix")
    assert [e.step for e in images] == [1, 2]  # one per epoch
    assert images[0].tensor_proto.string_val[2][:4] == b"\x89PNG"  # width, height, PNG
    curves = events.Tensors("pr_curve/pos/pr_curves")
    assert len(curves) == 2 and curves[0].tensor_proto.tensor_shape.dim[0].size == 6


@pytest.mark.slow
def test_report_command_rebuilds_and_compares(trained, tmp_path, capsys):
    (trained.run_dir / "report.html").unlink()
    shutil.rmtree(trained.run_dir / "plots")
    assert report_main([str(trained.run_dir.parent)]) == 0  # the folder of runs: its newest
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"report={trained.report}"
    assert_self_contained(trained.report)

    other = tmp_path / "tiny" / "other"
    shutil.copytree(trained.run_dir, other)
    config = yaml.safe_load((other / "config.yaml").read_text())
    config["training"]["learning_rate"] = 5e-4
    (other / "config.yaml").write_text(yaml.safe_dump(config))
    page = compare_runs([trained.run_dir, other], tmp_path / "comparison")
    assert_self_contained(page)
    text = page.read_text()
    assert "training.learning_rate" in text and "0.0005" in text
    assert "data.train" not in text  # the same in both runs


def test_report_command_refuses_what_is_not_a_run(tmp_path, capsys):
    assert report_main([str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert report_main([str(tmp_path / "empty")]) == 2
    assert "not a finished run" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("x")
    assert report_main([str(tmp_path / "notes.txt")]) == 2
    assert "notes.txt: a file, not a directory" in capsys.readouterr().err


def test_report_command_refuses_options_it_cannot_honour(tmp_path, capsys):
    """Each used to end in a traceback (--output a file) or be ignored without a word."""
    from tests.test_hostile import one_error_line

    runs = tmp_path / "runs" / "tiny"
    for stamp in ("20260101-000000", "20260102-000000"):
        (runs / stamp).mkdir(parents=True)
        (runs / stamp / "metrics.json").write_text("{}")
    newest, older = str(runs / "20260102-000000"), str(runs / "20260101-000000")
    (tmp_path / "page.html").write_text("x")
    cases = [
        ([older, newest, "--output", str(tmp_path / "page.html")], "page.html: is a file"),
        ([newest, "--output", str(tmp_path / "cmp")], "one run's report is rebuilt in its own"),
        ([str(runs), newest], "20260102-000000: given twice"),
        ([newest, "--errors", "-1"], "--errors -1: give 0 or more"),
    ]
    for argv, fragment in cases:
        one_error_line(capsys, report_main(argv), fragment)
    assert not (tmp_path / "cmp").exists()


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("metrics.json", "not json", "metrics.json: cannot read it (Expecting value"),
        ("labels.json", "[1, 2", "labels.json: cannot read it"),
        ("config.yaml", "a: [b", "config.yaml: cannot read it"),
        # Readable, but not what a run writes: a KeyError, an AttributeError traceback.
        ("config.yaml", "task: classificatio\n", "config.yaml does not hold what a run writes"),
        ("config.yaml", "training: 3\n", "config.yaml does not hold what a run writes"),
        ("predictions/test.npz", "PK", "test.npz: cannot read it"),
        ("history.jsonl", '{"epoch": 0}\nhalf\n{"epoch": 1}\n', "history.jsonl:2: not a epoch"),
    ],
)
def test_a_damaged_run_file_is_one_line_naming_it(
    trained, tmp_path, capsys, name, content, fragment
):
    """Once a JSONDecodeError (or zipfile's, YAML's) traceback from `kerasft.report`."""
    from tests.test_hostile import one_error_line

    damaged = tmp_path / "tiny" / "damaged"
    shutil.copytree(trained.run_dir, damaged)
    (damaged / name).write_text(content)
    one_error_line(capsys, report_main([str(damaged)]), fragment, "damaged")
    other = tmp_path / "tiny" / "other"
    shutil.copytree(trained.run_dir, other)
    if name in ("metrics.json", "config.yaml"):  # what a comparison reads too
        one_error_line(capsys, report_main([str(damaged), str(other)]), fragment)


def test_a_history_line_cut_short_by_a_kill_is_left_out(tmp_path):
    from kerasft.report.history import read_history

    (tmp_path / "h.jsonl").write_text('{"epoch": 0, "loss": 1}\n{"epoch": 1, "lo')
    assert read_history(tmp_path / "h.jsonl") == [{"epoch": 0, "loss": 1}]


# ---- metrics -----------------------------------------------------------------------------------


def test_expected_calibration_error_by_hand():
    # Bin (0.8, 0.867]: confidences 0.85, 0.85 with one right: |0.5 - 0.85| * 2/4.
    # Bin (0.533, 0.6]: 0.55, 0.55 both right: |1 - 0.55| * 2/4.
    confidence = np.array([0.85, 0.85, 0.55, 0.55])
    correct = np.array([1, 0, 1, 1])
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.5 * 0.35 + 0.5 * 0.45)
    assert expected_calibration_error(np.array([0.7, 0.7]), np.array([1, 0])) == pytest.approx(0.2)


def test_multiclass_auc_brier_and_weighted_f1():
    from sklearn.metrics import f1_score, roc_auc_score

    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1, 1, 1], size=300)
    labels = rng.integers(0, 3, 300)
    m = classification_metrics(probs, labels, ("a", "b", "c"))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr"))
    hot = np.eye(3)[labels]
    assert m["brier"] == pytest.approx(np.mean(((probs - hot) ** 2).sum(axis=1)))
    assert m["weighted_f1"] == pytest.approx(f1_score(labels, probs.argmax(1), average="weighted"))
    assert m["per_class"]["a"]["roc_auc"] == pytest.approx(roc_auc_score(labels == 0, probs[:, 0]))


def test_multi_label_auc_per_label_skips_labels_without_both_outcomes():
    rng = np.random.default_rng(1)
    probs = rng.random((80, 3))
    hot = (rng.random((80, 3)) > 0.5).astype(float)
    hot[:, 2] = 0  # never present: no AUC
    m = multi_label_metrics(probs, hot, ("x", "y", "z"), None)
    assert "roc_auc" in m["per_label"]["x"] and "roc_auc" not in m["per_label"]["z"]
    assert m["roc_auc"] == pytest.approx(
        (m["per_label"]["x"]["roc_auc"] + m["per_label"]["y"]["roc_auc"]) / 2
    )


def test_slices_find_the_largest_gap_and_bin_numbers():
    labels = np.array([0, 1] * 20)
    probs = np.eye(2)[labels] * 0.8 + 0.1  # all right
    probs[20:] = probs[20:, ::-1]  # the second half all wrong
    group = ["a"] * 20 + ["b"] * 20
    score = [str(float(i)) for i in range(40)]
    preds = Predictions(probs, labels, ["t"] * 40, columns={"group": group, "score": score})
    sliced = slice_metrics(TASKS["classification"], preds, ("neg", "pos"), "accuracy")
    gap = sliced["group"]["largest_gap"]
    assert gap == {"metric": "accuracy", "gap": 1.0, "highest": "a", "lowest": "b"}
    assert len(sliced["score"]["values"]) == 4  # quartiles of a numeric column
    assert sum(v["examples"] for v in sliced["score"]["values"].values()) == 40


# ---- reports of every task, from synthetic runs ------------------------------------------------


def fake_run(root: Path, task: str, preds: Predictions, labels: list[str], scores: dict) -> Path:
    run_dir = root / task / "20260101-000000"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"name": task, "task": task}))
    (run_dir / "labels.json").write_text(json.dumps({"labels": labels}))
    history = [{"epoch": e, "loss": 1.0 / e, "val_loss": 1.2 / e} for e in (1, 2)]
    (run_dir / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    (run_dir / "metrics.json").write_text(json.dumps({"test": scores, "validation": scores}))
    preds.save(run_dir / "predictions" / "test.npz")
    return run_dir


def test_report_for_regression_multi_label_and_tags(tmp_path):
    rng = np.random.default_rng(2)
    true = rng.normal(size=200)
    reg = Predictions(true + rng.normal(scale=0.3, size=200), true, [f"s{i}" for i in range(200)])
    page = write_report(
        fake_run(tmp_path, "regression", reg, [], {"examples": 200, "pearson": 0.9})
    )
    assert "regression.png" in {p.name for p in images_of(page)}

    probs = rng.random((100, 3))
    hot = (rng.random((100, 3)) > 0.5).astype(float)
    multi = Predictions(probs, hot, [f"t{i}" for i in range(100)])
    scores = multi_label_metrics(probs, hot, ("x", "y", "z"), None)
    page = write_report(fake_run(tmp_path, "multi_label", multi, ["x", "y", "z"], scores))
    assert {"roc_pr.png", "calibration.png", "per_class.png"} <= {p.name for p in images_of(page)}

    tags = ["O", "B-PER", "I-PER"]
    outputs = [np.array([0, 1, 2]), np.array([0, 0])]
    targets = [np.array([0, 1, 1]), np.array([0, 0])]
    ner = Predictions(outputs, targets, ["a Bob Smith", "the end"])
    ner_scores = {
        "examples": 2,
        "f1": 0.0,
        "per_type": {"PER": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}},
    }
    page = write_report(fake_run(tmp_path, "token_classification", ner, tags, ner_scores))
    text = page.read_text()
    assert 'class="wrong">Smith<sub>B-PER → I-PER</sub>' in text  # true → predicted
    assert 'class="wrong">Bob' not in text and "Bob<sub>B-PER</sub>" in text  # right: not marked
    loaded = Predictions.load(page.parent / "predictions" / "test.npz")
    assert [list(o) for o in loaded.outputs] == [[0, 1, 2], [0, 0]]


def test_tuning_report_lists_trials_best_first_and_draws_the_pareto_front(tmp_path):
    header = ["rank", "trial_id", "state", "model.num_layers", "val_accuracy", "size_mb", "seconds"]
    rows = [
        [1, "001", "complete (pareto)", 2, 0.81, 0.07, 40.0],
        [2, "002", "complete (pareto)", 1, 0.74, 0.04, 30.0],
        [3, "000", "complete", 2, 0.53, 0.07, 41.0],
        [4, "003", "pruned", 1, 0.50, None, None],
    ]
    with (tmp_path / "trials.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    trials = [
        {
            "trial_id": r[1],
            "state": r[2].split()[0],
            "objective": r[4],
            "second": r[5],
            "pareto": "pareto" in r[2],
            "runs": [],
        }
        for r in rows
    ]
    meta = {
        "engine": "optuna",
        "config": "tune.yaml",
        "objective": "val_accuracy",
        "direction": "max",
        "second_objective": "size_mb",
        "params": ["model.num_layers"],
        "trials": trials,
    }
    (tmp_path / "search.json").write_text(json.dumps(meta))
    page = tuning_report(tmp_path)
    assert_self_contained(page)
    text = page.read_text()
    assert text.index("0.8100") < text.index("0.7400") < text.index("0.5300")
    assert "4 trials (3 complete, 1 pruned)" in text and "Pareto front" in text


# ---- looked at as a person would ---------------------------------------------------------------


@pytest.mark.slow
def test_report_renders_in_headless_chromium(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("needs Debian's chromium for the screenshot: `make chromium` installs it")
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 300)
    probs = rng.dirichlet([1, 1, 1], size=300)
    probs[np.arange(300), labels] += 1.0
    probs /= probs.sum(axis=1, keepdims=True)
    scores = classification_metrics(probs, labels, ("neg", "neu", "pos"))
    preds = Predictions(probs, labels, [f"text {i}" for i in range(300)])
    page = write_report(fake_run(tmp_path, "classification", preds, ["neg", "neu", "pos"], scores))
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1200,2400",
            f"--screenshot={shot}",
            page.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape[0] >= 2000
    assert pixels.std() > 10, "the screenshot is blank"
    assert (pixels < 100).mean() > 0.005, "no text or drawing on the page"
