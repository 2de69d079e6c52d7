"""`training.method: contrastive`: SetFit's two phases (Tunstall et al. 2022) as a Keras model.

    phase 1   ContrastiveModel.train_step: the backbone learns from sentence pairs
              (`data.pairs`): the cosine similarity of the two pooled sentence vectors
              is pulled to 1 for a same-label pair and to 0 otherwise (mean squared error,
              sentence-transformers' CosineSimilarityLoss).
    phase 2   HeadFit, at every epoch end: a logistic regression (scikit-learn's, L2,
              as SetFit's default head) on the frozen sentence vectors of the training
              examples, written into the task model's `head` layer.

The model is built over the task model's own layers, so a checkpoint or export of it is
the ordinary task model's: validation metrics, the best checkpoint, the report and
the raw-text export work as for any run.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from kerasft._compat import keras, tf


class ContrastiveModel(keras.Model):
    """A task model whose `fit` trains its backbone on sentence pairs.

    `train_step` takes `({"a": features, "b": features}, same)` batches and minimises
    `(cos(embed(a), embed(b)) - same)^2`; its head stays frozen (`HeadFit` sets it).
    Calling it, `predict` and `evaluate` are the task model's.
    """

    @classmethod
    def around(cls, model: keras.Model) -> ContrastiveModel:
        """A ContrastiveModel sharing `model`'s layers and weights; `model`'s head is frozen."""
        contrastive = cls(inputs=model.inputs, outputs=model.outputs, name=model.name)
        contrastive.get_layer("head").trainable = False  # fitted by HeadFit, not by gradients
        # A partial, not a sub-model attribute: that would add a second path to the same
        # weights in every checkpoint.
        contrastive.embed = partial(_call, sentence_embedder(model))
        contrastive.pair_loss = keras.metrics.Mean(name="loss")
        return contrastive

    def train_step(self, data):
        x, same = data
        # One forward pass over both sides (`pair_dataset` pads them to one width): half the
        # calls, and each embedding table gets one sparse gradient, as in any training step.
        both = {name: tf.concat([x["a"][name], x["b"][name]], 0) for name in x["a"]}
        with tf.GradientTape() as tape:
            u, v = tf.split(self.embed(both, training=True), 2)
            loss = cosine_similarity_loss(u, v, same)
            if self.losses:
                loss += tf.add_n(self.losses)
            # Replicas' gradients are summed: each contributes its share of the global mean,
            # as Keras' compiled losses do.
            scaled = loss / tf.distribute.get_strategy().num_replicas_in_sync
        self.optimizer.minimize(scaled, self.trainable_variables, tape=tape)
        self.pair_loss.update_state(loss)
        return {"loss": self.pair_loss.result()}


def sentence_embedder(model: keras.Model) -> keras.Model:
    """`model` (a sequence task model) up to the sentence vector its head reads: pooled, and
    unit-length with `model.normalize`. It shares `model`'s layers and weights."""
    return keras.Model(model.inputs, model.get_layer("head_dropout").input)


def _call(model: keras.Model, x, training: bool = False):
    return model(x, training=training)


def cosine_similarity_loss(u: tf.Tensor, v: tf.Tensor, same: tf.Tensor) -> tf.Tensor:
    """Mean squared error between the cosine similarity of `u` and `v` rows and `same` (0 or 1)."""
    u = tf.math.l2_normalize(tf.cast(u, tf.float32), axis=-1)
    v = tf.math.l2_normalize(tf.cast(v, tf.float32), axis=-1)
    cosine = tf.reduce_sum(u * v, axis=-1)
    return tf.reduce_mean(tf.square(cosine - tf.cast(same, tf.float32)))


class HeadFit(keras.callbacks.Callback):
    """Fits the task head on the frozen sentence vectors of the training examples, every epoch end.

    Runs before validation is scored, so each epoch's validation metrics, best
    checkpoint and backup hold the head of that epoch's backbone.

    Args:
        examples: the labelled training examples (an evaluation dataset: features, target).
        multi_hot: targets are label sets (one-vs-rest heads) rather than classes.
        num_outputs: classes or labels.
        c: inverse L2 strength of the logistic regression.
        balanced: weigh classes inversely to their frequency (`data.class_weights: balanced`).
    """

    def __init__(
        self,
        examples: tf.data.Dataset,
        multi_hot: bool,
        num_outputs: int,
        c: float,
        balanced: bool = False,
    ):
        super().__init__()
        self.examples, self.multi_hot, self.num_outputs = examples, multi_hot, num_outputs
        self.c, self.balanced = c, balanced

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        vectors, targets = [], []
        for x, y in self.examples:
            vectors.append(self.model.embed(x, training=False).numpy())
            targets.append(y.numpy())
        vectors, targets = np.concatenate(vectors), np.concatenate(targets)
        kernel, bias = logistic_head(
            vectors, targets, self.multi_hot, self.num_outputs, self.c, self.balanced
        )
        self.model.get_layer("head").set_weights([kernel, bias])
        if logs is not None:
            logits = vectors @ kernel + bias
            if self.multi_hot:
                hits = ((logits > 0) == (targets > 0.5)).mean()
            else:
                hits = (logits.argmax(-1) == targets).mean()
            logs["head_train_accuracy"] = float(hits)


def logistic_head(
    vectors: np.ndarray,
    targets: np.ndarray,
    multi_hot: bool,
    num_outputs: int,
    c: float,
    balanced: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The kernel `[dim, num_outputs]` and bias of a dense layer computing a fitted logistic regression.

    Softmax over classes (binary: the two logits are -z/2 and z/2, the same probabilities
    as sigmoid(z)); a class absent from `targets` gets a bias far below the others.
    With `multi_hot`, one sigmoid regression per label; a label every example has (or
    none has) gets a constant logit of +8 (or -8).
    """
    from sklearn.linear_model import LogisticRegression

    weights = "balanced" if balanced else None
    dim = vectors.shape[1]
    kernel = np.zeros((dim, num_outputs), np.float32)
    bias = np.zeros(num_outputs, np.float32)
    if multi_hot:
        for label in range(num_outputs):
            y = (targets[:, label] > 0.5).astype(np.int64)
            if y.min() == y.max():
                bias[label] = 8.0 if y[0] else -8.0
                continue
            fitted = LogisticRegression(C=c, max_iter=1000, class_weight=weights).fit(vectors, y)
            kernel[:, label], bias[label] = fitted.coef_[0], fitted.intercept_[0]
        return kernel, bias
    y = targets.astype(np.int64)
    fitted = LogisticRegression(C=c, max_iter=1000, class_weight=weights).fit(vectors, y)
    classes = fitted.classes_
    if len(classes) == 2:
        coef = np.stack([-fitted.coef_[0] / 2, fitted.coef_[0] / 2])
        intercept = np.array([-fitted.intercept_[0] / 2, fitted.intercept_[0] / 2])
    else:
        coef, intercept = fitted.coef_, fitted.intercept_
    bias[:] = intercept.min() - 30.0  # classes without a training example: never predicted
    kernel[:, classes] = coef.T
    bias[classes] = intercept
    return kernel, bias
