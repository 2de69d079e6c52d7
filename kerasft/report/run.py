"""`report.html` of one run: what it trained on, how training went, and where the model errs.

Everything comes from the run directory, not the model: `config.yaml`,
`metrics.json`, `history.jsonl`, `steps.jsonl` and `predictions/<split>.npz`. The
figures go to `plots/` beside the page.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from kerasft.errors import DataError, first_line
from kerasft.report import page, plots
from kerasft.report.history import read_history, read_steps
from kerasft.tasks import TASKS
from kerasft.tasks.evaluation import Predictions
from kerasft.tasks.metrics import reliability


def write_report(run_dir: str | Path, errors: int = 20) -> Path:
    """Writes `report.html` and `plots/*.png` for a finished run; returns the page's path.

    Args:
        run_dir: a run directory with `metrics.json` (a finished run).
        errors: most confident test errors to list. Defaults to 20.

    Raises:
        DataError: not a finished run directory.
    """
    run_dir = Path(run_dir)
    run = _read_run(run_dir)
    cfg, metrics, task = run["config"], run["metrics"], run["config"].get("task", "classification")
    spec = TASKS[task]
    plot_dir = run_dir / "plots"
    sections = [
        _summary(run),
        _training(run, plot_dir),
        _data_section(metrics.get("data", {}), plot_dir),
    ]
    test = run["predictions"].get("test")
    split = "test" if test is not None and len(test) else "validation"
    shown = run["predictions"].get(split)
    if shown is not None and len(shown):
        sections.append(_results(spec, split, metrics[split], shown, run["labels"], plot_dir))
        sections.append(_errors(spec, split, shown, run["labels"], errors))
    if spec.generative:
        sections.append(_generated(run_dir, metrics, errors))
    sections.append(_slices(metrics, plot_dir))
    name = cfg.get("name", run_dir.parent.name)
    subtitle = f"{task} · {cfg.get('model', {}).get('backbone', 'default backbone')} · {run_dir}"
    path = run_dir / "report.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page.document(f"{name}: run report", subtitle, sections), encoding="utf-8")
    tmp.replace(path)
    return path


def _read_run(run_dir: Path) -> dict[str, Any]:
    config, metrics = read_config_and_metrics(run_dir)
    labels_path = run_dir / "labels.json"
    labels = read_run_file(labels_path, json.loads) if labels_path.is_file() else []
    if isinstance(labels, dict):
        labels = labels.get("labels", list(labels))
    predictions = {}
    for split in ("validation", "test"):
        path = run_dir / "predictions" / f"{split}.npz"
        if path.is_file():
            predictions[split] = read_run_file(path, Predictions.load, text=False)
    return {
        "dir": run_dir,
        "config": config,
        "metrics": metrics,
        "history": read_history(run_dir / "history.jsonl"),
        "steps": read_steps(run_dir / "steps.jsonl"),
        "labels": list(labels),
        "predictions": predictions,
    }


def read_config_and_metrics(run_dir: Path) -> tuple[dict, dict]:
    """A finished run's `config.yaml` (empty when absent) and `metrics.json`, checked to hold
    what the report reads.

    Raises:
        DataError: no metrics.json (not a finished run), or a file unreadable or damaged.
    """
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise DataError(
            f"{run_dir}: no metrics.json, so not a finished run directory. Pass a "
            "runs/<name>/<timestamp> folder of a run that completed."
        )
    config_path = run_dir / "config.yaml"
    config = read_run_file(config_path, yaml.safe_load) if config_path.is_file() else {}
    config = config or {}
    metrics = read_run_file(metrics_path, json.loads)
    if not (
        isinstance(metrics, dict)
        and isinstance(config, dict)
        and config.get("task", "classification") in TASKS
        and isinstance(config.get("training") or {}, dict)
    ):
        raise DataError(
            f"{run_dir}: metrics.json or config.yaml does not hold what a run writes; the run "
            "directory is damaged. Train again, or restore them from a copy."
        )
    return config, metrics


def read_run_file(path: Path, read: Any, text: bool = True) -> Any:
    """`read` of the file's text (or of its path, with `text=False`).

    Raises:
        DataError: the file cannot be read or parsed, naming it (a damaged run directory).
    """
    try:
        return read(path.read_text(encoding="utf-8")) if text else read(path)
    except (OSError, ValueError, KeyError, EOFError, yaml.YAMLError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"{path}: cannot read it ({first_line(exc)[:160]}); the run directory is damaged. Train again, or "
            "restore the file from a copy."
        ) from None


def monitor_of(config: dict) -> str:
    from kerasft.config import MONITORS

    task = config.get("task", "classification")
    return (config.get("training") or {}).get("monitor") or MONITORS[task][0]


def _summary(run: dict) -> str:
    metrics, cfg = run["metrics"], run["config"]
    test = metrics.get("test", {})
    split = "test" if test.get("examples") else "validation"
    scores = metrics.get(split, {})
    shown = [
        (f"{split} {k}", v) for k, v in scores.items() if isinstance(v, float) and k != "loss"
    ][:8]
    train = metrics.get("train", {})
    facts = [
        ("train examples", train.get("examples")),
        ("epochs", train.get("epochs")),
        ("best epoch", train.get("best_epoch")),
        ("train examples/s", _one_decimal(train.get("examples_per_second"))),
    ]
    data = cfg.get("data", {})
    carved = "{:.0%} of the training data"
    rows = [
        ("train", " + ".join(files) if isinstance(files := data.get("train"), list) else files),
        (
            "validation",
            data.get("validation")
            or (carved.format(data["validation_split"]) if "validation_split" in data else None),
        ),
        (
            "test",
            data.get("test")
            or (carved.format(data["test_split"]) if "test_split" in data else None),
        ),
        ("learning rate", (cfg.get("training") or {}).get("learning_rate")),
        ("batch size", (cfg.get("training") or {}).get("batch_size")),
    ]
    return (
        "<h2>Summary</h2>"
        + page.cards(shown)
        + page.cards([(k, v) for k, v in facts if v is not None])
        + page.table(["", "value"], [(k, v) for k, v in rows if v is not None])
    )


def _training(run: dict, plot_dir: Path) -> str:
    history, steps = run["history"], run["steps"]
    monitor = monitor_of(run["config"])
    best = run["metrics"].get("train", {}).get("best_epoch")
    parts = ["<h2>Training</h2>"]
    pairs = "contrastive" in run["metrics"]  # training.method: contrastive
    trained_on = "pair loss" if pairs else "train loss"
    if history or steps:
        plots.training_curves(history, steps, monitor, best, plot_dir / "curves.png", trained_on)
        what = (
            "Pair loss per step (light: the squared error of the sentence pairs' cosine "
            "similarity, which trains the backbone; the head is fitted at each epoch end)"
            if pairs
            else "Training loss per step (light)"
        )
        parts.append(
            page.figure(
                "plots/curves.png",
                f"{what} and its moving mean, loss per epoch, validation "
                f"loss, and {monitor} per epoch (dashed: the best epoch, whose weights are kept).",
                "training curves",
            )
        )
    if plots.learning_rates(steps, plot_dir / "learning_rates.png"):
        parts.append(
            page.figure(
                "plots/learning_rates.png",
                "Learning rate of each layer group at each step: warmup and decay, layer-wise "
                "decay (lower layers lower), and 0 while a group is frozen.",
                "learning rate per layer group",
            )
        )
    if history:
        keys = [k for k in history[-1] if k != "epoch"]
        parts.append(
            page.table(
                ["epoch", *keys],
                [[e["epoch"], *[e.get(k) for k in keys]] for e in history],
                [True] * (len(keys) + 1),
            )
        )
    return "".join(parts)


def _generated(run_dir: Path, metrics: dict, n: int) -> str:
    """seq2seq: the scores of generated text and the worst-scored examples (sentence chrF)."""
    from kerasft.tasks.generation import read_predictions, worst_examples

    split = "test" if metrics.get("test", {}).get("examples") else "validation"
    records = read_predictions(run_dir / "predictions" / f"{split}.jsonl")
    if not records:
        return ""
    scores = metrics.get(split, {})
    scalars = [(k, v) for k, v in scores.items() if isinstance(v, float | int)]
    worst = worst_examples(records, n)
    rows = [[r["source"], r["reference"], r["generated"], r["chrf"]] for r in worst]
    return (
        f"<h2>Results on the {split} split</h2>"
        + page.table(["metric", "value"], scalars, [False, True])
        + f"<h3>The {len(worst)} worst-scored generations (lowest sentence chrF)</h3>"
        + page.table(
            ["source", "reference", "generated", "chrF"], rows, [False, False, False, True]
        )
    )


def _data_section(data: dict, plot_dir: Path) -> str:
    shared = [
        f"{n:,} {split}"
        for split in ("validation", "test")
        if (n := data.get(split, {}).get("also_in_training"))
    ]
    note = (
        f"<p>{' and '.join(shared)} examples have a text that training has too: their scores "
        "are not held out.</p>"
        if shared
        else ""
    )
    first = next(iter(data.values()), {})
    if "counts" not in first and "histogram" not in first:  # seq2seq: target lengths only
        return f"<h2>Data</h2>{note}" if note else ""
    if not plots.distributions(data, plot_dir / "distribution.png"):
        return ""
    return (
        "<h2>Data</h2>"
        + note
        + page.figure(
            "plots/distribution.png",
            "Share of each class (or target histogram) per split, examples in brackets.",
            "class distribution per split",
        )
    )


def _results(
    spec, split: str, scores: dict, preds: Predictions, labels: list[str], plot_dir: Path
) -> str:
    parts = [f"<h2>Results on the {split} split</h2>"]
    scalars = [(k, v) for k, v in scores.items() if isinstance(v, float | int) and k != "slices"]
    parts.append(page.table(["metric", "value"], scalars, [False, True]))
    if spec.numeric:
        plots.regression_scatter(
            np.asarray(preds.outputs), np.asarray(preds.targets), plot_dir / "regression.png"
        )
        parts.append(
            page.figure(
                "plots/regression.png", "Each point is one example.", "predicted against true"
            )
        )
        return "".join(parts)
    if spec.per_token:
        if scores.get("per_type"):
            plots.per_class_bars(scores["per_type"], plot_dir / "per_class.png", "Entity types")
            parts.append(
                page.figure(
                    "plots/per_class.png",
                    "Entity-level precision, recall and F1 per entity type.",
                    "F1 per entity type",
                )
            )
        return "".join(parts)
    parts += _probability_plots(spec, scores, preds, labels, plot_dir)
    return "".join(parts)


def _probability_plots(
    spec, scores: dict, preds: Predictions, labels: list[str], plot_dir: Path
) -> list[str]:
    probs = np.asarray(preds.outputs)
    parts = []
    if spec.multi_hot:
        truth = np.asarray(preds.targets)
        per = scores.get("per_label", {})
        confidence, correct = (
            np.maximum(probs, 1 - probs).ravel(),
            ((probs >= 0.5) == truth).ravel(),
        )
        title, unit = "Labels", "label"
    else:
        truth = np.eye(len(labels))[np.asarray(preds.targets)]
        per = scores.get("per_class", {})
        confidence, correct = probs.max(-1), probs.argmax(-1) == np.asarray(preds.targets)
        title, unit = "Classes", "class"
        matrix = scores.get("confusion_matrix", {}).get("matrix")
        if matrix is not None:
            plots.confusion(np.asarray(matrix), labels, plot_dir / "confusion.png")
            parts.append(
                page.figure(
                    "plots/confusion.png",
                    "Rows: true class; columns: predicted. Right: each row as "
                    "shares, so the diagonal is each class's recall.",
                    "confusion matrix",
                )
            )
    if per:
        plots.per_class_bars(per, plot_dir / "per_class.png", title)
        parts.append(
            page.figure("plots/per_class.png", f"Scores per {unit}.", f"scores per {unit}")
        )
    if len(labels) == 2 and not spec.multi_hot:
        probs, truth, names = probs[:, 1:], truth[:, 1:], labels[1:]
    else:
        names = labels
    if plots.roc_pr(probs, truth, names, plot_dir / "roc_pr.png"):
        parts.append(
            page.figure(
                "plots/roc_pr.png",
                "ROC and precision-recall curves (one-vs-rest per class; the "
                "positive class when there are two).",
                "ROC and PR curves",
            )
        )
    plots.reliability_diagram(
        reliability(confidence, correct), scores.get("ece", 0.0), plot_dir / "calibration.png"
    )
    parts.append(
        page.figure(
            "plots/calibration.png",
            "Accuracy of the predictions in each confidence bin: a calibrated "
            "model follows the diagonal. Below: examples per bin.",
            "reliability diagram",
        )
    )
    return parts


def _errors(spec, split: str, preds: Predictions, labels: list[str], limit: int) -> str:
    if limit <= 0:
        return ""
    head = f"<h2>Most confident errors ({split})</h2>"
    texts = preds.texts
    pair = preds.pairs
    if spec.per_token:
        return head + _tag_errors(preds, labels, limit)
    if spec.numeric:
        pred, true = np.asarray(preds.outputs), np.asarray(preds.targets)
        worst = np.argsort(-np.abs(pred - true), kind="stable")[:limit]
        rows = [
            (_text(texts, pair, i), float(true[i]), float(pred[i]), float(pred[i] - true[i]))
            for i in worst
        ]
        return head + page.table(
            ["text", "true", "predicted", "error"], rows, [False, True, True, True]
        )
    probs = np.asarray(preds.outputs)
    if spec.multi_hot:
        truth = np.asarray(preds.targets) > 0.5
        wrong = np.abs(probs - truth).max(axis=1)
        order = [i for i in np.argsort(-wrong, kind="stable") if wrong[i] > 0.5][:limit]
        rows = [
            (
                _text(texts, pair, i),
                _names(truth[i], labels),
                _names(probs[i] >= 0.5, labels),
                float(wrong[i]),
            )
            for i in order
        ]
        return head + page.table(
            ["text", "true labels", "predicted (0.5)", "worst miss"],
            rows,
            [False, False, False, True],
        )
    true = np.asarray(preds.targets)
    pred = probs.argmax(-1)
    confidence = probs.max(-1)
    order = [i for i in np.argsort(-confidence, kind="stable") if pred[i] != true[i]][:limit]
    if not order:
        return head + "<p>No errors.</p>"
    rows = [
        (_text(texts, pair, i), labels[true[i]], labels[pred[i]], float(confidence[i]))
        for i in order
    ]
    wrong = int((pred != true).sum())
    return (
        head
        + f"<p>{wrong:,} of {len(true):,} wrong; the {len(order)} the model was surest of:</p>"
        + page.table(["text", "true", "predicted", "confidence"], rows, [False, False, False, True])
    )


def _tag_errors(preds: Predictions, labels: list[str], limit: int) -> str:
    scored = [
        (int((p != t).sum()), i)
        for i, (p, t) in enumerate(zip(preds.outputs, preds.targets, strict=True))
    ]
    worst = [i for n, i in sorted(scored, key=lambda x: -x[0]) if n][:limit]
    if not worst:
        return "<p>No errors.</p>"
    rows = []
    for i in worst:
        words = preds.texts[i].split(" ")
        cells = []
        for word, p, t in zip(words, preds.outputs[i], preds.targets[i], strict=False):
            if p == t:
                cells.append(
                    page.esc(word)
                    + (f"<sub>{page.esc(labels[t])}</sub>" if labels[t] != "O" else "")
                )
            else:
                cells.append(
                    f'<span class="wrong">{page.esc(word)}<sub>{page.esc(labels[t])}'
                    f" → {page.esc(labels[p])}</sub></span>"
                )
        rows.append((page.Raw(" ".join(cells)), int((preds.outputs[i] != preds.targets[i]).sum())))
    return (
        "<p>Sentences with the most mistagged words; wrong words are marked "
        '<span class="wrong">true → predicted</span>.</p>'
        + page.table(["sentence", "wrong words"], rows, [False, True])
    )


def _slices(metrics: dict, plot_dir: Path) -> str:
    split = "test" if metrics.get("test", {}).get("slices") else "validation"
    slices = metrics.get(split, {}).get("slices")
    if not slices:
        return ""
    parts = [f"<h2>Slices ({split})</h2>"]
    for column, scored in slices.items():
        gap, values = scored["largest_gap"], scored["values"]
        metric = (
            gap["metric"]
            if gap
            else next(
                (
                    k
                    for k in ("macro_f1", "f1", "pearson", "accuracy")
                    if any(k in v for v in values.values())
                ),
                "examples",
            )
        )
        parts.append(f"<h3>By {page.esc(column)}</h3>")
        if gap:
            parts.append(
                f'<p class="gap">Largest {page.esc(metric)} gap: <b>{gap["gap"]:.4f}</b> between '
                f"<code>{page.esc(gap['highest'])}</code> and <code>{page.esc(gap['lowest'])}</code> "
                f"(values with at least 10 examples).</p>"
            )
        safe = "".join(c if c.isalnum() else "_" for c in column)
        if plots.slice_bars(column, values, metric, gap, plot_dir / f"slices_{safe}.png"):
            parts.append(
                page.figure(
                    f"plots/slices_{safe}.png",
                    f"{metric} per value of {column}; examples in brackets.",
                    f"{metric} by {column}",
                )
            )
        keys = sorted({k for v in values.values() for k in v}, key=lambda k: (k != "examples", k))
        parts.append(
            page.table(
                [column, *keys],
                [[v, *[s.get(k) for k in keys]] for v, s in values.items()],
                [False] + [True] * len(keys),
            )
        )
    return "".join(parts)


def _text(texts: list[str], pairs: list[str] | None, i: int) -> str:
    return texts[i] if pairs is None else f"{texts[i]}  ‖  {pairs[i]}"


def _names(mask: np.ndarray, labels: list[str]) -> str:
    return ", ".join(labels[j] for j in np.flatnonzero(mask)) or "(none)"


def _one_decimal(value: float | None) -> str | None:
    # A speed, not a score: four decimals (the cards' default) read as false precision.
    return None if value is None else f"{value:.1f}"
