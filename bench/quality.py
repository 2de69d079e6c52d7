"""Full-data quality: the whole SST-2 training set, kerasft's defaults against the plain recipe.

    .venv/bin/python bench/quality.py [--epochs 2] [--examples 60614] [--seed 0]

The sides of `bench/train_throughput.py` at full size: all 60,614 SST-2 training phrases,
`--epochs` passes at batch 32 and learning rate 1e-4 on the embedded MiniLM-L6, each side in
its own process, both scored on GLUE SST-2 dev (872 sentences). The Hugging Face recipe takes
its last epoch; kerasft keeps its best epoch by its default monitor on SST-2's own `dev.tsv`
(6,735 phrases held out from training), never on GLUE dev, which is its test split here.
Prints each side's progress as it runs (kerasft's own lines; the minutes elapsed every five),
then accuracy, wall time (the whole process: tokenization, tracing, training, evaluation)
and train examples/s of each. Last line:
kerasft_acc=… hf_acc=… kerasft_seconds=… hf_seconds=… kerasft_ex_per_s=… hf_ex_per_s=…
"""

from __future__ import annotations

import argparse
import time

from sst2 import SST2, require_sst2
from train_throughput import run_side


def side(name: str, args: argparse.Namespace) -> tuple[dict, float]:
    overrides = []
    if name == "kerasft":  # picks its epoch on SST-2's dev.tsv; GLUE dev is only its test split
        overrides = [f"data.validation={SST2 / 'dev.tsv'}", f"data.test={SST2 / 'glue_dev.tsv'}"]
    start = time.perf_counter()
    r = run_side(name, args.examples, args.seed, overrides=overrides, epochs=args.epochs, echo=True)
    seconds = time.perf_counter() - start
    print(
        f"{name}: GLUE-dev accuracy {r['acc']:.4f}, {seconds:.0f}s in all, "
        f"{r['ex_per_s']:.1f} train examples/s, peak RSS {r['rss_mb']:.0f} MB",
        flush=True,
    )
    return r, seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=2, help="passes over the training set (default 2)")
    p.add_argument(
        "--examples", type=int, default=60614, help="training phrases (default: all 60,614)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of both sides (default 0)")
    args = p.parse_args()
    require_sst2()
    kf, kf_seconds = side("kerasft", args)
    hf, hf_seconds = side("hf", args)
    print(
        f"kerasft_acc={kf['acc']:.4f} hf_acc={hf['acc']:.4f} kerasft_seconds={kf_seconds:.0f} "
        f"hf_seconds={hf_seconds:.0f} kerasft_ex_per_s={kf['ex_per_s']:.1f} "
        f"hf_ex_per_s={hf['ex_per_s']:.1f} speedup={hf_seconds / kf_seconds:.2f}"
    )


if __name__ == "__main__":
    main()
