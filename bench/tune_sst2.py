"""An 8-trial Bayesian search over learning rate, warmup and layer-wise decay on an SST-2 subset.

    .venv/bin/python bench/tune_sst2.py [--trials 8] [--train 2000]

Trains the embedded MiniLM on `--train` SST-2 phrases per trial (one epoch) and
scores each trial on the GLUE SST-2 dev set (872 sentences), through
`python -m kerasft.tune`'s code path. Needs ../shared/data. Last line:
best_acc=… worst_acc=… s_per_trial=…
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import yaml
from sst2 import require_sst2, sst2_data

from kerasft.training.search import tune


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--train", type=int, default=2000, help="training phrases per trial")
    args = p.parse_args()
    require_sst2()
    work = Path(tempfile.mkdtemp(prefix="kerasft-tune-sst2-"))
    config = {
        "name": "tune_sst2",
        "data": sst2_data(args.train, work / "cache", max_length=64),
        "training": {"epochs": 1, "batch_size": 32, "output_dir": str(work / "runs")},
        "export": {"enabled": False},
        "tuning": {
            "oracle": "bayesian",
            "max_trials": args.trials,
            "objective": "val_accuracy",
            "directory": str(work / "search"),
            "space": {
                "training.learning_rate": {
                    "type": "float",
                    "min": 1e-5,
                    "max": 3e-4,
                    "sampling": "log",
                },
                "training.warmup_ratio": {"type": "float", "min": 0.0, "max": 0.3},
                "training.layerwise_lr_decay": {"type": "float", "min": 0.6, "max": 1.0},
            },
        },
    }
    path = work / "tune_sst2.yaml"
    path.write_text(yaml.safe_dump(config))
    start = time.perf_counter()
    best = tune(str(path), [], verbose=0)
    seconds = time.perf_counter() - start
    with (work / "search" / "trials.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    accs = [float(r["val_accuracy"]) for r in rows]
    print(f"trials: {len(rows)}, state and results in {work / 'search'}, best config {best}")
    print(
        f"best_acc={max(accs):.4f} worst_acc={min(accs):.4f} s_per_trial={seconds / len(rows):.1f}"
    )


if __name__ == "__main__":
    main()
