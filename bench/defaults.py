"""Which of kerasft's defaults costs or buys accuracy: each in turn against the plain recipe.

    .venv/bin/python bench/defaults.py [--examples 4000] [--seeds 0,1,2,3,4] [--only NAME,...]
        [--precision auto] [--set KEY=VALUE ...] [--log runs.jsonl]

The setting of `bench/train_throughput.py`: the embedded MiniLM-L6, one epoch of the same
seeded draw of SST-2 training phrases at batch 32 and learning rate 1e-4, each run in its own
process, scored on GLUE SST-2 dev. `hf` is the plain Hugging Face recipe (constant Adam, BERT's
pooler, per-batch padding over shuffled batches); every other variant is kerasft with its
defaults and one of them set the way the recipe has it (`recipe` sets them all; the head
dropout is the recipe's already, 0.1, and `no_head_dropout` drops it), so the
difference from `kerasft` is what that one default is worth. `shuffled_batches` is the
recipe's padded batches; `sorted_batches` the length-sorted ones kerasft trained on before
packing (`data.packing`, the default since 2026-12-04), and `window_8` and `window_32` sort
within windows of 8 or 32 batches instead of the whole epoch. `--set` adds overrides to every kerasft variant (e.g. to try a candidate default
against the rest).

Prints each run as it ends, then mean ± sd of accuracy and the mean train examples/s per
variant. Last line: `<variant>_acc=…` for every variant (means), `kerasft_ex_per_s=…`,
`hf_ex_per_s=…`, `seeds=…`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from sst2 import require_sst2
from train_throughput import run_side

# Each variant: kerasft's defaults with the overrides that set one of them as the recipe has it.
VARIANTS: dict[str, list[str]] = {
    "kerasft": [],
    "constant_lr": ["training.schedule=constant", "training.warmup_ratio=0"],
    "no_warmup": ["training.warmup_ratio=0"],
    "pooler": ["model.pooling=pooler"],
    "no_head_dropout": ["model.dropout=0"],
    "no_weight_decay": ["training.weight_decay=0"],
    "dense_adamw": ["training.lazy_embedding_updates=false"],
    "shuffled_batches": ["data.packing=false", "data.bucketing=false"],
}
# The recipe has all of them but the head dropout: BERT's classifier drops 0.1 of the pooled
# vector, as kerasft's head does.
VARIANTS["recipe"] = list(
    dict.fromkeys(
        item for name, items in VARIANTS.items() if name != "no_head_dropout" for item in items
    )
)
# Candidates between sorted and shuffled batches: the epoch's shuffled examples sorted by length
# in windows of N batches only (more padding than one sort of the whole epoch, less than none).
VARIANTS["window_8"] = ["data.packing=false", "data.bucket_window=8"]
VARIANTS["window_32"] = ["data.packing=false", "data.bucket_window=32"]
# The default before packing: the whole epoch sorted by length, one length per batch.
VARIANTS["sorted_batches"] = ["data.packing=false"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=4000, help="training phrases (one epoch)")
    p.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds (default: 0-4)")
    p.add_argument(
        "--only",
        help=f"comma-separated variants (default: hf and all of {', '.join(VARIANTS)})",
    )
    p.add_argument("--precision", default="auto", help="kerasft's training.precision")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an override for every kerasft variant (repeatable)",
    )
    p.add_argument(
        "--log",
        type=Path,
        help="a JSON-lines file each finished run is appended to; runs already in it are read "
        "back instead of run again (so a stopped ablation continues)",
    )
    args = p.parse_args()
    require_sst2()
    names = ["hf", *VARIANTS]
    if args.only:
        names = [n.strip() for n in args.only.split(",")]
        unknown = [n for n in names if n != "hf" and n not in VARIANTS]
        if unknown:
            sys.exit(
                f"error: --only: unknown variant(s) {', '.join(unknown)}; known: hf, {', '.join(VARIANTS)}"
            )
    seeds = [int(x) for x in args.seeds.split(",")]
    done = {}
    if args.log is not None and args.log.is_file():
        for line in args.log.read_text().splitlines():
            r = json.loads(line)
            done[(r["seed"], r["examples"], r["precision"], tuple(r["overrides"]))] = r
    results: dict[str, list[dict]] = {name: [] for name in names}
    for seed in seeds:
        for name in names:
            side = "hf" if name == "hf" else "kerasft"
            overrides = ["hf"] if name == "hf" else [*args.overrides, *VARIANTS[name]]
            key = (seed, args.examples, args.precision, tuple(overrides))
            r = done.get(key)
            if r is None:
                kerasft_overrides = [] if name == "hf" else overrides
                r = run_side(side, args.examples, seed, args.precision, kerasft_overrides)
                if args.log is not None:
                    record = {**r, "seed": seed, "examples": args.examples}
                    record.update(precision=args.precision, overrides=overrides)
                    with args.log.open("a") as log:
                        log.write(json.dumps(record) + "\n")
            results[name].append(r)
            print(
                f"seed {seed} {name}: GLUE-dev accuracy {r['acc']:.4f}, "
                f"{r['ex_per_s']:.1f} train examples/s" + (" (from --log)" if key in done else ""),
                flush=True,
            )
    print(
        f"\n| variant | overrides | GLUE-dev accuracy (mean ± sd, {len(seeds)} seeds) | train examples/s |"
    )
    print("| --- | --- | --- | --- |")
    summary = []
    for name in names:
        accs = [r["acc"] for r in results[name]]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        speed = statistics.mean(r["ex_per_s"] for r in results[name])
        what = "Hugging Face recipe" if name == "hf" else " ".join(VARIANTS[name]) or "(defaults)"
        print(f"| {name} | {what} | {statistics.mean(accs):.4f} ± {sd:.4f} | {speed:.1f} |")
        summary.append(f"{name}_acc={statistics.mean(accs):.4f}")
    for name in ("kerasft", "hf"):
        if name in results:
            speed = statistics.mean(r["ex_per_s"] for r in results[name])
            summary.append(f"{name}_ex_per_s={speed:.1f}")
    print(" ".join([*summary, f"seeds={args.seeds}"]))


if __name__ == "__main__":
    main()
