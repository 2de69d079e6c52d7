"""LoRA adapters (Hu et al., 2021) on the backbone's dense layers, merged away at export.

`apply_lora` wraps each target `Dense` (e.g. every attention block's `query` and
`value`) in a `LoRADense`: the original kernel stays fixed and a low-rank update
`x @ A @ B * alpha / rank` is learnt, with B starting at zero so training starts
from the pretrained model. Everything else in the backbone is frozen; the task
head trains. `merge_lora` folds `A @ B * alpha / rank` into the kernels and puts
the original layers back, so the exported model costs nothing extra.
"""

from __future__ import annotations

from typing import Any

from kerasft._compat import keras, tf
from kerasft.errors import ConfigError, ModelError
from kerasft.peft.freezing import layers_in
from kerasft.tasks import forget_forward


class LoRADense(keras.layers.Layer):
    """A frozen `Dense` plus a trainable low-rank update.

    Args:
        base: the pretrained dense layer (built).
        rank: rank of the update.
        alpha: scale numerator; the update is multiplied by `alpha / rank`.
        dropout: dropout on the update's input. Defaults to 0.
    """

    def __init__(
        self, base: keras.layers.Dense, rank: int, alpha: float, dropout: float = 0.0, **kwargs
    ):
        super().__init__(name=kwargs.pop("name", f"{base.name}_lora"), **kwargs)
        self.base = base
        self.base.trainable = False
        self.rank, self.alpha, self.scale = int(rank), float(alpha), float(alpha) / int(rank)
        self.dropout = keras.layers.Dropout(dropout)

    def build(self, input_shape):
        # Built on the first call, inside the backbone's name scopes, so the adapter weights
        # get unique names (…/layer_._3/attention/self/query_lora/lora_a) like the weights around them.
        fan_in, units = int(self.base.kernel.shape[0]), int(self.base.kernel.shape[1])
        self.lora_a = self.add_weight(
            name="lora_a",
            shape=(fan_in, self.rank),
            initializer=keras.initializers.HeUniform(),
            trainable=True,
        )
        self.lora_b = self.add_weight(
            name="lora_b", shape=(self.rank, units), initializer="zeros", trainable=True
        )
        super().build(input_shape)

    def call(self, inputs, training=None):
        update = tf.matmul(
            tf.matmul(self.dropout(inputs, training=training), self.lora_a), self.lora_b
        )
        return self.base(inputs) + tf.cast(update * self.scale, self.base.compute_dtype)

    def merged_kernel(self) -> tf.Tensor:
        return self.base.kernel + tf.matmul(self.lora_a, self.lora_b) * self.scale


def _targets(model: keras.Model, names: list[str]):
    """(parent layer, attribute) for every Dense attribute named in `names` inside `model`."""
    found = []
    for layer in layers_in(model):
        for attr in names:
            child = getattr(layer, attr, None)
            if isinstance(child, keras.layers.Dense | LoRADense) and not isinstance(
                layer, LoRADense
            ):
                found.append((layer, attr))
    return found


def apply_lora(
    model: keras.Model, rank: int, alpha: float, dropout: float, targets: list[str], example: dict
) -> int:
    """Wraps the target dense layers of `model`'s backbone in LoRA adapters and freezes the rest of it.

    Args:
        example: a batch of model inputs; one forward pass builds the adapters.

    Returns:
        How many layers got an adapter.

    Raises:
        ConfigError: no layer of the backbone has an attribute named in `targets`.
        ModelError: part of the backbone could not be frozen around the adapters.
    """
    sites = _targets(model, targets)
    if not sites:
        raise ConfigError(
            f"`model.lora.targets: {targets}` names no dense layer of this backbone; BERT-style models "
            "call theirs query, key, value and dense; T5 q, k, v, o; BART and Marian q_proj, v_proj."
        )
    backbone_layers = [
        layer
        for layer in model.layers
        if hasattr(layer, "config") and hasattr(layer, "dummy_inputs")
    ]
    for parent, attr in sites:
        base = getattr(parent, attr)
        if isinstance(base, keras.layers.Dense):
            setattr(parent, attr, LoRADense(base, rank, alpha, dropout))
    model(example, training=False)  # builds the adapters
    for backbone in backbone_layers:
        for layer in layers_in(backbone):
            holds_adapter = any(
                isinstance(inner, LoRADense) for inner in [layer, *layers_in(layer)]
            )
            if not holds_adapter:
                layer.trainable = (
                    False  # whole subtrees without adapters; their ancestors stay trainable
                )
        stray = [v.name for v in backbone.trainable_variables if "lora_" not in v.name]
        # T5's relative position bias (buckets x heads, first block only) is a weight of the
        # attention layer the adapters sit in, so it cannot be frozen apart from them: it trains.
        position_bias = [n for n in stray if "relative_attention_bias" in n]
        if position_bias:
            print(
                f"LoRA: T5's relative position bias ({len(position_bias)} small tables) trains too"
            )
        stray = [n for n in stray if n not in position_bias]
        if stray:
            raise ModelError(
                f"LoRA: cannot freeze {len(stray)} backbone weights around the adapters (e.g. {stray[0]})."
            )
    return len(sites)


def merge_lora(model: keras.Model, targets: list[str]) -> int:
    """Folds every adapter into its dense kernel and restores the plain layer. Returns how many."""
    merged = 0
    for parent, attr in _targets(model, targets):
        layer = getattr(parent, attr)
        if isinstance(layer, LoRADense):
            layer.base.kernel.assign(layer.merged_kernel())
            setattr(parent, attr, layer.base)
            merged += 1
    # Functions traced with the adapters would now add the update twice: drop them.
    forget_forward(model)
    model.train_function = model.test_function = model.predict_function = None
    return merged


def apply_lora_config(model: keras.Model, lora: Any, input_names: tuple[str, ...]) -> int:
    """`apply_lora` with a `model.lora` config section; a one-row dummy batch builds the adapters."""
    example = {name: tf.ones((1, 4), tf.int32) for name in input_names}
    return apply_lora(model, lora.rank, lora.alpha, lora.dropout, lora.targets, example)
