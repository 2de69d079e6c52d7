"""How long `report.html` takes for a run with 10,000 test examples (target: under 5 seconds).

The report reads only files, so a synthetic run directory stands in for a trained
one: 10,000 three-class test predictions with texts and a slice column, 10,000
validation predictions, 3 epochs of history and 3,000 logged steps with the
learning rates of 8 layer groups. Times the first report (matplotlib's import
included, as in a training run) and a rebuild.

    .venv/bin/python bench/report.py [--examples 10000]

Last line: report_seconds=... rebuild_seconds=... examples=... figures=...
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kerasft.tasks import TASKS  # noqa: E402
from kerasft.tasks.evaluation import Predictions, distributions, slice_metrics  # noqa: E402
from kerasft.tasks.metrics import classification_metrics  # noqa: E402

NAMES = ("negative", "neutral", "positive")


def fake_run(root: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    run_dir = root / "bench" / "20260101-000000"
    (run_dir / "predictions").mkdir(parents=True)
    spec = TASKS["classification"]
    metrics = {}
    for split in ("validation", "test"):
        labels = rng.integers(0, 3, n)
        logits = rng.normal(size=(n, 3)) + 2.0 * np.eye(3)[labels]
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        texts = [f"example text number {i} with a few words" for i in range(n)]
        sources = rng.choice(["web", "mail", "phone", "chat"], n).tolist()
        preds = Predictions(probs, labels, texts, columns={"source": sources})
        preds.save(run_dir / "predictions" / f"{split}.npz")
        metrics[split] = classification_metrics(probs, labels, NAMES)
        metrics[split]["slices"] = slice_metrics(spec, preds, NAMES, "macro_f1")

    class Split:  # what `distributions` reads
        def __init__(self, size):
            self.targets = rng.integers(0, 3, size)

    class Splits:
        train, validation, test = Split(8 * n), Split(n), Split(n)

        class vocab:  # noqa: N801
            names = NAMES

    metrics["data"] = distributions(Splits, spec)
    metrics["train"] = {
        "examples": 8 * n,
        "epochs": 3,
        "best_epoch": 2,
        "examples_per_second": 90.0,
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / "config.yaml").write_text(
        yaml.safe_dump({"name": "bench", "task": "classification"})
    )
    (run_dir / "labels.json").write_text(json.dumps({"labels": list(NAMES)}))
    history = [
        {"epoch": e, "loss": 0.9 / e, "val_loss": 0.8 / e, "val_macro_f1": 0.6 + 0.05 * e}
        for e in (1, 2, 3)
    ]
    (run_dir / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    groups = ["embeddings", *[f"layer_{i}" for i in range(6)], "head"]
    with open(run_dir / "steps.jsonl", "w") as handle:
        for step in range(1, 3001):
            record = {"step": step, "epoch": (step - 1) // 1000 + 1, "loss": float(rng.random())}
            if step % 10 == 1:
                rate = 5e-5 * min(step / 300, (3000 - step) / 2700)
                record["lr"] = {g: rate * 0.8 ** (7 - i) for i, g in enumerate(groups)}
            handle.write(json.dumps(record) + "\n")
    return run_dir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--examples", type=int, default=10_000, help="test (and validation) examples"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = fake_run(Path(tmp), args.examples)
        print(f"synthetic run with {args.examples:,} test examples: {run_dir}", flush=True)
        start = time.perf_counter()
        from kerasft.report import write_report

        page = write_report(run_dir)
        first = time.perf_counter() - start
        figures = len(list((run_dir / "plots").glob("*.png")))
        print(
            f"report: {first:.2f}s ({figures} figures, {page.stat().st_size:,} bytes of HTML)",
            flush=True,
        )
        start = time.perf_counter()
        write_report(run_dir)
        again = time.perf_counter() - start
        print(f"rebuild: {again:.2f}s", flush=True)
    print(
        f"report_seconds={first:.2f} rebuild_seconds={again:.2f} examples={args.examples} figures={figures}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
