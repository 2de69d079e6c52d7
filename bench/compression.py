"""Smaller and faster SST-2 models: a distilled 3-layer student, ONNX fp32 and int8, length-sorted prediction.

    .venv/bin/python bench/compression.py [--train 8000] [--teacher RUN_DIR] [--unlabeled N] [--transfer-copies N] [--repeats 5]
        [--bf16] [--set KEY=VALUE ...]

Fine-tunes the embedded MiniLM-L6 on `--train` SST-2 phrases (configs/sst2.yaml;
or takes a finished `--teacher` run), distils it into a 3-layer student cut from
it (configs/distill_sst2.yaml, the teacher's outputs on the same phrases and on
kerasft's default transfer set, 4 augmented copies of each (`--transfer-copies`) and
one join of two or three phrases per phrase (`--set distill.transfer_joins=N`), or
with `--unlabeled N` on N more phrases whose labels it never sees instead), and
exports both, the teacher with its ONNX models. On the 872 GLUE SST-2 dev
sentences it reports accuracy and batch-64 examples/s of the teacher SavedModel,
the student SavedModel, and the teacher in ONNX fp32 and int8 — all fed the same
token-id batches in file order, so tokenization is left out, and timed in turns
(`--repeats` rounds, a pass of each model per round, the best round each) — the accuracy of
the teacher's full-integer TFLite model (fed one sentence at a time), and the time of
`python -m kerasft.predict` over the dev file (repeated 8 times) with and
without length-sorted windows. Needs ../shared/data and the onnx extra. Last line:
teacher_acc=… student_acc=… student_speedup=… onnx_speedup=… onnx_int8_speedup=… onnx_int8_acc=…
tflite_int8_acc=… sorted_predict_speedup=… and, where the CPU has native bfloat16 (or with
`--bf16`), bf16_speedup=… bf16_acc=…: the teacher exported with `export.precision: bfloat16`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from workdir import add_keep, work_dir

from kerasft._compat import tf
from kerasft.config import load_config
from kerasft.config.loading import add_override_argument
from kerasft.predict import predict_file
from kerasft.serving import onnx as onnx_lib
from kerasft.training.exports import reexport
from kerasft.training.hardware import NATIVE_BF16, cpu_flags
from kerasft.training.runner import run

REPO = Path(__file__).resolve().parents[1]
DEV = REPO.parent / "shared" / "data" / "sst2" / "glue_dev.tsv"


# The teacher again, in bfloat16: only the SavedModel (ONNX and TFLite convert float32 models).
BF16 = [
    "export.precision=bfloat16",
    "export.onnx=false",
    "export.tflite=false",
    "export.tflite_int8=false",
]
FUSED = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "EmbedLayerNormalization")


def fused_ops(path: Path) -> str:
    """How many of onnxruntime's fused transformer kernels the ONNX graph holds, by op type."""
    import collections

    import onnx

    ops = collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)
    gelu = [k for k in ops if "Gelu" in k]
    return ", ".join(f"{k} x{ops[k]}" for k in (*FUSED, *gelu) if ops[k]) or "none"


def dev_set() -> tuple[list[str], np.ndarray]:
    rows = [line.split("\t") for line in DEV.read_text(encoding="utf-8").splitlines()[1:]]
    return [r[0] for r in rows], np.array([int(r[1]) for r in rows])


def id_batches(export_dir: Path, texts: list[str], max_length: int = 64) -> list[dict]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(export_dir / "assets"))
    batches = []
    for start in range(0, len(texts), 64):
        enc = tokenizer(
            texts[start : start + 64],
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="np",
        )
        batches.append({k: v.astype(np.int32) for k, v in enc.items()})
    return batches


def speeds(predictors: dict, batches: list[dict], labels: np.ndarray, repeats: int) -> dict:
    """Accuracy and examples/s of each `predict` (ids → probabilities) over the batches.

    The timed passes take turns, one pass of each model per round, and the best round counts
    for each: this machine's speed drifts by 10-20% over minutes, and taking turns puts the
    same drift under every model's figure.
    """
    accuracy = {}
    for name, predict in predictors.items():
        probabilities = np.concatenate([predict(b) for b in batches])  # also warms up
        accuracy[name] = float((probabilities.argmax(-1) == labels).mean())
    best = dict.fromkeys(predictors, 0.0)
    for round_ in range(1, repeats + 1):
        shown = []
        for name, predict in predictors.items():
            start = time.perf_counter()
            for b in batches:
                predict(b)
            rate = len(labels) / (time.perf_counter() - start)
            best[name] = max(best[name], rate)
            shown.append(f"{name} {rate:.1f}")
        print(f"round {round_}/{repeats}, examples/s at batch 64: {', '.join(shown)}", flush=True)
    for name in predictors:
        print(
            f"{name}: GLUE-dev accuracy {accuracy[name]:.4f}, {best[name]:.1f} examples/s at batch 64",
            flush=True,
        )
    return {name: (accuracy[name], best[name]) for name in predictors}


def savedmodel_predictor(export_dir: Path):
    import tensorflow_text  # noqa: F401 - the raw-text signature's ops, needed to load any export

    serve = tf.saved_model.load(str(export_dir)).signatures["predict_ids"]
    return lambda b: serve(**{k: tf.constant(v) for k, v in b.items()})["probabilities"].numpy()


def onnx_predictor(path: Path):
    runner = onnx_lib.runner(path)
    return lambda b: runner(b)["probabilities"]


def tflite_accuracy(path: Path, batches: list[dict], labels: np.ndarray) -> tuple[float, float]:
    """Accuracy and examples/s of a TFLite model fed one sentence at a time (no padding)."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    predicted, seconds = [], 0.0
    for batch in batches:
        for row in range(len(batch["input_ids"])):
            length = int(batch["attention_mask"][row].sum())
            single = {k: v[row : row + 1, :length] for k, v in batch.items()}
            start = time.perf_counter()
            predicted.append(int(runner(**single)["output"][0].argmax()))
            seconds += time.perf_counter() - start
    accuracy = float((np.array(predicted) == labels).mean())
    print(
        f"tflite_int8: GLUE-dev accuracy {accuracy:.4f}, {len(labels) / seconds:.1f} examples/s one at a time"
    )
    return accuracy, len(labels) / seconds


def predict_seconds(model: Path, source: Path, window: int, out: Path) -> float:
    start = time.perf_counter()
    predict_file(model, source, out, text_column="sentence", batch_size=64, sort_window=window)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=8000, help="SST-2 training phrases for both models")
    p.add_argument("--teacher", default=None, help="a finished SST-2 run to use as the teacher")
    p.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="rounds of timed passes over GLUE dev, each model in turn (its best counts)",
    )
    p.add_argument(
        "--unlabeled",
        type=int,
        default=0,
        help="also distil on this many SST-2 training phrases without their labels (default 0)",
    )
    p.add_argument(
        "--transfer-copies",
        type=int,
        default=None,
        help="distill.transfer_copies: augmented copies of each training phrase the teacher "
        "labels (default: kerasft's, 4 without --unlabeled)",
    )
    p.add_argument(
        "--bf16",
        action="store_true",
        help="also time a bfloat16 export of the teacher where the CPU has no native bfloat16 "
        "(it is timed anyway where it has)",
    )
    add_override_argument(p, "distill.alpha=0.7", "override a student config key")
    add_keep(p)
    args = p.parse_args()
    if not DEV.is_file():
        sys.exit(f"error: {DEV} is absent; this benchmark needs ../shared/data")
    onnx_lib.require()
    work = work_dir("kerasft-compression-", args.keep)
    common = [
        f"data.max_train_examples={args.train}",
        f"data.train={DEV.parent / 'train.tsv'}",
        f"data.validation={DEV.parent / 'dev.tsv'}",
        f"data.test={DEV}",
        f"training.output_dir={work / 'runs'}",
        f"export.dir={work / 'exports'}",
    ]
    if args.teacher:
        teacher_run = Path(args.teacher)
        teacher_export = reexport(teacher_run, str(work / "exports"), onnx=True)
    else:
        cfg = load_config(
            REPO / "configs" / "sst2.yaml", [*common, "export.onnx=true", "export.tflite_int8=true"]
        )
        t0 = time.perf_counter()
        result = run(cfg)
        print(f"teacher trained and exported in {time.perf_counter() - t0:.0f}s", flush=True)
        teacher_run, teacher_export = result.run_dir, result.export_dir
    student_overrides = [*common, f"distill.teacher={teacher_run}"]
    if args.unlabeled:  # phrases drawn from the whole training file; some are also labelled ones
        student_overrides += [
            f"distill.unlabeled={DEV.parent / 'train.tsv'}",
            "distill.unlabeled_text_column=sentence",
            f"distill.max_unlabeled={args.unlabeled}",
        ]
    if args.transfer_copies is not None:
        student_overrides.append(f"distill.transfer_copies={args.transfer_copies}")
    student_overrides += args.overrides
    cfg = load_config(REPO / "configs" / "distill_sst2.yaml", student_overrides)
    t0 = time.perf_counter()
    student = run(cfg)
    print(f"student distilled and exported in {time.perf_counter() - t0:.0f}s", flush=True)

    texts, labels = dev_set()
    batches = id_batches(teacher_export, texts)
    onnx_dir = teacher_export.parent / "onnx" / teacher_export.name
    candidates = [
        ("teacher", teacher_export),
        ("student", student.export_dir),
        ("onnx", onnx_dir / onnx_lib.MODEL),
        ("onnx_int8", onnx_dir / onnx_lib.MODEL_INT8),
    ]
    native_bf16 = sorted(cpu_flags() & NATIVE_BF16)
    if native_bf16 or args.bf16:  # the teacher again, exported with `export.precision: bfloat16`
        print(f"native bfloat16: {', '.join(native_bf16) or 'none (emulated)'}", flush=True)
        bf16 = reexport(teacher_run, str(work / "exports"), overrides=BF16)
        candidates.append(("bf16", bf16))
    print(f"onnx fp32 graph, fused kernels: {fused_ops(onnx_dir / onnx_lib.MODEL)}", flush=True)
    predictors = {
        name: onnx_predictor(path) if path.suffix == ".onnx" else savedmodel_predictor(path)
        for name, path in candidates
    }
    figures = speeds(predictors, batches, labels, args.repeats)

    lite = teacher_export.parent / "tflite" / f"{teacher_export.name}.int8.tflite"
    tflite_acc = f"{tflite_accuracy(lite, batches, labels)[0]:.4f}" if lite.is_file() else "n/a"

    source = work / "dev8.tsv"  # GLUE dev 8 times: long enough to time
    lines = DEV.read_text(encoding="utf-8").splitlines()
    source.write_text("\n".join([lines[0], *(lines[1:] * 8)]) + "\n", encoding="utf-8")
    predict_seconds(teacher_export, source, 50, work / "warm.csv")  # load and trace once
    unsorted = predict_seconds(teacher_export, source, 1, work / "unsorted.csv")
    sorted_ = predict_seconds(teacher_export, source, 50, work / "sorted.csv")
    import pandas as pd

    a, b = pd.read_csv(work / "unsorted.csv"), pd.read_csv(work / "sorted.csv")
    same_labels = bool((a["label"] == b["label"]).all())
    print(
        f"kerasft.predict over {8 * len(texts)} sentences: {unsorted:.1f}s in file order, "
        f"{sorted_:.1f}s in length-sorted windows of 50 batches (same labels in the same order: "
        f"{same_labels})"
    )
    base = figures["teacher"][1]
    print(
        f"teacher_acc={figures['teacher'][0]:.4f} student_acc={figures['student'][0]:.4f} "
        f"student_speedup={figures['student'][1] / base:.2f} onnx_speedup={figures['onnx'][1] / base:.2f} "
        f"onnx_int8_speedup={figures['onnx_int8'][1] / base:.2f} onnx_int8_acc={figures['onnx_int8'][0]:.4f} "
        f"tflite_int8_acc={tflite_acc} sorted_predict_speedup={unsorted / sorted_:.2f}"
        + (
            f" bf16_speedup={figures['bf16'][1] / base:.2f} bf16_acc={figures['bf16'][0]:.4f}"
            if "bf16" in figures
            else ""
        )
    )


if __name__ == "__main__":
    main()
