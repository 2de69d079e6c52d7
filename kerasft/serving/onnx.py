"""ONNX export of a SavedModel's token-ids signature, its int8 variant, and running them.

The ONNX model is converted from a SavedModel of the `predict_ids` signature alone
(token ids in, the task's outputs out), not from the raw-text one: tensorflow-text's
ops have no ONNX mapping, so the tokenizer files travel beside the model and the
caller tokenizes (`kerasft.predict --model .../model.onnx` does). That SavedModel is
traced under `onnx_trace()`, and with `export.onnx_optimize` the converted graph is
fused by onnxruntime's transformer optimizer (`kerasft.serving.onnx_graph`).
`model.int8.onnx` holds int8 weights and computes matrix products in int8
(onnxruntime's dynamic quantisation); sessions apply onnxruntime's full graph
optimisations.

Needs the `onnx` extra: `pip install 'kerasft[onnx]'` (tf2onnx, onnx, onnxruntime).
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kerasft.errors import ConfigError

OPSET = 17
MODEL = "model.onnx"
MODEL_INT8 = "model.int8.onnx"
META = "kerasft.json"
_registered = False


def require() -> None:
    """Raises a ConfigError naming the install command when the ONNX packages are absent."""
    try:
        import onnxruntime  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"ONNX export needs tf2onnx, onnx and onnxruntime ({exc.name} is not installed): "
            "pip install 'kerasft[onnx]', or set `export.onnx: false`."
        ) from None


def _register_erfc() -> None:
    """Teaches tf2onnx TF's `Erfc` (exact GELU uses it) as `1 - Erf(x)`; it has no handler of its own."""
    global _registered
    if _registered:
        return
    from tf2onnx.handler import tf_op

    @tf_op("Erfc")
    class Erfc:  # noqa: F841 - registered by the decorator
        @classmethod
        def version_9(cls, ctx, node, **kwargs):
            dtype = ctx.get_dtype(node.input[0])
            erf = ctx.make_node("Erf", [node.input[0]], dtypes=[dtype])
            one = ctx.make_const(f"{node.name}_one", np.array(1, dtype=_numpy_dtype(dtype))).output[
                0
            ]
            outputs, shapes = node.output, [ctx.get_shape(node.output[0])]
            ctx.remove_node(node.name)
            ctx.make_node(
                "Sub",
                [one, erf.output[0]],
                name=node.name,
                outputs=outputs,
                shapes=shapes,
                dtypes=[dtype],
            )

    _registered = True


def _numpy_dtype(onnx_dtype: int) -> Any:
    from onnx import helper

    return helper.tensor_dtype_to_np_dtype(onnx_dtype)


@contextlib.contextmanager
def onnx_trace(model: Any) -> Iterator[None]:
    """Within it, `model` traces to the same function in graphs onnxruntime can fuse.

    Its Dense layers on 3-D inputs compute `matmul(x, kernel)` (one ONNX MatMul) instead
    of Keras' `tensordot` (a reshape to 2-D and back around every projection, with
    dynamic shapes that hide the attention pattern), and Hugging Face's `stable_softmax`
    is plain softmax (its `+ 1e-9`, an XLA workaround, changes no probability: softmax
    is shift-invariant). Only for the ONNX conversion; the SavedModel is traced as usual.

    Each layer is patched on the instance: saving a Keras model (the TFLite converter
    does) leaves a bound `call` on every layer, which would hide a patch of the class.
    """
    from kerasft._compat import keras, tf

    def call(self, inputs):
        if isinstance(inputs, tf.Tensor) and inputs.shape.rank == 3:
            inputs = tf.cast(inputs, self._compute_dtype_object)
            outputs = tf.matmul(inputs, self.kernel)  # BatchMatMulV2 broadcasts the kernel
            if self.use_bias:
                outputs = tf.nn.bias_add(outputs, self.bias)
            return self.activation(outputs) if self.activation is not None else outputs
        return type(self).call(self, inputs)

    def softmax(logits, axis=-1, name=None):
        return tf.nn.softmax(logits, axis=axis, name=name)

    dense = [layer for layer in model.submodules if isinstance(layer, keras.layers.Dense)]
    own_calls = [layer.__dict__.get("call") for layer in dense]  # None: the class's
    modules = [
        m
        for name, m in list(sys.modules.items())
        if name.startswith("transformers.models.") and hasattr(m, "stable_softmax")
    ]
    softmaxes = [m.stable_softmax for m in modules]
    for layer in dense:
        layer.call = types.MethodType(call, layer)
    for module in modules:
        module.stable_softmax = softmax
    try:
        yield
    finally:
        for layer, own in zip(dense, own_calls, strict=True):
            if own is None:
                del layer.call
            else:
                layer.call = own
        for module, original in zip(modules, softmaxes, strict=True):
            module.stable_softmax = original


def convert(saved_model: Path, path: Path, opset: int = OPSET) -> None:
    """Writes `path` from the SavedModel's `predict_ids` signature."""
    import tensorflow_text  # noqa: F401 - registers the ops the raw-text signature holds
    from tf2onnx import convert as tf2onnx_convert
    from tf2onnx import optimizer as tf2onnx_optimizer
    from tf2onnx import tf_loader

    _register_erfc()
    graph_def, inputs, outputs, _, renames = tf_loader.from_saved_model(
        str(saved_model),
        None,
        None,
        signatures=["predict_ids"],
        return_initialized_tables=True,
        return_tensors_to_rename=True,
    )
    # tf2onnx turns every ReduceMean over the last axis of a 3-D tensor (each layer norm's
    # mean and variance) into GlobalAveragePool, which no layer-norm fusion recognises.
    optimizers = tf2onnx_optimizer._optimizers
    every = list(optimizers.items())
    optimizers.pop("global_pool_optimizer", None)
    try:
        tf2onnx_convert.from_graph_def(
            graph_def,
            name="kerasft",
            input_names=inputs,
            output_names=outputs,
            opset=opset,
            tensors_to_rename=renames,
            output_path=str(path),
        )
    finally:  # in their order: it matters to tf2onnx
        optimizers.clear()
        optimizers.update(every)


def quantize(path: Path, out: Path) -> float:
    """Writes `out`, `path` with int8 weights and int8 matrix products; returns its size in MB."""
    import onnx
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-channel weight scales: on SST-2 they kept accuracy within 0.3 points where one
    # scale per tensor lost 1.3 (bench/compression.py), at the same size and speed.
    # Shape inference knows no types behind the fused com.microsoft ops: they are float.
    quantize_dynamic(
        str(path),
        str(out),
        weight_type=QuantType.QInt8,
        per_channel=True,
        extra_options={"DefaultTensorType": TensorProto.FLOAT},
    )
    # The quantizer annotates tensor shapes, and with them onnxruntime fuses each residual
    # Add and LayerNormalization back into its slower SkipLayerNormalization when a session
    # loads the model (`onnx_graph.optimize`); onnxruntime infers the shapes it runs on.
    model = onnx.load(str(out))
    del model.graph.value_info[:]
    onnx.save(model, str(out))
    return out.stat().st_size / 1e6


def session(path: str | Path, threads: int = 0) -> Any:
    """An onnxruntime CPU session with every graph optimisation on (`threads` 0: one per core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def runner(path: str | Path) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """A function from int32 token-id arrays (by input name) to the model's named outputs; its
    `inputs` attribute holds the input names the model takes."""
    sess = session(path)
    wanted = {i.name for i in sess.get_inputs()}
    names = [o.name for o in sess.get_outputs()]

    def run(features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {k: np.asarray(v, np.int32) for k, v in features.items() if k in wanted}
        return dict(zip(names, sess.run(names, feed), strict=True))

    run.inputs = wanted  # what a caller must feed
    return run


def largest_difference(a: Path, b: Path, feed: dict[str, np.ndarray]) -> float:
    """The largest absolute difference between two ONNX models' float outputs on `feed`
    (infinite where an integer output, a label id, differs)."""
    ran_a, ran_b = runner(a)(feed), runner(b)(feed)
    gap = 0.0
    for name, value in ran_a.items():
        other = ran_b[name]
        if value.dtype.kind == "f":
            gap = max(gap, float(np.max(np.abs(value - other), initial=0.0)))
        elif not np.array_equal(value, other):
            return float("inf")
    return gap


def measure(
    saved_model: Path, directory: Path, dataset: Any, spec: Any, limit: int = 512
) -> dict[str, Any]:
    """The SavedModel's `predict_ids` against `model.onnx` and `model.int8.onnx` on an (x, y) dataset.

    Runs each on the same padded batches (up to `limit` examples) and returns, per
    model, examples/s and (single-label tasks) accuracy, with the ONNX models' largest
    output difference from the SavedModel on the task's main output.
    """
    import time

    from kerasft._compat import tf

    serve = tf.saved_model.load(str(saved_model)).signatures["predict_ids"]
    key = "score" if spec.numeric else "probabilities"
    batches, seen = [], 0
    for x, y in dataset:
        batches.append(({k: v.numpy() for k, v in x.items()}, y.numpy()))
        seen += len(y)
        if seen >= limit:
            break
    models = {
        "savedmodel": lambda x: {
            key: serve(**{k: tf.constant(v) for k, v in x.items()})[key].numpy()
        },
        "onnx": runner(directory / MODEL),
        "onnx_int8": runner(directory / MODEL_INT8),
    }
    results: dict[str, Any] = {"examples": seen}
    reference: list[np.ndarray] = []
    for name, predict in models.items():
        predict(batches[0][0])  # warm up: first calls build kernels and caches
        start = time.perf_counter()
        outputs = [predict(x)[key] for x, _ in batches]
        results[f"{name}_ex_per_s"] = seen / (time.perf_counter() - start)
        if name == "savedmodel":
            reference = outputs
        else:
            results[f"{name}_max_abs_diff"] = max(
                float(np.max(np.abs(a - b))) for a, b in zip(outputs, reference, strict=True)
            )
        if spec.single_label:
            right = sum(
                int((o.argmax(-1) == y).sum()) for o, (_, y) in zip(outputs, batches, strict=True)
            )
            results[f"{name}_accuracy"] = right / seen
    return results
