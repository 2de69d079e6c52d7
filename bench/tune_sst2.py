"""Hyperparameter search on an SST-2 subset: keras-tuner's Bayesian search against Optuna TPE with pruning.

    .venv/bin/python bench/tune_sst2.py                                  # keras-tuner only
    .venv/bin/python bench/tune_sst2.py --engine optuna --pruner median  # both, compared
    .venv/bin/python bench/tune_sst2.py --engine optuna --workers 2      # and two workers, one study

Each trial trains the embedded MiniLM on `--train` SST-2 phrases (`--epochs`, 3) and is scored
on the GLUE SST-2 dev set (872 sentences), through `python -m kerasft.tune`'s code path,
over the same space: learning rate, warmup and layer-wise decay. With `--engine optuna`,
keras-tuner's Bayesian search runs first, then Optuna's TPE with the pruner (reports every
third of an epoch), at the same trial budget and seed, one after the other on this machine.
`--workers N` also runs the Optuna search as N `python -m kerasft.tune` processes on one
SQLite study and counts trials that ran twice. Needs ../shared/data. Last line:
`best_acc=… worst_acc=… s_per_trial=…` (keras-tuner only), or
`kt_best=… optuna_best=… kt_seconds=… optuna_seconds=… pruned=…` (with `--engine optuna`;
`--workers` adds `workers=… workers_best=… workers_seconds=… ran_twice=…`).
"""

from __future__ import annotations

import argparse
import csv
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml
from sst2 import require_sst2, sst2_data
from workdir import add_keep, work_dir

from kerasft.training.search import tune

REPO = Path(__file__).resolve().parents[1]
SPACE = {
    "training.learning_rate": {"type": "float", "min": 1e-5, "max": 3e-4, "sampling": "log"},
    "training.warmup_ratio": {"type": "float", "min": 0.0, "max": 0.3},
    "training.layerwise_lr_decay": {"type": "float", "min": 0.6, "max": 1.0},
}


def config(work: Path, name: str, args: argparse.Namespace, tuning: dict) -> Path:
    cfg = {
        "name": name,
        "data": sst2_data(args.train, work / "cache", max_length=64),
        "training": {"epochs": args.epochs, "batch_size": 32, "output_dir": str(work / "runs")},
        "export": {"enabled": False},
        "tuning": {"objective": "val_accuracy", "space": SPACE, **tuning},
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def results(directory: Path) -> list[dict]:
    with (directory / "trials.csv").open() as handle:
        return list(csv.DictReader(handle))


def search(path: Path, directory: Path) -> tuple[list[dict], float]:
    start = time.perf_counter()
    tune(str(path), [], verbose=0)
    seconds = time.perf_counter() - start
    rows = results(directory)
    for row in rows:
        print(f"  trial {row['trial_id']}: {row['state']:9s} val_accuracy {row['val_accuracy']}")
    return rows, seconds


def best(rows: list[dict]) -> float:
    return max(float(r["val_accuracy"]) for r in rows if r["state"].startswith("complete"))


def workers(path: Path, n: int) -> tuple[str, float]:
    """Runs `n` `kerasft.tune` processes on the config's study; their output and wall time."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "kerasft.tune", "--config", str(path)]
    procs = [
        subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(n)
    ]
    outputs = [p.communicate()[0] for p in procs]
    for i, (proc, out) in enumerate(zip(procs, outputs, strict=True)):
        if proc.returncode:
            sys.exit(f"worker {i} failed:\n{out[-3000:]}")
        started = re.findall(r"^=== trial (\d+)(?: \(again[^)]*\))?: (?!.* = )", out, re.M)
        print(f"  worker {i}: trials {', '.join(started)}")
    return "".join(outputs), time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engine", choices=["keras_tuner", "optuna"], default="keras_tuner")
    p.add_argument("--pruner", choices=["median", "hyperband", "none"], default="median")
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--train", type=int, default=2000, help="training phrases per trial")
    p.add_argument(
        "--epochs", type=int, default=3, help="epochs per trial (pruning needs a few to save time)"
    )
    p.add_argument("--workers", type=int, default=0, help="also run the Optuna search on N workers")
    add_keep(p)
    args = p.parse_args()
    require_sst2()
    work = work_dir("kerasft-tune-sst2-", args.keep)
    steps = -(-args.train // 32)
    print(
        f"work directory {work}; {args.trials} trials of {args.epochs} epoch(s) over {args.train} "
        f"phrases ({steps} steps each)"
    )

    print("keras-tuner, Bayesian:", flush=True)
    kt_dir = work / "kt"
    kt_cfg = {"oracle": "bayesian", "max_trials": args.trials, "directory": str(kt_dir)}
    kt_rows, kt_seconds = search(config(work, "kt", args, kt_cfg), kt_dir)
    print(f"keras-tuner: best {best(kt_rows):.4f} in {kt_seconds:.0f}s", flush=True)
    if args.engine == "keras_tuner":
        accs = [float(r["val_accuracy"]) for r in kt_rows]
        print(
            f"best_acc={max(accs):.4f} worst_acc={min(accs):.4f} "
            f"s_per_trial={kt_seconds / len(kt_rows):.1f}"
        )
        return

    optuna_cfg = {
        "engine": "optuna",
        "sampler": "tpe",
        "pruner": args.pruner,
        "report_every_steps": max(1, steps // 3),
        "max_trials": args.trials,
    }
    print(f"Optuna, TPE, pruner {args.pruner}:", flush=True)
    op_dir = work / "optuna"
    op_rows, op_seconds = search(
        config(work, "optuna", args, {**optuna_cfg, "directory": str(op_dir)}), op_dir
    )
    pruned = sum(r["state"] == "pruned" for r in op_rows)
    print(
        f"Optuna: best {best(op_rows):.4f} in {op_seconds:.0f}s ({op_seconds / kt_seconds:.0%} of "
        f"keras-tuner's time), {pruned} of {len(op_rows)} trials pruned",
        flush=True,
    )
    line = (
        f"kt_best={best(kt_rows):.4f} optuna_best={best(op_rows):.4f} kt_seconds={kt_seconds:.0f} "
        f"optuna_seconds={op_seconds:.0f} pruned={pruned}"
    )
    if args.workers:
        print(f"Optuna on {args.workers} workers, one SQLite study:", flush=True)
        w_dir = work / "workers"
        w_dir.mkdir()
        shared = {
            **optuna_cfg,
            "directory": str(w_dir),
            "storage": f"sqlite:///{w_dir / 'study.db'}",
        }
        out, w_seconds = workers(config(work, "workers", args, shared), args.workers)
        started = re.findall(r"^=== trial (\d+)(?: \(again[^)]*\))?: (?!.* = )", out, re.M)
        twice = len(started) - len(set(started))
        w_rows = results(w_dir)
        print(f"workers: best {best(w_rows):.4f} in {w_seconds:.0f}s, {twice} trials ran twice")
        line += (
            f" workers={args.workers} workers_best={best(w_rows):.4f} "
            f"workers_seconds={w_seconds:.0f} ran_twice={twice}"
        )
    print(line)


if __name__ == "__main__":
    main()
