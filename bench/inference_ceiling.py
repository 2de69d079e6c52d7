"""How close the SavedModel's float32 inference is to what this CPU can do: the ceiling of any float32 engine.

    .venv/bin/python bench/inference_ceiling.py [--run RUN_DIR] [--repeats 5] [--bf16]

Exports an SST-2 model of the embedded MiniLM-L6 (a 64-phrase, one-epoch run of
configs/sst2.yaml, since speed does not depend on the weights; or a finished run
with `--run`) as a SavedModel and a fused ONNX model, and times, in turns over
`--repeats` rounds (best round each), on the 872 GLUE SST-2 dev sentences as
batch-64 token ids in file order (the batches of bench/compression.py):

- the SavedModel's `predict_ids` and onnxruntime's fused float32 graph, as the
  model's floating-point operations per second (its matrix products and attention,
  counted from the backbone's config and each batch's padded length);
- one matrix product of the model's largest shape ([64 x mean length, hidden] x
  [hidden, intermediate]) in TensorFlow (oneDNN) in float32 and in bfloat16, and in
  onnxruntime in float32: the rate this CPU gives such products.

A float32 engine that computes every padded position cannot run the model faster than
the faster float32 product rate, so `onnx_fp32_ceiling` (that rate over the SavedModel's)
bounds the speedup of such an engine. kerasft's ONNX graph skips padding in its per-token
layers (kerasft/serving/onnx_packing.py): it does less work than counted here, and its
rate can read above the ceiling. Where the CPU has native bfloat16 (or
with `--bf16`), the run is also exported with `export.precision: bfloat16` and
timed beside them. Accuracies on GLUE dev are printed too (a 64-phrase model's
are near chance: give `--run` a trained one to compare them). Last line:
savedmodel_gflops=… onnx_gflops=… [bf16_savedmodel_gflops=…] tf_matmul_fp32_gflops=…
tf_matmul_bf16_gflops=… ort_matmul_fp32_gflops=… savedmodel_share=… onnx_fp32_ceiling=…
onnx_speedup=… [bf16_speedup=…] savedmodel_acc=… onnx_acc=… [bf16_acc=…]
Needs ../shared/data and the onnx extra.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from compression import BF16, DEV, dev_set, id_batches, onnx_predictor, savedmodel_predictor
from sst2 import require_sst2
from workdir import add_keep, work_dir

from kerasft._compat import tf
from kerasft.config import load_config
from kerasft.models import model_directory
from kerasft.serving import onnx as onnx_lib
from kerasft.training.exports import reexport
from kerasft.training.hardware import NATIVE_BF16, cpu_flags
from kerasft.training.runner import run as run_training

REPO = Path(__file__).resolve().parents[1]


def model_flops(config: dict, batch: dict) -> float:
    """Floating-point operations of the encoder on one padded batch: its matrix products
    (2 per multiply-add) and attention's two batched products; the rest is left out."""
    rows, length = batch["input_ids"].shape
    hidden, inner = config["hidden_size"], config["intermediate_size"]
    tokens = rows * length
    per_layer = 2 * tokens * (4 * hidden * hidden + 2 * hidden * inner)
    per_layer += 2 * 2 * rows * length * length * hidden
    return config["num_hidden_layers"] * per_layer


def matmul_timers(shape: tuple[int, int, int]) -> dict:
    """Callables that run one [m, k] x [k, n] product: TensorFlow float32 and bfloat16,
    onnxruntime float32."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    m, k, n = shape
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
    product = tf.function(tf.linalg.matmul)
    tf_a, tf_b = tf.constant(a), tf.constant(b)
    bf_a, bf_b = tf.cast(tf_a, tf.bfloat16), tf.cast(tf_b, tf.bfloat16)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "matmul",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [m, n])],
        [numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return {
        "tf_matmul_fp32": lambda: product(tf_a, tf_b).numpy(),
        "tf_matmul_bf16": lambda: product(bf_a, bf_b).numpy(),
        "ort_matmul_fp32": lambda: session.run(None, {"a": a}),
    }


def best_rates(timers: dict, work: dict, repeats: int) -> dict:
    """The best of `repeats` rounds of each timer (all in turns each round), as GFLOP/s."""
    for timer in timers.values():  # warm up: traces, sessions, caches
        timer()
    best = dict.fromkeys(timers, 0.0)
    for round_ in range(1, repeats + 1):
        for name, timer in timers.items():
            t0 = time.perf_counter()
            timer()
            best[name] = max(best[name], work[name] / (time.perf_counter() - t0) / 1e9)
        shown = ", ".join(f"{name} {best[name]:.1f}" for name in timers)
        print(f"round {round_}/{repeats}, best GFLOP/s so far: {shown}", flush=True)
    return best


def timing_model(run: str | None, work: Path, overrides: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """A run and an export of it with ONNX (with `export.*` `overrides`): `run`'s, or a 64-phrase,
    one-epoch run of configs/sst2.yaml trained in `work` (speed does not depend on the weights)."""
    if run:
        run_dir = Path(run)
        return run_dir, reexport(run_dir, str(work / "exports"), onnx=True, overrides=overrides)
    cfg = load_config(
        REPO / "configs" / "sst2.yaml",
        [
            "data.max_train_examples=64",
            "training.epochs=1",
            "export.onnx=true",
            "export.tflite=false",
            f"data.train={DEV.parent / 'train.tsv'}",
            f"data.validation={DEV.parent / 'dev.tsv'}",
            f"data.test={DEV}",
            f"training.output_dir={work / 'runs'}",
            f"export.dir={work / 'exports'}",
            *overrides,
        ],
    )
    result = run_training(cfg, verbose=0)
    return result.run_dir, result.export_dir


def timing_parser(doc: str, timed: str) -> argparse.ArgumentParser:
    """The options of an inference timing benchmark: `--run`, `--repeats` (rounds, each of
    `timed` in turn) and `--keep`."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--run", default=None, help="a finished SST-2 run to export instead of training")
    p.add_argument("--repeats", type=int, default=5, help=f"timed rounds, each {timed} in turn")
    add_keep(p)
    return p


def timing_setup(
    args: argparse.Namespace, prefix: str, overrides: tuple[str, ...] = ()
) -> tuple[Path, Path, Path, dict]:
    """After checking for the data and onnxruntime: the work directory, `timing_model`'s run and
    export in it, and the backbone's config.json."""
    require_sst2()
    onnx_lib.require()
    work = work_dir(prefix, args.keep)
    run_dir, export = timing_model(args.run, work, overrides)
    backbone = model_directory(load_config(run_dir / "config.yaml").model)
    return work, run_dir, export, json.loads((backbone / "config.json").read_text())


def main() -> None:
    p = timing_parser(__doc__, "timer")
    p.add_argument(
        "--bf16",
        action="store_true",
        help="also time a bfloat16 export where the CPU has no native bfloat16 (emulated: slow)",
    )
    args = p.parse_args()
    work, run_dir, export, config = timing_setup(args, "kerasft-ceiling-")
    texts, labels = dev_set()
    batches = id_batches(export, texts)
    flops = sum(model_flops(config, b) for b in batches)
    length = float(np.mean([b["input_ids"].shape[1] for b in batches]))
    shape = (64 * round(length), config["hidden_size"], config["intermediate_size"])
    print(
        f"{len(batches)} batches of up to 64, mean padded length {length:.1f}: "
        f"{flops / 1e9:.1f} GFLOP a pass; product timed: {shape[0]}x{shape[1]} by "
        f"{shape[1]}x{shape[2]}",
        flush=True,
    )
    models = {
        "savedmodel": savedmodel_predictor(export),
        "onnx": onnx_predictor(export.parent / "onnx" / export.name / onnx_lib.MODEL),
    }
    native_bf16 = sorted(cpu_flags() & NATIVE_BF16)
    if native_bf16 or args.bf16:
        print(f"native bfloat16: {', '.join(native_bf16) or 'none (emulated)'}", flush=True)
        bf16 = reexport(run_dir, str(work / "exports"), overrides=BF16)
        models["bf16_savedmodel"] = savedmodel_predictor(bf16)
    accuracy = {}
    for name, predict in models.items():
        predicted = np.concatenate([predict(b) for b in batches]).argmax(-1)
        accuracy[name] = float(np.mean(predicted == labels))
        print(f"{name}: GLUE-dev accuracy {accuracy[name]:.4f}", flush=True)
    timers = {name: lambda p=p: [p(b) for b in batches] for name, p in models.items()}
    products = matmul_timers(shape)
    timers |= {name: lambda f=f: [f() for _ in range(20)] for name, f in products.items()}
    amounts = dict.fromkeys(models, flops) | dict.fromkeys(
        products, 20 * 2 * shape[0] * shape[1] * shape[2]
    )
    best = best_rates(timers, amounts, args.repeats)
    fastest = max(best["tf_matmul_fp32"], best["ort_matmul_fp32"])
    share, ceiling = best["savedmodel"] / fastest, fastest / best["savedmodel"]
    print(
        f"the SavedModel runs the model at {share:.0%} of the faster float32 product rate; "
        f"a float32 engine running all of it, padding included, at that rate would be "
        f"{ceiling:.2f}x it",
        flush=True,
    )
    speedups = {
        name.removesuffix("_savedmodel"): best[name] / best["savedmodel"]
        for name in models
        if name != "savedmodel"
    }
    print(
        " ".join(f"{name}_gflops={best[name]:.1f}" for name in timers)
        + f" savedmodel_share={share:.2f} onnx_fp32_ceiling={ceiling:.2f} "
        + " ".join(f"{name}_speedup={value:.2f}" for name, value in speedups.items())
        + " "
        + " ".join(
            f"{name.removesuffix('_savedmodel')}_acc={a:.4f}" for name, a in accuracy.items()
        )
    )


if __name__ == "__main__":
    main()
