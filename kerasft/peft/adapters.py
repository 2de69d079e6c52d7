"""Bottleneck adapters (Houlsby et al., 2019; Pfeiffer et al., 2021) and BitFit (Ben Zaken et al., 2022).

`apply_adapters` wraps the output projection of a transformer block's attention
(`houlsby` only) and of its feed-forward network (both placements) in an
`AdapterDense`: the pretrained projection stays fixed, and a small bottleneck
`h + up(gelu(down(h)))` learns the task, with `up` starting at zero so training
starts from the pretrained model. Only the adapters, the encoder's LayerNorms and
the task head train. The adapter sits right after the projection, before its
dropout and the residual LayerNorm (Houlsby's paper puts it after the dropout;
with dropout off at inference the two are the same function). Adapters stay in
the exported model: a plain SavedModel with a few more small matrices.

`apply_bitfit` leaves only the backbone's bias terms (and the task head) trainable.
"""

from __future__ import annotations

from typing import Any

from kerasft._compat import keras, tf
from kerasft.errors import ConfigError, ModelError
from kerasft.peft.freezing import backbone_blocks, layers_in

# Where a block's two output projections live, per Hugging Face TF family:
# (attention output, feed-forward output), each a path of attributes ending at a Dense.
_SITES = (
    (
        ("attention", "dense_output", "dense"),
        ("bert_output", "dense"),
    ),  # BERT, RoBERTa, ELECTRA, XLM-R
    (("attention", "out_lin"), ("ffn", "lin2")),  # DistilBERT
)


class AdapterDense(keras.layers.Layer):
    """A frozen `Dense` followed by a trainable bottleneck adapter with a residual connection.

    Args:
        base: the pretrained dense layer (built).
        size: the bottleneck width.
    """

    def __init__(self, base: keras.layers.Dense, size: int, **kwargs):
        super().__init__(name=kwargs.pop("name", f"{base.name}_adapter"), **kwargs)
        self.base = base
        self.base.trainable = False
        self.size = int(size)

    def build(self, input_shape):
        # Built on the first call, inside the backbone's name scopes, so the weights get
        # unique names (…/layer_._3/output/dense_adapter/adapter_down) like those around them.
        units = int(self.base.kernel.shape[1])
        self.down = self.add_weight(
            name="adapter_down",
            shape=(units, self.size),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        )
        self.down_bias = self.add_weight(
            name="adapter_down_bias", shape=(self.size,), initializer="zeros"
        )
        self.up = self.add_weight(name="adapter_up", shape=(self.size, units), initializer="zeros")
        self.up_bias = self.add_weight(name="adapter_up_bias", shape=(units,), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs):
        hidden = self.base(inputs)
        dtype = hidden.dtype
        inner = tf.nn.gelu(
            tf.matmul(hidden, tf.cast(self.down, dtype)) + tf.cast(self.down_bias, dtype)
        )
        return hidden + tf.matmul(inner, tf.cast(self.up, dtype)) + tf.cast(self.up_bias, dtype)


def adapter_sites(model: keras.Model, placement: str) -> list[tuple[Any, str]]:
    """(parent layer, attribute) of every projection an adapter goes after.

    Raises:
        ConfigError: the backbone's blocks match none of the known layouts.
    """
    _, blocks = backbone_blocks(model)
    sites = []
    for block in blocks:
        for attention, feed_forward in _SITES:
            paths = [feed_forward] if placement == "pfeiffer" else [attention, feed_forward]
            found = [_resolve(block, path) for path in paths]
            if all(f is not None for f in found):
                sites += found
                break
    if not sites:
        raise ConfigError(
            "`model.adapters`: this backbone's layers match no known layout (BERT, RoBERTa, ELECTRA, "
            "XLM-R, MiniLM, DistilBERT); use `model.lora` instead."
        )
    return sites


def _resolve(block: Any, path: tuple[str, ...]) -> tuple[Any, str] | None:
    parent = block
    for attr in path[:-1]:
        parent = getattr(parent, attr, None)
        if parent is None:
            return None
    child = getattr(parent, path[-1], None)
    return (parent, path[-1]) if isinstance(child, keras.layers.Dense | AdapterDense) else None


def apply_adapters(model: keras.Model, size: int, placement: str, example: dict) -> int:
    """Puts adapters after the block outputs of `placement` and freezes all but adapters and LayerNorms.

    Args:
        example: a batch of model inputs; one forward pass builds the adapters.

    Returns:
        How many adapters were added.

    Raises:
        ConfigError: an unknown backbone layout.
        ModelError: part of the backbone could not be frozen around the adapters.
    """
    sites = adapter_sites(model, placement)
    for parent, attr in sites:
        base = getattr(parent, attr)
        if isinstance(base, keras.layers.Dense):
            setattr(parent, attr, AdapterDense(base, size))
    model(example, training=False)  # builds the adapters
    embeddings, blocks = backbone_blocks(model)
    if embeddings is not None:
        embeddings.trainable = False
    keep = (AdapterDense, keras.layers.LayerNormalization)
    for block in blocks:
        for layer in layers_in(block):
            if not any(isinstance(inner, keep) for inner in [layer, *layers_in(layer)]):
                layer.trainable = False  # whole subtrees without adapters or LayerNorms
    check_only(
        blocks,
        lambda v: any(k in v.name for k in ("adapter_", "LayerNorm", "layer_norm")),
        "adapters",
    )
    return len(sites)


def check_only(blocks: list, allowed, what: str) -> None:
    """Raises ModelError if an encoder weight that `allowed(variable)` rejects still trains."""
    stray = [v.name for block in blocks for v in block.trainable_variables if not allowed(v)]
    if stray:
        raise ModelError(
            f"{what}: cannot freeze {len(stray)} backbone weights (e.g. {stray[0]}); "
            "this backbone's layout is not supported."
        )
