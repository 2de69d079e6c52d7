"""Each task's shipped config trained on the embedded MiniLM, next to published BERT-base.

    .venv/bin/python bench/tasks.py [--epochs N] [--max-train N] [--only mrpc,stsb,conll2003]

Runs `python -m kerasft.train` once per config (configs/mrpc.yaml, stsb.yaml,
conll2003.yaml), each in its own process, with the settings it ships (`--epochs` overrides
every config's), prints each run's header and per-epoch validation lines as they come, and
reads the test metrics from the run's metrics.json. Needs ../shared/data. Last line:
mrpc_acc=… mrpc_f1=… stsb_pearson=… conll_entity_f1=…
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from child import run_child

REPO = Path(__file__).resolve().parents[1]
REFERENCE = {
    "mrpc": "BERT-base 86-88 acc / 89-90 F1",
    "stsb": "BERT-base 88-89 Pearson",
    "conll2003": "BERT-base 91-92 entity F1",
}


def _progress_line(line: str) -> bool:
    """The run's header and its per-epoch validation lines."""
    return line.startswith("training ") or (line.startswith("epoch ") and " validation: " in line)


def train(config: str, overrides: list[str]) -> tuple[dict, float]:
    """Trains one config in its own process, printing its header and per-epoch validation lines
    as they come; returns its metrics.json and the seconds taken."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "kerasft.train", "--config", f"configs/{config}.yaml", *overrides]
    lines, code, stderr = run_child(cmd, config, show=_progress_line, cwd=REPO)
    run_dir = next((x.split("=", 1)[1] for x in lines if x.startswith("run_dir=")), None)
    if code != 0 or run_dir is None:
        sys.exit(f"error: {config} failed:\n{stderr[-3000:]}")
    return json.loads((REPO / run_dir / "metrics.json").read_text()), time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--epochs", type=int, default=None, help="epochs for every task (default: each config's)"
    )
    p.add_argument("--only", default="mrpc,stsb,conll2003", help="comma-separated configs")
    p.add_argument("--max-train", type=int, default=None, help="cap on training examples per task")
    args = p.parse_args()
    unknown = set(args.only.split(",")) - set(REFERENCE)
    if unknown:
        p.error(f"--only: unknown {', '.join(sorted(unknown))}; choose from {', '.join(REFERENCE)}")
    common = ["--set=export.enabled=false"]
    if args.epochs:
        common.append(f"--set=training.epochs={args.epochs}")
    if args.max_train:
        common.append(f"--set=data.max_train_examples={args.max_train}")
    results = {}
    for config in args.only.split(","):
        metrics, seconds = train(config, common)
        test = metrics["test"]
        results[config] = test
        shown = {k: round(v, 4) for k, v in test.items() if isinstance(v, float)}
        print(
            f"{config}: {shown} in {seconds:.0f}s ({metrics['train']['examples']} training examples, "
            f"{metrics['train']['examples_per_second']} ex/s); published: {REFERENCE[config]}",
            flush=True,
        )
    keys = {
        "mrpc": [("mrpc_acc", "accuracy"), ("mrpc_f1", "f1")],
        "stsb": [("stsb_pearson", "pearson")],
        "conll2003": [("conll_entity_f1", "f1")],
    }
    print(
        " ".join(
            f"{key}={results[config][name]:.4f}" for config in results for key, name in keys[config]
        )
    )


if __name__ == "__main__":
    main()
