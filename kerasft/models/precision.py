"""Where TensorFlow's bfloat16 kernels fall short, and the float32 that mends them.

Under a mixed_bfloat16 policy every Keras layer computes in bfloat16. Two of TensorFlow's
bfloat16 paths cost, one accuracy and one speed:

- **Dropout** draws its random numbers in its input's dtype. In bfloat16 they take 128
  values and the scale 1/(1 - rate) rounds (1/0.9 to 1.109375): a rate of 0.1 keeps 89.85%
  of the activations and leaves them at 99.68% of their mean, at every dropout of every
  step. `float32_dropout_masks` has the layers draw their masks in float32, as float32
  training draws them (the same masks, from the same seeds); the activations stay bfloat16.
  On SST-2, one epoch of 4,000 phrases, mixed_bfloat16 then scored float32's accuracy on
  seven seeds of ten and its mean (bench/README.md, "bfloat16's dropout"). Called by every
  builder of a model that trains. float16's random numbers take 1,024 values (89.94% kept at
  99.95% of the mean), so mixed_float16 keeps Keras' own dropout.
- **GELU**'s `Erfc` runs at a third of its float32 speed in bfloat16 on CPUs:
  `activations_in_float32` computes the feed-forward activations in float32, bfloat16 in and
  out. Called for bfloat16 exports, where it made inference 1.34x faster.
"""

from __future__ import annotations

from typing import Any

from kerasft._compat import keras, tf

ACTIVATION_ATTRIBUTES = ("intermediate_act_fn", "activation")
"""Where Hugging Face's TF layers keep their feed-forward activation: BERT's family
(RoBERTa, ELECTRA, XLM-R, MiniLM) `intermediate_act_fn`, DistilBERT's and ALBERT's `activation`."""


def float32_dropout_masks(model: Any) -> int:
    """Makes `model`'s Keras dropout layers that compute in bfloat16 draw their masks in float32;
    returns how many were changed (a layer changed before is not counted again).

    In training a layer casts its input to float32, drops and scales it there with its own
    random generator, and casts the result back: the mask float32 training would draw, and
    each kept activation scaled by exactly 1/(1 - rate) before its one rounding. Outside
    training the layer passes its input through, as Keras' does.
    """
    changed = 0
    for layer in model.submodules:
        if not isinstance(layer, keras.layers.Dropout) or layer.compute_dtype != "bfloat16":
            continue
        if getattr(layer, "_float32_masks", False):
            continue
        layer.call = _float32_mask_call(layer)
        layer._float32_masks = True
        changed += 1
    return changed


def _float32_mask_call(layer: Any) -> Any:
    keras_call = layer.call  # Keras' own: rate 0, the noise shape and the layer's generator

    def call(inputs: tf.Tensor, training: Any = None) -> tf.Tensor:
        if training is None:
            training = keras.backend.learning_phase()

        def dropped() -> tf.Tensor:
            return tf.cast(keras_call(tf.cast(inputs, tf.float32), training=True), inputs.dtype)

        return tf.__internal__.smart_cond.smart_cond(training, dropped, lambda: tf.identity(inputs))

    return call


def activations_in_float32(model: Any) -> int:
    """Makes the backbone's feed-forward activations (GELU) compute in float32 under a bfloat16
    policy, bfloat16 in and out; returns how many were changed.

    TensorFlow's element-wise kernels are slow in bfloat16 on CPUs: in a bfloat16 export of
    MiniLM-L6, GELU's `Erfc` took 3 times its float32 time and ate most of what AMX's matrix
    products saved (bench/README.md, "bfloat16 inference"). Only functions of transformers'
    `ACT2FN` held by transformers' own layers are wrapped, never a Keras layer's.
    """
    from transformers.activations_tf import ACT2FN

    known = {id(fn) for fn in ACT2FN.values()}
    changed = 0
    for layer in model.submodules:
        if not type(layer).__module__.startswith("transformers."):
            continue
        for attribute in ACTIVATION_ATTRIBUTES:
            fn = getattr(layer, attribute, None)
            if callable(fn) and id(fn) in known:  # a wrapped one is not: called twice, no change
                setattr(layer, attribute, _in_float32(fn))
                changed += 1
    return changed


def _in_float32(fn: Any) -> Any:
    def float32_activation(x: Any) -> Any:
        return tf.cast(fn(tf.cast(x, tf.float32)), x.dtype)

    return float32_activation
