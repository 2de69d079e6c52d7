"""Per-token layers of a fused ONNX transformer on the real tokens only, not on padding.

A batch of texts is padded to its longest: on GLUE SST-2 dev in batches of 64, half
the positions are padding. Between two attention layers every operation works token
by token (the output projection, residual Adds, layer norms, the feed-forward
MatMuls and GELU), so those can run on the real tokens alone, as FasterTransformer's
"remove padding" does:

    idx = NonZero(attention_mask)                     the real positions, once per batch
    Attention(x) → [B, L, H] → rows idx → [T, H]      packed after each attention
    per-token layers on [T, H]                        T real tokens instead of B·L
    [T, H] → scattered back to [B, L, H], zeros at padding → the next Attention

Attention itself (its QKV projection included) and whatever follows the encoder
(pooling) still see the padded [B, L, H] tensors; padding rows come back as zeros,
which attention masks out and mean pooling weighs by 0. The result equals the padded
graph's up to float rounding; the caller checks that on a padded batch. A graph with an
output per token (rank 3 or more, as token classification's logits; their padding rows
would change) is left as it is.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Operators that act on each token's vector alone, given [..., H] inputs.
PER_TOKEN = frozenset({"MatMul", "Add", "LayerNormalization", "Gelu", "BiasGelu", "FastGelu"})
PREFIX = "kerasft_packing/"


def _per_token(output: Any) -> bool:
    """Whether a graph output has a row per token ([batch, tokens, ...]), as token
    classification's logits do, however many operations lie between it and the encoder."""
    return len(output.type.tensor_type.shape.dim) >= 3


class _Packer:
    """Writes the nodes that pack [B, L, H] tensors to [T, H] rows and back."""

    def __init__(self, graph: Any, mask: str, hidden: int) -> None:
        from onnx import TensorProto, helper, numpy_helper

        self.helper, self.nodes, self.done = helper, [], {}
        p = PREFIX
        constants = {
            "flat": np.array([-1], np.int64),
            "axis0": np.array(0, np.int64),
            "one": np.array(1, np.int64),
            "rows": np.array([-1, hidden], np.int64),
            "hidden": np.array([hidden], np.int64),
            "zero_row": np.zeros((1, hidden), np.float32),
        }
        graph.initializer.extend(numpy_helper.from_array(v, p + k) for k, v in constants.items())
        self._add("Reshape", [mask, p + "flat"], [p + "mask"])
        self._add("NonZero", [p + "mask"], [p + "nonzero"])
        self._add("Reshape", [p + "nonzero", p + "flat"], [p + "real"])  # [T] positions
        # Where each of the B·L positions sits among the T rows; padding points at row T,
        # a row of zeros appended when scattering back.
        self._add("Cast", [p + "mask"], [p + "mask64"], to=TensorProto.INT64)
        self._add("CumSum", [p + "mask64", p + "axis0"], [p + "count"])
        self._add("Sub", [p + "count", p + "one"], [p + "row"])
        self._add("ReduceSum", [p + "mask64"], [p + "tokens"], keepdims=0)
        self._add("Cast", [p + "mask"], [p + "is_real"], to=TensorProto.BOOL)
        self._add("Where", [p + "is_real", p + "row", p + "tokens"], [p + "rows_of"])
        self._add("Shape", [mask], [p + "batch_length"])
        self._add("Concat", [p + "batch_length", p + "hidden"], [p + "padded_shape"], axis=0)

    def _add(self, op: str, inputs: list[str], outputs: list[str], **attrs) -> None:
        self.nodes.append(self.helper.make_node(op, inputs, outputs, **attrs))

    def pack(self, name: str, out: str | None = None) -> str:
        """[B, L, H] `name` as [T, H] rows (named `out` if given)."""
        if out is None and ("pack", name) in self.done:
            return self.done["pack", name]
        out = out or f"{PREFIX}{name}/packed"
        self._add("Reshape", [name, PREFIX + "rows"], [f"{PREFIX}{name}/rows"])
        self._add("Gather", [f"{PREFIX}{name}/rows", PREFIX + "real"], [out], axis=0)
        self.done["pack", name] = out
        return out

    def unpack(self, name: str) -> str:
        """[T, H] `name` as [B, L, H], zeros at padding."""
        if ("unpack", name) not in self.done:
            p = f"{PREFIX}{name}/"
            self._add("Concat", [name, PREFIX + "zero_row"], [p + "with_zero"], axis=0)
            self._add("Gather", [p + "with_zero", PREFIX + "rows_of"], [p + "flat"], axis=0)
            self._add("Reshape", [p + "flat", PREFIX + "padded_shape"], [p + "padded"])
            self.done["unpack", name] = p + "padded"
        return self.done["unpack", name]

    def take(self) -> list:
        nodes, self.nodes = self.nodes, []
        return nodes


def pack_tokens(model: Any, mask: str = "attention_mask") -> tuple[Any, int]:
    """`model` (a fused graph with `Attention` nodes) rewritten to run its per-token layers on
    the real tokens only, and how many attention layers it packed; `model` itself and 0 if
    there is nothing to pack (no fused attention or `mask` input) or the outputs would be
    per token."""
    from onnx import ModelProto

    attention = [n for n in model.graph.node if n.op_type == "Attention"]
    weights = {t.name: t for t in model.graph.initializer}
    inputs = {i.name for i in model.graph.input}
    if not attention or mask not in inputs or attention[0].input[1] not in weights:
        return model, 0
    if any(_per_token(o) for o in model.graph.output):
        return model, 0
    hidden = int(weights[attention[0].input[1]].dims[0])
    rewritten = ModelProto()
    rewritten.CopyFrom(model)
    graph = rewritten.graph
    constants = set(weights)
    packer = _Packer(graph, mask, hidden)
    packed = {n.output[0] for n in attention}
    nodes = packer.take()
    for node in graph.node:
        names = list(node.input)
        per_token = node.op_type in PER_TOKEN and any(i in packed for i in names)
        if node.op_type == "MatMul" and names[1] not in constants:
            per_token = False  # a product of two activations is not per token
        for k, name in enumerate(names):
            if per_token and name and name not in packed and name not in constants:
                names[k] = packer.pack(name)  # an activation still padded meets packed ones
            elif not per_token and name in packed:
                names[k] = packer.unpack(name)
        del node.input[:]
        node.input.extend(names)
        if per_token:
            packed.update(node.output)
        before = packer.take()
        if node.op_type == "Attention":  # its output is padded: packed rows under its name
            name = node.output[0]
            node.output[0] = name + "/padded"
            packer.pack(node.output[0], out=name)
        nodes.extend([*before, node, *packer.take()])
    if any(o.name in packed for o in graph.output):  # an output without a declared shape
        return model, 0
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # shapes of renamed and packed tensors changed
    return rewritten, len(attention)
