"""Optional TFLite exports of the token-ids model (int8 weights; or int8 weights and activations) and their check."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from kerasft._compat import tf
from kerasft.tasks import TaskSpec


def convert(
    model: Any,
    input_names: tuple[str, ...],
    spec: TaskSpec,
    path: Path,
    calibration: list[dict[str, np.ndarray]] | None = None,
) -> float:
    """Writes `path` (a .tflite flatbuffer) and returns its size in MB.

    The TFLite model takes int32 token ids of any `[batch, length]` and returns the
    task's float output: probabilities (classification, multi_label, tags) or the
    raw score (regression, before any target scaling).

    Args:
        calibration: single examples (`[1, length]` int32 arrays by input name). Without
            them, dynamic range: int8 weights, float activations. With them, full
            integer: weights and activations in int8, their ranges calibrated on these
            examples, float kept only for ops without an int8 kernel; the token ids
            stay int32 and the output stays float.
    """

    @tf.function
    def forward(**features):
        return {"output": spec.activation(tf.cast(model(features, training=False), tf.float32))}

    specs = {name: tf.TensorSpec([None, None], tf.int32, name=name) for name in input_names}
    concrete = forward.get_concrete_function(**specs)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if calibration:
        converter.representative_dataset = lambda: (dict(example) for example in calibration)
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,
        ]
    with warnings.catch_warnings():
        # Calibration runs TF's own deprecated tf.lite.Interpreter; kerasft reads TFLite
        # models with ai-edge-litert's, so the deprecation is not the user's to act on.
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        path.write_bytes(converter.convert())
    return path.stat().st_size / 1e6


def compare(
    path: Path, model: Any, dataset: tf.data.Dataset, spec: TaskSpec, limit: int = 500
) -> dict[str, float]:
    """Runs the TFLite model and the float model on up to `limit` examples of an (x, y) dataset, one at a time.

    Returns:
        examples, max_abs_diff of the outputs, examples/s of each at batch 1
        (`examples_per_s`, `float_examples_per_s`), and for single-label classification
        the top-label agreement and the accuracy change (None for other tasks).
    """
    import time

    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner()
    examples = dataset.unbatch().take(limit)
    signature = {k: tf.TensorSpec([1, None], v.dtype) for k, v in examples.element_spec[0].items()}
    forward = tf.function(
        lambda x: spec.activation(tf.cast(model(x, training=False), tf.float32)),
        input_signature=[signature],  # one trace for every length
    )
    float_out, lite_out, labels = [], [], []
    lite_seconds = float_seconds = 0.0
    for position, (features, y) in enumerate(examples):
        length = (
            int(tf.reduce_sum(features["attention_mask"])) if "attention_mask" in features else None
        )
        single = {k: v.numpy()[None, :length] for k, v in features.items()}
        if position == 0:  # untimed: the first calls trace and allocate
            runner(**single)
            forward({k: tf.constant(v) for k, v in single.items()})
        start = time.perf_counter()
        lite_out.append(runner(**single)["output"][0])
        lite_seconds += time.perf_counter() - start
        start = time.perf_counter()
        float_out.append(forward({k: tf.constant(v) for k, v in single.items()}).numpy()[0])
        float_seconds += time.perf_counter() - start
        labels.append(y.numpy())
    n = len(lite_out)
    agree = change = None
    if spec.single_label and n:
        lite, ref, truth = np.array(lite_out), np.array(float_out), np.array(labels)
        agree = float((lite.argmax(-1) == ref.argmax(-1)).mean())
        change = float((lite.argmax(-1) == truth).mean() - (ref.argmax(-1) == truth).mean())
    diffs = [float(np.max(np.abs(a - b))) for a, b in zip(lite_out, float_out, strict=True)]
    return {
        "examples": n,
        "agreement": agree,
        "accuracy_change": change,
        "max_abs_diff": max(diffs, default=0.0),
        "examples_per_s": n / lite_seconds if lite_seconds else None,
        "float_examples_per_s": n / float_seconds if float_seconds else None,
    }
