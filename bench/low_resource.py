"""Few labels on SST-2: the baseline, EDA, domain-adaptive pretraining (DAPT), both, and self-training.

    .venv/bin/python bench/low_resource.py [--sizes 200,1000] [--seeds 0,1,2] [--dapt-steps 600] [--dapt DIR]
        [--methods base,eda,dapt,both,self] [--unlabeled 4000]

Pretrains the embedded MiniLM-L6 with `kerasft.pretrain` on the unlabelled text
of the SST-2 training file (`--dapt-steps` steps of 32 phrases; or takes a
finished `--dapt` directory), then fine-tunes on 200 and on 1,000 labelled
phrases (a seeded, stratified sample per seed) four ways: the embedded MiniLM
(base), with EDA copies (eda: synonyms, insertion, swap, deletion at 0.1; 4
copies per phrase at 200 labels, 2 at 1,000), from the DAPT directory (dapt),
and both; and self-training (self): the base run labels `--unlabeled` phrases of
the training file (without their labels), and `kerasft.distill` trains a fresh
MiniLM-L6 on those and the labelled phrases (3 epochs). Validation is 240 phrases
held out of the training file (early stopping); accuracy is on the 872 GLUE dev
sentences. Needs ../shared/data. `--methods` picks some (self needs base); DAPT is
pretrained only for dapt or both. Last line, for the methods run:
base_200=… eda_200=… dapt_200=… both_200=… self_200=… base_1000=… …
(mean GLUE-dev accuracy over the seeds).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sst2 import SST2, require_sst2  # noqa: E402
from workdir import add_keep, work_dir  # noqa: E402

from kerasft.config import PretrainRun, config_from_dict  # noqa: E402
from kerasft.pretrain import run as pretrain  # noqa: E402
from kerasft.training.runner import run as train  # noqa: E402

METHODS = ("base", "eda", "dapt", "both", "self")
EDA = {"synonym": 0.1, "insertion": 0.1, "swap": 0.1, "deletion": 0.1}


def dapt(work: Path, steps: int) -> Path:
    raw = {
        "name": "sst2-dapt",
        "model": {"backbone": "minilm-l6"},
        "pretrain": {
            "files": [str(SST2 / "train.tsv")],
            "text_column": "sentence",
            "max_length": 64,
            "batch_size": 32,
            "learning_rate": 1e-4,
            "max_steps": steps,
            "log_every_steps": 50,
            "output_dir": str(work / "dapt"),
        },
    }
    t0 = time.perf_counter()
    result = pretrain(config_from_dict(raw, "bench/low_resource.py", root=PretrainRun))
    before, after = result.validation_loss
    print(
        f"dapt: {steps} steps in {time.perf_counter() - t0:.0f}s, held-out masked-token loss "
        f"{before:.3f} -> {after:.3f}",
        flush=True,
    )
    return result.output_dir


def fine_tune(
    work: Path,
    size: int,
    seed: int,
    method: str,
    dapt_dir: Path | None,
    base_run: Path | None,
    unlabeled: int,
) -> tuple[float, Path]:
    """GLUE-dev accuracy and the run directory of one method at one size and seed."""
    data = {
        "train": str(SST2 / "train.tsv"),
        "test": str(SST2 / "glue_dev.tsv"),
        "validation_split": 0.004,  # 240 phrases, the same whatever the sample
        "text_column": "sentence",
        "quoting": "none",
        "max_train_examples": size,
        "max_length": 64,
        "cache_dir": str(work / "cache"),
    }
    if method in ("eda", "both"):
        data["augment"] = {**EDA, "copies": 4 if size <= 500 else 2, "protected": ["not", "no"]}
    raw = {
        "name": f"{method}-{size}-{seed}",
        "data": data,
        "model": {"backbone": str(dapt_dir) if method in ("dapt", "both") else "minilm-l6"},
        "training": {
            "epochs": 10 if size <= 500 else 4,
            "batch_size": 16,
            "learning_rate": 1e-4,
            "warmup_ratio": 0.1,
            "patience": 3,
            "monitor": "val_accuracy",
            "seed": seed,
            "output_dir": str(work / "runs"),
        },
        "export": {"enabled": False},
        "evaluation": {"report": False},
    }
    if method == "self":  # the base run teaches a fresh MiniLM on its labels of unlabelled text
        raw["training"]["epochs"] = 3
        raw["distill"] = {
            "teacher": str(base_run),
            "unlabeled": str(SST2 / "train.tsv"),
            "unlabeled_text_column": "sentence",
            "max_unlabeled": unlabeled,
        }
    result = train(config_from_dict(raw, "bench/low_resource.py"), verbose=0)
    return float(result.metrics["test"]["accuracy"]), result.run_dir


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="200,1000", help="labelled training phrases, comma-separated")
    p.add_argument("--seeds", default="0,1,2", help="seeds (sample, order, head), comma-separated")
    p.add_argument("--dapt-steps", type=int, default=600, help="pretraining steps of 32 phrases")
    p.add_argument("--dapt", default=None, help="a finished kerasft.pretrain directory to reuse")
    p.add_argument("--methods", default=",".join(METHODS), help="methods to run, comma-separated")
    p.add_argument(
        "--unlabeled", type=int, default=4000, help="unlabelled phrases for self-training"
    )
    add_keep(p)
    args = p.parse_args()
    methods = [m for m in METHODS if m in args.methods.split(",")]
    if "self" in methods and "base" not in methods:
        sys.exit("error: --methods self needs base (the base run is the teacher)")
    require_sst2()
    sizes = [int(s) for s in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    work = work_dir("kerasft-low-resource-", args.keep)
    dapt_dir = Path(args.dapt) if args.dapt else None
    if dapt_dir is None and {"dapt", "both"} & set(methods):
        dapt_dir = dapt(work, args.dapt_steps)
    scores: dict[str, list[float]] = {}
    for size in sizes:
        for seed in seeds:
            base_run = None
            for method in methods:
                t0 = time.perf_counter()
                acc, run_dir = fine_tune(
                    work, size, seed, method, dapt_dir, base_run, args.unlabeled
                )
                base_run = run_dir if method == "base" else base_run
                scores.setdefault(f"{method}_{size}", []).append(acc)
                print(
                    f"RESULT {method} labels={size} seed={seed} glue_dev_acc={acc:.4f} "
                    f"({time.perf_counter() - t0:.0f}s)",
                    flush=True,
                )
        for method in methods:
            values = scores[f"{method}_{size}"]
            print(
                f"{method} at {size} labels: mean {np.mean(values):.4f}, sd {np.std(values, ddof=1) if len(values) > 1 else 0:.4f} "
                f"over seeds {seeds}: {' '.join(f'{v:.4f}' for v in values)}",
                flush=True,
            )
    print(" ".join(f"{key}={np.mean(values):.4f}" for key, values in scores.items()))


if __name__ == "__main__":
    main()
