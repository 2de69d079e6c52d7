"""Few labels on SST-2: standard fine-tuning against `training.method: contrastive` (SetFit).

    .venv/bin/python bench/few_shot.py [--sizes 8,16,64] [--seeds 0,1,2,3,4] [--methods base,contrastive]
        [--set KEY=VALUE ...] [--heldout] [--no-label-rows] [--dropout]

For each size N and seed, draws N labelled phrases per class from the SST-2
training file and a disjoint N-per-class validation set (seeded; phrases of at
least 5 words, so a "labelled example" is a sentence-like text, not a fragment
such as "kids , spirit"), and fine-tunes the embedded MiniLM-L6 two ways:

- base: standard fine-tuning with the best few-label settings found here
  (BASE below: 20 epochs, batch 8, learning rate 1e-4, no warmup, early stopping
  after 5 epochs without validation gain, best epoch kept);
- contrastive: `training.method: contrastive` at its defaults (SetFit's: 20
  rounds of pairs, batch 16, learning rate 2e-5, 10% warmup, one epoch,
  logistic-regression head).

Both methods train the backbone without dropout (`model.hidden_dropout` and
`model.attention_dropout` 0, NO_DROPOUT below): on held-out phrases that did better for
each (bench/README.md); `--dropout` keeps the backbone's own 0.1.

Both methods also get SetFit's templated examples, one row per label from its name
(`data.augment.label_template: this sentence is {label}`, labels 0 and 1 named
negative and positive): with them, on held-out phrases, both did better than without
(bench/README.md). `--no-label-rows` leaves them out: N real phrases per class only.

Accuracy is on the 872 GLUE SST-2 dev sentences. Prints each run, then mean ± sd
per method and size; the last line is
base_8=… contrastive_8=… base_16=… contrastive_16=… base_64=… contrastive_64=… contrastive_8_seconds=…
(mean accuracies; contrastive_8_seconds is the mean wall-clock of a contrastive
run at N=8: data, both phases, evaluation). `--set` overrides a config key in every run (with
`--methods` to try a setting on one method). `--heldout` scores on 1,000 training phrases set
aside before sampling instead of GLUE dev: for choosing settings without looking at the
figures reported (use other seeds than the reported ones too; SST-2's training phrases
are parts of longer ones, so a held-out phrase may overlap a sampled one; that touches
every setting alike). Needs ../shared/data.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sst2 import SST2, require_sst2  # noqa: E402
from workdir import add_keep, work_dir  # noqa: E402

from kerasft.config import config_from_dict  # noqa: E402
from kerasft.config.loading import add_override_argument  # noqa: E402
from kerasft.training.runner import run as train  # noqa: E402

METHODS = ("base", "contrastive")
BASE = {"epochs": 20, "batch_size": 8, "learning_rate": 1e-4, "patience": 5, "warmup_ratio": 0.0}
NO_DROPOUT = {"hidden_dropout": 0.0, "attention_dropout": 0.0}
MIN_WORDS = 5
HELDOUT = 1000
LABEL_ROWS = {
    "label_template": "this sentence is {label}",
    "label_names": {0: "negative", 1: "positive"},
}


@functools.cache
def phrases(work: Path, heldout: bool) -> pd.DataFrame:
    """The training phrases of at least MIN_WORDS words to sample from; with `heldout`, less
    HELDOUT of them (a fixed draw), written to `work/heldout.tsv` as the test set. Read once
    per process (callers only read the frame)."""
    frame = pd.read_csv(SST2 / "train.tsv", sep="\t", quoting=3, keep_default_na=False)
    frame = frame[frame["sentence"].str.split().str.len() >= MIN_WORDS]
    if not heldout:
        return frame
    aside = frame.sample(HELDOUT, random_state=12345)
    aside.to_csv(work / "heldout.tsv", sep="\t", index=False)
    return frame.drop(aside.index)


def sample(size: int, seed: int, work: Path, heldout: bool = False) -> tuple[Path, Path]:
    """N labelled phrases per class and a disjoint N-per-class validation set, as TSV files."""
    frame = phrases(work, heldout)
    rng = np.random.default_rng(seed)
    train, validation = [], []
    for _, group in frame.groupby("label"):
        chosen = group.iloc[rng.choice(len(group), 2 * size, replace=False)]
        train.append(chosen.iloc[:size])
        validation.append(chosen.iloc[size:])
    paths = work / f"train-{size}-{seed}.tsv", work / f"validation-{size}-{seed}.tsv"
    for part, path in zip((train, validation), paths, strict=True):
        pd.concat(part).to_csv(path, sep="\t", index=False)
    return paths


def fine_tune(
    work: Path,
    size: int,
    seed: int,
    method: str,
    overrides: tuple[str, ...] | list[str] = (),
    *,
    heldout: bool = False,
    label_rows: bool = True,
    dropout_off: bool = True,
) -> tuple[float, float]:
    """Test accuracy (GLUE dev, or the held-out phrases) and wall-clock seconds of one run."""
    t0 = time.perf_counter()
    train_file, validation_file = sample(size, seed, work, heldout)
    training = {"seed": seed, "monitor": "val_accuracy", "output_dir": str(work / "runs")}
    if method == "base":
        training |= BASE
    else:
        training["method"] = "contrastive"
    raw = {
        "name": f"{method}-{size}-{seed}",
        "data": {
            "train": str(train_file),
            "validation": str(validation_file),
            "test": str(work / "heldout.tsv" if heldout else SST2 / "glue_dev.tsv"),
            "text_column": "sentence",
            "quoting": "none",
            "max_length": 64,
            **({"augment": LABEL_ROWS} if label_rows else {}),
        },
        "model": {"backbone": "minilm-l6", **(NO_DROPOUT if dropout_off else {})},
        "training": training,
        "export": {"enabled": False},
        "evaluation": {"report": False},
    }
    result = train(config_from_dict(raw, "bench/few_shot.py", overrides), verbose=0)
    return float(result.metrics["test"]["accuracy"]), time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="8,16,64", help="labelled phrases per class, comma-separated")
    p.add_argument("--seeds", default="0,1,2,3,4", help="seeds (sample, order, head)")
    p.add_argument("--methods", default=",".join(METHODS), help="methods to run, comma-separated")
    add_override_argument(p, "training.precision=float32", "override a config key in every run")
    p.add_argument(
        "--heldout",
        action="store_true",
        help=f"score on {HELDOUT} training phrases set aside, not GLUE dev (for choosing settings)",
    )
    p.add_argument(
        "--dropout",
        dest="dropout_off",
        action="store_false",
        help="keep the backbone's dropout (0.1) instead of none in both methods",
    )
    p.add_argument(
        "--no-label-rows",
        dest="label_rows",
        action="store_false",
        help="no rows made from the label names (data.augment.label_template): real phrases only",
    )
    add_keep(p)
    args = p.parse_args()
    require_sst2()
    methods = [m for m in METHODS if m in args.methods.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    work = work_dir("kerasft-few-shot-", args.keep)
    scored = "heldout" if args.heldout else "glue_dev"
    scores: dict[str, list[float]] = {}
    seconds: dict[str, list[float]] = {}
    for size in sizes:
        for seed in seeds:
            for method in methods:
                acc, wall = fine_tune(
                    work,
                    size,
                    seed,
                    method,
                    args.overrides,
                    heldout=args.heldout,
                    label_rows=args.label_rows,
                    dropout_off=args.dropout_off,
                )
                scores.setdefault(f"{method}_{size}", []).append(acc)
                seconds.setdefault(f"{method}_{size}", []).append(wall)
                print(
                    f"RESULT {method} per_class={size} seed={seed} {scored}_acc={acc:.4f} "
                    f"seconds={wall:.0f}",
                    flush=True,
                )
        for method in methods:
            key = f"{method}_{size}"
            values = scores[key]
            sd = np.std(values, ddof=1) if len(values) > 1 else 0.0
            print(
                f"{method} at {size} per class: {np.mean(values):.4f} ± {sd:.4f} over seeds {seeds} "
                f"({' '.join(f'{v:.4f}' for v in values)}); {np.mean(seconds[key]):.0f}s a run",
                flush=True,
            )
    summary = [f"{key}={np.mean(values):.4f}" for key, values in scores.items()]
    if "contrastive_8" in seconds:
        summary.append(f"contrastive_8_seconds={np.mean(seconds['contrastive_8']):.0f}")
    print(" ".join(summary))


if __name__ == "__main__":
    main()
