"""BitFit: only the backbone's bias terms train (Ben Zaken et al., 2022); the task head trains whole."""

from __future__ import annotations

from kerasft._compat import keras, tf, train_only
from kerasft.peft.adapters import check_only
from kerasft.peft.freezing import backbone_blocks, layers_in


def apply_bitfit(model: keras.Model) -> int:
    """Leaves only the backbone's bias terms trainable (the task head trains whole).

    Keras decides what trains per layer, not per weight; a layer's non-bias weights
    are moved to its non-trainable list, which is what `add_weight(trainable=False)`
    would have done. The checkpoint layout is unchanged.

    Returns:
        How many bias vectors train.
    """
    embeddings, blocks = backbone_blocks(model)
    parts = [p for p in [embeddings, *blocks] if p is not None]
    biases = 0
    for part in parts:
        for layer in [part, *layers_in(part)]:
            biases += train_only(layer, _is_bias)
    check_only(blocks, _is_bias, "BitFit")
    return biases


def _is_bias(weight: tf.Variable) -> bool:
    name = weight.name.rsplit("/", 1)[-1]
    return name.startswith(("bias", "beta"))
