"""Training throughput: the usual Hugging Face TF recipe against kerasft, same backbone, data and batch.

    .venv/bin/python bench/train_throughput.py [--examples 4000] [--seeds 0] [--precision auto|float32|...]
        [--set data.bucketing=false ...]

Each side runs in its own process on the same SST-2 training phrases (a seeded
draw from ../shared/data/sst2/train.tsv, identical for both sides), the embedded MiniLM-L6, batch 32, one epoch, and
is scored on GLUE SST-2 dev:
(a) Hugging Face: tokenizer → `model.prepare_tf_dataset` (padding per batch) →
    `compile(Adam)` → `fit`, on TFBertForSequenceClassification;
(b) kerasft with its defaults (`python -m kerasft.train` code path).
Both sides are seeded alike (Keras' global seed for Hugging Face, `training.seed` for
kerasft), so reruns repeat; `--seeds 0,1,2` runs each seed and reports the means, since
one-epoch accuracy moves by a point or two with the seed. Train examples/s counts the time in
training steps, tracing included, for both: the Hugging Face `fit` has no
validation, and kerasft's per-epoch validation and checkpoints are left out of its
figure and reported separately (`kerasft_wall_ex_per_s`). Both sides import TensorFlow
through `kerasft._compat`, so both run with its settings (tf_keras; oneDNN kernels on, which
TensorFlow leaves off on AVX2 CPUs: the recipe read 26.66 examples/s with and without them).
Last line: hf_ex_per_s=… kerasft_ex_per_s=… ratio=… hf_acc=… kerasft_acc=… hf_rss_mb=… kerasft_rss_mb=…
kerasft_wall_ex_per_s=… seeds=… (means over the seeds)
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

from child import run_child
from sst2 import SST2, require_sst2, sst2_data
from workdir import work_dir


def read(path: Path) -> tuple[list[str], list[int]]:
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()[1:]]
    return [r[0] for r in rows], [int(r[1]) for r in rows]


def subset(examples: int, seed: int) -> tuple[list[str], list[int]]:
    """The training phrases both sides train on: a seeded draw, the same for both."""
    import numpy as np

    texts, labels = read(SST2 / "train.tsv")
    pick = np.random.default_rng(seed).permutation(len(texts))[:examples]
    return [texts[i] for i in pick], [labels[i] for i in pick]


def run_hf(examples: int, seed: int, epochs: int = 1) -> dict:
    import datasets
    import numpy as np
    from safetensors.numpy import load_file
    from transformers import AutoConfig, AutoTokenizer, TFAutoModelForSequenceClassification
    from transformers.modeling_tf_pytorch_utils import load_pytorch_state_dict_in_tf2_model

    from kerasft._compat import keras, tf
    from kerasft.models import resolve_backbone

    keras.utils.set_random_seed(seed)
    directory = resolve_backbone("minilm-l6")
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    model = TFAutoModelForSequenceClassification.from_config(
        AutoConfig.from_pretrained(str(directory), num_labels=2)
    )
    model(model.dummy_inputs)
    load_pytorch_state_dict_in_tf2_model(
        model, load_file(str(directory / "model.safetensors")), allow_missing_keys=True
    )
    texts, labels = subset(examples, seed)
    train = datasets.Dataset.from_dict({"sentence": texts, "label": labels})
    train = train.map(
        lambda b: tokenizer(b["sentence"], truncation=True, max_length=128), batched=True
    )
    tf_train = model.prepare_tf_dataset(train, batch_size=32, shuffle=True, tokenizer=tokenizer)
    model.compile(optimizer=keras.optimizers.Adam(1e-4))
    start = time.perf_counter()
    model.fit(tf_train, epochs=epochs, verbose=0)
    seconds = time.perf_counter() - start
    dev_texts, dev_labels = read(SST2 / "glue_dev.tsv")
    correct = 0
    for i in range(0, len(dev_texts), 64):
        ids = tokenizer(
            dev_texts[i : i + 64],
            truncation=True,
            max_length=128,
            padding=True,
            return_tensors="tf",
        )
        correct += int(
            (tf.argmax(model(ids).logits, -1).numpy() == np.array(dev_labels[i : i + 64])).sum()
        )
    return {"ex_per_s": len(texts) * epochs / seconds, "acc": correct / len(dev_texts)}


def run_kerasft(
    examples: int, precision: str, seed: int, overrides: list[str], epochs: int = 1
) -> dict:
    from kerasft.config import config_from_dict
    from kerasft.training.runner import run

    work = work_dir("kerasft-throughput-")
    texts, labels = subset(examples, seed)
    train = work / "train.tsv"
    train.write_text(
        "sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in zip(texts, labels, strict=True)),
        encoding="utf-8",
    )
    cfg = config_from_dict(
        {
            "name": "throughput",
            "data": {**sst2_data(None, work / "cache"), "train": str(train)},
            "training": {
                "epochs": epochs,
                "batch_size": 32,
                "learning_rate": 1e-4,
                "precision": precision,
                "seed": seed,
                "output_dir": str(work / "runs"),
            },
            "export": {"enabled": False},
        },
        overrides=overrides,
    )
    result = run(cfg, verbose=0)
    return {
        "ex_per_s": result.metrics["train"]["examples_per_second"],
        "wall_ex_per_s": len(texts) * epochs / result.metrics["train"]["wall_seconds"],
        # GLUE dev: the validation split, or the test split when --set moves it there
        "acc": (result.metrics.get("test") or {}).get("accuracy")
        or result.metrics["validation"]["accuracy"],
    }


def run_side(
    side: str,
    examples: int,
    seed: int,
    precision: str = "auto",
    overrides: list[str] | None = None,
    epochs: int = 1,
    echo: bool = False,
) -> dict:
    """One side (`hf` or `kerasft`) run in a process of its own; what it measured.

    With `echo`, the side's own lines are printed as they come, prefixed with its name; the
    minutes elapsed are printed every five minutes either way (`child.run_child`).
    Exits with the side's last error output when it fails.
    """
    cmd = [sys.executable, str(Path(__file__).resolve()), "--side", side]
    cmd += ["--examples", str(examples), "--epochs", str(epochs), "--seeds", str(seed)]
    overrides = overrides or []
    cmd += ["--precision", precision, *(f"--set={item}" for item in overrides)]
    lines, _, stderr = run_child(
        cmd, side, show=lambda line: echo and not line.startswith("RESULT ")
    )
    line = next((x for x in lines if x.startswith("RESULT ")), None)
    if line is None:
        what = " ".join(overrides) or "defaults"
        sys.exit(f"error: the {side} run ({what}) failed:\n{stderr[-3000:]}")
    return json.loads(line[7:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=4000, help="training phrases (one epoch)")
    p.add_argument(
        "--precision",
        default="auto",
        help="kerasft's training.precision (default: auto, its default)",
    )
    p.add_argument(
        "--seeds", default="0", help="comma-separated seeds, each run on both sides (default: 0)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a kerasft config key, e.g. --set data.bucketing=false (repeatable)",
    )
    p.add_argument("--epochs", type=int, default=1, help="passes over the phrases (default: 1)")
    p.add_argument("--side", choices=["hf", "kerasft"], help=argparse.SUPPRESS)
    args = p.parse_args()
    require_sst2()
    seeds = [int(x) for x in args.seeds.split(",")]
    if args.side:
        out = (
            run_hf(args.examples, seeds[0], args.epochs)
            if args.side == "hf"
            else run_kerasft(args.examples, args.precision, seeds[0], args.overrides, args.epochs)
        )
        out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("RESULT " + json.dumps(out))
        return
    results = {"hf": [], "kerasft": []}
    for seed in seeds:
        for side in ("hf", "kerasft"):
            r = run_side(side, args.examples, seed, args.precision, args.overrides, args.epochs)
            results[side].append(r)
            print(
                f"seed {seed} {side}: {r['ex_per_s']:.1f} train examples/s, GLUE-dev accuracy "
                f"{r['acc']:.4f}, peak RSS {r['rss_mb']:.0f} MB",
                flush=True,
            )
    hf, kf = (
        {k: sum(r[k] for r in results[side]) / len(seeds) for k in results[side][0]}
        for side in ("hf", "kerasft")
    )
    print(
        f"hf_ex_per_s={hf['ex_per_s']:.1f} kerasft_ex_per_s={kf['ex_per_s']:.1f} ratio={kf['ex_per_s'] / hf['ex_per_s']:.2f} "
        f"hf_acc={hf['acc']:.4f} kerasft_acc={kf['acc']:.4f} hf_rss_mb={hf['rss_mb']:.0f} kerasft_rss_mb={kf['rss_mb']:.0f} "
        f"kerasft_wall_ex_per_s={kf['wall_ex_per_s']:.1f} seeds={args.seeds}"
    )


if __name__ == "__main__":
    main()
