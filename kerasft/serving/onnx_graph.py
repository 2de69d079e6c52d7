"""Rewrites of tf2onnx's graph of a Keras transformer into the shapes onnxruntime's fusions match.

onnxruntime's transformer optimizer (`onnxruntime.transformers.optimizer`) fuses
attention, layer norm, GELU and the embeddings into single kernels, but its patterns
are those of PyTorch's exporter. A Keras BERT converted by tf2onnx differs in three
places, each rewritten here to the equivalent PyTorch shape:

| Keras / tf2onnx | rewritten to |
| --- | --- |
| exact GELU as `0.5·x·erfc(-x/√2)` (`Neg`, `Mul`, `Erf`, `Sub(1, ·)`, `Mul`) | `Gelu(x)` (com.microsoft) |
| the 4-D mask as `Reshape(attention_mask, [0, 1, 1, -1])` | two `Unsqueeze`s |
| attention scores scaled by `Mul(scores, 1/√d)` | `Div(scores, √d)`, the scores first in the `Add` of the mask |

Two more differences are removed before conversion, in the TensorFlow trace
(`kerasft.serving.onnx.onnx_trace`): Dense layers on 3-D inputs as `Tensordot`
(dynamic reshapes around every projection) and HF's `stable_softmax` (`+1e-9`,
which tf2onnx folds into the mask). Each rewrite checks its whole pattern and leaves
anything else alone; the caller compares the result with the plain conversion.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from kerasft.serving.onnx_packing import pack_tokens

# What the fused graph holds, for the model card and the test.
FUSED_OPS = (
    "Attention",
    "EmbedLayerNormalization",
    "SkipLayerNormalization",
    "LayerNormalization",
    "BiasGelu",
    "Gelu",
)
PACKED = "layers on real tokens only"


class _Graph:
    """Producer, consumer and constant look-ups over an ONNX graph (rebuilt after each rewrite)."""

    def __init__(self, graph: Any) -> None:
        from onnx import numpy_helper

        self.constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].HasField("t"):
                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def made_by(self, name: str, op_type: str) -> Any:
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    def scalar(self, name: str, value: float | None = None) -> bool:
        """Whether `name` is a one-element constant (equal to `value`, when given)."""
        c = self.constants.get(name)
        if c is None or c.size != 1:
            return False
        return value is None or abs(float(c.reshape(())) - value) < 1e-6

    def only_consumer(self, name: str) -> Any:
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 else None


def fuse_gelu(model: Any) -> int:
    """Replaces TF's exact GELU, `0.5·x·erfc(-x/√2)`, with com.microsoft `Gelu`; returns how many."""
    from onnx import helper

    g = _Graph(model.graph)
    replaced = []
    for erf in (n for n in model.graph.node if n.op_type == "Erf"):
        scaled = g.made_by(erf.input[0], "Mul")  # (-x) · 1/√2
        if scaled is None:
            continue
        neg = next((g.made_by(i, "Neg") for i in scaled.input if g.made_by(i, "Neg")), None)
        if neg is None or not any(g.scalar(i, 2**-0.5) for i in scaled.input):
            continue
        x = neg.input[0]
        one_minus = g.only_consumer(erf.output[0])  # erfc(z) = 1 - erf(z)
        if one_minus is None or one_minus.op_type != "Sub" or not g.scalar(one_minus.input[0], 1.0):
            continue
        last = g.only_consumer(one_minus.output[0])  # (0.5 · x) · erfc(...)
        if last is None or last.op_type != "Mul":
            continue
        half = g.made_by(next(i for i in last.input if i != one_minus.output[0]), "Mul")
        if half is None or x not in half.input or not any(g.scalar(i, 0.5) for i in half.input):
            continue
        gelu = helper.make_node(
            "Gelu", [x], [last.output[0]], name=f"{last.name}/Gelu", domain="com.microsoft"
        )
        replaced.append((last, gelu))
    for last, gelu in replaced:
        position = list(model.graph.node).index(last)
        model.graph.node.remove(last)
        model.graph.node.insert(position, gelu)
    if replaced and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(replaced)


def mask_as_unsqueeze(model: Any) -> int:
    """Rewrites `Reshape(graph input [B, T], [0, 1, 1, -1])` as two `Unsqueeze`s; returns how many."""
    from onnx import TensorProto, helper

    g = _Graph(model.graph)
    inputs = {i.name for i in model.graph.input}
    done = 0
    for node in list(model.graph.node):
        shape = g.constants.get(node.input[1]) if node.op_type == "Reshape" else None
        if shape is None or node.input[0] not in inputs or shape.tolist() != [0, 1, 1, -1]:
            continue
        axes = []
        for axis in (1, 2):
            axes.append(f"{node.name}/axis{axis}")
            model.graph.initializer.append(
                helper.make_tensor(axes[-1], TensorProto.INT64, [1], [axis])
            )
        middle = f"{node.output[0]}/unsqueezed"
        position = list(model.graph.node).index(node)
        model.graph.node.remove(node)
        model.graph.node.insert(
            position,
            helper.make_node(
                "Unsqueeze", [middle, axes[1]], [node.output[0]], name=f"{node.name}/2"
            ),
        )
        model.graph.node.insert(
            position,
            helper.make_node(
                "Unsqueeze", [node.input[0], axes[0]], [middle], name=f"{node.name}/1"
            ),
        )
        done += 1
    return done


def scale_as_div(model: Any) -> int:
    """Rewrites `Softmax(Add(Mul(MatMul, c), mask))` as `Softmax(Add(Div(MatMul, 1/c), mask))`."""
    from onnx import numpy_helper

    g = _Graph(model.graph)
    done = 0
    for softmax in (n for n in model.graph.node if n.op_type == "Softmax"):
        add = g.made_by(softmax.input[0], "Add")
        if add is None:
            continue
        for position, name in enumerate(add.input):
            mul = g.made_by(name, "Mul")
            if mul is None or g.only_consumer(mul.output[0]) is None:
                continue
            factor = [i for i in mul.input if g.scalar(i)]
            scores = [i for i in mul.input if g.made_by(i, "MatMul")]
            if len(factor) != 1 or len(scores) != 1:
                continue
            c = g.constants[factor[0]]
            divisor = numpy_helper.from_array(
                np.array(1.0 / float(c.reshape(())), c.dtype), f"{mul.name}/divisor"
            )
            model.graph.initializer.append(divisor)
            mul.op_type = "Div"
            del mul.input[:]
            mul.input.extend([scores[0], divisor.name])
            if position != 0:  # the scores first, as onnxruntime's attention pattern reads them
                add.input[0], add.input[1] = add.input[1], add.input[0]
            done += 1
            break
    return done


def remove_dead_nodes(model: Any) -> int:
    """Drops nodes none of whose outputs is used; returns how many."""
    outputs = {o.name for o in model.graph.output}
    removed = 0
    while True:
        used = {i for n in model.graph.node for i in n.input} | outputs
        dead = [n for n in model.graph.node if not any(o in used for o in n.output)]
        if not dead:
            return removed
        for node in dead:
            model.graph.node.remove(node)
        removed += len(dead)


# onnxruntime's SkipLayerNormalization and BiasGelu CPU kernels are slower than the Add,
# LayerNormalization and Gelu they replace: on GLUE SST-2 dev, leaving them out took float32
# from 1.04x the SavedModel to 1.12x and int8 from 2.07x to 2.61x (an Intel Xeon with AMX,
# bench/onnx_fusions.py). Names of `FusionOptions.enable_*` switches.
UNFUSED = ("skip_layer_norm", "bias_gelu")


def optimize(
    source: Path,
    target: Path,
    heads: int | None,
    hidden: int | None,
    unfused: tuple[str, ...] = UNFUSED,
    pack: bool = True,
) -> dict[str, int]:
    """Writes `target`: `source` rewritten (above) and fused by onnxruntime's transformer optimizer.

    Args:
        heads, hidden: the encoder's attention heads and hidden size; None (not a
            transformer, e.g. the BiGRU) applies only the rewrites.
        unfused: the optimizer's fusions left out (`FusionOptions.enable_<name>`).
        pack: run the per-token layers on the real tokens only (`onnx_packing`).

    Returns:
        How many of each fused operator (`FUSED_OPS`) the result holds, and under `PACKED`
        how many layers run their per-token part on the real tokens only.
    """
    import onnx

    model = onnx.load(str(source))
    fuse_gelu(model)
    mask_as_unsqueeze(model)
    scale_as_div(model)
    remove_dead_nodes(model)
    if heads and hidden:
        from onnxruntime.transformers.fusion_options import FusionOptions
        from onnxruntime.transformers.optimizer import optimize_by_fusion

        options = FusionOptions("bert")
        for name in unfused:
            if not hasattr(options, f"enable_{name}"):
                raise ValueError(f"onnxruntime's optimizer has no fusion {name!r}")
            setattr(options, f"enable_{name}", False)
        # It warns that the producer is tf2onnx, not PyTorch: the rewrites above are for that.
        log = logging.getLogger("onnxruntime.transformers")
        level = log.level
        log.setLevel(logging.ERROR)
        try:
            model = optimize_by_fusion(
                model,
                model_type="bert",
                num_heads=heads,
                hidden_size=hidden,
                optimization_options=options,
            ).model
        finally:
            log.setLevel(level)
    layers = 0
    if pack:
        model, layers = pack_tokens(model)
    onnx.save(model, str(target))
    counts = {op: sum(n.op_type == op for n in model.graph.node) for op in FUSED_OPS}
    counts[PACKED] = layers
    return {op: n for op, n in counts.items() if n}
